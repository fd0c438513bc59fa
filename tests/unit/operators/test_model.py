"""Arguments of the model operators: stored as given, refused before any checkout when they cannot work."""

from __future__ import annotations

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mlci.operators.model import (
    ModelGateBranchOperator,
    ModelGateOperator,
    ModelValidationOperator,
    PromoteModelOperator,
    RollbackModelOperator,
)

RULES = {"logloss": {"direction": "lower"}}


def test_constructors_only_store_their_arguments():
    validate = ModelValidationOperator(task_id="v", model="fraud", rev="{{ params.rev }}", contract={"x": 1})
    assert (validate.model, validate.rev, validate.contract, validate.code_paths) == (
        "fraud",
        "{{ params.rev }}",
        {"x": 1},
        ("src",),
    )
    gate = ModelGateBranchOperator(task_id="g", model="fraud", rules=RULES, if_promote="p", if_skip="s")
    assert (gate.stage, gate.allow_different_data) == ("prod", False)
    promote = PromoteModelOperator(task_id="p", model="fraud", gate_task_id="g")
    assert (promote.bump, promote.stage) == ("minor", "prod")
    assert set(promote.template_fields) >= {"model", "rev", "stage", "version"}


@pytest.mark.parametrize(
    ("op", "named"),
    [
        (ModelValidationOperator(task_id="t", model="fraud", model_format="onnx"), "model_format='onnx'"),
        (ModelValidationOperator(task_id="t", model=" "), "names no artifact"),
        (ModelValidationOperator(task_id="t", model="m", code_paths=["../outside"]), "../outside"),
        (ModelValidationOperator(task_id="t", model="m", thresholds=[0.8]), "thresholds must be a mapping"),
        (ModelGateOperator(task_id="t", model="fraud", rules={"auc": {"direction": "up"}}), "direction='up'"),
        (ModelGateOperator(task_id="t", model="fraud", rules={}), "at least one metric rule"),
        (ModelGateOperator(task_id="t", model="fraud", rules=RULES, stage="pr od"), "not a valid stage"),
        (PromoteModelOperator(task_id="t", model="fraud", version="2.0"), "'2.0' is not a semantic version"),
        (PromoteModelOperator(task_id="t", model="fraud", bump="large"), "bump='large'"),
        (PromoteModelOperator(task_id="t", model="-fraud"), "not a valid model name"),
        (RollbackModelOperator(task_id="t", model="fraud", expected_version="latest"), "'latest' is not a semantic"),
    ],
)
def test_arguments_that_cannot_work_fail_before_any_checkout(op, named):
    op.dvc_conn_id = "no_such_connection"  # reaching the connection would fail differently
    with pytest.raises(AirflowFailException, match=named):
        op.execute({})


def test_the_branching_gate_checks_its_rules_before_any_checkout():
    op = ModelGateBranchOperator(
        task_id="g", model="fraud", rules={"auc": {"floor": 0.5}}, if_promote="p", if_skip="s", dvc_conn_id="none"
    )
    with pytest.raises(AirflowFailException, match="needs a direction"):
        op.choose_branch({})
