"""core/compute/ec2.py against moto's EC2 server (real HTTP), with two named stand-ins.

- moto never runs out of capacity: :class:`~tests.helpers.moto_ec2.ErrorInjection` makes chosen
  ``RunInstances`` calls fail with an EC2 error code, through a botocore event hook on the real
  client talking to moto.
- moto does not de-duplicate ``ClientToken``: the token tests use botocore's ``Stubber`` (a stub
  of EC2), which checks the exact parameters of each call.

Every test that launches ends by checking that no instance of ours is pending or running.
"""

from __future__ import annotations

import itertools
import re
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.stub import ANY, Stubber

from airflow_provider_mlci.core.compute import ec2
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.exceptions import GpuCapacityError, GpuProvisioningError, MlciConfigError
from tests.helpers.moto_ec2 import (
    AMI,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    ErrorInjection,
    describe,
    live_instances,
    tags_of,
    user_data_of,
)

_counter = itertools.count()


# ---------------------------------------------------------------------------------- fixtures


@pytest.fixture
def client(ec2c: Any) -> Any:
    return ec2c


def launch_args(spec: GpuInstanceSpec, *, task_id: str | None = None, now: datetime | None = None, **ids: Any):
    """Run key, tags and user data for a launch of ``spec`` by a test task (unique per call)."""
    task_id = task_id or f"launch_{next(_counter)}"
    dag_id, run_id, map_index = ids.get("dag_id", "gpu_dag"), ids.get("run_id", "manual__1"), ids.get("map_index", -1)
    key = ec2.run_key(dag_id, run_id, task_id, map_index)
    expires_at = ec2.expires_at_for(spec, now or datetime.now(UTC))
    tags = ec2.instance_tags(
        spec,
        dag_id=dag_id,
        run_id=run_id,
        task_id=task_id,
        map_index=map_index,
        run_key=key,
        group=task_id,
        expires_at=expires_at,
    )
    user_data = ec2.boot_script(spec, agent_args=["--mailbox", f"s3://jobs/x/{key}"], expires_at=expires_at)
    return {"run_key": key, "tags": tags, "user_data": user_data}


# ---------------------------------------------------------------------------------- identity


def test_the_run_key_is_stable_and_names_one_task_instance():
    key = ec2.run_key("dag", "run", "task", 3)
    assert key == ec2.run_key("dag", "run", "task", 3)
    assert len(key) == 32
    assert int(key, 16) >= 0
    others = {
        ec2.run_key("dag2", "run", "task", 3),
        ec2.run_key("dag", "run2", "task", 3),
        ec2.run_key("dag", "run", "task2", 3),
        ec2.run_key("dag", "run", "task", -1),
        ec2.run_key("da", "grun", "task", 3),
    }
    assert key not in others
    assert len(others) == 5


def test_client_tokens_are_deterministic_short_ascii_and_differ_by_generation_and_candidate():
    key = ec2.run_key("d" * 250, "r" * 250, "t" * 250, 1000)
    token = ec2.client_token(key, 0, 0)
    assert token == ec2.client_token(key, 0, 0)
    assert len(token) <= 64
    assert token.isascii()
    assert len({token, ec2.client_token(key, 1, 0), ec2.client_token(key, 0, 1)}) == 3
    assert len(ec2.client_token(key, 999, 999)) <= 64


# ---------------------------------------------------------------------------------- boot script


def test_the_boot_script_schedules_the_deadline_before_anything_else():
    spec = GpuInstanceSpec(max_lifetime=2 * 3600 + 1, startup_script="echo hello from the startup script")
    expires = datetime(2026, 5, 1, 12, tzinfo=UTC)
    script = ec2.boot_script(spec, agent_args=["--mailbox", "s3://b/p/k", "--idle-timeout", "300"], expires_at=expires)
    commands = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0] == "shutdown -h +121 'airflow-provider-mlci: max_lifetime reached'"
    assert commands[-1].startswith("shutdown -h now")
    assert script.index("echo hello from the startup script") < script.index("-m airflow_provider_mlci.agent")
    assert "2026-05-01T12:00:00Z" in script
    assert f"pip install --quiet {spec.agent_requirement}" in script
    markers = [line for line in script.splitlines() if line.startswith("# mlci-agent-args:")]
    assert len(markers) == 1
    assert ec2.agent_args_from_user_data(script) == ["--mailbox", "s3://b/p/k", "--idle-timeout", "300"]


