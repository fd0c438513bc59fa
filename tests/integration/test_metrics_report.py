"""The metrics report for real (dag.test()) on the demo project at two revisions: tables, every plot
template rendered, the trend, upstream sections; and bad input stated in the report, failing only on request."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.helpers.github_server import GitHubServer

DAG_ID = "example_pr_report"


def folder_of(result: dict) -> Path:
    return Path(result["report_uri"].removeprefix("file://"))


@pytest.mark.smoke
def test_the_report_shows_metrics_params_and_every_plot_for_both_revisions(run_dag, two_revisions):
    record = run_dag(
        DAG_ID, path=EXAMPLE_DAGS / "example_pr_report.py", conf={"rev": "experiment", "baseline_rev": "main"}
    )
    assert record.state == "success", record.task_states
    result = record.xcom["report"]
    assert result["problems"] == []
    assert result["baseline_sha"] == two_revisions.base
    assert "metrics.json:logloss" in result["metrics_changed"]
    folder = folder_of(result)
    markdown = (folder / "report.md").read_text()
    assert re.search(r"\| params.yaml \| train.epochs \| 10 \| 150 \| \+140 \|", markdown), markdown
    assert re.search(r"\| metrics.json \| logloss \| 0\.\d+ \| 0\.\d+ \| -0\.\d+ \|", markdown)
    names = {p.name for p in (folder / "images").iterdir()}
    head, base = two_revisions.head_sha[:7], two_revisions.base[:7]
    assert names == {
        "eval-predictions.csv.svg",  # confusion
        "eval-roc.csv.svg",  # linear
        "eval-scores.csv.svg",  # scatter
        f"eval-importance-{head}.svg",  # an image output, one per revision
        f"eval-importance-{base}.svg",
        "trend-accuracy.svg",
    }
    for name in names:
        if name.endswith(".svg"):
            assert (folder / "images" / name).read_text().lstrip().startswith("<svg"), name
    confusion = (folder / "images" / "eval-predictions.csv.svg").read_text()
    assert "experiment (" in confusion  # both revisions, labelled by name
    assert "main (" in confusion
    page = (folder / "report.html").read_text()
    assert page.count("<img ") == len(names)
    assert page.count("src='data:image/svg+xml;base64,") == len(names)
    assert "<table>" in page
    assert "src='images/" not in page  # self-contained
    assert record.xcom["where"] == f"{result['report_uri']}/report.html"
    assert record.task_states["comment"] == "skipped"  # no pull request named


def test_the_example_posts_the_report_on_a_pull_request(run_dag, two_revisions, monkeypatch):
    """The comment goes to tests/helpers/github_server.py, which stands in for GitHub's REST API."""
    with GitHubServer(token="ghp_test_token_0123456789") as github:
        github.add_pull("acme/fraud-model", 7, two_revisions.head_sha)
        connection = {"conn_type": "github", "host": github.url, "password": "ghp_test_token_0123456789"}
        monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps(connection))
        conf = {"rev": "experiment", "baseline_rev": "main", "repo": "acme/fraud-model", "pr_number": 7}
        record = run_dag(DAG_ID, path=EXAMPLE_DAGS / "example_pr_report.py", conf=conf)
        assert record.state == "success", record.task_states
        (comment,) = github.comments("acme/fraud-model", pr_number=7)
    assert "<!-- mlci-report: example_pr_report -->" in comment["body"]
    assert "| params.yaml | train.epochs | 10 | 150 | +140 |" in comment["body"]
    assert "![eval/roc.csv](images/eval-roc.csv.svg)" in comment["body"]


