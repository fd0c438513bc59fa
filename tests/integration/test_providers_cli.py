"""Airflow discovers the installed package as a provider with the ``mlci_dvc`` connection type."""

from __future__ import annotations

import json
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


@pytest.mark.smoke
@pytest.mark.usefixtures("airflow_db")
def test_providers_get_shows_the_asset_schemes_and_the_settings():
    (info,) = json.loads(airflow_cli("providers", "get", "airflow-provider-mlci", "--full", "--output", "json"))
    schemes = {scheme: entry for entry in info["asset-uris"] for scheme in entry["schemes"]}
    assert set(schemes) == {"x-dvc", "x-dvc-data"}
    assert all(entry["handler"] == "airflow_provider_mlci.assets.sanitize_uri" for entry in schemes.values())
    assert {"cache_dir", "cache_max_size_gb", "reports_dir", "sandbox"} <= set(info["config"]["mlci"]["options"])


@pytest.mark.smoke
@pytest.mark.usefixtures("airflow_db")
def test_airflow_plugins_shows_the_reports_plugin_with_its_pages():
    plugins = {plugin["name"]: plugin for plugin in json.loads(airflow_cli("plugins", "--output", "json"))}
    plugin = plugins.get("mlci_reports")
    assert plugin is not None, sorted(plugins)
    assert plugin["source"].startswith("airflow-provider-mlci=="), plugin["source"]  # from the entry point
    assert [app["url_prefix"] for app in plugin["fastapi_apps"]] == ["/mlci"]
    views = {view["url_route"]: view["destination"] for view in plugin["external_views"]}
    assert views == {
        "mlci-reports": "nav",
        "mlci-models": "nav",
        "mlci-run-outcome": "dag_run",
        "mlci-task-report": "task_instance",
    }