def test_no_agent_arguments_start_no_agent():
    script = ec2.boot_script(GpuInstanceSpec(), agent_args=[], expires_at=datetime.now(UTC))
    assert "airflow_provider_mlci.agent" not in script
    assert ec2.agent_args_from_user_data(script) == []
    assert ec2.agent_args_from_user_data("#!/bin/bash\necho hi\n") == []


def test_arguments_are_shell_quoted():
    script = ec2.boot_script(
        GpuInstanceSpec(), agent_args=["--mailbox", "s3://b/p q;rm -rf /"], expires_at=datetime.now(UTC)
    )
    assert "'s3://b/p q;rm -rf /'" in script


@pytest.mark.parametrize(
    "where",
    [
        {"agent_args": ["--key", FAKE_ACCESS_KEY]},
        {"startup_script": f"export AWS_SECRET_ACCESS_KEY={FAKE_SECRET_KEY}"},
        {"startup_script": "aws configure set aws_secret_access_key x"},
        {"startup_script": "export AWS_SESSION_TOKEN=abc"},
        {"agent_requirement": "airflow-provider-mlci @ git+https://user:hunter22@example.com/x.git"},
    ],
)
def test_anything_that_looks_like_a_credential_is_refused(where):
    spec = GpuInstanceSpec(**{k: v for k, v in where.items() if k != "agent_args"})
    with pytest.raises(MlciConfigError, match="instance profile"):
        ec2.boot_script(spec, agent_args=where.get("agent_args", []), expires_at=datetime.now(UTC))


def test_a_boot_script_over_ec2s_limit_is_refused():
    with pytest.raises(MlciConfigError, match="16384"):
        ec2.boot_script(GpuInstanceSpec(startup_script="echo x\n" * 3000), agent_args=[], expires_at=datetime.now(UTC))


# ---------------------------------------------------------------------------------- launch


def test_a_launch_carries_the_spec_tags_and_deadline_to_ec2(client, moto_endpoint):
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1")
    profile = f"mlci-runner-{next(_counter)}"
    iam.create_instance_profile(InstanceProfileName=profile)
    subnet = client.describe_subnets(Filters=[{"Name": "availability-zone", "Values": ["us-east-1b"]}])["Subnets"][0]
    group = client.create_security_group(GroupName=f"mlci-{next(_counter)}", Description="t", VpcId=subnet["VpcId"])
    spec = GpuInstanceSpec(
        gpu="a10g",
        availability_zones=("us-east-1b",),
        hdd_size_gb=80,
        max_lifetime=3600,
        instance_profile=profile,
        subnet_id=subnet["SubnetId"],
        security_group_ids=(group["GroupId"],),
        tags={"team": "fraud"},
        startup_script="nvidia-smi",
    )
    args = launch_args(spec, task_id="train_launch", dag_id="nightly", run_id="scheduled__2026-05-01", map_index=2)
    result = ec2.launch(client, spec, ami=AMI, **args)
    try:
        assert result.adopted is False
        assert result.attempts == []
        assert (result.instance_type, result.availability_zone, result.market) == (
            "g5.xlarge",
            "us-east-1b",
            "on-demand",
        )
        instance = describe(client, result.instance_id)
        assert instance["InstanceType"] == "g5.xlarge"
        assert instance["ImageId"] == AMI
        assert instance["Placement"]["AvailabilityZone"] == "us-east-1b"
        assert instance["SubnetId"] == subnet["SubnetId"]
        assert group["GroupId"] in [g["GroupId"] for g in instance["SecurityGroups"]]
        assert instance["IamInstanceProfile"]["Arn"].endswith(f"/{profile}")
        assert instance["MetadataOptions"]["HttpTokens"] == "required"
        assert "InstanceLifecycle" not in instance
        shutdown = client.describe_instance_attribute(
            InstanceId=result.instance_id, Attribute="instanceInitiatedShutdownBehavior"
        )
        assert shutdown["InstanceInitiatedShutdownBehavior"]["Value"] == "terminate"
        assert user_data_of(client, result.instance_id) == args["user_data"]
        tags = tags_of(instance)
        key = ec2.run_key("nightly", "scheduled__2026-05-01", "train_launch", 2)
        assert {k: v for k, v in tags.items() if k != "mlci:expires_at"} == {
            "mlci:owner": "airflow-provider-mlci",
            "mlci:dag_id": "nightly",
            "mlci:run_id": "scheduled__2026-05-01",
            "mlci:task_id": "train_launch",
            "mlci:map_index": "2",
            "mlci:run_key": key,
            "mlci:group": "train_launch",
            "Name": "mlci-nightly-train_launch",
            "team": "fraud",
        }
        expires = datetime.fromisoformat(tags["mlci:expires_at"].replace("Z", "+00:00"))
        assert timedelta(minutes=59) < expires - datetime.now(UTC) <= timedelta(hours=1)
        volumes = client.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [result.instance_id]}])[
            "Volumes"
        ]
        assert [v["Size"] for v in volumes] == [80]
        assert tags_of(volumes[0])["mlci:run_key"] == key
    finally:
        ec2.terminate(client, [result.instance_id])


