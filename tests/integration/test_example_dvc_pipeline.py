"""The pipeline-as-tasks example, run for real: one task per stage, each from a fresh checkout
in a worker cache of its own (nothing shared on disk between stages), S3 remote on moto."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import DEMO_PROJECT, EVAL_ROWS, EXAMPLE_DAGS
from tests.helpers.log_lines import error_lines

DAG_ID = "example_dvc_pipeline"
STAGES = ("prepare", "train", "evaluate")


@pytest.fixture
def example_installed(dags_folder):
    """The example and the copy of the project it renders from, in the test DAGs folder."""
    shutil.copytree(DEMO_PROJECT, dags_folder / "demo_project", dirs_exist_ok=True)
    shutil.copyfile(EXAMPLE_DAGS / ".airflowignore", dags_folder / ".airflowignore")
    return EXAMPLE_DAGS / f"{DAG_ID}.py"


@pytest.fixture
def s3_connection(aws_moto_connection, dvc_connection, s3_dvc_project, moto_endpoint, s3_bucket):
    dvc_connection(
        str(s3_dvc_project.remote), extra={"aws_conn_id": "aws_moto", "dvc_remote_url": f"s3://{s3_bucket}/store"}
    )
    return s3_dvc_project


def s3_keys(endpoint, bucket, prefix):
    import boto3

    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    return {obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])}


def test_every_stage_runs_in_its_own_workspace_reaches_the_s3_remote_and_a_second_run_restores(
    run_dag, example_installed, s3_connection, separate_workers, moto_endpoint, s3_bucket
):
    before = s3_keys(moto_endpoint, s3_bucket, "store/")
    record = run_dag(DAG_ID, path=example_installed, conf={"rev": "main"})
    assert record.state == "success", record.task_states
    expected = {"pipeline.resolve", *(f"pipeline.{s}" for s in STAGES), "report"}
    assert set(record.task_states) == expected
    assert set(record.task_states.values()) == {"success"}
    sha = s3_connection.head()
    for stage in STAGES:
        result = record.xcom[f"pipeline.{stage}"]
        assert result["sha"] == sha
        assert result["stages"] == {stage: "ran"}
        assert set(result["handoff"]["lock"]["dvc.lock"]) == {stage}
    assert record.xcom["report"]["metrics.json"]["rows"] == EVAL_ROWS  # the frozen evaluation set
    # Each stage task (and the resolve task) used a worker cache of its own.
    assert len(separate_workers) >= 4
    added = s3_keys(moto_endpoint, s3_bucket, "store/") - before
    assert any(key.startswith("store/runs/") for key in added)
    assert len([key for key in added if key.startswith("store/files/")]) >= 3
    # A second run, on other fresh workers, restores every stage from the run-cache pushed above.
    record = run_dag(DAG_ID, path=example_installed, conf={"rev": "main"})
    assert record.state == "success"
    assert record.xcom["pipeline.prepare"]["stages"] == {"prepare": "restored"}
    assert record.xcom["pipeline.train"]["stages"] == {"train": "restored"}


def test_code_changed_since_the_committed_lock_reruns_what_it_affects(
    run_dag, example_installed, dvc_project, dvc_connection, separate_workers
):
    """The usual CI case: the lock is behind the code; affected stages really run and push."""
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Reproduce and commit the lock")
    train = dvc_project.work / "src" / "train.py"
    code = train.read_text()
    assert "[0.0] * len(FEATURES), 0.0," in code
    train.write_text(code.replace("[0.0] * len(FEATURES), 0.0,", "[0.1] * len(FEATURES), 0.0,"))
    new_sha = dvc_project.commit_and_push("Change training code, lock not updated", dvc_push=False)
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    record = run_dag(DAG_ID, path=example_installed, conf={"rev": "main"})
    assert record.state == "success", record.task_states
    assert record.xcom["pipeline.resolve"]["sha"] == new_sha
    assert record.xcom["pipeline.prepare"]["stages"] == {"prepare": "skipped"}
    assert record.xcom["pipeline.train"]["stages"] == {"train": "ran"}
    assert record.xcom["pipeline.evaluate"]["stages"] == {"evaluate": "ran"}
    new_model = record.xcom["pipeline.train"]["handoff"]["lock"]["dvc.lock"]["train"]["outs"][0]["md5"]
    assert (Path(dvc_project.dvc_remote_url) / "files" / "md5" / new_model[:2] / new_model[2:]).exists()


def test_a_pipeline_that_changed_since_rendering_fails_naming_the_stages(
    run_dag, example_installed, dvc_project, dvc_connection, separate_workers, capfd
):
    dvc_yaml = dvc_project.work / "dvc.yaml"
    stage = "  publish:\n    cmd: echo publish\n    deps:\n      - metrics.json\n"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("\nartifacts:\n", f"\n{stage}artifacts:\n"))
    assert "publish" in dvc_yaml.read_text()
    sha = dvc_project.commit_and_push("Add a stage", dvc_push=False)
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    record = run_dag(DAG_ID, path=example_installed, conf={"rev": "main"})
    assert record.state == "failed"
    assert record.task_states["pipeline.resolve"] == "failed"
    assert record.task_states["pipeline.prepare"] == "upstream_failed"
    out = capfd.readouterr().out
    assert error_lines(out, "DvcPipelineMismatchError") == [
        f"airflow.sdk.exceptions.AirflowFailException: DvcPipelineMismatchError: The pipeline in dvc.yaml at main "
        f"({sha[:12]}) is not the one this DAG was rendered from (stages added: publish). Update the DAG's copy of "
        "the project."
    ]


COMMIT_DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.dvc import DvcPipelineSyncCheckOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(dag_id="mlci_pipeline_commit", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    pipeline = DvcPipelineTaskGroup(
        group_id="pipeline", project_dir="demo_project", rev="main", commit_to="lock-updates",
        commit_author="Pipeline Bot <bot@example.com>",
    )
    pipeline >> DvcPipelineSyncCheckOperator(task_id="in_sync", rev="lock-updates")
"""


def test_stage_by_stage_results_commit_as_one_consistent_lock(
    run_dag, example_installed, dvc_project, dvc_connection, separate_workers
):
    """The lock entries handed from stage to stage, committed at the end, describe exactly the
    data the stages pushed: a sync check of the new branch passes."""
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    record = run_dag("mlci_pipeline_commit", source=COMMIT_DAG)
    assert record.state == "success", record.task_states
    commit = record.xcom["pipeline.commit"]["commit"]
    assert commit["created"]
    assert dvc_project.remote_refs()["refs/heads/lock-updates"] == commit["commit"]
    assert record.xcom["in_sync"]["in_sync"]
    committed = dvc_project.git("show", "--name-only", "--format=%an", commit["commit"], cwd=dvc_project.remote)
    assert committed.splitlines()[0] == "Pipeline Bot"
    assert {"dvc.lock", "metrics.json"} <= set(committed.split())
    # Run it again: the branch already holds these files, so no second commit.
    again = run_dag("mlci_pipeline_commit", source=COMMIT_DAG)
    assert again.state == "success"
    assert not again.xcom["pipeline.commit"]["commit"]["created"]
    assert dvc_project.remote_refs()["refs/heads/lock-updates"] == commit["commit"]
