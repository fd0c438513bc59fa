"""What happens to a GPU run when the instance misbehaves: silence, a spot reclaim.

Same real path as test_example_gpu_training (moto EC2/S3 over HTTP, the agent as a real
process started by the instance emulator, which stands in for the machine), with a DAG whose
training stage is slowed down so a fault lands in the middle of it. Every test ends with no
instance of ours left.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import boto3
import pytest

from tests.helpers.gpu_runs import ours_alive

DAG_ID = "gpu_faults"
SOURCE = """
import pendulum
from datetime import timedelta
from airflow.sdk import DAG
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.task_groups.gpu import GpuRunTaskGroup

with DAG(dag_id="gpu_faults", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    with GpuRunTaskGroup(group_id="gpu", spec=GpuInstanceSpec(gpu="t4", spot=True), aws_conn_id="aws_default") as gpu:
        DvcReproOperator(
            task_id="train", targets=["train"],
            compute=gpu.compute(poll_interval=0.5, heartbeat_timeout=HEARTBEAT),
            retries=RETRIES, retry_delay=timedelta(seconds=0),
        )
"""


@pytest.fixture
def slow_training(monkeypatch, moto_endpoint, s3_dvc_project, s3_bucket, dvc_connection, worker_cache, airflow_db):
    """The S3 demo project with a training stage that takes a few seconds more; connections and settings."""
    aws = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"endpoint_url": moto_endpoint}}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(aws))
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_JOB_BASE", f"s3://{s3_bucket}/jobs")
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(
        str(s3_dvc_project.remote),
        extra={"dvc_remote_url": s3_dvc_project.dvc_remote_url, "endpoint_url": moto_endpoint},
    )
    train = s3_dvc_project.work / "src" / "train.py"
    train.write_text(train.read_text() + "\nimport time\n\ntime.sleep(8)\n")
    s3_dvc_project.commit_and_push("Slow training", dvc_push=False)
    return s3_dvc_project


def when_training(machines, action) -> threading.Thread:
    """Call ``action(instance_id, agent)`` once the first agent's log shows the train stage running.

    The watch lasts until the action ran or the thread's ``stop`` event is set (after the DAG run):
    no fixed deadline, which a loaded machine can outlast before the instance even boots.
    """
    stop = threading.Event()

    def _watch() -> None:
        while not stop.is_set():
            for instance_id, agent in list(machines.agents.items()):
                if "Running stage 'train'" in agent.log():
                    action(instance_id, agent)
                    return
            time.sleep(0.2)

    thread = threading.Thread(target=_watch, daemon=True)
    thread.stop = stop
    thread.start()
    return thread


def job_lines(out: str) -> str:
    """What the trigger and the operator said about the remote job, for a failure message."""
    return "\n".join(line for line in out.splitlines() if "Job " in line or "job " in line)


def test_a_silent_instance_fails_the_task_and_is_terminated(run_dag, slow_training, moto_endpoint, capfd):
    from tests.helpers.ec2_instances import InstanceEmulator

    killed = []

    def kill_agent(instance_id, agent):
        os.killpg(agent.pid, signal.SIGSTOP)  # the machine hangs: no heartbeat, no status, still "running"
        killed.append(instance_id)

    with InstanceEmulator(moto_endpoint) as machines:
        watcher = when_training(machines, kill_agent)
        # 12 s of silence: twice what the loaded parallel run was seen to need between two beats.
        record = run_dag(DAG_ID, source=SOURCE.replace("RETRIES", "0").replace("HEARTBEAT", "12"))
        watcher.stop.set()
        watcher.join(5)
    out = capfd.readouterr().out
    assert killed, "the training never started:\n" + job_lines(out)
    assert record.state == "failed"
    assert record.task_states["gpu.train"] == "failed"
    assert record.task_states["gpu.terminate"] == "success"
    # (dag.test() prints what the triggerer logs, not the resumed task's own log.)
    assert "heartbeat_timeout no heartbeat from job" in out
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    state = ec2.describe_instances(InstanceIds=killed)["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state in ("shutting-down", "terminated")
    assert ours_alive(moto_endpoint) == []


def job_states(endpoint: str, bucket: str) -> list[str]:
    """The end state of every job the agents reported in the S3 mailboxes (``status.json``)."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="jobs/").get("Contents", [])]
    return sorted(
        json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())["state"]
        for key in keys
        if key.endswith("/status.json")
    )


def test_a_spot_notice_pushes_a_checkpoint_and_the_retry_finishes_on_demand(
    run_dag, slow_training, moto_endpoint, s3_bucket, capfd
):
    from tests.helpers.ec2_instances import InstanceEmulator

    noticed = []

    def reclaim(instance_id, agent):
        machines.spot_notice(instance_id)
        noticed.append(instance_id)

    with InstanceEmulator(moto_endpoint) as machines:
        watcher = when_training(machines, reclaim)
        # A generous heartbeat limit: this test is about the spot notice, not a hang (seen: 6 s under load).
        record = run_dag(DAG_ID, source=SOURCE.replace("RETRIES", "1").replace("HEARTBEAT", "60"))
        watcher.stop.set()
        watcher.join(5)
        launched = list(machines.agents)
    out = capfd.readouterr().out
    assert noticed, "the training never started:\n" + job_lines(out)
    assert record.state == "success", job_lines(out)
    assert record.task_states["gpu.train"] == "success"
    assert record.task_states["gpu.terminate"] == "success"
    # The first try was interrupted (retryable), the second ran on a replacement instance. (Read
    # from the mailboxes: what dag.test() prints of the triggerer's log was seen to lack the line.)
    assert job_states(moto_endpoint, s3_bucket) == ["interrupted", "succeeded"], job_lines(out)
    assert len(launched) == 2
    assert launched[0] == noticed[0]
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    replacement = ec2.describe_instances(InstanceIds=[launched[1]])["Reservations"][0]["Instances"][0]
    assert replacement.get("InstanceLifecycle") != "spot"  # spot_fallback_on_demand
    result = record.xcom["gpu.train"]
    assert result["compute"]["instance_id"] == launched[1]
    # The checkpoint: prepare finished before the notice, so the retry restored it from the run-cache.
    assert result["stages"] == {"prepare": "restored", "train": "ran"}
    assert ours_alive(moto_endpoint) == []
