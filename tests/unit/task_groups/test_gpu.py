"""GpuRunTaskGroup's wiring: launch (setup) >> the work >> terminate (teardown), and the work's compute."""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.config import Compute, Ec2Compute
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.task_groups.gpu import GpuRunTaskGroup


def test_the_work_runs_on_the_groups_instance_between_its_launch_and_its_teardown():
    start = pendulum.datetime(2026, 1, 1, tz="UTC")
    with (
        DAG("gpu_group_shape", schedule=None, start_date=start) as dag,
        GpuRunTaskGroup(group_id="gpu", spec=GpuInstanceSpec(gpu="t4"), aws_conn_id="aws_gpu") as gpu,
    ):
        train = DvcReproOperator(task_id="train", targets=["train"], compute=gpu.compute(poll_interval=2))
    assert gpu.compute() == Ec2Compute(instance_task_id="gpu.launch", aws_conn_id="aws_gpu")
    assert train.compute is Compute.EC2
    assert train.ec2 == Ec2Compute(instance_task_id="gpu.launch", aws_conn_id="aws_gpu", poll_interval=2)
    train.check_arguments()  # the instance task is named: nothing missing
    assert train.upstream_task_ids == {"gpu.launch"}
    terminate = dag.get_task("gpu.terminate")
    assert terminate.is_teardown
    assert terminate.upstream_task_ids == {"gpu.launch", "gpu.train"}
    assert terminate.aws_conn_id == "aws_gpu"
