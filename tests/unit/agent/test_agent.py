"""The agent as a real process against moto's S3, running a real DVC project whose DVC remote is
a moto bucket. The worker's side is played by the test: it checks the project out, bundles the
commit and submits the job, as the ``ec2`` backend does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

from airflow_provider_mlci.agent import (
    AgentConfig,
    SpotWatcher,
    environment_secrets,
    parse_args,
    repro_request_from_json,
)
from airflow_provider_mlci.core.compute.jobs import JobSpec, JobStatus, JobStore, make_bundle
from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.dvc.ops import ReproRequest
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.testing.procs import wait_dead
from tests.conftest import EVAL_ROWS

#: The AWS secret key the agent runs with: a value that cannot appear by chance.
SECRET = f"agent-secret-{uuid.uuid4().hex}"
REGION = "us-east-1"


@dataclass
class Setup:
    project: object
    bucket: str
    endpoint: str
    store: JobStore
    tmp: Path

    @property
    def dvc(self) -> dict[str, str]:
        return {"url": f"s3://{self.bucket}/store", "endpoint_url": self.endpoint, "region_name": REGION}

    def access(self) -> RepoAccess:
        return RepoAccess.local(
            str(self.project.remote),
            **self.dvc,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
        )

    def submit(self, job_id: str, *, heartbeat_interval: float = 0.5, **request) -> JobSpec:
        """Do what the worker does: check out, bundle, leave the job (no credential in it)."""
        request.setdefault("targets", [])
        with Workspace.open(self.access(), "main", cache_dir=self.tmp / "worker") as ws:
            spec = JobSpec(
                job_id=job_id,
                sha=ws.sha,
                rev="main",
                repo=ws.access.git.display_url,
                request=request,
                dvc=self.dvc,
                heartbeat_interval=heartbeat_interval,
                created=time.time(),
            )
            self.store.submit(spec, make_bundle(ws.path, ws.sha, self.tmp / f"{job_id}.bundle"))
        return spec

    def repro_elsewhere(self, name: str, **request) -> dvc_ops.ReproOutcome:
        """Reproduce on another worker (its own cache): what the remote holds decides what runs."""
        with Workspace.open(self.access(), "main", cache_dir=self.tmp / name) as ws:
            return dvc_ops.repro(ws, ReproRequest(**request))

    def start_agent(self, *args: str, idle_timeout: float = 60, imds_url: str = "none") -> subprocess.Popen:
        log = (self.tmp / "agent.log").open("ab")
        env = {
            **os.environ,
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": SECRET,
            # Any import of Airflow in the agent (or what it runs) fails loudly.
            "PYTHONPATH": os.pathsep.join([str(no_airflow(self.tmp)), os.environ.get("PYTHONPATH", "")]),
        }
        argv = [
            sys.executable,
            "-m",
            "airflow_provider_mlci.agent",
            "--mailbox",
            self.store.mailbox,
            "--endpoint-url",
            self.endpoint,
            "--region",
            REGION,
            "--idle-timeout",
            str(idle_timeout),
            "--poll-interval",
            "0.2",
            "--log-interval",
            "0.3",
            "--work-dir",
            str(self.tmp / "agent-work"),
            "--imds-url",
            imds_url,
            "--spot-poll-interval",
            "0.2",
            "--shutdown-command",
            "none",
            *args,
        ]
        proc = subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self._procs.append(proc)
        return proc

    def agent_log(self) -> str:
        path = self.tmp / "agent.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_status(self, job_id: str, until: Callable[[JobStatus | None], bool], timeout: float = 120) -> JobStatus:
        deadline = time.monotonic() + timeout
        status = None
        while time.monotonic() < deadline:
            status = self.store.status(job_id)
            if until(status):
                return status
            time.sleep(0.2)
        raise AssertionError(f"job {job_id}: still {status} after {timeout} s\n{self.agent_log()[-4000:]}")

    def wait_finished(self, job_id: str, timeout: float = 120) -> JobStatus:
        return self.wait_status(job_id, lambda s: s is not None and s.finished, timeout)

    def wait_log(self, job_id: str, text: str, timeout: float = 60) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            log = self.log_text(job_id)
            if text in log:
                return log
            time.sleep(0.2)
        raise AssertionError(f"{text!r} not in the log of {job_id}:\n{self.log_text(job_id)}\n{self.agent_log()}")

    def log_text(self, job_id: str) -> str:
        return "".join(text for _, text in self.store.log_chunks(job_id))

    def remote_keys(self, prefix: str = "store/") -> set[str]:
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)
        pages = s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
        return {obj["Key"] for page in pages for obj in page.get("Contents", ())}

    def everything_written(self) -> str:
        """Every object the agent wrote into the mailbox (statuses, logs, results), as text."""
        s3 = boto3.client("s3", endpoint_url=self.endpoint, region_name=REGION)
        texts = []
        for key in self.remote_keys(self.store.prefix + "/"):
            if not key.endswith("bundle.git"):
                texts.append(s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode(errors="replace"))
        return "\n".join(texts)

    _procs: list = field(default_factory=list)


@pytest.fixture
def setup(s3_dvc_project, s3_bucket, moto_endpoint, tmp_path) -> Iterator[Setup]:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    store = JobStore(s3, f"s3://{s3_bucket}/mlci-jobs/{uuid.uuid4().hex[:16]}")
    result = Setup(project=s3_dvc_project, bucket=s3_bucket, endpoint=moto_endpoint, store=store, tmp=tmp_path)
    try:
        yield result
    finally:
        _stop_all(result)


@pytest.fixture
def bare_setup(s3_bucket, moto_endpoint, tmp_path) -> Iterator[Setup]:
    """A mailbox and an agent, no DVC project (for tests that run no job)."""
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    store = JobStore(s3, f"s3://{s3_bucket}/mlci-jobs/{uuid.uuid4().hex[:16]}")
    result = Setup(project=None, bucket=s3_bucket, endpoint=moto_endpoint, store=store, tmp=tmp_path)
    try:
        yield result
    finally:
        _stop_all(result)


def _stop_all(setup: Setup) -> None:
    for proc in setup._procs:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)
    for proc in setup._procs:
        assert not _group_alive(proc.pid), "the agent left processes behind"


def no_airflow(root: Path) -> Path:
    """A folder that, first on ``PYTHONPATH``, makes ``import airflow`` fail."""
    folder = root / "no-airflow"
    (folder / "airflow").mkdir(parents=True, exist_ok=True)
    (folder / "airflow" / "__init__.py").write_text(
        "raise ImportError('the agent must not import Airflow (a guard of test_agent.py)')\n"
    )
    return folder


def _group_alive(pgid: int) -> bool:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError):
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                if int(fields[2]) == pgid and fields[0] != "Z":
                    return True
    return False


def change_stage(project, stage_file: str, code: str, message: str) -> None:
    """Put ``code`` at the start of a stage script (after its ``__future__`` import), commit, push."""
    path = project.work / "src" / stage_file
    head, future, rest = path.read_text().partition("from __future__ import annotations\n")
    path.write_text(head + future + code + rest)
    project.commit_and_push(message, dvc_push=False)


def slow_down(project, stage_file: str, seconds: float, message: str) -> None:
    """Make one stage of the project slow (it prints ``message``, then sleeps first)."""
    code = f"import time\nprint({message!r}, flush=True)\ntime.sleep({seconds})\n"
    change_stage(project, stage_file, code, f"Slow {stage_file} down")


# ---------------------------------------------------------------------------------- the happy path


def test_the_agent_runs_a_job_pushes_outputs_and_run_cache_and_stops_when_idle(setup):
    before = setup.remote_keys()
    setup.submit("job-001")
    agent = setup.start_agent(idle_timeout=3)
    status = setup.wait_finished("job-001")
    assert status.state == "succeeded", status
    assert status.heartbeat is not None
    assert status.extra["host"]
    result = setup.store.result("job-001")
    assert result["stages"] == {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    assert result["metrics"]["metrics.json"]["rows"] == EVAL_ROWS  # the frozen evaluation set
    assert result["pushed"] is True
    assert "dvc.lock" in result["changed_files"]
    assert "train" in result["handoff"]["lock"]["dvc.lock"]
    # The stages' output reached the log chunks.
    log = setup.log_text("job-001")
    assert "Running stage 'train'" in log, log
    assert "GPUs: none found" in log
    # Outputs and run-cache are on the remote: another worker restores instead of running.
    added = setup.remote_keys() - before
    assert any(key.startswith("store/runs/") for key in added), added
    assert any(key.startswith("store/files/md5/") for key in added), added
    again = setup.repro_elsewhere("worker-b", push=False)
    assert again.stages["prepare"] == "restored"
    assert again.stages["train"] == "restored"
    # Idle: the agent stops by itself and says so.
    assert agent.wait(30) == 0
    assert setup.store.agent()["state"] == "stopped"
    assert setup.store.agent()["reason"] == "idle"
    assert SECRET not in setup.everything_written()
    assert SECRET not in setup.agent_log()


# ---------------------------------------------------------------------------------- failures


def test_a_failing_stage_fails_the_job_with_the_error_class_naming_the_stage(setup):
    """The stage also looks for the agent's credentials: in its environment, and over the
    network (the metadata service would hand out the instance profile's): it finds neither."""
    code = (
        "import os, urllib.request\n"
        "print('key is', os.environ.get('AWS_SECRET_ACCESS_KEY'), flush=True)\n"
        "try:\n"
        f"    urllib.request.urlopen({setup.endpoint!r}, timeout=5)\n"
        "    print('network: reached', flush=True)\n"
        "except OSError:\n"
        "    print('network: unreachable', flush=True)\n"
    )
    change_stage(setup.project, "train.py", code + "raise SystemExit('out of memory, pretend')\n", "Break training")
    setup.submit("job-001")
    setup.start_agent()
    status = setup.wait_finished("job-001")
    assert status.state == "failed"
    assert status.extra["error_type"] == "DvcStageFailedError"
    assert "'train'" in status.message
    assert setup.store.result("job-001") is None
    log = setup.log_text("job-001")
    assert "out of memory, pretend" in log
    # The stage ran sandboxed: no credential in its environment, no network to reach one.
    assert "key is None" in log
    assert "network: unreachable" in log
    assert SECRET not in setup.everything_written()
    assert SECRET not in setup.agent_log()
    # The agent is ready for the next job.
    assert setup.store.agent()["state"] == "idle"


def test_the_heartbeat_advances_while_a_stage_runs_and_stops_when_the_agent_dies(setup):
    slow_down(setup.project, "train.py", 120, "slow training started")
    setup.submit("job-001", heartbeat_interval=0.3)
    agent = setup.start_agent()
    setup.wait_log("job-001", "slow training started")
    first = setup.store.status("job-001")
    assert first.state == "running"
    time.sleep(1.5)
    second = setup.store.status("job-001")
    assert second.heartbeat > first.heartbeat
    # The machine dies: no last word, so the Airflow side must see the silence.
    os.killpg(agent.pid, signal.SIGKILL)
    assert wait_dead(agent.pid)
    deadline = time.monotonic() + 10
    while _group_alive(agent.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    last = setup.store.status("job-001").heartbeat
    time.sleep(1.5)
    after = setup.store.status("job-001")
    assert after.heartbeat == last
    assert after.state == "running"
    assert not after.finished
    assert time.time() - after.heartbeat >= 1.4


def test_a_spot_notice_stops_the_stage_pushes_a_checkpoint_and_exits_3(setup):
    from tests.helpers.ec2_instances import LoopbackImds

    slow_down(setup.project, "train.py", 120, "slow training started")
    before = setup.remote_keys()
    setup.submit("job-001")
    with LoopbackImds() as imds:
        agent = setup.start_agent(imds_url=imds.url("i-0spot"))
        setup.wait_log("job-001", "slow training started")
        started = time.monotonic()
        imds.notice("i-0spot")
        assert agent.wait(60) == 3, setup.agent_log()
        assert time.monotonic() - started < 30, "the agent took too long to stop"
    # IMDSv2: every metadata read carried a session token.
    reads = [r for r in imds.requests if r[0] == "GET"]
    assert reads
    assert all(valid for _, _, valid in reads)
    status = setup.store.status("job-001")
    assert status.state == "interrupted"
    assert "spot interruption notice" in status.message
    checkpoint = status.extra["checkpoint"]
    assert checkpoint["run_cache"] is True
    assert checkpoint["pushed"] > 0
    agent_state = setup.store.agent()
    assert agent_state["state"] == "stopped"
    assert "spot" in agent_state["reason"]
    # The completed stage's outputs and run-cache reached the remote: a retry restores it.
    added = setup.remote_keys() - before
    assert any(key.startswith("store/runs/") for key in added), added
    again = setup.repro_elsewhere("worker-retry", targets=("prepare",), push=False)
    assert again.stages == {"prepare": "restored"}
    assert SECRET not in setup.everything_written()


def test_sigterm_while_idle_stops_the_agent_as_interrupted(bare_setup):
    setup = bare_setup
    agent = setup.start_agent()
    setup.wait_status("agent", lambda _: (setup.store.agent() or {}).get("state") == "idle", timeout=30)
    agent.send_signal(signal.SIGTERM)
    assert agent.wait(30) == 3
    assert setup.store.agent()["state"] == "stopped"
    assert "SIGTERM" in setup.store.agent()["reason"]


def test_an_agent_with_no_job_stops_after_the_idle_timeout(bare_setup):
    setup = bare_setup
    started = time.monotonic()
    agent = setup.start_agent(idle_timeout=1)
    assert agent.wait(30) == 0
    assert time.monotonic() - started < 20
    assert setup.store.agent()["state"] == "stopped"
    assert setup.store.agent()["reason"] == "idle"


def test_a_bad_mailbox_is_refused_with_exit_status_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "airflow_provider_mlci.agent", "--mailbox", "https://not-s3/x"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 2
    assert "https://not-s3/x" in proc.stderr


# ---------------------------------------------------------------------------------- pieces


def test_command_line():
    config = parse_args(["--mailbox", "s3://bucket/jobs/key", "--shutdown-command", "none", "--imds-url", "none"])
    assert config.shutdown_command == ()
    assert config.imds_url is None
    assert config.idle_timeout == 300
    config = parse_args(["--mailbox", "s3://bucket/k", "--idle-timeout", "5", "--work-dir", "w"])
    assert config.shutdown_command == ("shutdown", "-h", "now")
    assert config.imds_url == "http://169.254.169.254"
    assert config.work_dir.is_absolute()
    with pytest.raises(MlciConfigError, match="idle-timeout"):
        AgentConfig(mailbox="s3://bucket/k", idle_timeout=0)


def test_repro_request_from_json():
    request = repro_request_from_json(
        {"targets": ["train"], "force": True, "handoff": {"lock": {"dvc.lock": {"prepare": {}}}, "bundles": []}}
    )
    assert request.targets == ("train",)
    assert request.force
    assert request.handoff.lock == {"dvc.lock": {"prepare": {}}}
    assert repro_request_from_json({"targets": []}).handoff is None
    with pytest.raises(MlciConfigError, match="surprise"):
        repro_request_from_json({"surprise": 1})
    with pytest.raises(MlciConfigError, match="not a valid DVC target"):
        repro_request_from_json({"targets": ["../etc"]})


def test_secret_looking_environment_values_are_masked():
    found = environment_secrets(
        {"AWS_SECRET_ACCESS_KEY": "s3cr3t-value", "AWS_SESSION_TOKEN": "tok-value", "HOME": "/root", "X_TOKEN": ""}
    )
    assert set(found) == {"s3cr3t-value", "tok-value"}


def test_credential_shaped_values_are_masked_in_the_job_log_and_a_private_key_to_its_last_line():
    import logging

    from airflow_provider_mlci.agent import _ChunkHandler, _Masker

    github = "ghp_" + "Ab1Cd2Ef3G" * 4
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJtbGNpIn0." + "s1g-_" * 4
    key_lines = ["-----BEGIN OPENSSH PRIVATE KEY-----", "b3BlbnNzaC1rZXktdjEAAAAABG5v", "bmUAAAAEbm9uZQAAAAAAAAAB"]
    key_lines.append("-----END OPENSSH PRIVATE KEY-----")
    lines = [
        f"cloning with {github}",
        "Authorization: Bearer " + jwt,
        *key_lines,
        "epoch 1: loss 0.25",
        "pushed to https://ci:" + "pw-" * 6 + "@dvc.example.com/store",
        "the literal value agent-literal-secret",
    ]
    env = {"WANDB_API_KEY": "0a1b2c3d4e5f6a7b8c9d" * 2, "MY_PRIVATE_KEY": "k3y-v4lu3", "HOME": "/root"}
    secrets = environment_secrets(env)
    assert set(secrets) == {env["WANDB_API_KEY"], env["MY_PRIVATE_KEY"]}
    handler = _ChunkHandler(_Masker([*secrets, "agent-literal-secret"]))
    for line in [*lines, "wandb key " + env["WANDB_API_KEY"]]:
        handler.emit(logging.LogRecord("airflow_provider_mlci", logging.INFO, __file__, 1, line, None, None))
    text = handler.drain()
    assert len(text.splitlines()) == len(lines) + 1
    assert "epoch 1: loss 0.25" in text
    assert "https://ci:***@dvc.example.com/store" in text
    for secret in (github, jwt, *key_lines[1:3], "agent-literal-secret", env["WANDB_API_KEY"]):
        assert secret not in text, secret


def test_the_spot_watcher_reads_imdsv2():
    from tests.helpers.ec2_instances import LoopbackImds

    with LoopbackImds() as imds:
        watcher = SpotWatcher(imds.url("i-1"))
        assert watcher.check() is None
        notice = imds.notice("i-1")
        assert watcher.check() == notice
        assert SpotWatcher(imds.url("i-2")).check() is None, "a notice is for one instance only"
        # An expired token is replaced.
        watcher._token = "expired"
        assert watcher.check() == notice
    with pytest.raises(OSError, match="refused"):
        SpotWatcher("http://127.0.0.1:9", timeout=0.5).check()


# ---------------------------------------------------------------------------------- the instance emulator

OWNER_TAG = {"Key": "mlci:owner", "Value": "airflow-provider-mlci"}


@pytest.fixture
def ec2(moto_endpoint):
    client = boto3.client("ec2", endpoint_url=moto_endpoint, region_name=REGION)
    yield client
    assert live_instances(client) == [], "an instance of ours is still running"


@pytest.fixture
def emulator(moto_endpoint, tmp_path) -> Iterator[object]:
    from tests.helpers.ec2_instances import InstanceEmulator

    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": SECRET}
    with InstanceEmulator(moto_endpoint, REGION, env=env, work_root=tmp_path / "instances") as emu:
        yield emu
    assert not emu.errors, emu.errors


def live_instances(ec2) -> list[str]:
    reservations = ec2.describe_instances(
        Filters=[
            {"Name": "tag:mlci:owner", "Values": ["airflow-provider-mlci"]},
            {"Name": "instance-state-name", "Values": ["pending", "running"]},
        ]
    )["Reservations"]
    return [i["InstanceId"] for r in reservations for i in r["Instances"]]


def launch(ec2, user_data: str) -> str:
    """Launch an instance as the create operator does (a stand-in AMI id: moto boots nothing)."""
    response = ec2.run_instances(
        ImageId="ami-12345678",
        MinCount=1,
        MaxCount=1,
        InstanceType="g4dn.xlarge",
        UserData=user_data,
        InstanceInitiatedShutdownBehavior="terminate",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [OWNER_TAG]}],
    )
    return response["Instances"][0]["InstanceId"]


