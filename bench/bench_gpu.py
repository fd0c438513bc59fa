"""Launch to running: our launch (AMI lookup, adopt-before-create, tags, boot script) and deferred wait
against a bare ``run_instances`` and boto3's ``instance_running`` waiter with the same delay.

Both arms talk to the same moto EC2 server over HTTP (instances come up at once there, so
what is measured is the API work and the first look, which is where our overhead lives); each
instance is terminated right after. Ours: ``GpuInstanceHook.launch_for_task`` then the
``GpuInstanceStateTrigger`` the create operator defers to, run to its event. Goal: our median
exceeds the baseline's by no more than one poll interval.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator

from bench._common import Comparison, check, interleave, samples, timed

POLL_INTERVAL = 1.0


def run(quick: bool) -> Iterator[Comparison]:
    from airflow_provider_mlci.testing.moto import moto_server

    repeats = samples(quick, full=15, quick_samples=3)
    with moto_server() as endpoint:
        yield from _compare(endpoint, repeats)


def _compare(endpoint: str, repeats: int) -> Iterator[Comparison]:
    import boto3

    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
    from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger

    saved = dict(os.environ)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "bench",
            "AWS_SECRET_ACCESS_KEY": "bench",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AIRFLOW_CONN_AWS_BENCH": json.dumps(
                {
                    "conn_type": "aws",
                    "login": "bench",
                    "password": "bench",
                    "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                }
            ),
        }
    )
    try:
        ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
        # The job base: a launch puts the agent's wheel beside the job's mailbox.
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="bench-jobs")
        ami = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
        spec = GpuInstanceSpec(gpu="t4", ami=ami)
        hook = GpuInstanceHook(aws_conn_id="aws_bench")

        def ours() -> float:
            run_id = f"bench-{uuid.uuid4().hex[:8]}"

            def launch_and_wait() -> None:
                instance = hook.launch_for_task(
                    spec, dag_id="bench", run_id=run_id, task_id="launch", job_base="s3://bench-jobs/mlci"
                )
                trigger = GpuInstanceStateTrigger(
                    instance_id=instance["instance_id"], aws_conn_id="aws_bench", poll_interval=POLL_INTERVAL
                )
                event = asyncio.run(_first_event(trigger))
                check(event.payload["status"] == "success", "bench_gpu", f"the trigger said {event.payload}")
                launched.append(instance["instance_id"])

            launched: list[str] = []
            seconds = timed(launch_and_wait)
            ec2.terminate_instances(InstanceIds=launched)
            return seconds

        def baseline() -> float:
            launched: list[str] = []

            def launch_and_wait() -> None:
                reply = ec2.run_instances(ImageId=ami, InstanceType="g4dn.xlarge", MinCount=1, MaxCount=1)
                instance_id = reply["Instances"][0]["InstanceId"]
                ec2.get_waiter("instance_running").wait(
                    InstanceIds=[instance_id], WaiterConfig={"Delay": POLL_INTERVAL, "MaxAttempts": 40}
                )
                launched.append(instance_id)

            seconds = timed(launch_and_wait)
            ec2.terminate_instances(InstanceIds=launched)
            return seconds

        ours(), baseline()  # warm both clients and the server
        mine, theirs = interleave(ours, baseline, repeats)
        yield Comparison(
            name="GPU launch to running (moto EC2 over HTTP)",
            ours=mine,
            baseline=theirs,
            baseline_name=f"run_instances + boto3 instance_running waiter, Delay={POLL_INTERVAL:.0f} s",
            delta_goal_ms=POLL_INTERVAL * 1000,
        )
        alive = ec2.describe_instances(Filters=[{"Name": "instance-state-name", "Values": ["pending", "running"]}])[
            "Reservations"
        ]
        check(not alive, "bench_gpu", "the benchmark left instances running")
    finally:
        os.environ.clear()
        os.environ.update(saved)


async def _first_event(trigger: object) -> object:
    async for event in trigger.run():  # type: ignore[attr-defined]
        return event
    raise AssertionError("the trigger ended without an event")
