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
from airflow_provider_mlci.exceptions import (
    GpuCapacityError,
    GpuProvisioningError,
    MlciConfigError,
    SecretInUserDataError,
)
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


#: Where a worker would have put its wheel for the agent (core.compute.agent_dist).
WHEEL = "s3://jobs/x/k/agent/airflow_provider_mlci-0.1.0-py3-none-any.whl"


def launch_args(spec: GpuInstanceSpec, *, task_id: str | None = None, now: datetime | None = None, **ids: Any):
    """Run key, tags and user data for a launch of ``spec`` by a test task (unique per call);
    with ``now``, a deadline counted from then instead of from the instance's LaunchTime."""
    task_id = task_id or f"launch_{next(_counter)}"
    dag_id, run_id, map_index = ids.get("dag_id", "gpu_dag"), ids.get("run_id", "manual__1"), ids.get("map_index", -1)
    key = ec2.run_key(dag_id, run_id, task_id, map_index)
    tags = ec2.instance_tags(
        spec, dag_id=dag_id, run_id=run_id, task_id=task_id, map_index=map_index, run_key=key, group=task_id
    )
    user_data = ec2.boot_script(spec, agent_args=["--mailbox", f"s3://jobs/x/{key}"], agent_wheel=WHEEL)
    args = {"run_key": key, "tags": tags, "user_data": user_data}
    if now is not None:
        args["expires_at"] = ec2.expires_at_for(spec, now)
    return args


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


def test_the_run_key_has_fixed_reference_values():
    r"""The key names the mailbox (``s3://<jobs>/<run key>``) and the ``mlci:run_key`` tag of
    instances already running: a change of its format orphans them, so it is pinned here.

    The values were derived outside the code under test, from the key's format (the first 32 hex
    characters of the SHA-256 of dag_id, run_id, task_id and map_index joined by the unit
    separator U+001F), with coreutils rather than Python::

        printf 'nightly\x1fscheduled__2026-05-01T00:00:00+00:00\x1ftrain_launch\x1f2' | sha256sum | cut -c1-32
        printf 'gpu_dag\x1fmanual__1\x1flaunch\x1f-1' | sha256sum | cut -c1-32
    """
    key = ec2.run_key("nightly", "scheduled__2026-05-01T00:00:00+00:00", "train_launch", 2)
    assert key == "fbf3bfed499ac8024e5583cb4a92f6ee"
    assert ec2.run_key("gpu_dag", "manual__1", "launch", -1) == "cdcc6ed58fe1bf2c1f99b203a272dbb9"
    assert ec2.run_key("gpu_dag", "manual__1", "launch") == "cdcc6ed58fe1bf2c1f99b203a272dbb9"  # not mapped
    assert ec2.client_token(key, 1, 2) == "mlci-fbf3bfed499ac8024e5583cb4a92f6ee-g1-c2"


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
    args = ["--mailbox", "s3://b/p/k", "--idle-timeout", "300", "--region", "eu-west-1"]
    script = ec2.boot_script(spec, agent_args=args, agent_wheel=WHEEL, agent_requirements=["dvc==3.6.0", "boto3==1.40"])
    commands = [line for line in script.splitlines() if line.strip() and not line.startswith("#")]
    assert commands[0] == "shutdown -h +121 'airflow-provider-mlci: max_lifetime reached'"
    assert commands[-1].startswith("shutdown -h now")
    assert script.index("echo hello from the startup script") < script.index("-m airflow_provider_mlci.agent")
    assert "# Deadline: 7201 s after launch" in script
    # The agent's own requirements, then the worker's wheel fetched from S3 and installed without its requirements.
    install = script.index("pip install --quiet dvc==3.6.0 boto3==1.40")
    fetch = script.index(f"{WHEEL} /opt/mlci/airflow_provider_mlci-0.1.0-py3-none-any.whl eu-west-1")
    no_deps = script.index("pip install --quiet --no-deps /opt/mlci/airflow_provider_mlci-0.1.0-py3-none-any.whl")
    assert install < fetch < no_deps < script.index("-m airflow_provider_mlci.agent")
    assert "apache-airflow" not in script
    assert ec2.agent_wheel_from_user_data(script) == {"url": WHEEL, "requirements": ["dvc==3.6.0", "boto3==1.40"]}
    markers = [line for line in script.splitlines() if line.startswith("# mlci-agent-args:")]
    assert len(markers) == 1
    assert ec2.agent_args_from_user_data(script) == args