def agent_user_data(store: JobStore, endpoint: str, idle_timeout: float) -> str:
    args = ["--mailbox", store.mailbox, "--endpoint-url", endpoint, "--region", REGION]
    args += ["--idle-timeout", str(idle_timeout)]
    return f"#!/bin/bash\nset -euo pipefail\n# mlci-agent-args: {json.dumps(args)}\nshutdown -h now\n"


@pytest.fixture
def mailbox(s3_bucket, moto_endpoint) -> JobStore:
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name=REGION)
    return JobStore(s3, f"s3://{s3_bucket}/mlci-jobs/{uuid.uuid4().hex[:16]}")


def wait_agent_state(store: JobStore, state: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        agent = store.agent()
        if agent and agent["state"] == state:
            return agent
        time.sleep(0.1)
    raise AssertionError(f"agent.json is {store.agent()}, not {state!r}, after {timeout} s")


def test_a_launched_instance_runs_its_agent_and_terminating_it_kills_the_agent(ec2, emulator, mailbox, moto_endpoint):
    instance_id = launch(ec2, agent_user_data(mailbox, moto_endpoint, idle_timeout=120))
    agent = emulator.wait_for_agent(instance_id)
    assert agent.args[:2] == ["--mailbox", mailbox.mailbox]
    wait_agent_state(mailbox, "idle")
    ec2.terminate_instances(InstanceIds=[instance_id])
    assert wait_dead(agent.pid, timeout=10), agent.log()
    assert agent.killed
    assert not _group_alive(agent.pid)
    assert mailbox.agent()["state"] == "idle", "a killed machine has no last word"


def test_an_instance_without_agent_arguments_gets_no_agent(ec2, emulator):
    instance_id = launch(ec2, "#!/bin/bash\necho hello\n")
    with pytest.raises(AssertionError, match="names no agent arguments"):
        emulator.wait_for_agent(instance_id, timeout=10)
    ec2.terminate_instances(InstanceIds=[instance_id])


def test_an_idle_agent_terminates_its_instance(ec2, emulator, mailbox, moto_endpoint):
    instance_id = launch(ec2, agent_user_data(mailbox, moto_endpoint, idle_timeout=1))
    assert emulator.wait_for_exit(instance_id, timeout=30) == 0
    assert emulator.wait_for_state(instance_id, ("terminated",)) == "terminated"
    assert mailbox.agent()["state"] == "stopped"
    assert mailbox.agent()["reason"] == "idle"
    assert emulator.agents[instance_id].terminated_instance


def test_a_spot_notice_reaches_the_agent_through_the_emulated_metadata_service(ec2, emulator, mailbox, moto_endpoint):
    instance_id = launch(ec2, agent_user_data(mailbox, moto_endpoint, idle_timeout=120))
    agent = emulator.wait_for_agent(instance_id)
    wait_agent_state(mailbox, "idle")
    emulator.spot_notice(instance_id)
    assert emulator.wait_for_exit(instance_id, timeout=30) == 3, agent.log()
    assert "spot" in mailbox.agent()["reason"]
    emulator.wait_for_state(instance_id, ("terminated",))
    assert SECRET not in agent.log()


def test_the_emulator_reads_the_agent_arguments_of_the_real_boot_script(ec2, emulator, mailbox, moto_endpoint):
    import datetime as dt

    from airflow_provider_mlci.core.compute import ec2 as ec2_module
    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec

    args = ["--mailbox", mailbox.mailbox, "--endpoint-url", moto_endpoint, "--region", REGION, "--idle-timeout", "1"]
    spec = GpuInstanceSpec(agent_requirement="airflow-provider-mlci")
    script = ec2_module.boot_script(spec, agent_args=args, expires_at=dt.datetime.now(dt.UTC))
    instance_id = launch(ec2, script)
    assert emulator.wait_for_agent(instance_id).args == args
    assert emulator.wait_for_exit(instance_id, timeout=30) == 0
    emulator.wait_for_state(instance_id, ("terminated",))
