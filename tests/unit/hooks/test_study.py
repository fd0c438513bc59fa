"""StudyHook: a sweep's own connection, else ``[mlci] optuna_conn_id``, else a journal file on a local executor."""

from __future__ import annotations

import pytest

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.hooks.study import StudyHook


@pytest.fixture(autouse=True)
def _connections(monkeypatch):
    monkeypatch.delenv("AIRFLOW__MLCI__OPTUNA_CONN_ID", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_STUDIES", "postgres://optuna:secret@db.example:5433/studies")
    monkeypatch.setenv("AIRFLOW_CONN_OTHER", "postgres://optuna:secret@other.example/studies")


def test_a_sweep_without_a_connection_uses_the_deployments_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__OPTUNA_CONN_ID", "studies")
    hook = StudyHook()
    assert hook.optuna_conn_id == "studies"
    assert hook.storage() == "postgresql+psycopg2://optuna:secret@db.example:5433/studies"
    assert hook.where() == "the database of connection 'studies'"
    assert StudyHook("other").optuna_conn_id == "other"  # the sweep's own connection wins


def test_without_either_a_local_executor_gets_a_journal_file_and_a_distributed_one_is_refused(monkeypatch, tmp_path):
    monkeypatch.setattr("airflow.configuration.AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "LocalExecutor")
    assert StudyHook().storage() == f"journal://{tmp_path}/mlci-studies/studies.journal"
    monkeypatch.setenv("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
    with pytest.raises(MlciConfigError, match=r"needs optuna_conn_id \(or \[mlci\] optuna_conn_id\)"):
        StudyHook().storage()
