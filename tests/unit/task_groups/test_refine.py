"""The refinement task group as the dag-processor builds it: tasks, wiring, trigger rules, templates."""

from __future__ import annotations

import re

import pendulum
import pytest
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, TriggerRule

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.dvc import DvcReproOperator, DvcWillItRunBranchOperator
from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator, GpuTerminateInstanceOperator
from airflow_provider_mlci.operators.model import ModelGateBranchOperator, ModelValidationOperator, PromoteModelOperator
from airflow_provider_mlci.operators.refine import RefinementStartOperator, ReleaseOutcomeOperator, RunRecordOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.operators.validation import DataDriftCheckOperator, DataValidationOperator
from airflow_provider_mlci.task_groups.refine import RefinementTaskGroup, compute_backend

RULES = {"logloss": {"direction": "lower", "floor": 0.8}}
CHECKED = {"dataset": "data/raw.csv", "schema": "schemas/raw.yaml", "drift": {"mode": "warn", "max_row_ratio": 3.0}}
INSTANCE = {"gpu": "t4", "spot": True}


def make_dag(**group_args):
    args = {"group_id": "refine", "model": "fraud-detector", "rules": RULES, "rev": "{{ params.rev }}", **group_args}
    with DAG(dag_id="refine_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        group = RefinementTaskGroup(**args)
    return dag, group


def upstream(dag, task_id: str) -> set[str]:
    return dag.get_task(f"refine.{task_id}").upstream_task_ids


class FakeTaskInstance:
    """A stub of the running task instance: ``xcom_pull`` answers from a dict of return values."""

    def __init__(self, values):
        self.values = values

    def xcom_pull(self, task_ids=None, key="return_value"):
        assert key == "return_value", key
        return self.values.get(task_ids)


def render(task, field: str, values) -> str:
    """The field as Airflow renders it (the DAG's Jinja environment: StrictUndefined, its filters)."""
    return task.render_template(getattr(task, field), {"ti": FakeTaskInstance(values)})


def test_local_wiring_runs_the_release_chain_in_order():
    dag, group = make_dag(compute="local", **CHECKED)
    kinds = {
        "validate_data": DataValidationOperator,
        "start": RefinementStartOperator,
        "drift": DataDriftCheckOperator,
        "refine": DvcReproOperator,
        "validate_model": ModelValidationOperator,
        "gate": ModelGateBranchOperator,
        "promote": PromoteModelOperator,
        "keep_deployed": EmptyOperator,
        "outcome": ReleaseOutcomeOperator,
        "report": MetricsReportOperator,
        "record": RunRecordOperator,
    }
    assert set(dag.task_ids) == {f"refine.{task}" for task in kinds}
    assert all(isinstance(dag.get_task(f"refine.{task}"), kind) for task, kind in kinds.items())
    assert group.compute == "local"
    assert upstream(dag, "validate_data") == set()
    assert upstream(dag, "start") == {"refine.validate_data"}
    assert upstream(dag, "drift") == {"refine.start"}
    assert upstream(dag, "refine") == {"refine.start", "refine.drift"}
    assert upstream(dag, "validate_model") == {"refine.refine"}
    assert upstream(dag, "gate") == {"refine.validate_model"}
    assert upstream(dag, "promote") == upstream(dag, "keep_deployed") == {"refine.gate"}
    assert upstream(dag, "outcome") == {"refine.promote", "refine.keep_deployed"}
    assert upstream(dag, "report") == {"refine.outcome"}
    assert upstream(dag, "record") == {"refine.report"}
    assert dag.get_task("refine.record").trigger_rule == TriggerRule.ALL_DONE
    assert dag.get_task("refine.record").cost_task_id is None
    assert dag.get_task("refine.report").include_tasks == (
        "refine.validate_data", "refine.drift", "refine.validate_model", "refine.gate", "refine.outcome"
    )  # fmt: skip

    refine = dag.get_task("refine.refine")
    # A skipped drift check (nothing deployed yet) must not skip the refinement; a failed one stops it.
    assert refine.trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert dag.get_task("refine.outcome").trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert dag.get_task("refine.report").trigger_rule == TriggerRule.ALL_DONE
    assert refine.compute == "local"
    assert refine.ec2 is None
    assert refine.commit_to == dag.get_task("refine.start").branch
    gate = dag.get_task("refine.gate")
    assert (gate.if_promote, gate.if_skip) == ("refine.promote", "refine.keep_deployed")
    outcome = dag.get_task("refine.outcome")
    assert (outcome.gate_task_id, outcome.promote_task_id, outcome.candidate_task_id) == (
        "refine.gate",
        "refine.promote",
        "refine.start",
    )
    assert dag.get_task("refine.promote").gate_task_id == "refine.gate"
    drift = dag.get_task("refine.drift")
    assert drift.skip_without_baseline is True
    assert (drift.mode, drift.max_row_ratio) == ("warn", 3.0)
    assert dag.get_task("refine.validate_data").rev == "{{ params.rev }}"
    assert dag.get_task("refine.start").rev == "{{ params.rev }}"


def test_without_schema_or_drift_start_comes_first_and_feeds_the_refinement():
    dag, _ = make_dag(compute="local")
    assert "refine.validate_data" not in dag.task_ids
    assert "refine.drift" not in dag.task_ids
    assert upstream(dag, "start") == set()
    assert upstream(dag, "refine") == {"refine.start"}


def test_ec2_wiring_launches_an_instance_only_when_a_stage_would_run_and_always_terminates_it():
    dag, group = make_dag(compute="ec2", instance=INSTANCE, pool="mlci_gpu", **CHECKED)
    plan = dag.get_task("refine.gpu.will_it_run")
    launch = dag.get_task("refine.gpu.launch")
    refine = dag.get_task("refine.gpu.refine")
    terminate = dag.get_task("refine.gpu.terminate")
    assert isinstance(plan, DvcWillItRunBranchOperator)
    assert isinstance(launch, GpuCreateInstanceOperator)
    assert isinstance(refine, DvcReproOperator)
    assert isinstance(terminate, GpuTerminateInstanceOperator)
    assert "refine.refine" not in dag.task_ids
    assert group.refine is refine
    assert dag.get_task("refine.record").cost_task_id == "refine.gpu.terminate"  # what the GPU work cost

    assert plan.upstream_task_ids == {"refine.start", "refine.drift"}
    assert plan.trigger_rule == TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
    assert plan.rev == refine.rev
    assert launch.upstream_task_ids == {"refine.gpu.will_it_run"}
    assert launch.is_setup
    assert refine.upstream_task_ids == {"refine.gpu.launch"}
    assert (refine.compute, refine.ec2.instance_task_id) == ("ec2", "refine.gpu.launch")
    assert refine.ec2.instance is None  # launched by the group, not by the task
    assert refine.pool == launch.pool == "mlci_gpu"
    assert terminate.is_teardown
    assert terminate.upstream_task_ids == {"refine.gpu.launch", "refine.gpu.refine"}
    assert terminate.create_task_id == "refine.gpu.launch"
    assert upstream(dag, "validate_model") == {"refine.gpu.refine"}
    assert "refine.gpu.refine" in dag.get_task("refine.validate_model").rev


def test_compute_none_reads_the_provider_setting_when_the_dag_is_parsed(monkeypatch):
    monkeypatch.delenv("AIRFLOW__MLCI__COMPUTE_BACKEND", raising=False)
    assert compute_backend() == "local"
    assert compute_backend("ec2") == "ec2"
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_BACKEND", "ec2")
    assert compute_backend() == "ec2"
    assert compute_backend("local") == "local"
    dag, group = make_dag(compute=None, instance=INSTANCE)
    assert group.compute == "ec2"
    assert dag.get_task("refine.gpu.refine").compute == "ec2"
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_BACKEND", "gpu")
    with pytest.raises(MlciConfigError, match=r"\[mlci\] compute_backend='gpu' is not one of"):
        make_dag(compute=None)


@pytest.mark.parametrize(
    ("group_args", "named"),
    [
        ({"compute": "gpu"}, "compute='gpu'"),
        ({"compute": "ec2"}, "the ec2 backend needs compute=Ec2Compute(instance="),
        ({"schema": "schemas/raw.yaml"}, "schema and drift need dataset"),
        ({"drift": {"mode": "warn"}}, "schema and drift need dataset"),
        ({"rules": {"logloss": {"direction": "sideways"}}}, "direction='sideways'"),
        ({"rules": {"logloss": {"flor": 0.8}}}, "unknown setting(s) flor"),
        ({"rules": {}}, "at least one metric rule"),
    ],
)
def test_bad_input_fails_when_the_dag_is_parsed(group_args, named):
    with pytest.raises(MlciConfigError, match=re.escape(named)):
        make_dag(**group_args)


STARTED = {"sha": "data0", "refine_sha": "refine1", "deployed": {"sha": "deployed0", "version": "v0.1.0"}}


@pytest.mark.parametrize(
    ("refined", "candidate"),
    [
        ({"sha": "refine1", "commit": {"branch": "b", "commit": "locked2", "created": True}}, "locked2"),
        ({"sha": "refine1", "commit": {"branch": "b", "commit": None, "created": False}}, "refine1"),
        ({"sha": "refine1", "commit": None}, "refine1"),
    ],
)
def test_the_candidate_is_the_commit_the_refinement_made_else_the_one_it_reproduced(refined, candidate):
    dag, _ = make_dag(compute="local", **CHECKED)
    values = {"refine.start": STARTED, "refine.refine": refined}
    assert render(dag.get_task("refine.refine"), "rev", values) == "refine1"
    assert render(dag.get_task("refine.validate_model"), "rev", values) == candidate
    assert render(dag.get_task("refine.gate"), "rev", values) == candidate
    assert render(dag.get_task("refine.promote"), "rev", values) == candidate
    assert render(dag.get_task("refine.report"), "rev", values) == candidate
    assert render(dag.get_task("refine.report"), "baseline_rev", values) == "deployed0"
    assert render(dag.get_task("refine.drift"), "rev", values) == "data0"
    assert render(dag.get_task("refine.drift"), "baseline_rev", values) == "deployed0"


def test_with_nothing_deployed_drift_has_no_baseline_and_the_report_compares_with_the_data_commit():
    dag, _ = make_dag(compute="local", **CHECKED)
    started = {**STARTED, "deployed": None, "refine_sha": "data0"}
    values = {"refine.start": started, "refine.refine": {"sha": "data0", "commit": None}}
    assert render(dag.get_task("refine.drift"), "baseline_rev", values) == ""
    assert render(dag.get_task("refine.report"), "baseline_rev", values) == "data0"


def test_the_report_falls_back_to_the_refinement_commit_when_the_refinement_left_no_result():
    # Skipped (ec2: DVC said no stage would run) or failed: the report still renders, whatever happened.
    dag, _ = make_dag(compute="ec2", instance=INSTANCE, **CHECKED)
    values = {"refine.start": STARTED, "refine.gpu.refine": None}
    assert render(dag.get_task("refine.report"), "rev", values) == "refine1"
    assert render(dag.get_task("refine.gpu.will_it_run"), "rev", values) == "refine1"


def test_the_default_branch_is_one_per_run_named_after_its_date():
    dag, _ = make_dag(compute="local")
    start = dag.get_task("refine.start")
    logical = pendulum.datetime(2026, 11, 2, 2, tz="UTC")

    class DagRun:
        def __init__(self, logical_date, run_after):
            self.logical_date, self.run_after = logical_date, run_after

    scheduled = start.render_template(start.branch, {"dag_run": DagRun(logical, logical.add(minutes=5))})
    assert scheduled == "mlci/refine/20261102T020000"
    # Runs triggered by an asset event have no logical date.
    on_event = start.render_template(start.branch, {"dag_run": DagRun(None, logical.add(minutes=5))})
    assert on_event == "mlci/refine/20261102T020500"
    assert dag.get_task("refine.refine").commit_to == start.branch


def test_an_approval_sits_between_a_passing_gate_and_the_promotion():
    from datetime import timedelta

    from airflow_provider_mlci.config import Approval
    from airflow_provider_mlci.operators.approval import ReleaseApprovalOperator

    dag, _ = make_dag(approval={"timeout": timedelta(minutes=30)}, stage_order=("staging", "prod"))
    approve = dag.get_task("refine.approve")
    assert isinstance(approve, ReleaseApprovalOperator)
    assert approve.response_timeout == timedelta(minutes=30)
    assert (approve.options, approve.defaults) == (["Approve", "Reject"], None)  # no default: a timeout is said
    assert dag.get_task("refine.gate").if_promote == "refine.approve"
    assert upstream(dag, "approve") == {"refine.gate"}
    assert upstream(dag, "promote") == {"refine.approve"}
    outcome = dag.get_task("refine.outcome")
    assert outcome.approval_task_id == "refine.approve"
    # Reject or timeout skips the promotion, and the gate's branch skipped keep_deployed: the outcome still runs.
    assert outcome.trigger_rule == TriggerRule.NONE_FAILED
    promote = dag.get_task("refine.promote")
    assert promote.stage_order == ("staging", "prod")
    assert [asset.uri for asset in promote.outlets] == ["x-mlci-model://fraud-detector/prod"]
    plain, _ = make_dag()
    assert "refine.approve" not in plain.task_ids
    assert plain.get_task("refine.gate").if_promote == "refine.promote"
    with pytest.raises(MlciConfigError, match="approval="):
        make_dag(approval="yes")
    with pytest.raises(MlciConfigError, match="unexpected keyword argument 'timout'"):
        make_dag(approval={"timout": 3})
    assert Approval.of(True) == Approval()


def test_notifiers_are_keyed_by_outcome_and_checked_when_the_dag_is_parsed():
    from airflow.sdk import BaseNotifier

    class Note(BaseNotifier):
        def notify(self, context):
            pass

    note = Note()
    dag, _ = make_dag(notifiers={"promoted": note, "failed": [note, note]})
    assert dag.get_task("refine.record").notifiers == {"promoted": [note], "failed": [note, note]}
    with pytest.raises(MlciConfigError, match=r"notifiers: unknown outcome\(s\) released"):
        make_dag(notifiers={"released": note})