def test_a_second_launch_for_the_same_task_adopts_the_first_instance(client):
    spec = GpuInstanceSpec(ami=AMI)
    args = launch_args(spec)
    first = ec2.launch(client, spec, **args)
    second = ec2.launch(client, spec, **args)
    try:
        assert second.adopted is True
        assert second.instance_id == first.instance_id
        assert [i["InstanceId"] for i in live_instances(client, **{"mlci:run_key": args["run_key"]})] == [
            first.instance_id
        ]
    finally:
        ec2.terminate(client, [first.instance_id])
    third = ec2.launch(client, spec, **args)  # the first is gone (run cleared after teardown): a new one
    try:
        assert third.adopted is False
        assert third.instance_id != first.instance_id
    finally:
        ec2.terminate(client, [third.instance_id])


def _stubbed_client() -> Any:
    return boto3.client("ec2", region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="y")


def _instance(instance_id: str, state: str = "pending") -> dict[str, Any]:
    return {
        "InstanceId": instance_id,
        "InstanceType": "g4dn.xlarge",
        "Placement": {"AvailabilityZone": "us-east-1a"},
        "State": {"Name": state, "Code": 0},
    }


def test_a_retry_sends_the_same_client_token_stub():
    """Stub (botocore Stubber): real EC2 returns the first instance for a repeated token; moto does not."""
    spec = GpuInstanceSpec(ami=AMI)
    args = launch_args(spec)
    token = ec2.client_token(args["run_key"], 0, 0)
    client = _stubbed_client()
    stub = Stubber(client)
    for _ in range(2):  # two tries; the instance is not visible to DescribeInstances yet either time
        stub.add_response("describe_instances", {"Reservations": []}, {"Filters": ANY})
        expected = {
            "ImageId": AMI,
            "InstanceType": "g4dn.xlarge",
            "MinCount": 1,
            "MaxCount": 1,
            "ClientToken": token,
            "UserData": args["user_data"],
            "InstanceInitiatedShutdownBehavior": "terminate",
            "BlockDeviceMappings": ANY,
            "MetadataOptions": ANY,
            "TagSpecifications": ANY,
        }
        stub.add_response("run_instances", {"Instances": [_instance("i-0000000000000aaaa")]}, expected)
    with stub:
        first = ec2.launch(client, spec, **args)
        second = ec2.launch(client, spec, **args)
    stub.assert_no_pending_responses()
    assert first.instance_id == second.instance_id == "i-0000000000000aaaa"
    assert token == f"mlci-{args['run_key']}-g0-c0"