def test_an_agent_requirement_is_installed_instead_of_the_workers_wheel():
    spec = GpuInstanceSpec(agent_requirement="airflow-provider-mlci==0.1.0")
    script = ec2.boot_script(spec, agent_args=["--mailbox", "s3://b/p/k"])
    assert "pip install --quiet airflow-provider-mlci==0.1.0 \\" in script
    assert "--no-deps" not in script
    assert ec2.agent_wheel_from_user_data(script) is None


def test_without_a_wheel_or_a_requirement_there_is_no_agent_to_install():
    with pytest.raises(MlciConfigError, match="No agent to install"):
        ec2.boot_script(GpuInstanceSpec(), agent_args=["--mailbox", "s3://b/p/k"])


def test_no_agent_arguments_start_no_agent():
    script = ec2.boot_script(GpuInstanceSpec(), agent_args=[])
    assert "airflow_provider_mlci.agent" not in script
    assert ec2.agent_args_from_user_data(script) == []
    assert ec2.agent_args_from_user_data("#!/bin/bash\necho hi\n") == []


def test_arguments_are_shell_quoted():
    script = ec2.boot_script(GpuInstanceSpec(), agent_args=["--mailbox", "s3://b/p q;rm -rf /"], agent_wheel=WHEEL)
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
    with pytest.raises(SecretInUserDataError, match="instance profile"):
        ec2.boot_script(spec, agent_args=where.get("agent_args", []))


# Credential-shaped values, made at run time so that no scanner takes this file for a leak.
_GITHUB = "ghp_" + "A1b2C3d4E5" * 3 + "F6g7H8"
_PEM_BODY = "MIIEowIBAAKCAQEA" + "q" * 48
_SHAPES = {
    "GitHub personal token": ("a GitHub token", f"git clone https://{_GITHUB}@github.com/org/repo.git"),
    "GitHub OAuth token": ("a GitHub token", "export GH=gho_" + "Z9y8X7w6V5" * 4),
    "GitHub user-to-server token": ("a GitHub token", "echo ghu_" + "k" * 36),
    "GitHub server-to-server token": ("a GitHub token", "echo ghs_" + "1a" * 18),
    "GitHub refresh token": ("a GitHub token", "echo ghr_" + "Qw" * 20),
    "GitHub fine-grained token": ("a GitHub token", "gh auth login --with-token <<< github_pat_" + "11AB" * 6 + "_x"),
    "RSA private key": (
        "a private key",
        f"cat > id_rsa <<EOF\n-----BEGIN RSA PRIVATE KEY-----\n{_PEM_BODY}\n-----END RSA PRIVATE KEY-----\nEOF",
    ),
    "PKCS#8 private key": ("a private key", f"echo '-----BEGIN PRIVATE KEY-----\n{_PEM_BODY}'"),
    "EC private key": ("a private key", f"echo '-----BEGIN EC PRIVATE KEY-----\n{_PEM_BODY}'"),
    "encrypted private key": ("a private key", f"echo '-----BEGIN ENCRYPTED PRIVATE KEY-----\n{_PEM_BODY}'"),
    "OpenSSH private key": ("a private key", f"printf '%s' '-----BEGIN OPENSSH PRIVATE KEY-----\n{_PEM_BODY}'"),
    "PGP private key": ("a private key", "gpg --import <<< '-----BEGIN PGP PRIVATE KEY BLOCK-----'"),
    "PuTTY private key": ("a PuTTY private key", "echo 'PuTTY-User-Key-File-3: ssh-ed25519' > key.ppk"),
    "Slack bot token": ("a Slack token", "export SLACK=xoxb-" + "1234567890-" * 2 + "abcDEF"),
    "Slack user token": ("a Slack token", "curl -H 'Authorization: Bearer xoxp-" + "98765-" * 3 + "zz'"),
    "Slack webhook": ("a Slack webhook URL", "curl https://hooks.slack.com/services/T0AB12CD/B0XY98ZW/" + "s3cr" * 6),
    "GitLab token": ("a GitLab token", "git clone https://oauth2:glpat-" + "Xy12" * 5 + "@gitlab.com/o/r.git"),
    "JSON Web Token": (
        "a JSON Web Token",
        "curl -H 'Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtbGNpLXRlc3QifQ." + "Sig_-" * 5 + "'",
    ),
    "Google API key": ("a Google API key", "export MAPS=AIza" + "Sy0123456789_-abcdefghijklmnopqrstu"),
    "Hugging Face token": ("a Hugging Face token", "huggingface-cli login --token hf_" + "aBcDeFgHiJ" * 3 + "kLmN"),
    "OpenAI key": ("an OpenAI or Anthropic API key", "export OPENAI=sk-proj-" + "T3stK3y0" * 5),
    "Stripe key": ("a Stripe secret key", "export STRIPE=sk_live_" + "4eC39HqLyjWDarjtT1zdp7dc"),
    "Weights & Biases key": (
        "a Weights & Biases API key",
        "wandb login --relogin " + "0123456789abcdef" * 2 + "01234567",
    ),
    "secret-named variable": (
        "a literal value of a secret-named variable",
        "export WANDB_API_KEY=" + "0f1e2d3c4b5a6978" * 2,
    ),
    "quoted password variable": (
        "a literal value of a secret-named variable",
        "DB_PASSWORD='correct-horse-battery-staple'",
    ),
    "secret option": ("a secret on a command line", "some-cli login --api-key " + "Tr0ub4dor-and-more-words"),
    "secret option with =": ("a secret on a command line", "some-cli --password=" + "Tr0ub4dor-and-more-words"),
}


