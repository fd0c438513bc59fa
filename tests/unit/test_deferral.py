"""Our long waits defer by default, whatever ``[operators] default_deferrable`` says, and an
explicit ``deferrable=False`` (or ``default_args``) waits in the worker instead.

Airflow's ``default_deferrable`` is False out of the box: operators that took their default from
it would hold a worker slot for the hours a GPU job or new data can take.
"""

from __future__ import annotations

import threading
import time
from types import SimpleNamespace

import pendulum
import pytest
from airflow.providers.common.compat.sdk import TaskDeferred
from airflow.sdk import DAG

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator
from airflow_provider_mlci.sensors.dvc import DvcDataChangedSensor
from airflow_provider_mlci.sensors.gpu import GpuInstanceStateSensor
from airflow_provider_mlci.triggers.dvc import DvcDataChangedTrigger
from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger
from tests.helpers.demo_project import new_data
from tests.helpers.moto_ec2 import AMI, assert_no_instance_left

WAITERS = {
    GpuCreateInstanceOperator: {"spec": {"gpu": "t4", "ami": AMI}},
    GpuInstanceStateSensor: {"instance_id": "i-0123456789abcdef0"},
    DvcDataChangedSensor: {"targets": ["data/raw.csv"]},
}


@pytest.fixture(params=["False", "True"], ids=["default_deferrable=False", "default_deferrable=True"])
def default_deferrable(request, monkeypatch):
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", request.param)
    from airflow.configuration import conf

    assert conf.getboolean("operators", "default_deferrable") is (request.param == "True")
    return request.param


@pytest.mark.parametrize("cls", list(WAITERS), ids=lambda cls: cls.__name__)
@pytest.mark.usefixtures("default_deferrable")
def test_the_default_is_to_defer_whatever_airflow_says_and_false_is_honoured(cls):
    assert cls(task_id="wait", **WAITERS[cls]).deferrable is True
    assert cls(task_id="wait", deferrable=False, **WAITERS[cls]).deferrable is False
    with DAG(
        dag_id="defaults",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        default_args={"deferrable": False},
    ):
        assert cls(task_id="wait", **WAITERS[cls]).deferrable is False


# ------------------------------------------------------------------------- GPU instance sensor


@pytest.fixture
def gpu(aws_moto_connection):
    hook = GpuInstanceHook(aws_conn_id=aws_moto_connection)
    launched = hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="defer", task_id="t", job_base="")
    yield hook, launched["instance_id"]
    hook.terminate([launched["instance_id"]])
    assert_no_instance_left(hook.conn)


def later(seconds: float, action) -> threading.Thread:
    def run():
        time.sleep(seconds)
        action()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_the_instance_sensor_defers_by_default(gpu):
    _, instance_id = gpu
    op = GpuInstanceStateSensor(
        task_id="wait", instance_id=instance_id, target_state="terminated", aws_conn_id="aws_moto"
    )
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    assert isinstance(deferred.value.trigger, GpuInstanceStateTrigger)


def test_the_instance_sensor_with_deferrable_false_waits_in_the_worker(gpu, monkeypatch):
    hook, instance_id = gpu
    monkeypatch.setattr(GpuInstanceStateSensor, "defer", lambda *a, **k: pytest.fail("deferred"))
    op = GpuInstanceStateSensor(
        task_id="wait",
        instance_id=instance_id,
        target_state="terminated",
        aws_conn_id="aws_moto",
        deferrable=False,
        poll_interval=0.2,
        timeout=60,
    )
    looks: list[bool] = []
    real_poke = op.poke
    monkeypatch.setattr(op, "poke", lambda context: looks.append(real_poke(context)) or looks[-1])

    def terminate_once_it_looked() -> None:  # however slow the first look is (moto under load)
        deadline = time.monotonic() + 30
        while not looks and time.monotonic() < deadline:
            time.sleep(0.05)
        hook.terminate([instance_id])

    stopper = later(0.5, terminate_once_it_looked)
    assert op.execute({}) == "terminated"
    stopper.join()
    # it looked (still running), waited in this process, and looked again until it saw the end
    assert looks[0] is False
    assert looks[-1] is True
    assert len(looks) >= 2


# ------------------------------------------------------------------------- new-data sensor


def context_seeing(sensor: DvcDataChangedSensor, digest: str | None) -> dict:
    """A stand-in for the task context's asset accessors: the asset's last event carries ``digest``."""
    events = [SimpleNamespace(extra={"digest": digest})] if digest else []
    return {"inlet_events": {sensor.asset: events}, "outlet_events": {sensor.asset: SimpleNamespace(extra=None)}}


@pytest.fixture
def watched(dvc_project, dvc_connection, monkeypatch, worker_cache):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    return dvc_project


def test_the_data_sensor_defers_by_default_when_nothing_changed(watched):
    op = DvcDataChangedSensor(task_id="new_data", targets=["data/raw.csv"], rev="main")
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context_seeing(op, op._look()["digest"]))
    assert isinstance(deferred.value.trigger, DvcDataChangedTrigger)


@pytest.mark.timeout(300, method="thread")
def test_the_data_sensor_with_deferrable_false_waits_in_the_worker_for_new_data(watched, monkeypatch):
    monkeypatch.setattr(DvcDataChangedSensor, "defer", lambda *a, **k: pytest.fail("deferred"))
    op = DvcDataChangedSensor(
        task_id="new_data", targets=["data/raw.csv"], rev="main", deferrable=False, poke_interval=0.5, timeout=240
    )
    before = op._look()["digest"]
    context = context_seeing(op, before)
    writer = later(1.0, lambda: new_data(watched, seed=7))
    fired = op.execute(context)
    writer.join()
    assert fired["digest"] != before
    assert fired["sha"] == watched.head()
    assert context["outlet_events"][op.asset].extra["digest"] == fired["digest"]