def test_a_token_that_returns_a_terminated_instance_starts_the_next_generation_stub():
    """Stub (botocore Stubber): the run was cleared after its teardown; EC2 answers the old token with the dead
    instance."""
    spec = GpuInstanceSpec(ami=AMI)
    args = launch_args(spec)
    client = _stubbed_client()
    stub = Stubber(client)
    stub.add_response("describe_instances", {"Reservations": []}, {"Filters": ANY})
    stub.add_response(
        "run_instances",
        {"Instances": [_instance("i-00000000000000old", "terminated")]},
        {
            **{k: ANY for k in ("ImageId", "InstanceType", "MinCount", "MaxCount", "UserData")},
            **{k: ANY for k in ("InstanceInitiatedShutdownBehavior", "BlockDeviceMappings", "MetadataOptions")},
            "TagSpecifications": ANY,
            "ClientToken": ec2.client_token(args["run_key"], 0, 0),
        },
    )
    stub.add_response(
        "run_instances",
        {"Instances": [_instance("i-00000000000000new")]},
        {
            **{k: ANY for k in ("ImageId", "InstanceType", "MinCount", "MaxCount", "UserData")},
            **{k: ANY for k in ("InstanceInitiatedShutdownBehavior", "BlockDeviceMappings", "MetadataOptions")},
            "TagSpecifications": ANY,
            "ClientToken": ec2.client_token(args["run_key"], 1, 0),
        },
    )
    with stub:
        result = ec2.launch(client, spec, **args)
    stub.assert_no_pending_responses()
    assert (result.instance_id, result.generation) == ("i-00000000000000new", 1)


def test_a_token_used_with_other_parameters_moves_to_the_next_generation(client):
    """Injection: EC2 says IdempotentParameterMismatch (an earlier try's deadline differed), nothing runs."""
    spec = GpuInstanceSpec(ami=AMI)
    args = launch_args(spec)
    injection = ErrorInjection(
        client, lambda call: "IdempotentParameterMismatch" if "-g0-" in call["client_token"] else None
    )
    try:
        result = ec2.launch(client, spec, **args)
    finally:
        injection.remove()
    ec2.terminate(client, [result.instance_id])
    assert [c["client_token"] for c in injection.calls] == [
        ec2.client_token(args["run_key"], 0, 0),
        ec2.client_token(args["run_key"], 1, 0),
    ]
    assert result.generation == 1


def test_capacity_errors_fall_back_over_zones_and_types(client):
    """Injection: no g4dn.xlarge anywhere and no g5.xlarge in us-east-1a (moto has capacity for all)."""
    spec = GpuInstanceSpec(
        gpu="t4", fallback_instance_types=("g5.xlarge",), availability_zones=("us-east-1a", "us-east-1c"), ami=AMI
    )

    def refuse(call):
        if call["instance_type"] == "g4dn.xlarge":
            return "InsufficientInstanceCapacity"
        return "Unsupported" if call["availability_zone"] == "us-east-1a" else None

    injection = ErrorInjection(client, refuse)
    try:
        result = ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    ec2.terminate(client, [result.instance_id])
    assert (result.instance_type, result.availability_zone) == ("g5.xlarge", "us-east-1c")
    assert describe(client, result.instance_id)["Placement"]["AvailabilityZone"] == "us-east-1c"
    assert [(a["instance_type"], a["availability_zone"], a["error"]) for a in result.attempts] == [
        ("g4dn.xlarge", "us-east-1a", "InsufficientInstanceCapacity"),
        ("g4dn.xlarge", "us-east-1c", "InsufficientInstanceCapacity"),
        ("g5.xlarge", "us-east-1a", "Unsupported"),
    ]
    assert len({c["client_token"] for c in injection.calls}) == 4


