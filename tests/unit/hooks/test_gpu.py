"""GpuInstanceHook on the Amazon provider's aws connection, against moto's server."""

from __future__ import annotations

import json

import pytest

from airflow_provider_mlci.core.compute import agent_dist, ec2
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.exceptions import GpuProvisioningError, MlciConfigError
from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
from airflow_provider_mlci.testing.moto import DLAMI_ID
from tests.helpers.moto_ec2 import (
    AMI,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    assert_no_instance_left,
    describe,
    live_instances,
    tags_of,
    user_data_of,
)


@pytest.fixture
def s3(moto_endpoint):
    """An S3 client on the moto server (which has the bucket ``jobs`` from the start)."""
    import boto3

    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def hook(aws_moto_connection):
    hook = GpuInstanceHook(aws_conn_id=aws_moto_connection)
    yield hook
    assert_no_instance_left(hook.conn)


@pytest.fixture
def secret_connection(monkeypatch, moto_endpoint):
    """An aws connection with known (fake) keys, to look for them where they must not be."""
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    value = {"conn_type": "aws", "login": FAKE_ACCESS_KEY, "password": FAKE_SECRET_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SECRETS", json.dumps(value))
    return "aws_secrets"


def test_clients_come_from_the_connection(hook, moto_endpoint):
    assert hook.conn.meta.endpoint_url == moto_endpoint
    assert hook.conn.meta.region_name == "us-east-1"
    assert hook.s3_client.meta.endpoint_url == moto_endpoint
    assert hook.ssm_client.meta.endpoint_url == moto_endpoint
    assert hook.s3_client.meta.region_name == "us-east-1"
    assert hook.s3_endpoint_url == moto_endpoint
    assert GpuInstanceHook(aws_conn_id="aws_moto", region_name="eu-west-1").conn.meta.region_name == "eu-west-1"


def test_launch_for_task_describes_the_instance_and_names_its_mailbox(hook, moto_endpoint):
    spec = GpuInstanceSpec(gpu="t4", ami=AMI, idle_timeout=120, max_lifetime=1800)
    instance = hook.launch_for_task(
        spec, dag_id="d", run_id="r1", task_id="gpu.launch", map_index=-1, job_base="s3://jobs/base/"
    )
    try:
        key = ec2.run_key("d", "r1", "gpu.launch", -1)
        assert instance["run_key"] == key
        assert instance["mailbox"] == f"s3://jobs/base/{key}"
        assert instance["region"] == "us-east-1"
        assert instance["group"] == "gpu.launch"
        assert instance["adopted"] is False
        assert instance["spec"] == spec.to_json()
        assert (instance["instance_type"], instance["market"]) == ("g4dn.xlarge", "on-demand")
        assert instance["expires_at"] == tags_of(describe(hook.conn, instance["instance_id"]))["mlci:expires_at"]
        json.dumps(instance, allow_nan=False)
        args = ec2.agent_args_from_user_data(user_data_of(hook.conn, instance["instance_id"]))
        assert args == [
            "--mailbox",
            f"s3://jobs/base/{key}",
            "--region",
            "us-east-1",
            "--idle-timeout",
            "120",
            "--endpoint-url",
            moto_endpoint,
        ]
        # The agent installs the worker's own code: the wheel beside the mailbox, without Airflow.
        wheel = ec2.agent_wheel_from_user_data(user_data_of(hook.conn, instance["instance_id"]))
        assert wheel["url"] == f"s3://jobs/base/{key}/agent/{agent_dist.wheel_name()}"
        assert [r.split("==")[0] for r in wheel["requirements"]] == list(agent_dist.AGENT_DISTRIBUTIONS)
        body = hook.s3_client.get_object(Bucket="jobs", Key=f"base/{key}/agent/{agent_dist.wheel_name()}")["Body"]
        assert body.read() == agent_dist.package_wheel()
        again = hook.launch_for_task(spec, dag_id="d", run_id="r1", task_id="gpu.launch", job_base="s3://jobs/base")
        assert again["adopted"] is True
        assert again["instance_id"] == instance["instance_id"]
        assert again["expires_at"] == instance["expires_at"]
    finally:
        hook.terminate([instance["instance_id"]])


def test_a_job_base_in_a_missing_bucket_fails_typed_before_anything_is_launched(hook):
    with pytest.raises(MlciConfigError, match=r"s3://no-such-bucket/jobs/.*/agent/.*\(NoSuchBucket\)"):
        hook.launch_for_task(
            GpuInstanceSpec(ami=AMI), dag_id="d", run_id="r9", task_id="t", job_base="s3://no-such-bucket/jobs"
        )
    assert live_instances(hook.conn) == []


def test_the_mailbox_defaults_to_the_provider_setting(hook, monkeypatch, s3):
    s3.create_bucket(Bucket="from-setting")
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_JOB_BASE", "s3://from-setting/jobs")
    instance = hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="r2", task_id="launch")
    hook.terminate([instance["instance_id"]])
    assert instance["mailbox"] == f"s3://from-setting/jobs/{instance['run_key']}"


def test_without_a_job_base_no_agent_is_started(hook, monkeypatch):
    monkeypatch.delenv("AIRFLOW__MLCI__COMPUTE_JOB_BASE", raising=False)
    instance = hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="r3", task_id="launch", job_base="")
    try:
        assert instance["mailbox"] is None
        assert ec2.agent_args_from_user_data(user_data_of(hook.conn, instance["instance_id"])) == []
    finally:
        hook.terminate([instance["instance_id"]])


