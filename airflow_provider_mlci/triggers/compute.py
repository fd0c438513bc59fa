"""Wait in the triggerer for a job that runs on a GPU instance."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

__all__ = ["RemoteJobTrigger"]

#: Instance states in which no agent can still be working.
_GONE = ("shutting-down", "terminated", "stopping", "stopped")


class RemoteJobTrigger(BaseTrigger):
    """Fire once when the job ``job_id`` in ``mailbox`` ends, goes silent or loses its instance.

    Polls the job's status and heartbeat in S3 (in a worker thread, never on the event loop)
    and copies new log chunks into the task log as they arrive. The single event's ``status``
    is the job's end state (``succeeded``, ``failed``, ``interrupted``), or ``heartbeat_timeout``
    (no heartbeat for ``heartbeat_timeout`` seconds while running), ``not_started`` (no agent took
    the job within ``start_timeout``) or ``instance_gone`` (the instance stopped under the job);
    it carries ``log_index``, the first log chunk not yet copied.

    With ``prune`` (a trial of an adaptive sweep), each look also reads the per-step table the
    agent copies to the mailbox, reports the new steps to the trial in the study's database (Optuna
    and its driver run in the look's thread, off the event loop) and, when the pruner says the
    trial will not win, fires ``pruned`` (``extra``: ``step``, ``value``, ``column``) at once: the
    task then terminates the instance. A table without the column fires ``bad_progress``.

    :param mailbox: ``s3://bucket/prefix/<run key>``, the instance's mailbox
    :param job_id: the job to watch
    :param aws_conn_id: the ``aws`` connection that reaches the mailbox (and the instance)
    :param region_name: the AWS region; default: the connection's
    :param instance_id: the instance the job runs on; its state is checked too
    :param poll_interval: seconds between looks
    :param heartbeat_timeout: seconds of silence after which a running job counts as lost
    :param start_timeout: seconds the job may wait for an agent to take it (boot, install)
    :param log_index: the first log chunk to copy
    :param submitted: when the job was submitted (epoch seconds)
    :param job: plain JSON the event carries back to the task unchanged (what the task needs to
        finish; the event is the one thing every way of resuming a task passes on)
    :param prune: ``{"study": <the sweep's study spec>, "number": <the trial's number>, "metric":
        <the objective>}`` to prune the trial from its per-step values; no secret in it (the study's
        database is reached through its connection id)
    """

    def __init__(
        self,
        *,
        mailbox: str,
        job_id: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        instance_id: str | None = None,
        poll_interval: float = 10.0,
        heartbeat_timeout: float = 300.0,
        start_timeout: float = 1800.0,
        log_index: int = 0,
        submitted: float | None = None,
        job: dict[str, Any] | None = None,
        prune: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.mailbox = mailbox
        self.job_id = job_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.instance_id = instance_id
        self.poll_interval = poll_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self.log_index = log_index
        self.submitted = submitted if submitted is not None else time.time()
        self.job = dict(job or {})
        self.prune = dict(prune) if prune else None
        self._reporter: Any = None

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "mailbox": self.mailbox,
                "job_id": self.job_id,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "instance_id": self.instance_id,
                "poll_interval": self.poll_interval,
                "heartbeat_timeout": self.heartbeat_timeout,
                "start_timeout": self.start_timeout,
                "log_index": self.log_index,
                "submitted": self.submitted,
                "job": self.job,
                "prune": self.prune,
            },
        )

    def look(self, log_index: int) -> dict[str, Any]:
        """Look once (blocking): the job's status, new log chunks, and the instance's state."""
        from airflow_provider_mlci.core.compute.jobs import JobStore
        from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

        hook = GpuInstanceHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        store = JobStore(hook.s3_client, self.mailbox)
        status = store.status(self.job_id)
        chunks = store.log_chunks(self.job_id, start=log_index)
        state = None
        if self.instance_id and (status is None or not status.finished):
            state = hook.instance_state(self.instance_id)
        seen = {"status": status, "chunks": chunks, "instance_state": state, "pruned": None, "bad_progress": None}
        if self.prune and status is not None and status.state == "running":
            from airflow_provider_mlci.exceptions import MlciConfigError

            try:
                seen["pruned"] = self.prune_from(store.progress(self.job_id))
            except MlciConfigError as exc:
                seen["bad_progress"] = str(exc)
        return seen

    def prune_from(self, progress: str | None) -> tuple[int, float] | None:
        """Report the table's new steps to the trial; return its step and value if it is to be pruned.

        :param progress: the per-step table as the agent last copied it (``None``: none yet)
        """
        from airflow_provider_mlci.core.experiments.pruning import parse_steps

        if not progress:
            return None
        reporter = self._reporter or self._open_reporter()
        if reporter.feed(parse_steps(progress, reporter.on.column, name=reporter.on.file)):
            return reporter.pruned
        return None

    def _open_reporter(self) -> Any:
        from airflow_provider_mlci.core.experiments.pruning import PruneOn, StepReporter
        from airflow_provider_mlci.core.experiments.study import trial_of
        from airflow_provider_mlci.hooks.study import open_sweep_study

        spec = dict(self.prune["study"])  # type: ignore[index]
        goal = str(spec.get("goal") or "max")
        on = PruneOn.of(spec.get("prune_on"), metric=str(self.prune["metric"]), goal=goal)  # type: ignore[index]
        study = open_sweep_study(spec, key=self.job_id)
        trial, last = trial_of(study, int(self.prune["number"]))  # type: ignore[index]
        self._reporter = StepReporter(on, goal=goal, trial=trial, last=last)
        return self._reporter

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        log_index = self.log_index
        while True:
            seen = await sync_to_async(self.look)(log_index)
            for index, text in seen["chunks"]:
                for line in text.splitlines():
                    self.log.info("[instance] %s", line)
                log_index = index + 1
            event = self.verdict(
                seen["status"],
                seen["instance_state"],
                time.time(),
                pruned=seen["pruned"],
                bad_progress=seen["bad_progress"],
            )
            if event is not None:
                self.log.info("Job %s: %s %s", self.job_id, event["status"], event.get("message") or "")
                yield TriggerEvent({**event, "job_id": self.job_id, "log_index": log_index, "job": self.job})
                return
            await asyncio.sleep(self.poll_interval)

    def verdict(
        self,
        status: Any,
        instance_state: str | None,
        now: float,
        *,
        pruned: tuple[int, float] | None = None,
        bad_progress: str | None = None,
    ) -> dict[str, Any] | None:
        """The terminal event for what was seen, or ``None`` to keep waiting.

        :param status: the job's :class:`~airflow_provider_mlci.core.compute.jobs.JobStatus` or ``None``
        :param instance_state: the instance's EC2 state, if known
        :param now: the current time (epoch seconds)
        :param pruned: the step and value at which the pruner stopped the trial
        :param bad_progress: why the per-step table cannot be read
        """
        if status is not None and status.finished:
            return {"status": status.state, "message": status.message, "extra": status.extra}
        if pruned is not None:
            column = self._reporter.on.column if self._reporter is not None else "value"
            step, value = pruned
            return {
                "status": "pruned",
                "message": f"pruned at step {step} ({column} = {value:g})",
                "extra": {"step": step, "value": value, "column": column},
            }
        if bad_progress is not None:
            return {"status": "bad_progress", "message": bad_progress}
        if instance_state in _GONE:
            return {"status": "instance_gone", "message": f"instance {self.instance_id} is {instance_state}"}
        if status is None or (status.state == "claimed" and status.heartbeat is None):
            if now - self.submitted > self.start_timeout:
                return {
                    "status": "not_started",
                    "message": f"no agent started job {self.job_id} within {self.start_timeout:.0f} s",
                }
            return None
        last = status.heartbeat or status.time
        if now - last > self.heartbeat_timeout:
            return {
                "status": "heartbeat_timeout",
                "message": f"no heartbeat from job {self.job_id} for {now - last:.0f} s "
                f"(limit {self.heartbeat_timeout:.0f} s)",
            }
        return None