def test_when_every_candidate_is_full_the_error_lists_what_was_tried(client):
    """Injection: no capacity at all."""
    spec = GpuInstanceSpec(
        gpu="t4",
        fallback_instance_types=("g5.xlarge",),
        availability_zones=("us-east-1a", "us-east-1b"),
        spot=True,
        ami=AMI,
    )
    injection = ErrorInjection(client, lambda call: "InsufficientInstanceCapacity")
    try:
        with pytest.raises(GpuCapacityError) as info:
            ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    message = str(info.value)
    assert info.value.retryable is True
    assert len(injection.calls) == 8
    for candidate in spec.candidates():
        assert f"{candidate.describe()}: InsufficientInstanceCapacity" in message
    assert "8 launch attempt(s)" in message


def test_launch_attempts_are_bounded(client):
    """Injection: no capacity at all; only max_launch_attempts calls are made."""
    spec = GpuInstanceSpec(
        fallback_instance_types=("g5.xlarge", "g6.xlarge"),
        availability_zones=("us-east-1a", "us-east-1b"),
        max_launch_attempts=3,
        ami=AMI,
    )
    injection = ErrorInjection(client, lambda call: "VcpuLimitExceeded")
    try:
        with pytest.raises(GpuCapacityError, match=r"3 launch attempt\(s\) \(max_launch_attempts=3\)") as info:
            ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    assert len(injection.calls) == 3
    assert "g6.xlarge" not in str(info.value)


def test_another_error_fails_at_once_naming_the_code_and_the_candidate(client):
    """Injection: EC2 refuses the request itself."""
    spec = GpuInstanceSpec(availability_zones=("us-east-1a", "us-east-1b"), ami=AMI)
    injection = ErrorInjection(client, lambda call: "UnauthorizedOperation")
    try:
        with pytest.raises(
            GpuProvisioningError, match=re.escape("g4dn.xlarge in us-east-1a (on-demand): UnauthorizedOperation")
        ) as info:
            ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    assert not isinstance(info.value, GpuCapacityError)
    assert len(injection.calls) == 1


def test_spot_goes_through_market_options_with_the_price(client):
    spec = GpuInstanceSpec(spot=True, spot_max_price=0.42, ami=AMI)
    injection = ErrorInjection(client, lambda call: None)
    try:
        result = ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    ec2.terminate(client, [result.instance_id])
    assert result.market == "spot"
    assert describe(client, result.instance_id)["InstanceLifecycle"] == "spot"
    body = injection.calls[0]["body"]
    assert body["InstanceMarketOptions.SpotOptions.MaxPrice"] == "0.42"
    assert body["InstanceMarketOptions.SpotOptions.SpotInstanceType"] == "one-time"
    assert body["InstanceMarketOptions.SpotOptions.InstanceInterruptionBehavior"] == "terminate"


def test_without_spot_capacity_the_launch_falls_back_to_on_demand(client):
    """Injection: no spot capacity."""
    spec = GpuInstanceSpec(spot=True, ami=AMI)
    injection = ErrorInjection(
        client, lambda call: "InsufficientInstanceCapacity" if call["market"] == "spot" else None
    )
    try:
        result = ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    ec2.terminate(client, [result.instance_id])
    assert result.market == "on-demand"
    assert "InstanceLifecycle" not in describe(client, result.instance_id)
    assert [a["market"] for a in result.attempts] == ["spot"]
    assert "InstanceMarketOptions.MarketType" not in injection.calls[1]["body"]


def test_spot_without_the_on_demand_fallback_fails_when_spot_is_full(client):
    """Injection: no spot capacity."""
    spec = GpuInstanceSpec(spot=True, spot_fallback_on_demand=False, ami=AMI)
    injection = ErrorInjection(client, lambda call: "SpotMaxPriceTooLow" if call["market"] == "spot" else None)
    try:
        with pytest.raises(GpuCapacityError, match="spot"):
            ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    assert len(injection.calls) == 1


# ---------------------------------------------------------------------------------- terminate, reap