@pytest.mark.parametrize("name", sorted(_SHAPES))
def test_every_common_credential_shape_is_refused_naming_its_kind_and_never_the_value(name):
    kind, line = _SHAPES[name]
    secret = line.split("=", 1)[-1] if "=" in line else line
    with pytest.raises(SecretInUserDataError) as info:
        ec2.boot_script(GpuInstanceSpec(startup_script=f"set -e\nnvidia-smi\n{line}\n"), agent_args=[])
    message = str(info.value)
    assert f"startup script holds what looks like {kind}." in message
    assert secret not in message
    assert line not in message
    assert isinstance(info.value, MlciConfigError)
    assert info.value.retryable is False
    assert ec2.find_secret(line) == kind
    assert "***" in ec2.mask_secrets(line)
    for token in re.findall(r"[A-Za-z0-9_+/=-]{20,}", line):  # the secret's long run of characters
        assert token not in ec2.mask_secrets(line), token


def test_credentials_are_refused_in_the_agent_arguments_and_requirement_too():
    with pytest.raises(SecretInUserDataError, match="agent arguments holds what looks like a JSON Web Token"):
        ec2.boot_script(GpuInstanceSpec(), agent_args=["--mailbox", "s3://b/p", "--x", _SHAPES["JSON Web Token"][1]])
    requirement = f"airflow-provider-mlci @ git+https://{_GITHUB}@github.com/o/airflow-provider-mlci.git"
    with pytest.raises(SecretInUserDataError, match="agent requirement holds what looks like a GitHub token"):
        ec2.boot_script(GpuInstanceSpec(agent_requirement=requirement), agent_args=[])


def test_ordinary_boot_scripts_pass_the_secret_scan():
    startup = "\n".join(
        [
            "set -euo pipefail",
            "nvidia-smi",
            "IMDS=http://169.254.169.254/latest",
            'TOKEN=$(curl -sX PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 60")',
            'REGION=$(curl -sH "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/meta-data/placement/region")',
            'export HF_TOKEN="${HF_TOKEN:-}"',
            "export TOKENIZERS_PARALLELISM=false MAX_NEW_TOKENS=512 PAD_TOKEN='<pad>'",
            "PASSWORD_FILE=/run/secrets/db_password",
            "export HF_HOME=/opt/hf WANDB_MODE=offline",
            "pip install --quiet 'torch==2.5.1' scikit-learn 'transformers>=4.44' hf_transfer",
            "git clone --depth 1 https://github.com/org/ml-project.git /opt/project",
            "aws s3 cp s3://ml-bucket/data/ /data/ --recursive --region $REGION",
            "ssh-keygen -t ed25519 -f /root/.ssh/id_ed25519 -N ''",
            "openssl x509 -in /etc/ssl/certs/ca.pem -noout  # -----BEGIN CERTIFICATE----- is public",
            "mkfs -t xfs /dev/nvme1n1 && mount /dev/nvme1n1 /data",
            "python -c 'import torch; print(torch.cuda.is_available())'",
        ]
    )
    spec = GpuInstanceSpec(
        startup_script=startup,
        agent_requirement="airflow-provider-mlci @ git+https://github.com/org/airflow-provider-mlci.git@v0.1.0",
    )
    args = ["--mailbox", "s3://ml-jobs/mlci/0123456789abcdef0123456789abcdef", "--region", "us-east-1"]
    script = ec2.boot_script(
        spec, agent_args=[*args, "--idle-timeout", "300", "--endpoint-url", "http://127.0.0.1:5000"]
    )
    assert startup in script
    assert ec2.find_secret(script) is None
    assert ec2.mask_secrets(script) == script


