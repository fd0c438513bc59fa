"""The S3 mailbox through which a worker and the agent on one GPU instance talk.

A mailbox is an S3 folder, ``s3://bucket/prefix/<run_key>``, used by one instance::

    <mailbox>/agent.json                    {"state": "idle"|"busy"|"stopped", "time": epoch, "job_id": ...}
    <mailbox>/inbox/<job_id>.json           written LAST by submit: a job is visible only when complete
    <mailbox>/jobs/<job_id>/bundle.git      ``git bundle`` of the commit to run
    <mailbox>/jobs/<job_id>/job.json        the :class:`JobSpec`
    <mailbox>/jobs/<job_id>/status.json     {"state": ..., "message": ..., "time": ..., extra fields}
    <mailbox>/jobs/<job_id>/heartbeat       epoch seconds as text, rewritten every heartbeat interval
    <mailbox>/jobs/<job_id>/log/000001.txt  log chunks, numbered from 1, in order
    <mailbox>/jobs/<job_id>/result.json     the reproduction's outcome, on success
    <mailbox>/jobs/<job_id>/progress        the job's per-step table as the stage writes it (if asked)

The worker writes the bundle, ``job.json`` and then the inbox entry; the agent (the only
writer of everything else) claims the oldest inbox entry that has no status yet. Nothing here
carries a credential: both sides reach S3 with their own (the worker through its Airflow
connection, the agent through the instance profile).

This module imports no Airflow; it works on a plain boto3 S3 client.
"""

from __future__ import annotations

import json
import re
import subprocess
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from airflow_provider_mlci.exceptions import MlciConfigError, MlciError, RemoteJobError, WorkspaceError

__all__ = [
    "FINISHED_STATES",
    "JOB_STATES",
    "JobSpec",
    "JobStatus",
    "JobStore",
    "job_id_for",
    "make_bundle",
    "parse_s3_url",
]

#: Every state a job's ``status.json`` may hold, in the order a job goes through them.
JOB_STATES = ("claimed", "running", "succeeded", "failed", "interrupted")
#: The states after which nothing changes any more.
FINISHED_STATES = frozenset({"succeeded", "failed", "interrupted"})
#: The states of ``agent.json``.
AGENT_STATES = ("idle", "busy", "stopped")

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.=-]{0,199}$")
_CHUNK = re.compile(r"^(\d+)\.txt$")
_NOT_FOUND = ("NoSuchKey", "404", "NotFound")


def parse_s3_url(url: str) -> tuple[str, str]:
    """Split ``s3://bucket/prefix`` into the bucket and the prefix (no trailing ``/``).

    :param url: an S3 URL
    :raises MlciConfigError: naming the URL when it is no valid ``s3://`` URL
    """
    if not isinstance(url, str) or not url.startswith("s3://"):
        raise MlciConfigError(f"{url!r} is not an S3 URL (expected s3://bucket/prefix).")
    bucket, _, prefix = url[len("s3://") :].partition("/")
    prefix = prefix.strip("/")
    if not _BUCKET.match(bucket) or ".." in bucket:
        raise MlciConfigError(f"{url!r} does not name a valid S3 bucket ({bucket!r}).")
    if any(ch in prefix for ch in "\n\r\0\\") or any(part in (".", "..") for part in prefix.split("/")):
        raise MlciConfigError(f"{url!r} has an invalid key prefix ({prefix!r}).")
    if "//" in prefix:
        raise MlciConfigError(f"{url!r} has an empty folder name in its key prefix.")
    return bucket, prefix


def job_id_for(task_key: str, attempt: int) -> str:
    """The id of a task's ``attempt``-th job: ``<task_key>-<attempt, 3 digits>`` (sorts by attempt).

    :param task_key: the task's key (letters, digits, ``_.=-``)
    :param attempt: 1 for the first job of the task
    :raises MlciConfigError: the key has other characters, or ``attempt`` is below 1
    """
    if attempt < 1:
        raise MlciConfigError(f"A job attempt counts from 1, not {attempt}.")
    job_id = f"{task_key}-{attempt:03d}"
    _check_job_id(job_id)
    return job_id


