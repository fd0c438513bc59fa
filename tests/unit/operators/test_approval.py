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


def test_no_answer_in_time_is_recorded_and_the_promotion_skips_itself():
    from airflow.providers.common.compat.sdk import AirflowSkipException

    with DAG(dag_id="nightly", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        approve = ReleaseApprovalOperator(
            task_id="approve", model="fraud-detector", stage="prod", gate_task_id="gate", approval=Approval()
        )
        promote = PromoteModelOperator(task_id="promote", model="fraud-detector", approval_task_id="approve")
        approve >> promote
    ti = TaskInstance()
    event = {"error": "The response timeout has passed without a response.", "error_type": "timeout"}
    answer = approve.execute_complete({"ti": ti, "task": approve}, event)
    assert answer == ti.pushed[APPROVAL_KEY] == {"decision": "timed_out", "by": None, "at": None}
    reader = SimpleNamespace(xcom_pull=lambda task_ids, key: ti.pushed[key] if task_ids == "approve" else None)
    with pytest.raises(AirflowSkipException, match="Not released: the approval was timed_out"):
        promote.execute({"ti": reader})


def test_an_answer_is_recorded_as_given():
    from datetime import UTC, datetime

    op = ReleaseApprovalOperator(task_id="approve", model="m", stage="prod", gate_task_id="gate", approval=Approval())
    ti = TaskInstance()
    when = datetime(2026, 12, 5, 10, tzinfo=UTC)
    event = {"chosen_options": ["Reject"], "params_input": {}, "responded_at": when,
             "responded_by_user": {"id": "7", "name": "ana"}}  # fmt: skip
    assert op.execute_complete({"ti": ti, "task": op}, event) == {
        "decision": "rejected", "by": "ana", "at": "2026-12-05T10:00:00+00:00"
    }  # fmt: skip
    with pytest.raises(ValueError, match="not in"):
        op.execute_complete({"ti": ti, "task": op}, {**event, "chosen_options": ["Maybe"]})


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
