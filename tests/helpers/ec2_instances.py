"""Stand-ins for what runs on an EC2 instance, for tests against moto's EC2.

moto's EC2 keeps instances as records; nothing boots. :class:`InstanceEmulator` plays the part
of the instances themselves: for every running instance carrying our tags it starts the agent
its user data names (``python -m airflow_provider_mlci.agent <args>``) as a real local process;
when moto shows the instance shutting down or terminated, it kills that process group and every
process working in the instance's folder (the machine is gone, DVC and stage commands with it);
when an agent exits by itself (idle timeout), it terminates the instance in moto, as
``InstanceInitiatedShutdownBehavior=terminate`` does after the boot script's ``shutdown -h now``.

:class:`LoopbackImds` stands in for the instance metadata service (IMDSv2) on 127.0.0.1, one
URL per instance, so a test can send a spot interruption notice.

Both are stand-ins, named as such: moto runs no instances and serves no metadata.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
import os
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["AgentProcess", "InstanceEmulator", "LoopbackImds", "agent_args_from_user_data", "process_group_alive"]

_GONE = ("shutting-down", "terminated", "stopping", "stopped")
#: Agent arguments for quick tests: short polling and log intervals.
_QUICK = ("--poll-interval", "0.2", "--log-interval", "0.3", "--spot-poll-interval", "0.2")


def agent_args_from_user_data(user_data: str) -> list[str]:
    """The agent arguments in an instance's user data (``[]`` if it names none).

    :param user_data: the decoded user data
    """
    from airflow_provider_mlci.core.compute.ec2 import agent_args_from_user_data as parse

    return list(parse(user_data))


def process_group_alive(pgid: int) -> bool:
    """Whether any live (not zombie) process is in process group ``pgid``."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and fields[0] != "Z":
                return True
    return False


# ---------------------------------------------------------------------------------- IMDS


class LoopbackImds:
    """A loopback stand-in for the instance metadata service (IMDSv2), one URL per instance.

    ``url(instance_id)`` is the base URL an agent gets as ``--imds-url``; ``PUT
    /latest/api/token`` gives a token, ``GET /latest/meta-data/spot/instance-action`` answers
    404 until :meth:`notice` is called for that instance (then the notice JSON), and 401
    without a valid token. Every request is recorded in :attr:`requests`.
    """

    def __init__(self) -> None:
        self._notices: dict[str, dict[str, Any]] = {}
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()
        self.requests: list[tuple[str, str, bool]] = []  # (method, path, token given)
        imds = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                return

            def _reply(self, code: int, body: str = "", content_type: str = "text/plain") -> None:
                data = body.encode()
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _split(self) -> tuple[str, str]:
                _, instance_id, rest = self.path.split("/", 2) if self.path.count("/") >= 2 else ("", "", "")
                return instance_id, "/" + rest

            def do_PUT(self) -> None:
                instance_id, path = self._split()
                imds.requests.append(("PUT", self.path, False))
                if path != "/latest/api/token" or not self.headers.get("X-aws-ec2-metadata-token-ttl-seconds"):
                    self._reply(400, "bad token request")
                    return
                token = secrets.token_hex(16)
                with imds._lock:
                    imds._tokens[token] = instance_id
                self._reply(200, token)

            def do_GET(self) -> None:
                instance_id, path = self._split()
                token = self.headers.get("X-aws-ec2-metadata-token", "")
                with imds._lock:
                    valid = imds._tokens.get(token) == instance_id
                    notice = imds._notices.get(instance_id)
                imds.requests.append(("GET", self.path, valid))
                if not valid:
                    self._reply(401, "")
                elif path == "/latest/meta-data/instance-id":
                    self._reply(200, instance_id)
                elif path == "/latest/meta-data/spot/instance-action":
                    if notice is None:
                        self._reply(404, "Not Found")
                    else:
                        self._reply(200, json.dumps(notice), "application/json")
                else:
                    self._reply(404, "Not Found")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="loopback-imds", daemon=True)

    def start(self) -> LoopbackImds:
        """Start serving."""
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> LoopbackImds:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, instance_id: str) -> str:
        """The metadata base URL of one instance.

        :param instance_id: the instance
        """
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/{instance_id}"

    def notice(self, instance_id: str, action: str = "terminate") -> dict[str, Any]:
        """Announce a spot interruption of ``instance_id`` (two minutes from now, as EC2 does).

        :param instance_id: the instance
        :param action: ``terminate``, ``stop`` or ``hibernate``
        """
        when = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
        notice = {"action": action, "time": when.strftime("%Y-%m-%dT%H:%M:%SZ")}
        with self._lock:
            self._notices[instance_id] = notice
        return notice


# ---------------------------------------------------------------------------------- instances


