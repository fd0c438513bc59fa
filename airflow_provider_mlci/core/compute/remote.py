"""The worker's side of a pipeline run on a GPU instance: submit, resume, read the outcome.

The worker checks the commit out as for a local run, bundles it with ``git bundle``, and
leaves the bundle and a job description in the instance's mailbox (see
:mod:`~airflow_provider_mlci.core.compute.jobs`). The agent on the instance runs the job with
the same :func:`~airflow_provider_mlci.core.dvc_ops.repro` a local run uses, so pulling,
run-cache, pushing and the outcome are the same wherever the stage ran.

A retried task looks for the job its earlier try submitted: one still running (heartbeat fresh)
is waited for again rather than started twice; one that succeeded gives its result; one that
failed, was interrupted or went silent is replaced by a new attempt.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.compute.jobs import JobSpec, JobStore, make_bundle
from airflow_provider_mlci.core.dvc_ops import ReproOutcome, ReproRequest, StageHandoff
from airflow_provider_mlci.core.process import private_tempdir
from airflow_provider_mlci.exceptions import RemoteJobFailedError, RemoteJobInterruptedError, error_class

if TYPE_CHECKING:
    from airflow_provider_mlci.core.workspace import Workspace

__all__ = ["outcome_from_result", "raise_for_event", "resumable_job", "submit_repro"]

#: Non-secret fields of ``DvcRemoteAccess`` the agent needs to reach the same DVC remote.
_DVC_FIELDS = ("remote", "url", "endpoint_url", "verify", "verify_objects", "region_name")


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
    )
    with private_tempdir("bundle") as tmp:
        bundle = make_bundle(workspace.path, sha or workspace.sha, Path(tmp) / "bundle.git")
        store.submit(spec, bundle)
    return spec


def outcome_from_result(result: dict[str, Any]) -> ReproOutcome:
    """The :class:`~airflow_provider_mlci.core.dvc_ops.ReproOutcome` an agent wrote as JSON.

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