@dataclass(frozen=True, kw_only=True)
class JobSpec:
    """What the agent is asked to run (``job.json``); no credential ever goes in here.

    :param job_id: the job's id (see :func:`job_id_for`)
    :param sha: the commit to check out (the bundle's ``HEAD``)
    :param rev: the revision as the user wrote it, for messages
    :param repo: the repository's display URL (no credentials), for messages
    :param request: the fields of :class:`~airflow_provider_mlci.core.dvc.ops.ReproRequest` as
        JSON (``targets`` a list, ``handoff`` the handoff's JSON or ``None``)
    :param dvc: the non-secret fields of :class:`~airflow_provider_mlci.core.repo.access.DvcRemoteAccess`
        (``remote``, ``url``, ``endpoint_url``, ``verify``, ``verify_objects``, ``region_name``)
    :param heartbeat_interval: seconds between the agent's heartbeats
    :param created: when the worker made the job (epoch seconds)
    :param sandbox: options of the sandbox the agent runs the stage commands in (always: no
        stage command may reach the instance profile's credentials), see
        :meth:`~airflow_provider_mlci.core.runtime.sandbox.SandboxConfig.for_instance`
    :param progress: ``{"file", "interval"}``: while the stages run, the agent copies ``file``
        (relative to the repository root: a per-step table such as DVCLive's) to the job's
        ``progress`` every ``interval`` seconds when it changed, so the worker's side can prune
        the trial; empty: nothing is copied
    """

    job_id: str
    sha: str
    rev: str
    repo: str
    request: dict[str, Any] = field(default_factory=dict)
    dvc: dict[str, Any] = field(default_factory=dict)
    heartbeat_interval: float = 10.0
    created: float = 0.0
    sandbox: dict[str, Any] = field(default_factory=dict)
    progress: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_job_id(self.job_id)
        if self.heartbeat_interval <= 0:
            raise MlciConfigError(f"heartbeat_interval must be positive, not {self.heartbeat_interval}.")
        if self.progress:
            file = str(self.progress.get("file") or "")
            if not file or file.startswith("/") or ".." in Path(file).parts:
                raise MlciConfigError(f"The job's progress file {file!r} must be a path inside the repository.")
            if float(self.progress.get("interval") or 0) <= 0:
                raise MlciConfigError(f"The job's progress interval must be positive: {self.progress!r}.")

    def to_json(self) -> dict[str, Any]:
        """The JSON form (``job.json``)."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> JobSpec:
        """Read the JSON form; unknown keys (from a newer worker) are ignored.

        :param data: the parsed ``job.json``
        :raises MlciConfigError: a required field is missing
        """
        known = {f.name for f in fields(cls)}
        missing = [name for name in ("job_id", "sha", "rev", "repo") if name not in data]
        if missing:
            raise MlciConfigError(f"The job description lacks {', '.join(missing)}.")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass(frozen=True, kw_only=True)
class JobStatus:
    """A job's ``status.json`` and its last heartbeat.

    :param state: ``claimed``, ``running``, ``succeeded``, ``failed`` or ``interrupted``
    :param message: a line for people
    :param time: when the status was written (epoch seconds)
    :param heartbeat: the last heartbeat (epoch seconds), ``None`` if none yet
    :param extra: every other field (``error_type`` on failure, ``checkpoint`` on interruption, ...)
    """

    state: str
    message: str = ""
    time: float = 0.0
    heartbeat: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        """Whether the job has ended (succeeded, failed or interrupted)."""
        return self.state in FINISHED_STATES


class JobStore:
    """Read and write one mailbox (see the module docstring for its layout).

    Safe to share between threads (boto3 clients are). Only the agent writes status,
    heartbeat, logs and results; only the worker submits.

    :param client: a boto3 S3 client
    :param mailbox: ``s3://bucket/prefix``
    :raises MlciConfigError: ``mailbox`` is no valid S3 URL
    """

    def __init__(self, client: Any, mailbox: str) -> None:
        self.client = client
        self.mailbox = mailbox.rstrip("/")
        self.bucket, self.prefix = parse_s3_url(mailbox)
        self._chunk_lock = threading.Lock()
        self._next_chunk: dict[str, int] = {}

    def __repr__(self) -> str:
        return f"JobStore({self.mailbox!r})"

    # ------------------------------------------------------------------ keys and raw objects

    def key(self, *parts: str) -> str:
        """The object key of ``parts`` under the mailbox.

        :param parts: path components, such as ``"jobs", job_id, "status.json"``
        """
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, *parts: str) -> str:
        """The ``s3://`` URL of ``parts`` under the mailbox, for messages.

        :param parts: path components
        """
        return f"s3://{self.bucket}/{self.key(*parts)}"

    def _put_json(self, key: str, data: dict[str, Any]) -> None:
        body = json.dumps(data, sort_keys=True).encode()
        self._call("put_object", key, Body=body, ContentType="application/json")

    def _get(self, key: str) -> bytes | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if _is_not_found(exc):
                return None
            raise RemoteJobError(f"Cannot read s3://{self.bucket}/{key}: {exc}") from exc
        return response["Body"].read()

    def _get_json(self, key: str) -> dict[str, Any] | None:
        body = self._get(key)
        if body is None:
            return None
        try:
            return json.loads(body)
        except ValueError as exc:
            raise RemoteJobError(f"s3://{self.bucket}/{key} holds no valid JSON: {exc}") from exc

    def _call(self, method: str, key: str, **kwargs: Any) -> Any:
        try:
            return getattr(self.client, method)(Bucket=self.bucket, Key=key, **kwargs)
        except Exception as exc:
            raise RemoteJobError(f"Cannot write s3://{self.bucket}/{key}: {exc}") from exc

    def _list(self, prefix: str, *, delimiter: str | None = None, start_after: str | None = None) -> list[dict]:
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix}
        if delimiter:
            kwargs["Delimiter"] = delimiter
        if start_after:
            kwargs["StartAfter"] = start_after
        items: list[dict] = []
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(**kwargs):
                items.extend(page.get("Contents") or ())
                items.extend({"Prefix": p["Prefix"]} for p in page.get("CommonPrefixes") or ())
        except Exception as exc:
            raise RemoteJobError(f"Cannot list s3://{self.bucket}/{prefix}: {exc}") from exc
        return items

    # ------------------------------------------------------------------ worker side

    def submit(self, spec: JobSpec, bundle: Path) -> None:
        """Leave a job: the bundle and ``job.json`` first, the inbox entry last.

        :param spec: the job
        :param bundle: the ``git bundle`` file (see :func:`make_bundle`)
        :raises RemoteJobError: the mailbox cannot be written
        """
        bundle_key = self.key("jobs", spec.job_id, "bundle.git")
        try:
            self.client.upload_file(str(bundle), self.bucket, bundle_key)
        except Exception as exc:
            raise RemoteJobError(f"Cannot upload the job bundle to s3://{self.bucket}/{bundle_key}: {exc}") from exc
        self._put_json(self.key("jobs", spec.job_id, "job.json"), spec.to_json())
        self._put_json(self.key("inbox", f"{spec.job_id}.json"), {"job_id": spec.job_id, "created": spec.created})

    def jobs(self, prefix: str = "") -> list[str]:
        """The ids of the jobs submitted here (whose inbox entry exists), sorted.

        :param prefix: only ids starting with this (a task key followed by ``-``)
        """
        ids = []
        for item in self._list(self.key("inbox", prefix) if prefix else self.key("inbox") + "/"):
            name = item.get("Key", "").rsplit("/", 1)[-1]
            if name.endswith(".json"):
                ids.append(name.removesuffix(".json"))
        return sorted(ids)

    def job(self, job_id: str) -> JobSpec | None:
        """A submitted job's description, or ``None`` if there is none.

        :param job_id: the job's id
        """
        data = self._get_json(self.key("jobs", job_id, "job.json"))
        return None if data is None else JobSpec.from_json(data)

    def status(self, job_id: str) -> JobStatus | None:
        """The job's status with its last heartbeat, or ``None`` if no agent claimed it yet.

        :param job_id: the job's id
        """
        data = self._get_json(self.key("jobs", job_id, "status.json"))
        if data is None:
            return None
        beat = self._get(self.key("jobs", job_id, "heartbeat"))
        heartbeat = None
        if beat is not None:
            try:
                heartbeat = float(beat.decode().strip())
            except ValueError:
                heartbeat = None
        state = str(data.pop("state", ""))
        message = str(data.pop("message", "") or "")
        written = float(data.pop("time", 0.0) or 0.0)
        return JobStatus(state=state, message=message, time=written, heartbeat=heartbeat, extra=data)

    def log_chunks(self, job_id: str, start: int = 0) -> list[tuple[int, str]]:
        """The job's log chunks numbered ``start`` or above, in order, as ``(number, text)``.

        Read on from the last number seen plus one to get only what is new.

        :param job_id: the job's id
        :param start: the first chunk number wanted (chunks are numbered from 1)
        """
        folder = self.key("jobs", job_id, "log") + "/"
        start_after = f"{folder}{start - 1:06d}.txt" if start > 1 else None
        numbered = []
        for item in self._list(folder, start_after=start_after):
            match = _CHUNK.match(item.get("Key", "")[len(folder) :])
            if match and int(match.group(1)) >= start:
                numbered.append((int(match.group(1)), item["Key"]))
        chunks = []
        for number, key in sorted(numbered):
            body = self._get(key)
            if body is not None:
                chunks.append((number, body.decode("utf-8", errors="replace")))
        return chunks

    def result(self, job_id: str) -> dict[str, Any] | None:
        """The job's ``result.json`` (the reproduction's outcome), or ``None`` if there is none.

        :param job_id: the job's id
        """
        return self._get_json(self.key("jobs", job_id, "result.json"))

    def agent(self) -> dict[str, Any] | None:
        """The agent's ``agent.json`` (``state``, ``time``, ...), or ``None`` if no agent wrote one."""
        return self._get_json(self.key("agent.json"))

    # ------------------------------------------------------------------ agent side

    def claim_next(self) -> JobSpec | None:
        """Take the oldest submitted job that nobody claimed yet; mark it ``claimed``.

        Oldest by the time the worker made it, then by id. Returns ``None`` if there is none.
        """
        keys = {item.get("Key", "") for item in self._list(self.key("jobs") + "/")}
        pending = [job_id for job_id in self.jobs() if self.key("jobs", job_id, "status.json") not in keys]
        if not pending:
            return None
        entries = []
        for job_id in pending:
            entry = self._get_json(self.key("inbox", f"{job_id}.json")) or {}
            entries.append((float(entry.get("created") or 0.0), job_id))
        for _, job_id in sorted(entries):
            try:
                spec = self.job(job_id)
            except MlciError as exc:  # a job nobody can run: say so rather than block the inbox
                self.set_status(job_id, "failed", f"Unreadable job description: {exc}", error_type=type(exc).__name__)
                continue
            if spec is None:  # an inbox entry without its job: nothing to run
                continue
            self.set_status(job_id, "claimed", "claimed by the agent")
            return spec
        return None

    def download_bundle(self, job_id: str, out: Path) -> Path:
        """Download the job's ``git bundle`` to ``out``; return ``out``.

        :param job_id: the job's id
        :param out: the file to write
        :raises RemoteJobError: the bundle cannot be read
        """
        key = self.key("jobs", job_id, "bundle.git")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.client.download_file(self.bucket, key, str(out))
        except Exception as exc:
            raise RemoteJobError(f"Cannot download the job bundle s3://{self.bucket}/{key}: {exc}") from exc
        return out

    def set_status(self, job_id: str, state: str, message: str = "", **extra: Any) -> None:
        """Write the job's ``status.json``.

        :param job_id: the job's id
        :param state: one of :data:`JOB_STATES`
        :param message: a line for people
        :param extra: more JSON fields (``error_type``, ``checkpoint``, ...)
        """
        if state not in JOB_STATES:
            raise MlciConfigError(f"{state!r} is not a job state (one of {', '.join(JOB_STATES)}).")
        self._put_json(
            self.key("jobs", job_id, "status.json"), {**extra, "state": state, "message": message, "time": time.time()}
        )

    def beat(self, job_id: str) -> None:
        """Write the job's heartbeat: the current time.

        :param job_id: the job's id
        """
        self._call("put_object", self.key("jobs", job_id, "heartbeat"), Body=f"{time.time():.3f}".encode())

    def set_agent(self, state: str, **extra: Any) -> None:
        """Write ``agent.json``.

        :param state: ``idle``, ``busy`` or ``stopped``
        :param extra: more JSON fields (``job_id``, ``reason``, ...)
        """
        if state not in AGENT_STATES:
            raise MlciConfigError(f"{state!r} is not an agent state (one of {', '.join(AGENT_STATES)}).")
        self._put_json(self.key("agent.json"), {**extra, "state": state, "time": time.time()})

    def append_log(self, job_id: str, text: str) -> int:
        """Add ``text`` as the job's next log chunk; return its number.

        :param job_id: the job's id
        :param text: the lines (empty text writes nothing and returns 0)
        """
        if not text:
            return 0
        with self._chunk_lock:
            number = self._next_chunk.get(job_id)
            if number is None:
                existing = self.log_chunk_numbers(job_id)
                number = (existing[-1] + 1) if existing else 1
            self._call("put_object", self.key("jobs", job_id, "log", f"{number:06d}.txt"), Body=text.encode())
            self._next_chunk[job_id] = number + 1
            return number

    def log_chunk_numbers(self, job_id: str) -> list[int]:
        """The numbers of the job's log chunks, in order.

        :param job_id: the job's id
        """
        folder = self.key("jobs", job_id, "log") + "/"
        numbers = []
        for item in self._list(folder):
            match = _CHUNK.match(item.get("Key", "")[len(folder) :])
            if match:
                numbers.append(int(match.group(1)))
        return sorted(numbers)

    def put_progress(self, job_id: str, data: bytes) -> None:
        """Write the job's ``progress`` (the per-step table as it is now).

        :param job_id: the job's id
        :param data: the table's bytes
        """
        self._call("put_object", self.key("jobs", job_id, "progress"), Body=data)

    def progress(self, job_id: str) -> str | None:
        """The job's ``progress`` as the agent last copied it, or ``None`` if it copied none yet.

        :param job_id: the job's id
        """
        data = self._get(self.key("jobs", job_id, "progress"))
        return None if data is None else data.decode(errors="replace")

    def put_result(self, job_id: str, result: dict[str, Any]) -> None:
        """Write the job's ``result.json``.

        :param job_id: the job's id
        :param result: the reproduction's outcome as JSON
        """
        self._put_json(self.key("jobs", job_id, "result.json"), result)