@dataclass
class AgentProcess:
    """The agent process standing in for one instance.

    :param instance_id: the instance
    :param args: the agent arguments from its user data
    :param proc: the process (leader of its own process group)
    :param log_path: its output
    :param killed: the emulator killed it because the instance went away
    :param terminated_instance: the emulator terminated the instance because the agent exited
    """

    instance_id: str
    args: list[str]
    proc: subprocess.Popen[bytes]
    log_path: Path
    killed: bool = False
    terminated_instance: bool = False
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        """The agent's process id (also its process group id)."""
        return self.proc.pid

    @property
    def returncode(self) -> int | None:
        """Its exit status, ``None`` while it runs."""
        return self.proc.poll()

    def log(self) -> str:
        """What it wrote so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


class InstanceEmulator:
    """Run the agent of every instance of ours that moto's EC2 shows running, as a local process.

    Use as a context manager. The agents get ``--shutdown-command none``, their own loopback
    metadata URL and their own work folder, after the arguments in the user data (so these
    win), plus ``agent_args``.

    :param endpoint_url: moto's server
    :param region: the EC2 region
    :param env: extra environment for the agents (the test AWS keys stand in for the instance profile)
    :param work_root: where each instance's work folder and agent log go (default: a temporary folder)
    :param agent_args: more agent arguments (shorter intervals for tests)
    :param poll_interval: seconds between looks at moto's EC2
    :param from_wheel: install each agent as its boot script does with the default
        ``agent_requirement``: the worker's wheel it names, fetched from S3 and installed with
        ``pip --no-deps`` into the instance's own folder, which its agent then imports from; and
        Airflow is not importable for it or for anything it starts (the instance has no Airflow)
    """

    def __init__(
        self,
        endpoint_url: str,
        region: str = "us-east-1",
        env: Mapping[str, str] | None = None,
        *,
        work_root: Path | None = None,
        agent_args: tuple[str, ...] = _QUICK,
        poll_interval: float = 0.2,
        from_wheel: bool = False,
    ) -> None:
        self.from_wheel = from_wheel
        self.endpoint_url = endpoint_url
        self.region = region
        self.env = dict(env or {})
        self._work_root = work_root
        self.agent_args = tuple(agent_args)
        self.poll_interval = poll_interval
        self.agents: dict[str, AgentProcess] = {}
        self.skipped: dict[str, str] = {}  # instance id -> why no agent started
        self.wheels: dict[str, dict[str, Any]] = {}  # instance id -> the wheel its agent runs (from_wheel)
        self.errors: list[str] = []
        self.imds = LoopbackImds()
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="instance-emulator", daemon=True)
        self._tmp: Any = None
        self._ec2: Any = None

    # ------------------------------------------------------------------ lifecycle

    def __enter__(self) -> InstanceEmulator:
        import boto3

        if self._work_root is None:
            import tempfile

            self._tmp = tempfile.TemporaryDirectory(prefix="mlci-instances-")
            self._work_root = Path(self._tmp.name)
        self._work_root.mkdir(parents=True, exist_ok=True)
        self._ec2 = boto3.client("ec2", endpoint_url=self.endpoint_url, region_name=self.region)
        self.imds.start()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)
        with self._cond:
            agents = list(self.agents.values())
        for agent in agents:
            self._kill(agent)
        self.imds.stop()
        leftovers = [a.instance_id for a in agents if process_group_alive(a.pid)]
        if self._tmp is not None:
            self._tmp.cleanup()
        assert not leftovers, f"agent processes left behind for {leftovers}"

    # ------------------------------------------------------------------ for tests

    def spot_notice(self, instance_id: str) -> dict[str, Any]:
        """Announce a spot interruption to ``instance_id``'s agent through its metadata service.

        :param instance_id: the instance
        """
        return self.imds.notice(instance_id)

    def wait_for_agent(self, instance_id: str, timeout: float = 30.0) -> AgentProcess:
        """Wait until the agent of ``instance_id`` has started; return it.

        :param instance_id: the instance
        :param timeout: seconds
        """
        with self._cond:
            if not self._cond.wait_for(lambda: instance_id in self.agents or instance_id in self.skipped, timeout):
                raise AssertionError(f"no agent started for {instance_id} within {timeout} s ({self.errors})")
            if instance_id in self.skipped:
                raise AssertionError(f"no agent for {instance_id}: {self.skipped[instance_id]}")
            return self.agents[instance_id]

    def wait_for_exit(self, instance_id: str, timeout: float = 60.0) -> int:
        """Wait until the agent of ``instance_id`` has ended; return its exit status.

        :param instance_id: the instance
        :param timeout: seconds
        """
        agent = self.wait_for_agent(instance_id, timeout)
        try:
            return agent.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the agent of {instance_id} still runs after {timeout} s:\n{agent.log()}") from None

    def instance_state(self, instance_id: str) -> str | None:
        """The instance's state in moto (``None`` if moto does not know it)."""
        reservations = self._ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
        for reservation in reservations:
            for instance in reservation["Instances"]:
                return instance["State"]["Name"]
        return None

    def wait_for_state(self, instance_id: str, states: tuple[str, ...], timeout: float = 30.0) -> str:
        """Wait until the instance is in one of ``states``; return it.

        :param instance_id: the instance
        :param states: e.g. ``("terminated",)``
        :param timeout: seconds
        """
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.instance_state(instance_id)
            if state in states:
                return state
            time.sleep(0.1)
        raise AssertionError(f"{instance_id} is {state}, not {states}, after {timeout} s")

    # ------------------------------------------------------------------ the loop

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except Exception as exc:  # keep emulating; the test sees the errors
                self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(self.poll_interval)

    def _tick(self) -> None:
        paginator = self._ec2.get_paginator("describe_instances")
        states: dict[str, str] = {}
        for page in paginator.paginate(Filters=[{"Name": "tag-key", "Values": ["mlci:owner"]}]):
            for reservation in page["Reservations"]:
                for instance in reservation["Instances"]:
                    states[instance["InstanceId"]] = instance["State"]["Name"]
        for instance_id, state in states.items():
            with self._cond:
                agent = self.agents.get(instance_id)
                known = agent is not None or instance_id in self.skipped
            if state == "running" and not known:
                self._start(instance_id)
            elif state in _GONE and agent is not None and agent.proc.poll() is None:
                agent.killed = True
                self._kill(agent)
        with self._cond:
            agents = list(self.agents.values())
        for agent in agents:
            exited = agent.proc.poll() is not None
            if exited and not agent.killed and not agent.terminated_instance:
                if states.get(agent.instance_id) not in ("shutting-down", "terminated"):
                    self._ec2.terminate_instances(InstanceIds=[agent.instance_id])
                agent.terminated_instance = True

    def _start(self, instance_id: str) -> None:
        encoded = self._ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")
        value = (encoded.get("UserData") or {}).get("Value") or ""
        user_data = base64.b64decode(value).decode(errors="replace") if value else ""
        args = agent_args_from_user_data(user_data)
        if not args:
            with self._cond:
                self.skipped[instance_id] = "its user data names no agent arguments"
                self._cond.notify_all()
            return
        assert self._work_root is not None
        folder = self._work_root / instance_id
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / "agent.log"
        argv = [
            sys.executable,
            "-m",
            "airflow_provider_mlci.agent",
            *args,
            "--shutdown-command",
            "none",
            "--imds-url",
            self.imds.url(instance_id),
            "--work-dir",
            str(folder / "work"),
            *self.agent_args,
        ]
        env = {**os.environ, **self.env}
        if self.from_wheel:
            site = self._install_from_wheel(instance_id, user_data, folder)
            if site is None:
                return
            env["PYTHONPATH"] = str(site)
        with log_path.open("ab") as log:
            proc = subprocess.Popen(
                argv, env=env, cwd=folder, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        with self._cond:
            self.agents[instance_id] = AgentProcess(instance_id=instance_id, args=args, proc=proc, log_path=log_path)
            self._cond.notify_all()

    def _install_from_wheel(self, instance_id: str, user_data: str, folder: Path) -> Path | None:
        """Fetch and install the wheel the boot script names into ``folder/site`` (no requirements),
        with a ``sitecustomize`` there that makes Airflow unimportable; return the folder."""
        import boto3

        from airflow_provider_mlci.core.compute.ec2 import agent_wheel_from_user_data

        wheel = agent_wheel_from_user_data(user_data)
        if wheel is None:
            with self._cond:
                self.skipped[instance_id] = "its user data names no agent wheel"
                self._cond.notify_all()
            return None
        bucket, _, key = wheel["url"][len("s3://") :].partition("/")
        local = folder / key.rsplit("/", 1)[-1]
        boto3.client("s3", endpoint_url=self.endpoint_url, region_name=self.region).download_file(
            bucket, key, str(local)
        )
        site = folder / "site"
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(local)],
            check=True,
            capture_output=True,
        )
        (site / "sitecustomize.py").write_text(
            "# The emulated instance has no Airflow: importing it fails, here and in every child.\n"
            "import sys\n\nsys.modules['airflow'] = None\n"
        )
        probe = subprocess.run(
            [sys.executable, "-c", "import airflow_provider_mlci as p; print(p.__file__)\nimport airflow"],
            env={**os.environ, "PYTHONPATH": str(site)},
            cwd=folder,  # not the repository, whose package `python -c` and `-m` would import first
            capture_output=True,
            text=True,
        )
        assert probe.stdout.strip().startswith(str(site)), f"the agent would not run the wheel's code: {probe}"
        assert "ModuleNotFoundError" in probe.stderr or "ImportError" in probe.stderr, probe.stderr
        self.wheels[instance_id] = wheel
        return site

    def processes(self, instance_id: str) -> list[int]:
        """The live processes working inside the instance's folder: the agent's children in sessions
        of their own (DVC, the stage commands), which its process group does not hold.

        :param instance_id: the instance
        """
        assert self._work_root is not None
        folder = str(self._work_root / instance_id)
        found = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError, IndexError):
                cwd = os.readlink(entry / "cwd")
                zombie = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
                if (cwd == folder or cwd.startswith(folder + "/")) and not zombie:
                    found.append(int(entry.name))
        return found

    def _kill(self, agent: AgentProcess) -> None:
        # The machine is gone: its agent's process group, and what runs in sessions of its own.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(agent.pid, signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for pid in self.processes(agent.instance_id):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            if not process_group_alive(agent.pid) and not self.processes(agent.instance_id):
                break
            time.sleep(0.05)
        with contextlib.suppress(subprocess.TimeoutExpired):
            agent.proc.wait(10)
