"""Training on a GPU instance, for real: moto's EC2 and S3 over HTTP, the agent as a real process.

The instance emulator (tests/helpers/ec2_instances.py) plays the machine: when moto reports one
of our instances running it starts the agent command found in the instance's user data as a
local process (the test's AWS keys stand in for the instance profile), and stops it when the
instance is terminated. Everything else is the real path: the DAG, the triggerer's wait, the
job bundle and mailbox in S3, DVC pulling from and pushing to the S3 remote.
"""

from __future__ import annotations

import json
import os

import boto3

from tests.conftest import EXAMPLE_DAGS
from tests.helpers.flagships import GPU_TRAINING_STATES
from tests.helpers.gpu_runs import ACCESS_KEY, SECRET_KEY, ours_alive

DAG_ID = "example_gpu_training"
DAG_FILE = EXAMPLE_DAGS / "example_gpu_training.py"


def s3_keys(endpoint: str, url: str) -> set[str]:
    """Every key under an ``s3://bucket/prefix`` URL, relative to the prefix."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        keys |= {obj["Key"].removeprefix(f"{prefix}/") for obj in page.get("Contents", [])}
    return keys


def test_training_runs_on_the_instance_and_the_instance_is_gone(run_dag, gpu_setup, moto_endpoint, capfd, airflow_home):
    from tests.helpers.ec2_instances import InstanceEmulator

    project = gpu_setup
    before = s3_keys(moto_endpoint, project.dvc_remote_url)
    # The instance installs the agent as its boot script does: the worker's own wheel, without Airflow.
    with InstanceEmulator(moto_endpoint, from_wheel=True) as machines:
        record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"})
        launched = list(machines.agents)
        wheels = dict(machines.wheels)
    out = capfd.readouterr().out
    assert record.state == "success", out[-4000:]
    assert record.task_states == GPU_TRAINING_STATES
    result = record.xcom["gpu.train"]
    instance = record.xcom["gpu.launch"]
    # One instance for this run (an earlier test on this worker may have left moto others, now terminated).
    assert instance["instance_id"] in launched, launched
    assert wheels[instance["instance_id"]]["url"].startswith(f"{instance['mailbox']}/agent/"), wheels
    assert result["compute"]["backend"] == "ec2"
    assert result["compute"]["instance_id"] == instance["instance_id"]
    assert result["sha"] == project.head()
    assert result["stages"] == {"prepare": "ran", "train": "ran"}
    assert result["pushed"] is True
    # The model the instance trained is on the DVC remote, with the run-cache.
    added = s3_keys(moto_endpoint, project.dvc_remote_url) - before
    assert any(name.startswith("runs/") for name in added)
    assert any(name.startswith("files/md5/") for name in added)
    # The instance's log reached the task log.
    assert "[instance]" in out
    assert "Running stage 'train'" in out
    # No instance of ours is left.
    assert ours_alive(moto_endpoint) == []
    # The connection's keys appear nowhere: task output, XCom, user data.
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    user_data = ec2.describe_instance_attribute(InstanceId=instance["instance_id"], Attribute="userData")
    seen = out + json.dumps(record.xcom) + json.dumps(user_data, default=str)
    from airflow.models.renderedtifields import RenderedTaskInstanceFields
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = session.query(RenderedTaskInstanceFields).filter_by(dag_id=DAG_ID, run_id=record.run_id).all()
        seen += json.dumps([row.rendered_fields for row in rows], default=str)
    assert rows
    for log_file in (airflow_home / "logs").rglob("*"):
        if log_file.is_file():
            seen += log_file.read_text(errors="replace")
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in seen


def test_nothing_is_launched_when_training_would_not_run(run_dag, gpu_setup, moto_endpoint, capfd):
    from tests.helpers.ec2_instances import InstanceEmulator

    project = gpu_setup
    # Train once locally and push: the lock file and the run-cache now answer for the stage.
    project.dvc("repro", "train")
    project.dvc("push", "--quiet", "--run-cache")
    project.commit_and_push("Train", dvc_push=False)
    with InstanceEmulator(moto_endpoint) as machines:
        record = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"})
        assert machines.agents == {}
    assert record.task_states["gpu.will_it_run"] == "success"
    assert record.task_states["gpu.launch"] == "skipped"
    assert record.task_states["gpu.train"] == "skipped"
    assert record.task_states["gpu.terminate"] == "skipped"
    assert ours_alive(moto_endpoint) == []
    assert os.environ["AIRFLOW__MLCI__COMPUTE_JOB_BASE"].startswith("s3://")
