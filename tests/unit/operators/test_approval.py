"""The release approval: what it asks, and what it records when nobody answers."""

from __future__ import annotations

from types import SimpleNamespace

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_mlci.config import Approval
from airflow_provider_mlci.operators.approval import APPROVAL_KEY, ReleaseApprovalOperator, approval_body
from airflow_provider_mlci.operators.model import PromoteModelOperator

DECISION = {
    "model": "fraud-detector",
    "stage": "prod",
    "promote": True,
    "candidate": {"sha": "c" * 40},
    "champion": {"version": "v0.1.0", "sha": "a" * 40},
    "metrics": [{"metric": "logloss", "candidate": 0.4714, "champion": 0.4743, "delta": -0.0029}],
}


def test_the_request_shows_the_deltas_and_links_the_run_s_reports():
    body = approval_body(DECISION, dag_id="nightly", run_id="scheduled__2026-11-02T02:00:00+00:00")
    assert body == (
        "The gate passed the candidate against v0.1.0 on prod:\n\n"
        "- logloss 0.4743 -> 0.4714 (-0.0029)\n\n"
        "[The run's reports](/mlci/run-outcome/nightly/scheduled__2026-11-02T02_00_00+00_00)\n\n"
        "Approve to release it; reject to keep the deployed model."
    )


class TaskInstance:
    dag_id, run_id, task_id, map_index = "nightly", "manual__1", "approve", -1

    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def test_no_answer_in_time_records_timed_out_and_skips_the_promotion():
    from airflow.sdk.exceptions import DownstreamTasksSkipped

    with DAG(dag_id="nightly", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        approve = ReleaseApprovalOperator(
            task_id="approve", model="fraud-detector", stage="prod", gate_task_id="gate", approval=Approval()
        )
        promote = PromoteModelOperator(task_id="promote", model="fraud-detector")
        approve >> promote
    ti = TaskInstance()
    event = {"error": "The response timeout has passed without a response.", "error_type": "timeout"}
    with pytest.raises(DownstreamTasksSkipped) as skipped:
        approve.execute_complete({"ti": ti, "task": approve}, event)
    assert skipped.value.tasks == ["promote"]
    assert ti.pushed[APPROVAL_KEY] == {"decision": "timed_out", "by": None, "at": None}


def test_the_subject_names_the_model_the_commit_and_the_stage(monkeypatch):
    from airflow.providers.standard.operators.hitl import HITLOperator

    op = ReleaseApprovalOperator(
        task_id="approve", model="fraud-detector", stage="prod", gate_task_id="gate", approval=Approval()
    )
    seen = {}
    monkeypatch.setattr(HITLOperator, "execute", lambda self, context: seen.update(subject=self.subject))
    ti = SimpleNamespace(dag_id="nightly", run_id="manual__1", xcom_pull=lambda task_ids, key: DECISION)
    op.execute({"ti": ti})
    assert seen == {"subject": "Release fraud-detector cccccccccccc to prod?"}
