from __future__ import annotations

import asyncio

import pytest

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger, unreachable
from tests.helpers.moto_ec2 import AMI, assert_no_instance_left


def make_trigger(**overrides):
    kwargs = {"instance_id": "i-0123456789abcdef0", "aws_conn_id": "aws_moto", "poll_interval": 0.1, **overrides}
    return GpuInstanceStateTrigger(**kwargs)


def test_serialize_round_trips_plain_values():
    trigger = make_trigger(target_state="terminated", region_name="eu-west-1", timeout=30.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_mlci.triggers.gpu.GpuInstanceStateTrigger"
    again = GpuInstanceStateTrigger(**kwargs)
    assert again.serialize() == (classpath, kwargs)
    assert all(isinstance(v, (str, float, int, type(None))) for v in kwargs.values())
    assert kwargs["started"] == trigger.started  # the time limit survives a triggerer restart


def test_dead_ends():
    assert unreachable("terminated", "running")
    assert unreachable("stopped", "running")
    assert not unreachable("pending", "running")
    assert not unreachable(None, "running")
    assert unreachable("shutting-down", "stopped")
    assert not unreachable("shutting-down", "terminated")


async def events(trigger, timeout: float = 20) -> list:
    async def collect():
        return [event async for event in trigger.run()]

    return await asyncio.wait_for(collect(), timeout)


@pytest.fixture
def instance(aws_moto_connection):
    hook = GpuInstanceHook(aws_conn_id=aws_moto_connection)
    launched = hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="trigger", task_id="t", job_base="")
    yield launched["instance_id"]
    hook.terminate([launched["instance_id"]])
    assert_no_instance_left(hook.conn)


def test_one_success_event_when_the_instance_runs(instance):
    fired = asyncio.run(events(make_trigger(instance_id=instance)))
    assert [e.payload["status"] for e in fired] == ["success"]
    assert fired[0].payload["state"] == "running"
    assert fired[0].payload["instance_id"] == instance


def test_one_failed_event_when_the_state_cannot_be_reached(instance, aws_moto_connection):
    GpuInstanceHook(aws_conn_id=aws_moto_connection).terminate([instance])
    fired = asyncio.run(events(make_trigger(instance_id=instance)))
    assert [e.payload["status"] for e in fired] == ["failed"]
    assert "cannot become running" in fired[0].payload["message"]


def test_one_timeout_event_when_time_is_up(instance):
    fired = asyncio.run(events(make_trigger(instance_id=instance, target_state="stopped", timeout=0.3)))
    assert [e.payload["status"] for e in fired] == ["timeout"]
    assert "still running after 0 s" in fired[0].payload["message"]


def test_an_instance_ec2_does_not_show_yet_is_waited_for(aws_moto_connection):
    fired = asyncio.run(events(make_trigger(timeout=0.3)))
    assert [(e.payload["status"], e.payload["state"]) for e in fired] == [("timeout", None)]


def test_importing_the_trigger_module_loads_no_aws_library():
    import subprocess
    import sys

    code = (
        "import sys, airflow.sdk; import airflow_provider_mlci.triggers.gpu, airflow_provider_mlci.sensors.gpu; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('boto3', 'botocore', 'aiobotocore') "
        "or m.startswith('airflow.providers.amazon.aws')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"