def test_terminate_is_idempotent_and_ignores_unknown_ids(client):
    spec = GpuInstanceSpec(ami=AMI)
    result = ec2.launch(client, spec, **launch_args(spec))
    assert ec2.terminate(client, [result.instance_id, "i-0123456789abcdef0"]) == [result.instance_id]
    assert describe(client, result.instance_id)["State"]["Name"] in ("shutting-down", "terminated")
    assert ec2.terminate(client, [result.instance_id]) == [result.instance_id]
    assert ec2.terminate(client, ["i-0123456789abcdef0"]) == []
    assert ec2.terminate(client, []) == []


def test_the_reaper_reports_in_a_dry_run_and_terminates_in_a_real_one(client):
    spec = GpuInstanceSpec(ami=AMI, max_lifetime=3600)
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = ec2.launch(client, spec, **launch_args(spec, now=past, run_id="active_run"))
    ended = ec2.launch(client, spec, **launch_args(spec, run_id="ended_run"))
    active = ec2.launch(client, spec, **launch_args(spec, run_id="active_run"))
    unknown = ec2.launch(client, spec, **launch_args(spec, run_id="unknown_run"))
    states = {"active_run": True, "ended_run": False, "unknown_run": None}
    asked: list[str] = []

    def run_is_active(dag_id: str, run_id: str) -> bool | None:
        asked.append(run_id)
        return states[run_id]

    try:
        report = ec2.reap(client, now=datetime.now(UTC), run_is_active=run_is_active, dry_run=True)
        leaks = {leak["instance_id"]: leak["reason"] for leak in report.leaks}
        assert set(leaks) == {expired.instance_id, ended.instance_id}
        assert "has passed" in leaks[expired.instance_id]
        assert "gpu_dag/ended_run has ended" in leaks[ended.instance_id]
        assert report.terminated == []
        assert report.dry_run is True
        assert report.checked >= 4
        assert sorted(asked) == ["active_run", "ended_run", "unknown_run"]  # each run asked once
        assert {i["InstanceId"] for i in live_instances(client)} >= {
            expired.instance_id,
            ended.instance_id,
            active.instance_id,
            unknown.instance_id,
        }
        report = ec2.reap(client, now=datetime.now(UTC), run_is_active=run_is_active, dry_run=False)
        assert sorted(report.terminated) == sorted([expired.instance_id, ended.instance_id])
        alive = {i["InstanceId"] for i in live_instances(client)}
        assert expired.instance_id not in alive
        assert ended.instance_id not in alive
        assert {active.instance_id, unknown.instance_id} <= alive
        assert report.to_json()["leaks"][0]["instance_id"] in report.terminated
    finally:
        ec2.terminate(client, [active.instance_id, unknown.instance_id, expired.instance_id, ended.instance_id])


# ---------------------------------------------------------------------------------- AMI


def test_the_ami_comes_from_ssm_else_the_newest_image_by_name(client, moto_endpoint):
    ssm = boto3.client("ssm", endpoint_url=moto_endpoint, region_name="us-east-1")
    name = f"/mlci-test/dlami-{next(_counter)}"
    ssm.put_parameter(Name=name, Value="ami-0000000000ssm0001", Type="String")
    assert ec2.find_ami(client, ssm, ssm_parameter=name) == "ami-0000000000ssm0001"

    pattern = f"mlci-test-dlami-{next(_counter)}-*"
    source = client.run_instances(ImageId=AMI, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
    try:
        older = client.create_image(InstanceId=source, Name=pattern.replace("*", "a"))["ImageId"]
        newer = client.create_image(InstanceId=source, Name=pattern.replace("*", "b"))["ImageId"]
    finally:
        client.terminate_instances(InstanceIds=[source])
    found = ec2.find_ami(client, ssm, ssm_parameter="/mlci-test/absent", name_pattern=pattern, owners=("self",))
    assert found in (older, newer)  # moto gives both the same creation second; AWS's newest wins
    with pytest.raises(GpuProvisioningError, match=re.escape("Set GpuInstanceSpec.ami")):
        ec2.find_ami(client, None, name_pattern="no-such-image-*", owners=("self",))
