"""The worker's side of a pipeline run on a GPU instance: submit, resume, read the outcome.

The worker checks the commit out as for a local run, bundles it with ``git bundle``, and
leaves the bundle and a job description in the instance's mailbox (see
:mod:`~airflow_provider_mlci.core.compute.jobs`). The agent on the instance runs the job with
the same :func:`~airflow_provider_mlci.core.dvc.ops.repro` a local run uses, so pulling,
run-cache, pushing and the outcome are the same wherever the stage ran.

A retried task looks for the job its earlier try submitted: one still running (heartbeat fresh)
is waited for again rather than started twice; one that succeeded gives its result; one that
failed, was interrupted or went silent is replaced by a new attempt.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.compute.jobs import JobSpec, JobStore, job_id_for, make_bundle
from airflow_provider_mlci.core.dvc.ops import ReproOutcome, ReproRequest, StageHandoff
from airflow_provider_mlci.core.runtime.process import private_tempdir
from airflow_provider_mlci.exceptions import RemoteJobFailedError, RemoteJobInterruptedError, error_class

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "RemoteJob",
    "copy_job_log",
    "job_outcome",
    "outcome_from_result",
    "raise_for_event",
    "resumable_job",
    "submit_or_resume",
    "submit_repro",
]

#: Non-secret fields of ``DvcRemoteAccess`` the agent needs to reach the same DVC remote.
_DVC_FIELDS = ("remote", "url", "endpoint_url", "verify", "verify_objects", "region_name")


@dataclass(frozen=True, kw_only=True)
class RemoteJob:
    """A job left in an instance's mailbox: what waiting for it and finishing it need.

    It travels as JSON in the waiting trigger's event (:meth:`to_json`, :meth:`from_json`).

    :param job_id: the job's id
    :param mailbox: ``s3://bucket/prefix/...``, the instance's mailbox
    :param instance_id: the instance that runs it
    :param region: the instance's AWS region (``None``: the connection's)
    :param repo: the repository, as it may be shown
    :param sha: the commit the job runs
    :param submitted: when it was submitted (epoch seconds; ``None``: unknown)
    :param extra: what the operator wants back when it ends (JSON)
    """

    job_id: str
    mailbox: str
    instance_id: str
    region: str | None = None
    repo: str | None = None
    sha: str | None = None
    submitted: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def where(self) -> str:
        """The job and its instance, for messages."""
        return f"job {self.job_id} on instance {self.instance_id}"

    def compute_record(self) -> dict[str, Any]:
        """Where the job ran, for the task's XCom."""
        return {"backend": "ec2", "instance_id": self.instance_id, "job_id": self.job_id}

    def to_json(self) -> dict[str, Any]:
        """The job as plain JSON."""
        return asdict(self)

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> RemoteJob:
        """The job :meth:`to_json` wrote; keys it does not know go to ``extra`` (a task deferred
        by an earlier release carried the operator's values beside the job's).
        """
        known = {f.name for f in fields(cls)}
        extra = {**{key: item for key, item in value.items() if key not in known}, **(value.get("extra") or {})}
        return cls(**{key: item for key, item in value.items() if key in known and key != "extra"}, extra=extra)


def submit_or_resume(
    store: JobStore,
    task_key: str,
    submit: Callable[[str], JobSpec],
    *,
    heartbeat_timeout: float,
    log: Any,
) -> tuple[str, JobSpec | None]:
    """The job an earlier try of this task left, if it can still be used (see :func:`resumable_job`);
    otherwise a new one, made by ``submit``.

    :param store: the instance's mailbox
    :param task_key: the task's key (dag, run, task, map index)
    :param submit: leaves a new job with the id it is given and returns its spec
    :param heartbeat_timeout: seconds after which a silent job counts as lost
    :param log: where to say which
    :return: the job's id and spec (``None`` if an earlier job's spec cannot be read)
    """
    job_id, attempt = resumable_job(store, task_key, heartbeat_timeout=heartbeat_timeout)
    if job_id is not None:
        log.info("Waiting again for job %s, which an earlier try submitted", job_id)
        return job_id, store.job(job_id)
    job_id = job_id_for(task_key, attempt)
    return job_id, submit(job_id)


def copy_job_log(store: JobStore, job_id: str, start: int, log: Any) -> None:
    """Copy the job's log chunks from ``start`` on into ``log``, line by line.

    :param store: the instance's mailbox
    :param job_id: the job
    :param start: the first chunk not yet copied (the waiting trigger copied the ones before)
    :param log: where to copy them
    """
    for _, text in store.log_chunks(job_id, start=start):
        for line in text.splitlines():
            log.info("[instance] %s", line)


def job_outcome(store: JobStore, job: RemoteJob, event: dict[str, Any]) -> ReproOutcome:
    """The outcome of a job that ended as ``event`` says, or the error its end means.

    :param store: the instance's mailbox
    :param job: the job
    :param event: the waiting trigger's event
    :raises MlciError: as :func:`raise_for_event`; :class:`RemoteJobFailedError` when a job that
        succeeded left no result
    """
    raise_for_event(event, job.where)
    result = store.result(job.job_id)
    if result is None:
        raise RemoteJobFailedError(f"The job says it succeeded but left no result.json [{job.where}]")
    return outcome_from_result(result)


