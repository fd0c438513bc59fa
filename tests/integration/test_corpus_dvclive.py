"""DVC projects as their authors write them, run as per-stage tasks on separate workers and
compared with ``git clone`` + ``dvc pull`` + ``dvc repro`` + ``git add -A`` by hand on the same
commit (see tests/helpers/dvc_corpus.py). This file: DVCLive's layout, with the report, the
metrics diff, `DvcWillItRunOperator` and a sweep on it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.helpers import dvc_corpus

DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.dvc import DvcMetricsOperator, DvcWillItRunOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

with DAG(dag_id="corpus_dvclive", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    before = DvcWillItRunOperator(task_id="before", rev="main")
    pipeline = DvcPipelineTaskGroup(
        group_id="pipeline", project_dir="corpus_dvclive", rev="main", commit_to="mlci/corpus",
    )
    after = DvcWillItRunOperator(task_id="after", rev="mlci/corpus")
    diff = DvcMetricsOperator(task_id="diff", rev="mlci/corpus", baseline_rev="main")
    report = MetricsReportOperator(task_id="report", rev="mlci/corpus", baseline_rev="main")
    sweep = SweepTaskGroup(group_id="sweep", space={"train.rate": [0.25, 1.0]}, objective="auc", rev="main")
    before >> pipeline >> [after, diff, report] >> sweep
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
    assert dvc_corpus.ran(record.xcom, "pipeline") == hand.ran
    # The first stage does not trip over metrics files that only the last stage writes.
    assert record.xcom["pipeline.seed"]["metrics"] == {}
    assert record.xcom["before"]["will_run"] == ["seed", "train", "evaluate"]
    assert record.xcom["after"]["will_run"] == []
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/corpus", scratch=tmp_path)
    diff = record.xcom["diff"]
    assert set(diff["metrics"]) == {"dvclive/metrics.json", "eval/metrics.json"}
    assert diff["metrics"]["eval/metrics.json"] == hand.metrics[""]["data"]["eval/metrics.json"]["data"]
    hand_auc = hand.metrics[""]["data"]["eval/metrics.json"]["data"]["auc"]
    # The report on the committed branch against main, which has never run: every plot rendered,
    # and what main does not have yet is stated, not a problem.
    report = record.xcom["report"]
    assert report["problems"] == []
    assert report["absent"] == {
        sha: [
            "dvclive/metrics.json",
            "dvclive/plots/metrics",
            "eval/metrics.json",
            "eval/plots/confusion.json",
            "eval/plots/roc.json",
        ]
    }
    assert sorted(report["plots"]) == [
        "images/dvclive-plots-metrics-loss.tsv.svg",
        "images/eval-plots-confusion.json.svg",
        "images/eval-plots-roc.json.svg",
    ]
    markdown = (Path(report["report_uri"].removeprefix("file://")) / "report.md").read_text()
    assert f"| eval/metrics.json | auc | - | {hand_auc} |" in markdown, markdown
    assert "Not at main (" in markdown

    # The sweep: each trial's objective equals what `dvc exp run -S` gives by hand on the same commit.
    dvc_corpus.dvc(project, hand.work, "exp", "run", "--quiet", "-S", "train.rate=1.0")
    by_hand_auc = json.loads((hand.work / "eval" / "metrics.json").read_text())["auc"]
    board = {tuple(t["params"].items()): t for t in record.xcom["sweep.leaderboard"]["leaderboard"]["trials"]}
    assert set(board) == {(("train.rate", 0.25),), (("train.rate", 1.0),)}
    assert board[(("train.rate", 1.0),)]["value"] == by_hand_auc
    assert board[(("train.rate", 1.0),)]["value"] != board[(("train.rate", 0.25),)]["value"]