def test_masking_keeps_setting_names_and_masks_a_private_key_to_its_end():
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1r\n-----END OPENSSH PRIVATE KEY-----"
    text = f"AWS_SECRET_ACCESS_KEY is not set\n{key}\nok"
    assert ec2.mask_secrets(text) == "AWS_SECRET_ACCESS_KEY is not set\n***\nok"
    assert ec2.mask_secrets("-----BEGIN RSA PRIVATE KEY-----\nMIIEow\nnothing after") == "***"
    assert ec2.mask_secrets("https://user:hunter22@example.com/x") == "https://user:***@example.com/x"


def test_a_boot_script_over_ec2s_limit_is_refused():
    with pytest.raises(MlciConfigError, match="16384"):
        ec2.boot_script(GpuInstanceSpec(startup_script="echo x\n" * 3000), agent_args=[])


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
            "mlci:max_lifetime": "3600",
            "Name": "mlci-nightly-train_launch",
            "team": "fraud",
        }
        launched = instance["LaunchTime"].astimezone(UTC).replace(microsecond=0)
        assert tags["mlci:expires_at"] == (launched + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
        assert result.expires_at == tags["mlci:expires_at"]
        volumes = client.describe_volumes(Filters=[{"Name": "attachment.instance-id", "Values": [result.instance_id]}])[
            "Volumes"
        ]
        assert [v["Size"] for v in volumes] == [80]
        assert tags_of(volumes[0])["mlci:run_key"] == key
    finally:
        ec2.terminate(client, [result.instance_id])


def test_the_metadata_service_takes_tokens_only_and_answers_the_instance_only(client):
    """IMDSv2 with a hop limit of 1: a container (one hop more) gets no instance profile credentials."""
    spec = GpuInstanceSpec(ami=AMI)
    injection = ErrorInjection(client, lambda call: None)  # records the call, lets it through
    try:
        result = ec2.launch(client, spec, **launch_args(spec))
    finally:
        injection.remove()
    ec2.terminate(client, [result.instance_id])
    body = injection.calls[0]["body"]
    assert body["MetadataOptions.HttpTokens"] == "required"
    assert body["MetadataOptions.HttpEndpoint"] == "enabled"
    assert str(body["MetadataOptions.HttpPutResponseHopLimit"]) == "1"
    options = describe(client, result.instance_id)["MetadataOptions"]
    assert (options["HttpTokens"], options["HttpPutResponseHopLimit"]) == ("required", 1)


def test_the_reaper_counts_from_launch_time_when_the_deadline_tag_was_never_written(client):
    """The launching try died right after RunInstances: the instance has mlci:max_lifetime, no mlci:expires_at."""
    tags = [{"Key": "mlci:owner", "Value": ec2.OWNER}, {"Key": "mlci:max_lifetime", "Value": "3600"}]
    tags += [{"Key": "mlci:dag_id", "Value": "gpu_dag"}, {"Key": "mlci:run_id", "Value": f"untagged_{next(_counter)}"}]
    instance = client.run_instances(
        ImageId=AMI, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
    )["Instances"][0]
    instance_id = instance["InstanceId"]
    launched = instance["LaunchTime"].astimezone(UTC).replace(microsecond=0)
    try:
        mine = {"run_is_active": lambda dag_id, run_id: None, "dry_run": True}
        early = ec2.reap(client, now=launched + timedelta(minutes=59), **mine)
        assert instance_id not in [leak["instance_id"] for leak in early.leaks]
        assert ec2.instance_deadline(describe(client, instance_id)) == launched + timedelta(hours=1)
        late = ec2.reap(client, now=launched + timedelta(hours=1, seconds=1), **mine)
        (leak,) = [leak for leak in late.leaks if leak["instance_id"] == instance_id]
        assert leak["reason"] == f"its deadline {(launched + timedelta(hours=1)).isoformat()[:19]}Z has passed"
    finally:
        ec2.terminate(client, [instance_id])


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
        tagged = {"Resources": ["i-0000000000000aaaa"], "Tags": [{"Key": "mlci:expires_at", "Value": ANY}]}
        stub.add_response("create_tags", {}, tagged)  # the deadline, once launched
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
    stub.add_response("create_tags", {}, {"Resources": ["i-00000000000000new"], "Tags": ANY})
    with stub:
        result = ec2.launch(client, spec, **args)
    stub.assert_no_pending_responses()
    assert (result.instance_id, result.generation) == ("i-00000000000000new", 1)


def test_a_token_used_with_other_parameters_moves_to_the_next_generation(client):
    """Injection: EC2 says IdempotentParameterMismatch (the spec changed between tries), nothing runs."""
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