def resumable_job(store: JobStore, task_key: str, *, heartbeat_timeout: float, now: float | None = None) -> Any:
    """The job an earlier try of this task left, if it can be waited for or used; and the next attempt.

    Returns ``(job_id or None, next_attempt)``: a job id when the latest job of ``task_key``
    succeeded or is still alive (queued, or running with a heartbeat younger than
    ``heartbeat_timeout``).

    :param store: the instance's mailbox
    :param task_key: the task's key (dag, run, task, map index)
    :param heartbeat_timeout: seconds after which a silent job counts as lost
    :param now: the current time (epoch seconds)
    """
    now = time.time() if now is None else now
    jobs = store.jobs(prefix=f"{task_key}-")
    if not jobs:
        return None, 1
    latest = jobs[-1]
    attempt = int(latest.rsplit("-", 1)[-1]) + 1
    status = store.status(latest)
    if status is None or status.state == "claimed":
        return latest, attempt
    if status.state == "succeeded":
        return latest, attempt
    if status.state == "running" and now - (status.heartbeat or status.time) <= heartbeat_timeout:
        return latest, attempt
    return None, attempt


def submit_repro(
    workspace: Workspace,
    store: JobStore,
    *,
    job_id: str,
    request: ReproRequest,
    heartbeat_interval: float = 10.0,
    sha: str | None = None,
    rev: str | None = None,
    progress: Mapping[str, Any] | None = None,
) -> JobSpec:
    """Bundle the workspace's commit and leave a reproduction job for the instance's agent.

    No credential goes into the job: the agent reaches the DVC remote with the instance's own
    role, given the remote's name, URL and endpoint.

    :param workspace: the checkout at the commit to run
    :param store: the instance's mailbox
    :param job_id: the job's id (see :func:`~airflow_provider_mlci.core.compute.jobs.job_id_for`)
    :param request: what to reproduce
    :param heartbeat_interval: seconds between the agent's heartbeats
    :param sha: another commit of the checkout to run (default: the workspace's own)
    :param rev: how the job names what it runs (default: the workspace's revision)
    :param progress: ``{"file", "interval"}``: the per-step table the agent copies to the mailbox
        while the stages run (see :class:`~airflow_provider_mlci.core.compute.jobs.JobSpec`)
    """
    dvc = workspace.access.dvc
    request_json = asdict(request)
    request_json["targets"] = list(request.targets)
    request_json["handoff"] = request.handoff.to_json() if request.handoff else None
    spec = JobSpec(
        job_id=job_id,
        sha=sha or workspace.sha,
        rev=rev or workspace.rev,
        repo=workspace.access.git.display_url,
        request=request_json,
        dvc={name: getattr(dvc, name) for name in _DVC_FIELDS if getattr(dvc, name) is not None},
        heartbeat_interval=heartbeat_interval,
        created=time.time(),
        sandbox=workspace.sandbox.for_instance(),
        progress=dict(progress or {}),
    )
    with private_tempdir("bundle") as tmp:
        bundle = make_bundle(workspace.path, sha or workspace.sha, Path(tmp) / "bundle.git")
        store.submit(spec, bundle)
    return spec


def outcome_from_result(result: dict[str, Any]) -> ReproOutcome:
    """The :class:`~airflow_provider_mlci.core.dvc.ops.ReproOutcome` an agent wrote as JSON.

    :param result: the job's ``result.json``
    """
    return ReproOutcome(
        stages=dict(result.get("stages") or {}),
        metrics=dict(result.get("metrics") or {}),
        pushed=bool(result.get("pushed")),
        handoff=StageHandoff(**(result.get("handoff") or {})),
        changed_files=tuple(result.get("changed_files") or ()),
    )


def raise_for_event(event: dict[str, Any], where: str) -> None:
    """Raise the error a job's end means, unless it succeeded.

    ``failed`` re-raises the error class the agent named (a failed stage stays a
    ``DvcStageFailedError``, not retried); ``interrupted`` and ``instance_gone`` raise
    :class:`RemoteJobInterruptedError` (retried); a silent or never-started job raises
    :class:`RemoteJobFailedError`.

    :param event: the trigger's event
    :param where: the job and instance, for the message
    """
    status = event.get("status")
    message = event.get("message") or ""
    if status == "succeeded":
        return
    if status == "failed":
        extra = event.get("extra") or {}
        raise error_class(extra.get("error_type") or "RemoteJobFailedError")(f"{message} [{where}]")
    if status in ("interrupted", "instance_gone"):
        raise RemoteJobInterruptedError(f"The job was interrupted: {message or status} [{where}]")
    raise RemoteJobFailedError(f"The job did not finish: {message or status} [{where}]")
