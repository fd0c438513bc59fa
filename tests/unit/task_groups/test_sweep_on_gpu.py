"""A sweep whose trials run on GPU instances: the wiring, bad input, and the paths that end instances.

Instances are moto's (its EC2 server over HTTP); :class:`TaskInstanceStandIn` (named as such)
gives operators a task instance outside a DAG run. ``tests/integration/test_sweep_on_gpu.py``
runs the whole sweep on instances, agent included.
"""

from __future__ import annotations

from types import SimpleNamespace

import pendulum
import pytest
import yaml
from airflow.sdk import DAG

from airflow_provider_mlci.config import Ec2Compute
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.core.experiments.sweep import Trial
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.sweep import SweepTrialOperator
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup
from tests.helpers.moto_ec2 import AMI, state
from tests.helpers.task_instance import TaskInstanceStandIn

SPEC = GpuInstanceSpec(gpu="t4", ami=AMI, max_lifetime=3600)
START = pendulum.datetime(2026, 1, 1, tz="UTC")


def sweep_dag(**kwargs):
    with DAG("sweep_on_gpu_shape", schedule=None, start_date=START) as dag:
        group = SweepTaskGroup(group_id="sweep", space=["train.epochs=10,20"], objective="accuracy", **kwargs)
    return dag, group


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"compute": "ec2"}, r"compute=Ec2Compute\(...\) needs instance"),
        ({"compute": Ec2Compute(aws_conn_id="aws_gpu")}, r"compute=Ec2Compute\(...\) needs instance"),
        ({"compute": "local", "instance": SPEC}, "instance given but compute='local'"),
        ({"compute": "gpu", "instance": SPEC}, "compute='gpu' is not one of 'local', 'ec2'"),
        ({"compute": "ec2", "instance": {"gpu": "t4", "cores": 8}}, "cores"),
    ],
)
def test_bad_compute_fails_when_the_dag_is_parsed(kwargs, message):
    with pytest.raises(MlciConfigError, match=message):
        sweep_dag(**kwargs)


def test_trials_on_gpu_get_the_spec_and_a_teardown_that_terminates_their_instances():
    from airflow.serialization.serialized_objects import DagSerialization

    ec2 = Ec2Compute(instance=SPEC, aws_conn_id="aws_gpu", job_base="s3://jobs-bucket/sweeps")
    dag, group = sweep_dag(compute=ec2, parallel_trials=2)
    assert set(dag.task_dict) == {"sweep.generate", "sweep.trial", "sweep.leaderboard", "sweep.terminate"}
    trial = dag.task_dict["sweep.trial"]
    assert trial.partial_kwargs["compute"] == ec2
    assert group.compute == "ec2"
    assert trial.max_active_tis_per_dagrun == 2
    terminate = group.terminate
    assert terminate is dag.task_dict["sweep.terminate"]
    assert terminate.is_teardown
    assert terminate.trigger_rule == "all_done_setup_success"
    assert terminate.create_task_id == "sweep.trial"  # the trials launch under their own task id as mlci:group
    assert terminate.aws_conn_id == "aws_gpu"
    assert trial.downstream_task_ids == {"sweep.leaderboard"}
    assert dag.task_dict["sweep.leaderboard"].downstream_task_ids == {"sweep.terminate"}
    # A teardown is no leaf: `sweep >> next_task` waits for the leaderboard, as without instances.
    assert [task.task_id for task in group.get_leaves()] == ["sweep.leaderboard"]
    DagSerialization.to_dict(dag)  # serializable as the dag-processor stores it
    local, group = sweep_dag()
    assert "sweep.terminate" not in local.task_dict
    assert group.terminate is None
    assert "compute" not in local.task_dict["sweep.trial"].partial_kwargs


def test_the_teardown_terminates_every_trials_instance_of_the_run_and_no_other(aws_moto_connection, ec2c):
    """The trials deferred (no on_kill) and their ids never reached XCom: the tags find them."""
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

    dag, _ = sweep_dag(compute=Ec2Compute(instance=SPEC, aws_conn_id="aws_moto"))
    hook = GpuInstanceHook(aws_conn_id="aws_moto")
    launched = [
        hook.launch_for_task(SPEC, dag_id=dag.dag_id, run_id="run_1", task_id="sweep.trial", map_index=index)
        for index in (0, 1)
    ]
    other_run = hook.launch_for_task(SPEC, dag_id=dag.dag_id, run_id="run_2", task_id="sweep.trial", map_index=0)
    try:
        ti = TaskInstanceStandIn("sweep.terminate", dag_id=dag.dag_id, run_id="run_1")
        ended = dag.task_dict["sweep.terminate"].execute({"ti": ti})
        assert sorted(ended) == sorted(i["instance_id"] for i in launched)
        for instance in launched:
            assert state(ec2c, instance["instance_id"]) in ("shutting-down", "terminated")
        assert state(ec2c, other_run["instance_id"]) == "running"
    finally:
        ec2c.terminate_instances(InstanceIds=[other_run["instance_id"]])


def test_a_killed_trial_terminates_the_instance_it_launched(aws_moto_connection, ec2c):
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

    instance = GpuInstanceHook(aws_conn_id="aws_moto").launch_for_task(
        SPEC, dag_id="d", run_id="killed", task_id="sweep.trial", map_index=3
    )
    op = SweepTrialOperator(
        task_id="sweep.trial",
        trial={"name": "t", "params": {}},
        compute=Ec2Compute(instance=SPEC.to_json(), aws_conn_id="aws_moto"),
    )
    op.on_kill()  # nothing launched yet: nothing to do
    op._instance_ids = [instance["instance_id"]]
    op.on_kill()
    assert state(ec2c, instance["instance_id"]) in ("shutting-down", "terminated")
    assert op._instance_ids == []


def test_a_trial_on_gpu_checks_its_arguments_before_any_work():
    op = SweepTrialOperator(task_id="trial", trial={"name": "t", "params": {}}, compute="ec2")
    with pytest.raises(MlciConfigError, match=r"compute=Ec2Compute\(...\) needs instance"):
        op.check_arguments()


def test_params_are_set_as_dvc_exp_run_s_sets_them_and_files_outside_are_refused(tmp_path):
    from airflow_provider_mlci.core.experiments.remote import apply_params

    (tmp_path / "params.yaml").write_text("train:\n  lr: 0.3  # the rate\n  epochs: 5\n")
    (tmp_path / "other.yaml").write_text("seed: 1\n")
    workspace = SimpleNamespace(path=tmp_path)  # apply_params only reads the checkout's folder
    trial = Trial(name="t", params={"train.lr": 0.01, "other.yaml:seed": 7})
    assert apply_params(workspace, trial) == ["params.yaml", "other.yaml"]
    text = (tmp_path / "params.yaml").read_text()
    assert yaml.safe_load(text) == {"train": {"lr": 0.01, "epochs": 5}}
    assert "# the rate" in text  # DVC's own YAML round trip keeps comments
    assert (tmp_path / "other.yaml").read_text() == "seed: 7\n"
    with pytest.raises(MlciConfigError, match="outside the repository"):
        apply_params(workspace, Trial(name="t", params={"../up.yaml:seed": 1}))
    with pytest.raises(MlciConfigError, match=r"'missing\.yaml' is not in the repository"):
        apply_params(workspace, Trial(name="t", params={"missing.yaml:seed": 1}))
