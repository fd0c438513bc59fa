"""The agent on a GPU instance: ``python -m airflow_provider_mlci.agent --mailbox s3://...``.

The instance's boot script starts it; it imports no Airflow. It watches its mailbox (see
:mod:`~airflow_provider_mlci.core.compute.jobs`) and runs each job the worker leaves there
exactly as a local run would: the commit from the job's ``git bundle`` is checked out with
:meth:`~airflow_provider_mlci.core.repo.workspace.Workspace.open`, and
:func:`~airflow_provider_mlci.core.dvc.ops.repro` pulls the inputs, fetches the run-cache,
reproduces (never with ``--allow-missing``) and pushes outputs and run-cache to the DVC remote.
While a job runs, the agent writes a heartbeat and the job's log in numbered chunks; at the
end the outcome (``result.json``) and the status, or on failure the error's class name. A job
that asks for it (an adaptive sweep's trial) also has its per-step table copied to the mailbox
every few seconds as the stage writes it, for the worker's side to decide whether to prune it.

It stops by itself:

- **idle**: no job for ``--idle-timeout`` seconds: ``agent.json`` says ``stopped``, it runs the
  shutdown command and exits with status 0;
- **spot notice** (the instance metadata's ``spot/instance-action``, read with IMDSv2) or
  SIGTERM: it stops the running command, pushes what the cache holds (the stages that
  completed and the run-cache, so a retry restores them), marks the job ``interrupted`` with
  that checkpoint, runs the shutdown command and exits with status 3.

Credentials come only from boto3's default chain (the instance profile on EC2); none is taken
as an argument, and none is ever logged: the values of secret-looking environment variables and
of the instance profile's keys, and anything shaped like a credential (tokens of GitHub, GitLab,
Slack, Hugging Face..., JSON Web Tokens, private keys to their last line, passwords in URLs; see
:func:`~airflow_provider_mlci.core.compute.ec2.mask_secrets`) are masked in everything the agent
writes.

The agent and the stage commands it runs are processes on the instance itself: none runs in a
container, so the instance metadata service's hop limit of 1 is all they need.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_mlci.core.compute.ec2 import mask_secrets
from airflow_provider_mlci.core.compute.jobs import JobSpec, JobStore, parse_s3_url
from airflow_provider_mlci.exceptions import MlciConfigError, MlciError

__all__ = [
    "EXIT_ERROR",
    "EXIT_IDLE",
    "EXIT_INTERRUPTED",
    "Agent",
    "AgentConfig",
    "SpotWatcher",
    "main",
    "parse_args",
    "repro_request_from_json",
]

log = logging.getLogger(__name__)

#: Exit status after an idle timeout (the normal end).
EXIT_IDLE = 0
#: Exit status after an unexpected error.
EXIT_ERROR = 1
#: Exit status after a spot interruption notice or SIGTERM.
EXIT_INTERRUPTED = 3

#: Environment variables whose values are masked wherever the agent writes.
_SECRET_NAMES = ("SECRET", "TOKEN", "PASSWORD", "PASSWD", "CREDENTIAL", "API_KEY", "APIKEY", "PRIVATE_KEY")
#: The first and last lines of a private key (PEM, OpenSSH, PGP), which a log gets line by line.
_KEY_BEGIN = re.compile(r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
_KEY_END = re.compile(r"-----END [A-Z0-9 ]*PRIVATE KEY(?: BLOCK)?-----")
#: Fields of ``DvcRemoteAccess`` a job may set: never a credential.
_DVC_FIELDS = frozenset({"remote", "url", "endpoint_url", "verify", "verify_objects", "region_name"})
#: A log chunk is written early once this much text waits.
_MAX_CHUNK_CHARS = 256 * 1024


def _default_work_dir() -> Path:
    return Path(os.path.expanduser("~")) / ".mlci-agent"


@dataclass(frozen=True, kw_only=True)
class AgentConfig:
    """How the agent runs (its command line).

    :param mailbox: ``s3://bucket/prefix/<run_key>``, the instance's mailbox
    :param endpoint_url: an S3-compatible endpoint (moto, MinIO); ``None``: AWS
    :param region: the S3 client's region; ``None``: boto3's default
    :param idle_timeout: seconds without a job before the agent stops
    :param poll_interval: seconds between looks at the inbox
    :param work_dir: where jobs are checked out and the DVC cache lives
    :param imds_url: the instance metadata service; ``None``: no spot watch
    :param spot_poll_interval: seconds between looks for a spot interruption notice
    :param shutdown_command: what runs when the agent stops (idle or interrupted); empty: nothing
    :param log_interval: seconds between log chunks while a job runs
    """

    mailbox: str
    endpoint_url: str | None = None
    region: str | None = None
    idle_timeout: float = 300.0
    poll_interval: float = 2.0
    work_dir: Path = field(default_factory=_default_work_dir)
    imds_url: str | None = "http://169.254.169.254"
    spot_poll_interval: float = 5.0
    shutdown_command: tuple[str, ...] = ("shutdown", "-h", "now")
    log_interval: float = 2.0

    def __post_init__(self) -> None:
        parse_s3_url(self.mailbox)
        for name in ("idle_timeout", "poll_interval", "spot_poll_interval", "log_interval"):
            if getattr(self, name) <= 0:
                raise MlciConfigError(f"--{name.replace('_', '-')} must be positive, not {getattr(self, name)}.")


def parse_args(argv: Sequence[str] | None = None) -> AgentConfig:
    """Read the command line into an :class:`AgentConfig`.

    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    parser = argparse.ArgumentParser(
        prog="python -m airflow_provider_mlci.agent",
        description="Run the jobs left in an S3 mailbox (on a GPU instance started by Airflow).",
    )
    parser.add_argument("--mailbox", required=True, help="s3://bucket/prefix/<run_key>")
    parser.add_argument("--endpoint-url", default=None, help="an S3-compatible endpoint")
    parser.add_argument("--region", default=None)
    parser.add_argument("--idle-timeout", type=float, default=300.0, help="seconds without a job before stopping")
    parser.add_argument("--poll-interval", type=float, default=2.0, help="seconds between looks at the inbox")
    parser.add_argument("--work-dir", type=Path, default=None)
    parser.add_argument("--imds-url", default="http://169.254.169.254", help="instance metadata; 'none': no spot watch")
    parser.add_argument("--spot-poll-interval", type=float, default=5.0)
    parser.add_argument("--shutdown-command", default="shutdown -h now", help="run when stopping; 'none': just exit")
    parser.add_argument("--log-interval", type=float, default=2.0, help="seconds between log chunks")
    args = parser.parse_args(argv)
    shutdown = args.shutdown_command.strip()
    command = () if shutdown.lower() in ("", "none") else tuple(shlex.split(shutdown))
    imds = None if args.imds_url.strip().lower() in ("", "none") else args.imds_url.rstrip("/")
    return AgentConfig(
        mailbox=args.mailbox,
        endpoint_url=args.endpoint_url,
        region=args.region,
        idle_timeout=args.idle_timeout,
        poll_interval=args.poll_interval,
        work_dir=(args.work_dir or _default_work_dir()).expanduser().absolute(),
        imds_url=imds,
        spot_poll_interval=args.spot_poll_interval,
        shutdown_command=command,
        log_interval=args.log_interval,
    )


