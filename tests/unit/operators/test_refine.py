"""The refinement operators' arguments, and the release outcome read from the gate's and promotion's XComs."""

from __future__ import annotations

import json
import re

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.model import DECISION_KEY, release_outcome
from airflow_provider_mlci.operators.refine import RefinementStartOperator, ReleaseOutcomeOperator

CHAMPION = {
    "name": "fraud-detector",
    "stage": "prod",
    "version": "v0.1.0",
    "sha": "c" * 40,
    "tag": "fraud-detector#prod#1",
}
VERDICT = {
    "metric": "logloss",
    "direction": "lower",
    "candidate": 0.41,
    "champion": 0.43,
    "passed": True,
    "reasons": [],
}
STARTED = {"from_scratch": False, "deployed": CHAMPION, "refine_sha": "r" * 40, "commit": {"branch": "b"}}


def decision(promote: bool, reasons=()) -> dict:
    """The gate's decision as ``ModelGateBranchOperator`` pushes it under the key ``decision``."""
    return {
        "model": "fraud-detector",
        "stage": "prod",
        "promote": promote,
        "reasons": list(reasons),
        "metrics": [VERDICT],
        "candidate": {"rev": "x" * 40, "sha": "x" * 40, "metrics": {}},
        "champion": CHAMPION,
        "sha": "x" * 40,
    }


class FakeTaskInstance:
    """A stub of the running task instance: XComs from a dict keyed by ``(task_id, key)``."""

    def __init__(self, xcoms):
        self.xcoms = xcoms
        self.pulled = []

    def xcom_pull(self, task_ids=None, key="return_value"):
        self.pulled.append((task_ids, key))
        return self.xcoms.get((task_ids, key))


def outcome_of(xcoms, **kwargs) -> tuple[dict, FakeTaskInstance]:
    ti = FakeTaskInstance(xcoms)
    op = ReleaseOutcomeOperator(task_id="outcome", gate_task_id="g.gate", promote_task_id="g.promote", **kwargs)
    return op.execute({"ti": ti}), ti


def test_a_promotion_is_reported_with_its_version_tags_and_the_model_it_replaced():
    released = {
        "name": "fraud-detector",
        "stage": "prod",
        "version": "v0.2.0",
        "sha": "x" * 40,
        "tags": ["fraud-detector@v0.2.0", "fraud-detector#prod#2"],
        "changed": True,
        "replaced": CHAMPION,
    }
    xcoms = {("g.gate", DECISION_KEY): decision(True), ("g.promote", "return_value"): released}
    outcome, ti = outcome_of(xcoms)
    assert outcome == {
        "promoted": True,
        "decision": "promoted",
        "approval": None,
        "model": "fraud-detector",
        "stage": "prod",
        "sha": "x" * 40,
        "version": "v0.2.0",
        "tags": ["fraud-detector@v0.2.0", "fraud-detector#prod#2"],
        "replaced": CHAMPION,
        "reasons": [],
        "champion": CHAMPION,
        "metrics": [VERDICT],
    }
    assert ("g.gate", DECISION_KEY) in ti.pulled
    assert "from" not in outcome
    json.dumps(outcome, allow_nan=False)


def test_a_refused_candidate_keeps_the_deployed_model_and_says_why():
    reasons = ["logloss: 0.45 is not below the deployed 0.43", "accuracy: under the floor 0.6"]
    # The promotion was skipped by the branch: it left no XCom.
    outcome, _ = outcome_of({("g.gate", DECISION_KEY): decision(False, reasons)})
    assert outcome["promoted"] is False
    assert (outcome["version"], outcome["tags"], outcome["replaced"]) == (None, [], None)
    assert outcome["reasons"] == reasons
    assert outcome["sha"] == "x" * 40
    assert outcome["champion"] == CHAMPION


def test_how_the_candidate_was_made_comes_under_from():
    xcoms = {("g.gate", DECISION_KEY): decision(False, ["worse"]), ("g.start", "return_value"): STARTED}
    outcome, _ = outcome_of(xcoms, candidate_task_id="g.start")
    assert outcome["from"] == STARTED
    assert outcome["promoted"] is False


def test_a_promotion_that_wrote_nothing_still_counts_as_promoted():
    # A retry after a successful tag push: the model is on the stage, no new tag.
    released = {"version": "v0.2.0", "tags": [], "changed": False, "replaced": None}
    outcome, _ = outcome_of({("g.gate", DECISION_KEY): decision(True), ("g.promote", "return_value"): released})
    assert outcome["promoted"] is True
    assert (outcome["version"], outcome["tags"]) == ("v0.2.0", [])


def test_without_a_decision_or_a_release_nothing_is_promoted():
    outcome = release_outcome(FakeTaskInstance({}), "g.gate", "g.promote")
    assert outcome == {
        "promoted": False,
        "decision": "kept",
        "approval": None,
        "model": None,
        "stage": None,
        "sha": None,
        "version": None,
        "tags": [],
        "replaced": None,
        "reasons": [],
        "champion": None,
        "metrics": [],
    }


@pytest.mark.parametrize(
    ("answer", "released", "expected"),
    [
        ({"decision": "approved", "by": "ana", "at": "2026-12-05T10:00:00+00:00"}, {"version": "v0.2.0"}, "promoted"),
        ({"decision": "rejected", "by": "ana", "at": "2026-12-05T10:00:00+00:00"}, None, "rejected"),
        ({"decision": "timed_out", "by": None, "at": None}, None, "timed_out"),
        (None, None, "kept"),  # the gate refused: nobody was asked
    ],
)
def test_an_approval_s_answer_is_the_outcome_when_the_gate_passed(answer, released, expected):
    from airflow_provider_mlci.operators.approval import APPROVAL_KEY

    xcoms = {("g.gate", DECISION_KEY): decision(answer is not None), ("g.approve", APPROVAL_KEY): answer}
    xcoms[("g.promote", "return_value")] = released
    outcome = release_outcome(FakeTaskInstance(xcoms), "g.gate", "g.promote", "g.approve")
    assert (outcome["decision"], outcome["promoted"], outcome["approval"]) == (expected, released is not None, answer)


def test_the_start_operator_stores_its_arguments_and_checks_them_before_any_work():
    op = RefinementStartOperator(task_id="start", model="fraud-detector", branch="mlci/refine/{{ ts_nodash }}")
    assert (op.stage, op.base_model, op.rev) == ("prod", "models/base.pkl", "HEAD")
    assert set(op.template_fields) >= {"model", "stage", "base_model", "rev", "branch"}
    spec = op.spec()
    assert (spec.model, spec.stage, spec.base_model, spec.commit.branch) == (
        "fraud-detector",
        "prod",
        "models/base.pkl",
        "mlci/refine/{{ ts_nodash }}",
    )


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"model": "-x"}, "'-x' is not a valid model name"),
        ({"stage": "p r o d"}, "'p r o d' is not a valid stage name"),
        ({"base_model": "../base.pkl"}, "base_model='../base.pkl'"),
        ({"commit_author": "nobody"}, "author='nobody'"),
    ],
)
def test_bad_start_arguments_fail_naming_them_before_reaching_the_repository(kwargs, named):
    # No such connection: reaching for the repository would fail differently.
    args = {"task_id": "start", "model": "fraud-detector", "branch": "b", "dvc_conn_id": "no_such_connection"}
    op = RefinementStartOperator(**{**args, **kwargs})
    with pytest.raises(MlciConfigError, match=re.escape(named)):
        op.check_arguments()
    with pytest.raises(AirflowFailException, match=re.escape(named)):
        op.execute({})
