"""Validate a pull request: its data, its pipeline, its metrics against the base, all on the PR.

Triggered by GitHub's pull-request webhook, received by the provider's plugin in the api-server:
point a webhook (content type ``application/json``, event "Pull requests") at
``<airflow>/mlci/webhooks/github`` with a secret, and keep that secret as the ``password`` of the
connection ``mlci_github_webhook``. Each signed delivery of an opened, synchronized or reopened pull
request starts one run (run id ``gh-<delivery id>``, so a redelivery starts none) with the conf
``{"repo": "acme/fraud-model", "pr_number": 42, "head_rev": "<head sha>", "base_rev": "main"}``; the head
of a fork's pull request is fetched from the repository's ``refs/pull/<n>/head``. Or trigger it from CI
through the REST API (example_dags/ci/github-actions-pr-validation.yml)::

    POST /api/v2/dags/example_pr_validation/dagRuns      (Authorization: Bearer <JWT from POST /auth/token>)
    {"logical_date": null,
     "conf": {"repo": "acme/fraud-model", "pr_number": 42, "head_rev": "<head sha>", "base_rev": "main"}}

``validate_data`` checks the raw data at the PR's head against its committed schema;
``in_sync`` checks that the head's ``dvc.lock`` matches its code, params and data (a change
pushed without running the pipeline fails here, naming each changed stage) and that the DVC
remote holds the data; ``reproduce`` runs what is stale at the head (stages whose lock entry
matches are restored from the run-cache, not run again); ``report`` compares metrics, params and
plots with the base and states what failed above; ``comment`` posts (or edits) one comment on
the pull request and sets the head's commit status (``mlci/pr-validation``). ``outcome`` keeps
the run red when any check failed, although the report and the comment are still written.

Connections: ``mlci_dvc_default`` (the repository) and ``github_default`` (a token that may
comment and set statuses; ``host`` for GitHub Enterprise). Revisions are passed as values, never
into a shell.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.operators.dvc import DvcPipelineSyncCheckOperator, DvcReproOperator
from airflow_provider_mlci.operators.forge import PullRequestCommentOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.operators.validation import DataValidationOperator

with DAG(
    dag_id="example_pr_validation",
    description="On a pull request: validate the data, check the pipeline is in sync, reproduce, report on the PR.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=4,
    params={
        "repo": Param("", type="string", description="owner/name on GitHub (empty: no comment)"),
        "pr_number": Param(0, type="integer", description="The pull request (0: no comment)"),
        "head_rev": Param("main", type="string", description="The PR's head commit or branch"),
        "base_rev": Param("main", type="string", description="The PR's base branch or commit"),
    },
    tags=["mlci", "pull-request", "example"],
):
    validate = DataValidationOperator(
        task_id="validate_data", dataset="data/raw.csv", schema="schemas/raw.yaml", rev="{{ params.head_rev }}"
    )
    in_sync = DvcPipelineSyncCheckOperator(task_id="in_sync", rev="{{ params.head_rev }}")
    # A pull request's stage commands are untrusted code: sandboxed (no network, none of the
    # worker's files or secrets) and kept out of the DVC cache and run-cache trusted runs reuse.
    reproduce = DvcReproOperator(task_id="reproduce", rev="{{ params.head_rev }}", push=True, sandbox=True)
    report = MetricsReportOperator(
        task_id="report",
        rev="{{ params.head_rev }}",
        baseline_rev="{{ params.base_rev }}",
        include_tasks=["validate_data"],
        title="Pull request #{{ params.pr_number }}: {{ params.head_rev }} against {{ params.base_rev }}",
        trigger_rule="all_done",
    )

    @task.short_circuit(trigger_rule="all_done")
    def on_a_pull_request(params=None) -> bool:
        """Comment only when the run names a pull request."""
        return bool(params["repo"] and params["pr_number"])

    comment = PullRequestCommentOperator(
        task_id="comment",
        repo="{{ params.repo }}",
        pr_number="{{ params.pr_number }}",
        report_uri="{{ (ti.xcom_pull(task_ids='report') or {}).get('report_uri', '') }}",
        # reproduce leaves a result only when the data, the sync check and the run all passed.
        status="{{ 'success' if ti.xcom_pull(task_ids='reproduce') else 'failure' }}",
        status_context="mlci/pr-validation",
    )

    @task(trigger_rule="one_failed")
    def outcome() -> None:
        """Keep the run red when a check failed (the report and the comment are written regardless)."""
        raise RuntimeError("The pull request failed a check: see the failed task and the report")

    checks = [validate, in_sync, reproduce, report]
    validate >> in_sync >> reproduce >> report >> on_a_pull_request() >> comment
    checks >> outcome()
