"""The demo DAG, run for real with ``dag.test()`` against local and S3 remotes."""

from __future__ import annotations

import json
import shutil

import pytest

from airflow_provider_mlci.testing.git_http import GitHttpServer
from tests.conftest import EXAMPLE_DAGS
from tests.helpers.dvc_remote import remote_files
from tests.helpers.log_lines import error_lines

DAG_ID = "example_dvc_repro"
DAG_FILE = EXAMPLE_DAGS / "example_dvc_repro.py"


@pytest.fixture
def use_cache(monkeypatch, worker_cache):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    return worker_cache


@pytest.mark.smoke
def test_the_demo_dag_reproduces_the_pipeline_and_shares_its_outputs(run_dag, dvc_project, dvc_connection, use_cache):
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    before = remote_files(dvc_project.dvc_remote_url)
    record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"})
    assert record.state == "success"
    assert record.task_states == {"validate_data": "success", "reproduce": "success", "report": "success"}
    checked = record.xcom["validate_data"]
    assert checked["valid"] is True
    assert checked["rows_checked"] == len((dvc_project.work / "data" / "raw.csv").read_text().splitlines()) - 1
    assert checked["dataset"] == f"data/raw.csv@{dvc_project.head()[:12]}"
    result = record.xcom["reproduce"]
    assert result["sha"] == dvc_project.head()
    assert result["rev"] == "main"
    assert result["repo"] == str(dvc_project.remote)
    assert result["stages"] == {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    assert 0.5 < result["metrics"]["metrics.json"]["accuracy"] <= 1
    assert record.xcom["report"] == result["metrics"]
    json.dumps(result, allow_nan=False)
    added = remote_files(dvc_project.dvc_remote_url) - before
    assert any(name.startswith("runs/") for name in added)
    assert list((use_cache / "checkouts").iterdir()) == []


def test_a_revision_that_does_not_exist_fails_naming_it_and_pushes_nothing(
    run_dag, dvc_project, dvc_connection, use_cache, capfd
):
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    refs, data = dvc_project.remote_refs(), remote_files(dvc_project.dvc_remote_url)
    record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "release-that-never-was"})
    assert record.state == "failed"
    assert record.task_states == {
        "validate_data": "failed",
        "reproduce": "upstream_failed",
        "report": "upstream_failed",
    }
    out = capfd.readouterr().out
    assert error_lines(out, "GitRevisionNotFoundError") == [
        "airflow.sdk.exceptions.AirflowFailException: GitRevisionNotFoundError: Revision 'release-that-never-was' "
        f"does not exist in {dvc_project.remote} (no branch, tag or commit by that name)."
    ]
    assert dvc_project.remote_refs() == refs
    assert remote_files(dvc_project.dvc_remote_url) == data


def test_a_repository_url_that_does_not_resolve_fails_naming_it(run_dag, dvc_project, dvc_connection, use_cache, capfd):
    missing = dvc_project.remote.parent / "typo.git"
    dvc_connection(str(missing), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    data = remote_files(dvc_project.dvc_remote_url)
    record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"})
    assert record.state == "failed"
    out = capfd.readouterr().out
    assert error_lines(out, "GitRemoteError") == [
        f"airflow.sdk.exceptions.AirflowFailException: GitRemoteError: git clone from {missing} failed: fatal: "
        f"repository '{missing}' does not exist"
    ]
    assert remote_files(dvc_project.dvc_remote_url) == data


def test_an_s3_remote_through_an_aws_connection(
    run_dag, s3_dvc_project, dvc_connection, aws_moto_connection, moto_endpoint, s3_bucket, use_cache
):
    import boto3

    dvc_connection(
        str(s3_dvc_project.remote), extra={"aws_conn_id": "aws_moto", "dvc_remote_url": f"s3://{s3_bucket}/store"}
    )
    record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"})
    assert record.state == "success"
    assert record.xcom["reproduce"]["stages"] == {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=s3_bucket, Prefix="store/runs/").get("Contents", [])]
    assert keys, "the run-cache did not reach the S3 remote"


def test_an_https_token_never_reaches_logs_xcom_or_rendered_fields(
    run_dag, dvc_project, dvc_connection, use_cache, capfd, airflow_home, tmp_path
):
    token = "ghp_ThisIsNotARealToken1234"
    served = tmp_path / "served"
    served.mkdir()
    shutil.copytree(dvc_project.remote, served / "model.git")
    with GitHttpServer(served, username="ci-bot", token=token) as server:
        url = server.url("model.git")
        dvc_connection(url, login="ci-bot", password=token, extra={"dvc_remote_url": dvc_project.dvc_remote_url})
        record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"})
        assert server.seen_authorizations, "git did not authenticate"
    assert record.state == "success"
    assert record.xcom["reproduce"]["repo"] == url
    out = capfd.readouterr().out
    assert token not in out
    assert token not in json.dumps(record.xcom)
    for log_file in (airflow_home / "logs").rglob("*"):
        if log_file.is_file():
            assert token not in log_file.read_text(errors="replace"), log_file
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=DAG_ID, run_id=record.run_id).all()
    assert rows
    assert all(token not in json.dumps(row.rendered_fields) for row in rows)
