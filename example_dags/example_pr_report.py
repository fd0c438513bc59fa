"""Report what a change does to the model: metrics, params and plots against the base, in one page.

``report`` reads the metrics, params and plots the pipeline recorded at ``rev`` and at
``baseline_rev`` (the base branch of a pull request), renders every plot ``dvc.yaml`` defines
for both (confusion matrix, ROC curve, scatter, the feature-weight image), adds the trend of
``accuracy`` over the last commits of the base branch, and stores ``report.md`` and
``report.html`` under ``[mlci] reports_dir``; its "Report" link opens it. With ``repo`` and
``pr_number`` given, ``comment`` posts the report on that pull request through the
``github_default`` connection, editing its earlier comment on later runs. Trigger with
``{"rev": "<branch or commit>", "baseline_rev": "main"}`` (plus ``"repo": "owner/name",
"pr_number": 42`` to comment).
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.operators.forge import PullRequestCommentOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator

with DAG(
    dag_id="example_pr_report",
    description="Metrics, params and plots of a revision against its base, stored and linked from the task.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="The revision to report on (a PR's head)"),
        "baseline_rev": Param("main", type="string", description="The revision to compare with (the PR's base)"),
        "repo": Param("", type="string", description="owner/name on GitHub, to comment on a pull request"),
        "pr_number": Param(0, type="integer", description="The pull request to comment on (0: none)"),
    },
    tags=["mlci", "report", "example"],
):
    report = MetricsReportOperator(
        task_id="report",
        rev="{{ params.rev }}",
        baseline_rev="{{ params.baseline_rev }}",
        trend={"metric": "accuracy", "branch": "{{ params.baseline_rev }}", "commits": 10},
        title="Fraud detector: {{ params.rev }} against {{ params.baseline_rev }}",
    )

    @task
    def where(result: dict) -> str:
        """Say where the report is and what changed."""
        print(f"Report: {result['html']}")
        print(f"  metrics changed: {', '.join(result['metrics_changed']) or 'none'}")
        print(f"  plots: {len(result['plots'])}")
        for problem in result["problems"]:
            print(f"  problem: {problem}")
        return result["html"]

    @task.short_circuit
    def on_a_pull_request(params=None) -> bool:
        """Comment only when the run names a pull request."""
        return bool(params["repo"] and params["pr_number"])

    comment = PullRequestCommentOperator(
        task_id="comment",
        repo="{{ params.repo }}",
        pr_number="{{ params.pr_number }}",
        report_uri="{{ ti.xcom_pull(task_ids='report')['report_uri'] }}",
    )
    where(report.output) >> on_a_pull_request() >> comment
