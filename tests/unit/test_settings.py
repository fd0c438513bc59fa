"""The provider's settings: read in one module, typed, defaults from the provider info."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import airflow_provider_mlci
from airflow_provider_mlci import settings
from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig
from airflow_provider_mlci.exceptions import MlciConfigError

PACKAGE = Path(airflow_provider_mlci.__file__).parent
#: A read of an [mlci] option through any config object (conf.get, conf.getint, ...).
_READ = re.compile(r"""\.get(?:int|float|boolean|list)?\(\s*["']mlci["']""")


def test_only_the_settings_module_reads_mlci_options():
    readers = {
        str(path.relative_to(PACKAGE))
        for path in PACKAGE.rglob("*.py")
        if _READ.search(path.read_text()) or '"[mlci]"' in path.read_text()
    }
    assert readers <= {"settings.py"}, readers
    assert "get(SECTION" in (PACKAGE / "settings.py").read_text()


def test_every_declared_option_has_a_reader_and_a_default_from_the_provider_info(monkeypatch):
    declared = settings.declared()
    assert set(declared) == {
        "cache_dir",
        "cache_max_size_gb",
        "reports_dir",
        "reports_conn_id",
        "report_retention_days",
        "report_templates",
        "compute_job_base",
        "compute_backend",
        "gpu_prices",
        "optuna_conn_id",
        "study_retention_days",
        "sandbox",
        "stage_env",
    }
    for name in declared:
        monkeypatch.delenv(f"AIRFLOW__MLCI__{name.upper()}", raising=False)
    assert settings.cache_max_bytes() == int(float(declared["cache_max_size_gb"]["default"]) * 1e9)
    assert settings.compute_backend() == declared["compute_backend"]["default"] == "local"
    assert settings.compute_job_base() == ""
    assert settings.gpu_prices() == {}
    monkeypatch.setenv("AIRFLOW_HOME", "/srv/airflow")
    assert settings.reports_location() == ("/srv/airflow/mlci-reports", None)
    assert settings.cache_dir().endswith("airflow-provider-mlci")
    assert settings.sandbox() == SandboxConfig()


def test_the_sandbox_settings_are_read_typed_and_bad_values_named(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__SANDBOX", "True")
    monkeypatch.setenv("AIRFLOW__MLCI__STAGE_ENV", "WANDB_MODE, HF_HUB_OFFLINE")
    assert settings.sandbox() == SandboxConfig(enabled=True, env=("WANDB_MODE", "HF_HUB_OFFLINE"))
    monkeypatch.setenv("AIRFLOW__MLCI__STAGE_ENV", "NOT A NAME")
    with pytest.raises(MlciConfigError, match=r"\[mlci\] stage_env='NOT A NAME'"):
        settings.sandbox()
    monkeypatch.setenv("AIRFLOW__MLCI__SANDBOX", "maybe")
    with pytest.raises(MlciConfigError, match=r"\[mlci\] sandbox='maybe'"):
        settings.sandbox()


def test_configured_values_are_read_typed(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", "/var/cache/mlci")
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_MAX_SIZE_GB", "0.5")
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", "s3://reports/airflow")
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_CONN_ID", "aws_reports")
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_BACKEND", "ec2")
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_JOB_BASE", "s3://jobs/x")
    assert settings.cache_dir() == "/var/cache/mlci"
    assert settings.cache_max_bytes() == 500_000_000
    assert settings.reports_location() == ("s3://reports/airflow", "aws_reports")
    assert settings.compute_backend() == "ec2"
    assert settings.compute_job_base() == "s3://jobs/x"
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_MAX_SIZE_GB", "0")
    assert settings.cache_max_bytes() == 0  # no cap


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("CACHE_MAX_SIZE_GB", "lots", r"cache_max_size_gb='lots' is not a number of gigabytes"),
        ("CACHE_MAX_SIZE_GB", "-1", r"cache_max_size_gb='-1' must be 0 \(no cap\) or more"),
        ("COMPUTE_BACKEND", "gpu", r"compute_backend='gpu' is not one of 'local', 'ec2'"),
    ],
)
def test_a_bad_value_is_a_typed_error_naming_the_option(monkeypatch, name, value, message):
    monkeypatch.setenv(f"AIRFLOW__MLCI__{name}", value)
    reader = settings.cache_max_bytes if name.startswith("CACHE") else settings.compute_backend
    with pytest.raises(MlciConfigError, match=r"\[mlci\] " + message):
        reader()


@pytest.mark.parametrize("option", ["report_retention_days", "study_retention_days"])
def test_retention_is_read_in_days_and_zero_keeps_forever(monkeypatch, option):
    reader = getattr(settings, option)
    monkeypatch.delenv(f"AIRFLOW__MLCI__{option.upper()}", raising=False)
    assert reader() == int(settings.declared()[option]["default"]) == 90
    monkeypatch.setenv(f"AIRFLOW__MLCI__{option.upper()}", "0")
    assert reader() == 0
    for bad, message in (("a month", "is not a whole number of days"), ("-3", r"must be 0 \(keep forever\) or more")):
        monkeypatch.setenv(f"AIRFLOW__MLCI__{option.upper()}", bad)
        with pytest.raises(MlciConfigError, match=rf"\[mlci\] {option}=" + f"'{bad}' " + message):
            reader()


def test_gpu_prices_are_a_json_table_of_usd_per_hour_and_a_bad_one_is_named(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__GPU_PRICES", '{"g4dn.xlarge": 0.526, "g5.xlarge": 1}')
    assert settings.gpu_prices() == {"g4dn.xlarge": 0.526, "g5.xlarge": 1.0}
    for bad, message in (
        ("g4dn.xlarge=0.526", r"gpu_prices='g4dn.xlarge=0.526' is not JSON"),
        ("[0.526]", r"gpu_prices='\[0.526\]' is not a JSON object"),
        ('{"g4dn.xlarge": "cheap"}', r"gpu_prices: the price of 'g4dn.xlarge' is 'cheap'"),
        ('{"g4dn.xlarge": -1}', r"gpu_prices: the price of 'g4dn.xlarge' is -1"),
    ):
        monkeypatch.setenv("AIRFLOW__MLCI__GPU_PRICES", bad)
        with pytest.raises(MlciConfigError, match=r"\[mlci\] " + message):
            settings.gpu_prices()