def make_bundle(workspace_path: Path, sha: str, out: Path) -> Path:
    """Write a ``git bundle`` of the checkout's history whose ``HEAD`` is ``sha``; return ``out``.

    The agent clones (mirrors) the bundle like any repository and checks ``sha`` out.

    :param workspace_path: a checkout with ``sha`` checked out
    :param sha: the commit the job runs
    :param out: the bundle file to write
    :raises WorkspaceError: the checkout is not at ``sha``, or git fails
    """
    head = _git(["rev-parse", "HEAD"], workspace_path).strip()
    if head != sha:
        raise WorkspaceError(f"The checkout {workspace_path} is at {head[:12]}, not at the job's commit {sha[:12]}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    _git(["bundle", "create", "--quiet", str(out), "HEAD"], workspace_path)
    return out


def _git(args: list[str], cwd: Path) -> str:
    proc = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise WorkspaceError(f"git {args[0]} failed in {cwd}: {proc.stderr.strip() or proc.returncode}")
    return proc.stdout


def _check_job_id(job_id: str) -> None:
    if not isinstance(job_id, str) or not _JOB_ID.match(job_id):
        raise MlciConfigError(f"{job_id!r} is not a valid job id (letters, digits and _.=- only).")


def _is_not_found(exc: Exception) -> bool:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code", "")) in _NOT_FOUND