def repro_request_from_json(data: dict[str, Any]) -> Any:
    """The :class:`~airflow_provider_mlci.core.dvc.ops.ReproRequest` a job's ``request`` describes.

    :param data: the JSON form (``targets`` a list, ``handoff`` a handoff's JSON or ``None``)
    :raises MlciConfigError: naming an unknown field or an invalid target
    """
    from airflow_provider_mlci.core.dvc.ops import ReproRequest, StageHandoff, check_targets

    known = {f.name for f in dataclasses.fields(ReproRequest)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise MlciConfigError(f"The job's request has unknown fields: {', '.join(unknown)}.")
    values = dict(data)
    values["targets"] = check_targets(values.get("targets") or ())
    handoff = values.get("handoff")
    values["handoff"] = StageHandoff.merged([handoff]) if handoff else None
    return ReproRequest(**values)


def environment_secrets(environ: dict[str, str] | None = None) -> tuple[str, ...]:
    """The values of secret-looking environment variables (AWS secret key, session token, ...).

    :param environ: the environment (default: this process's)
    """
    environ = os.environ if environ is None else environ
    return tuple(
        value
        for name, value in environ.items()
        if len(value) >= 4 and any(part in name.upper() for part in _SECRET_NAMES)
    )


class _Masker:
    def __init__(self, secrets: Sequence[str]) -> None:
        self.secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def add(self, *secrets: str | None) -> None:
        self.secrets = sorted(set(self.secrets) | {s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return mask_secrets(text)


class _ChunkHandler(logging.Handler):
    """Collect log lines (masked) until the next chunk is written."""

    def __init__(self, mask: Callable[[str], str]) -> None:
        super().__init__(level=logging.INFO)
        self.mask = mask
        self._lines: list[str] = []
        self._size = 0
        self._buffer_lock = threading.Lock()
        self._in_private_key = False  # between a private key's first and last lines
        self.full = threading.Event()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
            with self._buffer_lock:
                hidden = self._in_private_key
                if hidden:
                    self._in_private_key = not _KEY_END.search(message)
                elif _KEY_BEGIN.search(message) and not _KEY_END.search(message):
                    self._in_private_key = True
            line = "***" if hidden else self.mask(message)
            if record.exc_info and record.levelno >= logging.WARNING:
                line = f"{line} ({self.mask(str(record.exc_info[1]))})"
        except Exception:  # never let logging break the job
            return
        with self._buffer_lock:
            self._lines.append(line + "\n")
            self._size += len(line) + 1
            if self._size >= _MAX_CHUNK_CHARS:
                self.full.set()

    def drain(self) -> str:
        with self._buffer_lock:
            text = "".join(self._lines)
            self._lines.clear()
            self._size = 0
            self.full.clear()
        return text


class SpotWatcher:
    """Look for a spot interruption notice in the instance metadata (IMDSv2).

    ``PUT /latest/api/token`` gives a session token; ``GET /latest/meta-data/spot/instance-action``
    answers 404 until the instance is to be reclaimed, then ``{"action": ..., "time": ...}``.

    :param imds_url: the metadata service, e.g. ``http://169.254.169.254``
    :param timeout: seconds per request
    """

    def __init__(self, imds_url: str, *, timeout: float = 2.0) -> None:
        self.imds_url = imds_url.rstrip("/")
        self.timeout = timeout
        self._token: str | None = None
        # The metadata service is link-local: never through a proxy.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def _fetch_token(self) -> str:
        request = urllib.request.Request(  # noqa: S310 (the URL is the configured metadata service)
            f"{self.imds_url}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "21600"},
        )
        with self._opener.open(request, timeout=self.timeout) as response:
            return response.read().decode().strip()

    def check(self) -> dict[str, Any] | None:
        """Look once: the notice as a dict, or ``None`` if there is none.

        :raises OSError: the metadata service cannot be reached
        """
        for _ in range(2):
            if self._token is None:
                self._token = self._fetch_token()
            request = urllib.request.Request(  # noqa: S310
                f"{self.imds_url}/latest/meta-data/spot/instance-action",
                headers={"X-aws-ec2-metadata-token": self._token},
            )
            try:
                with self._opener.open(request, timeout=self.timeout) as response:
                    body = response.read().decode()
            except urllib.error.HTTPError as exc:
                if exc.code == 404:
                    return None
                if exc.code == 401:  # the token expired: get a new one
                    self._token = None
                    continue
                raise
            try:
                notice = json.loads(body)
            except ValueError:
                notice = {"action": body.strip()}
            return notice if isinstance(notice, dict) else {"action": str(notice)}
        return None

    def watch(self, interval: float, stop: threading.Event, on_notice: Callable[[dict[str, Any]], None]) -> None:
        """Look every ``interval`` seconds until ``stop`` is set or a notice comes (then call ``on_notice``).

        :param interval: seconds between looks
        :param stop: ends the watch
        :param on_notice: called once with the notice
        """
        failures = 0
        while not stop.is_set():
            try:
                notice = self.check()
                failures = 0
            except (OSError, ValueError) as exc:
                failures += 1
                if failures == 1:
                    log.warning("Cannot read the instance metadata at %s (%s); will keep trying", self.imds_url, exc)
                notice = None
            if notice is not None:
                on_notice(notice)
                return
            stop.wait(interval)


class _Interrupted(Exception):  # noqa: N818 (a signal, not an error)
    def __init__(self, checkpoint: dict[str, Any]) -> None:
        super().__init__("interrupted")
        self.checkpoint = checkpoint


class Agent:
    """Run the jobs of one mailbox until idle or interrupted.

    :param config: the command line
    :param client: a boto3 S3 client (default: one from boto3's default credential chain)
    """

    def __init__(self, config: AgentConfig, *, client: Any = None) -> None:
        self.config = config
        self._client = client
        self.mask = _Masker(environment_secrets())
        self._interrupted = threading.Event()
        self._reason = ""
        self._runner: Any = None
        self._stop_watch = threading.Event()
        self.host = socket.gethostname()

    @property
    def store(self) -> JobStore:
        """The mailbox."""
        if self._client is None:
            import boto3
            from botocore.config import Config

            session = boto3.session.Session()
            self._client = session.client(
                "s3",
                endpoint_url=self.config.endpoint_url,
                region_name=self.config.region,
                config=Config(retries={"max_attempts": 8, "mode": "standard"}, connect_timeout=10, read_timeout=60),
            )
            # The instance profile's keys are readable by any stage command: mask them too.
            with contextlib.suppress(Exception):
                credentials = session.get_credentials()
                if credentials is not None:
                    frozen = credentials.get_frozen_credentials()
                    self.mask.add(frozen.secret_key, frozen.token)
        return JobStore(self._client, self.config.mailbox)

    # ------------------------------------------------------------------ stopping

    def interrupt(self, reason: str) -> None:
        """Stop: the running command ends, the job is checkpointed and marked interrupted.

        Safe from any thread.

        :param reason: what happened (spot notice, SIGTERM)
        """
        if self._interrupted.is_set():
            return
        self._reason = reason
        self._interrupted.set()
        log.warning("Stopping: %s", reason)
        runner = self._runner
        if runner is not None:
            runner.stop()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        name = signal.Signals(signum).name
        threading.Thread(target=self.interrupt, args=(f"the agent got {name}",), daemon=True).start()

    def _on_spot_notice(self, notice: dict[str, Any]) -> None:
        action = notice.get("action", "terminate")
        when = notice.get("time", "soon")
        self.interrupt(f"spot interruption notice: the instance is to {action} at {when}")

    # ------------------------------------------------------------------ main loop

    def run(self) -> int:
        """Run jobs until the idle timeout or an interruption; return the exit status."""
        config = self.config
        config.work_dir.mkdir(parents=True, exist_ok=True)
        store = self.store
        watcher = None
        if config.imds_url:
            watcher = threading.Thread(
                target=SpotWatcher(config.imds_url).watch,
                args=(config.spot_poll_interval, self._stop_watch, self._on_spot_notice),
                name="spot-watcher",
                daemon=True,
            )
            watcher.start()
        log.info(
            "Agent on %s watching %s (idle timeout %.0f s, poll every %.1f s)",
            self.host,
            store.mailbox,
            config.idle_timeout,
            config.poll_interval,
        )
        self._safely(store.set_agent, "idle", host=self.host, pid=os.getpid())
        last_work = time.monotonic()
        try:
            while not self._interrupted.is_set():
                try:
                    spec = store.claim_next()
                except MlciError as exc:
                    log.warning("Cannot read the inbox: %s", self.mask(str(exc)))
                    spec = None
                if spec is not None:
                    self.run_job(store, spec)
                    last_work = time.monotonic()
                    continue
                idle = time.monotonic() - last_work
                if idle >= config.idle_timeout:
                    log.info("No job for %.0f s: stopping", idle)
                    self._safely(store.set_agent, "stopped", reason="idle", host=self.host)
                    self._shutdown()
                    return EXIT_IDLE
                self._interrupted.wait(min(config.poll_interval, max(0.05, config.idle_timeout - idle)))
            self._safely(store.set_agent, "stopped", reason=self._reason, host=self.host)
            self._shutdown()
            return EXIT_INTERRUPTED
        finally:
            self._stop_watch.set()

    def _shutdown(self) -> None:
        command = self.config.shutdown_command
        if not command:
            return
        log.info("Running the shutdown command: %s", " ".join(command))
        try:
            subprocess.run(list(command), timeout=120, check=False)
        except (OSError, subprocess.SubprocessError) as exc:
            log.error("The shutdown command failed: %s", exc)

    def _safely(self, func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except MlciError as exc:
            log.warning("Cannot write to the mailbox: %s", self.mask(str(exc)))
            return None

    # ------------------------------------------------------------------ one job

    def run_job(self, store: JobStore, spec: JobSpec) -> str:
        """Run one claimed job to its end; return its final state.

        :param store: the mailbox
        :param spec: the job
        """
        from airflow_provider_mlci.core.runtime.process import CommandRunner, CommandStoppedError

        job_id = spec.job_id
        handler = _ChunkHandler(self.mask)
        package_log = logging.getLogger("airflow_provider_mlci")
        package_log.addHandler(handler)
        done = threading.Event()
        beats = threading.Thread(target=self._beat, args=(store, spec, done), name="heartbeat", daemon=True)
        flusher = threading.Thread(target=self._flush_loop, args=(store, job_id, handler, done), daemon=True)
        job_dir = self.config.work_dir / "jobs" / job_id
        runner = CommandRunner(log=log, secrets=self.mask.secrets)
        self._runner = runner
        if self._interrupted.is_set():
            runner.stop()
        self._safely(store.beat, job_id)
        beats.start()
        flusher.start()
        self._safely(store.set_agent, "busy", job_id=job_id, host=self.host)
        state, message, extra, result = "failed", "", {}, None
        try:
            from airflow_provider_mlci.core.compute.local import describe_gpus, detect_gpus

            gpus = detect_gpus(runner)
            self._safely(
                store.set_status,
                job_id,
                "running",
                f"running on {self.host}",
                host=self.host,
                gpus=gpus,
                pid=os.getpid(),
            )
            log.info("Job %s: %s at %s (%s) on %s", job_id, spec.repo, spec.rev, spec.sha[:12], self.host)
            log.info("%s", describe_gpus(gpus))
            result = self._execute(store, spec, runner, job_dir)
            state, message = "succeeded", _summary(result)
        except _Interrupted as stop:
            state, extra = "interrupted", {"checkpoint": stop.checkpoint, "reason": self._reason}
            message = f"{self._reason}; checkpoint: {_describe_checkpoint(stop.checkpoint)}"
        except Exception as exc:
            if self._interrupted.is_set() or isinstance(exc, CommandStoppedError):
                state, extra = "interrupted", {"checkpoint": {}, "reason": self._reason}
                message = f"{self._reason or 'stopped'} (before the stages ran; nothing to checkpoint)"
            else:
                error_type = type(exc).__name__ if isinstance(exc, MlciError) else "RemoteJobFailedError"
                text = str(exc) if isinstance(exc, MlciError) else f"{type(exc).__name__}: {exc}"
                state, message, extra = "failed", self.mask(text), {"error_type": error_type}
                log.error("Job %s failed (%s): %s", job_id, error_type, message)
        finally:
            self._runner = None
            log.info("Job %s %s: %s", job_id, state, message)
            done.set()
            handler.full.set()  # wake the flusher
            flusher.join()
            package_log.removeHandler(handler)
            self._safely(store.append_log, job_id, handler.drain())
            if result is not None:
                self._safely(store.put_result, job_id, result)
            self._safely(store.set_status, job_id, state, self.mask(message), host=self.host, **extra)
            beats.join()
            self._safely(store.set_agent, "idle", last_job=job_id, host=self.host)
            self._cleanup(job_dir)
        return state

    def _execute(self, store: JobStore, spec: JobSpec, runner: Any, job_dir: Path) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.repo.access import DvcRemoteAccess, GitAccess, RepoAccess
        from airflow_provider_mlci.core.repo.workspace import Workspace
        from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig

        request = repro_request_from_json(spec.request)
        unknown = sorted(set(spec.dvc) - _DVC_FIELDS)
        if unknown:
            raise MlciConfigError(f"The job's DVC settings have unknown or forbidden fields: {', '.join(unknown)}.")
        bundle = store.download_bundle(spec.job_id, job_dir / "bundle.git")
        access = RepoAccess(git=GitAccess(url=str(bundle)), dvc=DvcRemoteAccess(**spec.dvc))
        # Every job's stage commands run sandboxed, without network: none may reach the instance
        # profile's credentials through the metadata service (nor anything else of the agent's).
        # Whether its cache entries are shared is the worker's word (trusted unless it says not).
        sandbox = SandboxConfig.of({"trusted": True, **spec.sandbox}, SandboxConfig())
        cache = self.config.work_dir / "cache"
        with (
            Workspace.open(access, rev=spec.sha, cache_dir=cache, runner=runner, sandbox=sandbox) as ws,
            self._progress(store, spec, ws.path),
        ):
            try:
                outcome = dvc_ops.repro(ws, request)
            except Exception as exc:
                if self._interrupted.is_set():
                    raise _Interrupted(self._checkpoint(ws)) from exc
                raise
        return {
            "stages": outcome.stages,
            "metrics": dvc_ops.json_safe(outcome.metrics),
            "pushed": outcome.pushed,
            "handoff": outcome.handoff.to_json(),
            "changed_files": list(outcome.changed_files),
        }

    def _checkpoint(self, workspace: Any) -> dict[str, Any]:
        """Push what the cache holds (completed stages' outputs and the run-cache)."""
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.repo.git import Git
        from airflow_provider_mlci.core.runtime.process import CommandRunner

        log.info("Pushing what the completed stages made, and the run-cache, before the instance goes")
        runner = CommandRunner(log=log, secrets=self.mask.secrets)
        fresh = dataclasses.replace(workspace, git=Git(workspace.access.git, runner))
        try:
            pushed = dvc_ops.push(fresh, run_cache=True)
        except MlciError as exc:
            log.error("The checkpoint push failed: %s", self.mask(str(exc)))
            return {"pushed": 0, "run_cache": False, "error": f"{type(exc).__name__}: {self.mask(str(exc))}"}
        return {"pushed": pushed.get("pushed", 0), "run_cache": True, "missing": pushed.get("missing", [])}

    @contextlib.contextmanager
    def _progress(self, store: JobStore, spec: JobSpec, root: Path) -> Iterator[None]:
        """While the stages run, copy the job's per-step table to the mailbox when it changed
        (``spec.progress``; nothing when the job asks for none)."""
        if not spec.progress:
            yield
            return
        from airflow_provider_mlci.core.repo.paths import inside

        file, interval = str(spec.progress["file"]), float(spec.progress["interval"])
        done, sent = threading.Event(), [b""]

        def ship() -> None:
            try:  # the stage writes the table: a link out of the checkout is never read
                data = inside(root, file, what="per-step table").read_bytes()
            except (OSError, MlciError):
                return  # not written yet, or not a file of the checkout
            if data != sent[0]:
                sent[0] = data
                self._safely(store.put_progress, spec.job_id, data)

        def loop() -> None:
            while not done.wait(interval):
                ship()

        thread = threading.Thread(target=loop, name="progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join(timeout=30)
            ship()

    def _beat(self, store: JobStore, spec: JobSpec, done: threading.Event) -> None:
        while not done.wait(spec.heartbeat_interval):
            self._safely(store.beat, spec.job_id)

    def _flush_loop(self, store: JobStore, job_id: str, handler: _ChunkHandler, done: threading.Event) -> None:
        while not done.is_set():
            handler.full.wait(self.config.log_interval)
            if done.is_set():
                return
            text = handler.drain()
            if text:
                self._safely(store.append_log, job_id, text)

    def _cleanup(self, job_dir: Path) -> None:
        from airflow_provider_mlci.core.repo.workspace import WorkerCache

        with contextlib.suppress(Exception):
            mirror = WorkerCache(self.config.work_dir / "cache").mirror_path(str(job_dir / "bundle.git"))
            shutil.rmtree(mirror, ignore_errors=True)
        shutil.rmtree(job_dir, ignore_errors=True)


def _summary(result: dict[str, Any]) -> str:
    stages = result.get("stages") or {}
    return ", ".join(f"{name} {outcome}" for name, outcome in stages.items()) or "nothing to reproduce"


def _describe_checkpoint(checkpoint: dict[str, Any]) -> str:
    if checkpoint.get("error"):
        return f"the push failed ({checkpoint['error']})"
    return f"{checkpoint.get('pushed', 0)} objects and the run-cache pushed"


def main(argv: Sequence[str] | None = None) -> int:
    """Run the agent; return its exit status (0 idle, 3 interrupted, 1 error, 2 bad arguments).

    :param argv: the arguments (default: ``sys.argv[1:]``)
    """
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for noisy in ("botocore", "boto3", "s3transfer", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        config = parse_args(argv)
    except MlciConfigError as exc:
        log.error("%s", exc)
        return 2
    agent = Agent(config)
    signal.signal(signal.SIGTERM, agent._on_signal)
    signal.signal(signal.SIGINT, agent._on_signal)
    try:
        return agent.run()
    except Exception:
        log.exception("The agent failed")
        with contextlib.suppress(Exception):
            agent.store.set_agent("stopped", reason="error", host=agent.host)
        return EXIT_ERROR
