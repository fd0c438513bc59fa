"""Airflow discovers the installed package as a provider with the ``mlci_dvc`` connection type."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

AIRFLOW = str(Path(sys.executable).parent / "airflow")


def airflow_cli(*args: str) -> str:
    proc = subprocess.run([AIRFLOW, *args], capture_output=True, text=True, env=os.environ.copy(), check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.usefixtures("airflow_db")
def test_providers_list_shows_the_provider():
    out = airflow_cli("providers", "list", "--output", "plain")
    line = next((line for line in out.splitlines() if line.startswith("airflow-provider-mlci")), None)
    assert line is not None, out
    assert "0.1.0" in line


@pytest.mark.usefixtures("airflow_db")
def test_providers_hooks_shows_the_connection_type():
    out = airflow_cli("providers", "hooks", "--output", "plain")
    line = next((line for line in out.splitlines() if line.startswith("mlci_dvc")), None)
    assert line is not None, out
    assert "airflow_provider_mlci.hooks.dvc.DvcHook" in line
    assert "dvc_conn_id" in line
    assert "airflow-provider-mlci" in line


@pytest.mark.usefixtures("airflow_db")
def test_the_connection_form_fields_are_declared():
    out = airflow_cli("providers", "widgets", "--output", "plain")
    for field in ("private_key", "dvc_remote", "dvc_remote_url", "aws_conn_id"):
        assert f"extra__mlci_dvc__{field}" in out
