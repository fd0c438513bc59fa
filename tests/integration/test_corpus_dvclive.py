"""DVC projects as their authors write them, run as per-stage tasks on separate workers and
compared with ``git clone`` + ``dvc pull`` + ``dvc repro`` + ``git add -A`` by hand on the same
commit (see tests/helpers/dvc_corpus.py). This file: DVCLive's layout."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import dvc_corpus

DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.dvc import DvcMetricsOperator, DvcWillItRunOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(dag_id="corpus_dvclive", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    before = DvcWillItRunOperator(task_id="before", rev="main")
    pipeline = DvcPipelineTaskGroup(
        group_id="pipeline", project_dir="corpus_dvclive", rev="main", commit_to="mlci/corpus",
    )
    after = DvcWillItRunOperator(task_id="after", rev="mlci/corpus")
    diff = DvcMetricsOperator(task_id="diff", rev="mlci/corpus", baseline_rev="main")
    before >> pipeline >> [after, diff]
"""


@pytest.fixture
def project(tmp_path, dags_folder, dvc_connection, separate_workers):
    project = dvc_corpus.dvclive_project(tmp_path / "dvclive")
    shutil.copytree(project.work, dags_folder / "corpus_dvclive", ignore=shutil.ignore_patterns(".git"))
    dvc_connection(str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url})
    return project


def test_dvclive_project_per_stage_equals_dvc_repro_by_hand(run_dag, project, tmp_path):
    sha = project.head()
    hand = dvc_corpus.by_hand(project, tmp_path / "by-hand")
    assert hand.ran == {"seed", "train", "evaluate"}
    assert "dvc.yaml" in hand.changed  # DVCLive rewrote it

    record = run_dag("corpus_dvclive", source=DAG)
    assert record.state == "success", record.task_states
    ran = {
        s
        for t in ("seed", "train", "evaluate")
        for s, o in record.xcom[f"pipeline.{t}"]["stages"].items()
        if o == "ran"
    }
    assert ran == hand.ran
    # The first stage does not trip over metrics files that only the last stage writes.
    assert record.xcom["pipeline.seed"]["metrics"] == {}
    assert record.xcom["before"]["will_run"] == ["seed", "train", "evaluate"]
    assert record.xcom["after"]["will_run"] == []
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/corpus", scratch=tmp_path)
    diff = record.xcom["diff"]
    assert set(diff["metrics"]) == {"dvclive/metrics.json", "eval/metrics.json"}
    assert diff["metrics"]["eval/metrics.json"] == hand.metrics[""]["data"]["eval/metrics.json"]["data"]