def test_a_bad_job_base_is_refused_before_anything_launches(hook):
    with pytest.raises(MlciConfigError, match="not an S3 URL"):
        hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="r4", task_id="t", job_base="/tmp/jobs")


def test_without_an_ami_the_current_deep_learning_ami_is_used(hook):
    # moto's server offers the DLAMI in every region: airflow_provider_mlci.testing.moto registers it
    # in moto's image list before the server starts, so every region's EC2 backend loads it.
    assert hook.find_ami() == DLAMI_ID
    image = hook.conn.describe_images(ImageIds=[DLAMI_ID])["Images"][0]
    assert image["Name"] == "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20261120"
    instance = hook.launch_for_task(GpuInstanceSpec(), dag_id="d", run_id="r5", task_id="t", job_base="s3://jobs/x")
    hook.terminate([instance["instance_id"]])
    assert describe(hook.conn, instance["instance_id"])["ImageId"] == DLAMI_ID


#: A region no other test uses: the test below deregisters the Deep Learning AMIs there.
NO_DLAMI_REGION = "ap-southeast-2"


def test_without_an_ami_and_no_deep_learning_ami_in_the_region_nothing_launches(aws_moto_connection):
    hook = GpuInstanceHook(aws_conn_id=aws_moto_connection, region_name=NO_DLAMI_REGION)
    named = [{"Name": "name", "Values": ["Deep Learning*"]}]
    for image in hook.conn.describe_images(Owners=["amazon"], Filters=named)["Images"]:
        hook.conn.deregister_image(ImageId=image["ImageId"])
    assert hook.conn.describe_images(Owners=["amazon"], Filters=named)["Images"] == []
    with pytest.raises(GpuProvisioningError) as raised:
        hook.launch_for_task(GpuInstanceSpec(), dag_id="d", run_id="r5b", task_id="t", job_base="s3://jobs/x")
    assert str(raised.value) == (
        "No AMI found: the SSM parameter "
        "'/aws/service/deeplearning/ami/x86_64/base-oss-nvidia-driver-gpu-ubuntu-24.04/latest/ami-id' is not "
        "readable and no image named 'Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)*' is owned by "
        "['amazon']. Set GpuInstanceSpec.ami."
    )
    assert hook.conn.describe_instances()["Reservations"] == []


def test_a_replacement_is_on_demand_in_the_same_group_and_mailbox_and_adopted_on_a_retry(hook):
    spec = GpuInstanceSpec(spot=True, ami=AMI)
    first = hook.launch_for_task(spec, dag_id="d", run_id="r6", task_id="gpu.launch", job_base="s3://jobs/x")
    assert first["market"] == "spot"
    hook.terminate([first["instance_id"]])  # the spot reclaim
    assert hook.instance_state(first["instance_id"]) in ("shutting-down", "terminated")
    replacement = hook.launch_replacement(first, dag_id="d", run_id="r6", task_id="gpu.train", map_index=-1)
    try:
        assert replacement["instance_id"] != first["instance_id"]
        assert replacement["market"] == "on-demand"
        assert replacement["spec"]["spot"] is False
        assert replacement["mailbox"] == first["mailbox"]
        assert replacement["group"] == "gpu.launch"
        tags = tags_of(describe(hook.conn, replacement["instance_id"]))
        assert (tags["mlci:group"], tags["mlci:task_id"]) == ("gpu.launch", "gpu.train")
        args = ec2.agent_args_from_user_data(user_data_of(hook.conn, replacement["instance_id"]))
        assert args[:2] == ["--mailbox", first["mailbox"]]
        again = hook.launch_replacement(first, dag_id="d", run_id="r6", task_id="gpu.train", map_index=-1)
        assert again["adopted"] is True
        assert again["instance_id"] == replacement["instance_id"]
    finally:
        hook.terminate([replacement["instance_id"]])


def test_state_wait_and_terminate(hook):
    instance = hook.launch_for_task(GpuInstanceSpec(ami=AMI), dag_id="d", run_id="r7", task_id="t", job_base="")
    instance_id = instance["instance_id"]
    hook.wait_for_state(instance_id, "running", poll_interval=0.1, timeout=5)
    assert hook.instance_state(instance_id) == "running"
    assert hook.terminate([instance_id]) == [instance_id]
    hook.wait_for_state(instance_id, "terminated", poll_interval=0.1, timeout=10)
    assert hook.instance_state(instance_id) == "terminated"
    assert hook.instance_state("i-0123456789abcdef0") is None
    assert hook.terminate([]) == []


def test_no_credential_reaches_the_user_data(secret_connection, capfd, caplog):
    hook = GpuInstanceHook(aws_conn_id=secret_connection)
    instance = hook.launch_for_task(
        GpuInstanceSpec(ami=AMI), dag_id="d", run_id="r8", task_id="t", job_base="s3://jobs/x"
    )
    try:
        user_data = user_data_of(hook.conn, instance["instance_id"])
        seen = user_data + json.dumps(instance) + caplog.text + "".join(capfd.readouterr())
        assert FAKE_ACCESS_KEY not in seen
        assert FAKE_SECRET_KEY not in seen
        assert hook.get_credentials().access_key == FAKE_ACCESS_KEY  # the hook did use them
    finally:
        hook.terminate([instance["instance_id"]])
    assert_no_instance_left(hook.conn)
