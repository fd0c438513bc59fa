from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.exceptions import GpuProvisioningError, MlciConfigError
from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
from airflow_provider_mlci.sensors.gpu import GpuInstanceStateSensor
from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger
from tests.helpers.moto_ec2 import AMI, assert_no_instance_left


@pytest.fixture
def hook(aws_moto_connection):
    hook = GpuInstanceHook(aws_conn_id=aws_moto_connection)
    yield hook
    assert_no_instance_left(hook.conn)


@pytest.fixture
def instance(hook):
    launched = hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="sensor", task_id="t", job_base="")
    yield launched["instance_id"]
    hook.terminate([launched["instance_id"]])


def sensor(instance_id: str, **kwargs) -> GpuInstanceStateSensor:
    return GpuInstanceStateSensor(
        task_id="wait", instance_id=instance_id, aws_conn_id="aws_moto", poll_interval=0.1, **kwargs
    )


def test_the_constructor_only_stores_and_checks_the_target():
    op = sensor("{{ ti.xcom_pull(task_ids='launch', key='instance')['instance_id'] }}", timeout=30)
    assert tuple(op.template_fields) == ("instance_id", "target_state", "region_name")
    assert op.poke_interval == 0.1
    assert op.deferrable is True
    with pytest.raises(MlciConfigError, match="'rebooted'"):
        sensor("i-1", target_state="rebooted")


def test_a_state_already_reached_returns_without_deferring(instance):
    assert sensor(instance).execute({}) == "running"


def test_it_pokes_once_then_defers(instance):
    op = sensor(instance, target_state="terminated", timeout=30)
    with pytest.raises(TaskDeferred) as info:
        op.execute({})
    trigger = info.value.trigger
    assert isinstance(trigger, GpuInstanceStateTrigger)
    assert (trigger.instance_id, trigger.target_state, trigger.poll_interval, trigger.timeout) == (
        instance,
        "terminated",
        0.1,
        30,
    )
    assert op.execute_complete({}, {"status": "success", "state": "terminated"}) == "terminated"
    with pytest.raises(AirflowSensorTimeout):
        op.execute_complete({}, {"status": "timeout", "state": "running", "message": "slow"})
    with pytest.raises(GpuProvisioningError, match="boom"):
        op.execute_complete({}, {"status": "error", "state": None, "message": "boom"})


def test_a_state_that_can_no_longer_be_reached_fails_without_retries(instance, hook):
    hook.terminate([instance])
    with pytest.raises(AirflowFailException, match=f"{instance} is (shutting-down|terminated)"):
        sensor(instance).execute({})
    with pytest.raises(AirflowFailException, match="can no longer become running"):
        sensor(instance).execute_complete({}, {"status": "failed", "state": "terminated"})


def test_poke_mode_looks_without_deferring(instance, hook):
    op = sensor(instance, target_state="terminated", deferrable=False)
    assert op.poke({}) is False
    hook.terminate([instance])
    hook.wait_for_state(instance, "terminated", poll_interval=0.1, timeout=10)
    assert op.poke({}) is True
