"""Compute and Ec2Compute: what operators and task groups accept for ``compute``, checked at parse time."""

from __future__ import annotations

import re

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_mlci.config import Compute, Ec2Compute, resolve_compute
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.operators.sweep import SweepTrialOperator


def test_compute_accepts_the_enum_its_strings_and_an_ec2_compute(monkeypatch):
    assert Compute.of("local") is Compute.LOCAL
    assert Compute.of(Compute.EC2) is Compute.EC2
    assert Compute.of(Ec2Compute()) is Compute.EC2
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_BACKEND", "ec2")
    assert Compute.of(None) is Compute.EC2  # None: the provider setting
    with pytest.raises(MlciConfigError, match=re.escape("compute='gpu' is not one of 'local', 'ec2'.")):
        Compute.of("gpu")


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"poll_interval": 0}, "poll_interval=0"),
        ({"heartbeat_timeout": -5}, "heartbeat_timeout=-5"),
        ({"start_timeout": "long"}, "start_timeout='long'"),
        ({"poll_interval": True}, "poll_interval=True"),
        ({"instance": {"gpu": "t4", "cores": 8}}, "cores"),
    ],
)
def test_a_bad_ec2_compute_fails_when_it_is_written(kwargs, named):
    with pytest.raises(MlciConfigError, match=re.escape(named)):
        Ec2Compute(**kwargs)


def test_an_ec2_compute_gives_its_spec_and_a_heartbeat_often_enough():
    ec2 = Ec2Compute(instance={"gpu": "t4", "region": "eu-west-1"}, heartbeat_timeout=30)
    assert ec2.spec == GpuInstanceSpec(gpu="t4", region="eu-west-1")
    assert ec2.heartbeat_interval == 5.0
    assert Ec2Compute(heartbeat_timeout=3).heartbeat_interval == 1.0
    assert Ec2Compute().heartbeat_interval == 10.0


def test_each_operator_gets_its_own_copy_whose_fields_airflow_renders():
    shared = Ec2Compute(instance_task_id="{{ params.launcher }}", job_base="s3://{{ params.bucket }}/jobs")
    with DAG("config_render", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        first = DvcReproOperator(task_id="first", compute=shared)
        second = DvcReproOperator(task_id="second", compute=shared)
    assert first.compute is Compute.EC2
    assert first.ec2 == shared
    assert first.ec2 is not shared
    assert second.ec2 is not first.ec2
    first.render_template_fields({"params": {"launcher": "gpu.launch", "bucket": "b1"}})
    assert (first.ec2.instance_task_id, first.ec2.job_base) == ("gpu.launch", "s3://b1/jobs")
    assert shared.instance_task_id == "{{ params.launcher }}"  # the DAG's object is untouched
    assert second.ec2.job_base == "s3://{{ params.bucket }}/jobs"


def test_the_old_keywords_still_work_with_a_deprecation_warning():
    with pytest.warns(
        DeprecationWarning, match=r"give compute=Ec2Compute\(aws_conn_id=\.\.\., instance_task_id=\.\.\."
    ):
        op = DvcReproOperator(
            task_id="train", compute="ec2", instance_task_id="gpu.launch", aws_conn_id="aws_gpu", poll_interval=2
        )
    assert op.compute is Compute.EC2
    assert op.ec2 == Ec2Compute(instance_task_id="gpu.launch", aws_conn_id="aws_gpu", poll_interval=2)
    with pytest.warns(DeprecationWarning, match="start_timeout beside compute= is deprecated"):
        trial = SweepTrialOperator(
            task_id="trial",
            trial={"name": "t", "params": {}},
            compute=Ec2Compute(instance={"gpu": "t4"}),
            start_timeout=60,
        )
    assert trial.ec2 == Ec2Compute(instance={"gpu": "t4"}, start_timeout=60)  # beside an Ec2Compute: replaces its field


def test_an_instance_with_local_compute_is_refused_and_nothing_is_left_for_the_operator():
    legacy = {"instance": {"gpu": "t4"}, "retries": 2}
    with pytest.raises(MlciConfigError, match=re.escape("instance given but compute='local'")):
        resolve_compute("local", legacy, owner="X")
    legacy = {"aws_conn_id": "aws_x", "retries": 2}
    with pytest.warns(DeprecationWarning, match="X: aws_conn_id beside compute="):
        assert resolve_compute("local", legacy, owner="X") == (Compute.LOCAL, None)
    assert legacy == {"retries": 2}  # the old keywords are taken out: BaseOperator would refuse them