TASK_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.operators.report import MetricsReportOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        MetricsReportOperator(task_id="report", rev="{rev}", {args})
    """
)


def run_report(run_dag, dag_id: str, rev: str, args: str):
    return run_dag(dag_id, source=TASK_DAG.format(dag_id=dag_id, rev=rev, args=args))


def test_a_baseline_that_does_not_exist_is_stated_and_fails_only_on_request(run_dag, two_revisions):
    record = run_report(run_dag, "report_no_baseline", "experiment", 'baseline_rev="release-that-never-was"')
    assert record.state == "success"
    result = record.xcom["report"]
    assert result["baseline_sha"] is None
    assert any("release-that-never-was" in p and "does not exist" in p for p in result["problems"])
    markdown = (folder_of(result) / "report.md").read_text()
    assert "## Problems" in markdown
    assert "| metrics.json | accuracy |" in markdown  # what could be read still is

    record = run_report(
        run_dag,
        "report_no_baseline_strict",
        "experiment",
        'baseline_rev="release-that-never-was", fail_on_missing=True',
    )
    assert record.task_states == {"report": "failed"}


def test_a_missing_plot_file_and_a_malformed_metrics_file_are_stated(run_dag, two_revisions):
    project = two_revisions
    dvc_yaml = project.work / "dvc.yaml"
    dvc_yaml.write_text(dvc_yaml.read_text().replace("artifacts:", "plots:\n  - eval/never-written.csv\nartifacts:", 1))
    (project.work / "metrics.json").write_text("{ not json")
    project.git("commit", "--quiet", "-am", "Break a plot and the metrics")
    project.git("push", "--quiet", "origin", "experiment")
    record = run_report(run_dag, "report_broken_inputs", "experiment", 'baseline_rev="main"')
    assert record.state == "success", record.task_states
    problems = record.xcom["report"]["problems"]
    assert any("eval/never-written.csv" in p for p in problems), problems
    assert any("metrics.json" in p and "Cannot read" in p for p in problems), problems
    folder = folder_of(record.xcom["report"])
    assert (folder / "images" / "eval-roc.csv.svg").is_file()  # the other plots are still there
    assert "eval/never-written.csv" in (folder / "report.html").read_text()


UPSTREAM_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    from airflow_provider_mlci.operators.report import MetricsReportOperator

    with DAG(dag_id="report_sections", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        @task
        def gate(ti=None):
            ti.xcom_push(key="decision", value={decision})

        @task
        def sweep():
            return {leaderboard}

        report = MetricsReportOperator(task_id="report", rev="experiment", baseline_rev="main",
                                       include_tasks=["gate", "sweep"])
        [gate(), sweep()] >> report
    """
)


def test_upstream_decisions_become_sections(run_dag, two_revisions):
    decision = {
        "promote": False,
        "reasons": ["logloss: changed by -0.002"],
        "champion": {"version": "v0.1.0", "sha": "a" * 40},
        "metrics": [
            {
                "metric": "logloss",
                "direction": "lower",
                "candidate": 0.5,
                "champion": 0.502,
                "delta": -0.002,
                "passed": False,
            }
        ],
    }
    leaderboard = {"objective": "accuracy", "trials": [{"name": "t1", "params": {"epochs": 10}, "value": 0.8}]}
    source = UPSTREAM_DAG.format(
        decision=json.dumps(decision).replace("false", "False"), leaderboard=json.dumps(leaderboard)
    )
    record = run_dag("report_sections", source=source)
    assert record.state == "success", record.task_states
    markdown = (folder_of(record.xcom["report"]) / "report.md").read_text()
    assert "## gate" in markdown
    assert "Decision: **keep the deployed model** (against v0.1.0)." in markdown
    assert "| logloss | lower | 0.5 | 0.502 | -0.002 | no |" in markdown
    assert "## sweep" in markdown
    assert "| 1 | t1 | 10 | 0.8 |" in markdown


def test_the_deployed_model_is_the_default_baseline_and_reports_go_to_s3(
    run_dag, two_revisions, tmp_path, aws_moto_connection, s3_bucket, moto_endpoint
):
    import boto3

    from airflow_provider_mlci.core.model.registry import GitRegistry
    from airflow_provider_mlci.core.repo.access import RepoAccess
    from airflow_provider_mlci.core.repo.workspace import Workspace

    with Workspace.open(RepoAccess.local(str(two_revisions.remote)), "main", cache_dir=tmp_path / "c") as ws:
        GitRegistry(workspace=ws).promote(name="fraud-detector", sha=two_revisions.base, stage="prod")
    args = (
        f'baseline_model="fraud-detector", report_base="s3://{s3_bucket}/reports", '
        f'report_conn_id="{aws_moto_connection}"'
    )
    record = run_report(run_dag, "report_vs_prod", "experiment", args)
    assert record.state == "success", record.task_states
    result = record.xcom["report"]
    assert result["baseline_sha"] == two_revisions.base
    assert result["baseline_rev"] == "fraud-detector#prod (v0.1.0)"
    assert result["report_uri"].startswith(f"s3://{s3_bucket}/reports/report_vs_prod/")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    prefix = result["report_uri"].removeprefix(f"s3://{s3_bucket}/")
    assert {f"{prefix}/report.md", f"{prefix}/report.html", f"{prefix}/images/eval-roc.csv.svg"} <= keys
    markdown = s3.get_object(Bucket=s3_bucket, Key=f"{prefix}/report.md")["Body"].read().decode()
    assert "against fraud-detector#prod (v0.1.0)" in markdown
