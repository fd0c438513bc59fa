"""The ``ec2`` compute backend of :class:`~airflow_provider_mlci.operators.dvc.DvcReproOperator`.

``start`` runs on the worker: it finds the instance the setup task started (launching a
replacement when a spot reclaim took it, on-demand if the spec allows), resumes the job an
earlier try left or submits a new one, and defers. ``finish`` runs when the trigger fires: it
copies the rest of the instance's log into the task log and turns the job's end into the
task's result or error (a failed stage is not retried; an interruption is).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.operators._errors import airflow_failures

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.compute.jobs import JobStore
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
    from airflow_provider_mlci.operators.dvc import DvcReproOperator

__all__ = ["RemoteRepro"]

_ALIVE = ("pending", "running")


class RemoteRepro:
    """Run a :class:`DvcReproOperator`'s reproduction on a GPU instance.

    :param operator: the operator (its arguments, log and ``defer``)
    """

    def __init__(self, operator: DvcReproOperator) -> None:
        self.op = operator
        self.log = operator.log

    def gpu_hook(self, region_name: str | None) -> GpuInstanceHook:
        from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

        return GpuInstanceHook(aws_conn_id=self.op.aws_conn_id, region_name=region_name)

    def start(self, context: Context) -> Any:
        """Submit (or resume) the job on the instance and defer until it ends."""
        from airflow_provider_mlci.core.compute.ec2 import run_key
        from airflow_provider_mlci.core.compute.jobs import JobStore, job_id_for
        from airflow_provider_mlci.core.compute.remote import resumable_job, submit_repro
        from airflow_provider_mlci.core.process import CommandRunner
        from airflow_provider_mlci.triggers.compute import RemoteJobTrigger

        op = self.op
        ti = context["ti"]
        with airflow_failures():
            op.check_arguments()
            instance = self.instance(context)
            hook = self.gpu_hook(instance.get("region"))
            instance = self.alive_instance(hook, instance, context)
            store = JobStore(hook.s3_client, instance["mailbox"])
            task_key = run_key(ti.dag_id, ti.run_id, ti.task_id, ti.map_index)
            job_id, attempt = resumable_job(store, task_key, heartbeat_timeout=op.heartbeat_timeout)
            if job_id is not None:
                self.log.info("Waiting again for job %s, which an earlier try submitted", job_id)
                spec = store.job(job_id)
            else:
                job_id = job_id_for(task_key, attempt)
                op._runner = CommandRunner(log=self.log)
                with op.hook.open_workspace(op.rev, runner=op._runner, python=op.python) as workspace:
                    spec = submit_repro(
                        workspace,
                        store,
                        job_id=job_id,
                        request=op.repro_request(context),
                        heartbeat_interval=max(1.0, min(10.0, op.heartbeat_timeout / 6)),
                    )
                self.log.info(
                    "Submitted job %s (%s at %s) to instance %s through %s",
                    job_id,
                    op.rev,
                    spec.sha[:12],
                    instance["instance_id"],
                    instance["mailbox"],
                )
            job = {
                "job_id": job_id,
                "repo": spec.repo,
                "sha": spec.sha,
                "mailbox": instance["mailbox"],
                "instance_id": instance["instance_id"],
                "region": instance.get("region"),
            }
        op.defer(
            trigger=RemoteJobTrigger(
                mailbox=instance["mailbox"],
                job_id=job_id,
                aws_conn_id=op.aws_conn_id,
                region_name=instance.get("region"),
                instance_id=instance["instance_id"],
                poll_interval=op.poll_interval,
                heartbeat_timeout=op.heartbeat_timeout,
                start_timeout=op.start_timeout,
                submitted=spec.created,
                job=job,
            ),
            method_name="execute_complete",
        )

    def instance(self, context: Context) -> dict[str, Any]:
        """The instance the setup task (or an earlier try of this task) started."""
        from airflow_provider_mlci.exceptions import MlciConfigError

        ti = context["ti"]
        own = ti.xcom_pull(task_ids=ti.task_id, key="instance", map_indexes=ti.map_index)
        if own:
            return own
        instance = ti.xcom_pull(task_ids=self.op.instance_task_id, key="instance")
        if isinstance(instance, list):  # a mapped setup task: the one with our map index
            instance = instance[ti.map_index] if 0 <= ti.map_index < len(instance) else None
        if not instance or not instance.get("mailbox"):
            raise MlciConfigError(
                f"Task {self.op.instance_task_id!r} left no instance (XCom key 'instance'): is it a "
                "GpuCreateInstanceOperator upstream of this task, and did it succeed?"
            )
        return instance

    def alive_instance(self, hook: GpuInstanceHook, instance: dict[str, Any], context: Context) -> dict[str, Any]:
        """``instance`` if it is still up; else a replacement (a spot reclaim took it)."""
        state = hook.instance_state(instance["instance_id"])
        if state in _ALIVE:
            return instance
        ti = context["ti"]
        self.log.warning(
            "Instance %s is %s (spot reclaim or deadline): launching a replacement", instance["instance_id"], state
        )
        replacement = hook.launch_replacement(
            instance, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index
        )
        ti.xcom_push(key="instance", value=replacement)
        self.log.info(
            "Replacement instance %s (%s, %s)",
            replacement["instance_id"],
            replacement.get("instance_type"),
            replacement.get("market"),
        )
        return replacement

    def finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Copy the rest of the job's log, then return its outcome or raise its error."""
        from airflow_provider_mlci.core.compute.jobs import JobStore
        from airflow_provider_mlci.core.compute.remote import outcome_from_result, raise_for_event
        from airflow_provider_mlci.exceptions import RemoteJobFailedError
        from airflow_provider_mlci.operators.dvc import stage_io

        op = self.op
        job = event["job"]
        with airflow_failures():
            hook = self.gpu_hook(job.get("region"))
            store = JobStore(hook.s3_client, job["mailbox"])
            self.copy_log(store, job["job_id"], int(event.get("log_index") or 0))
            where = f"job {job['job_id']} on instance {job['instance_id']}"
            raise_for_event(event, where)
            result = store.result(job["job_id"])
            if result is None:
                raise RemoteJobFailedError(f"The job says it succeeded but left no result.json [{where}]")
            outcome = outcome_from_result(result)
            op._stage_io = stage_io(outcome, log=self.log)  # no checkout here: paths from the lock
            payload = op.outcome_json(outcome, self.commit(job, outcome) if op.commit_to else None)
            return {
                "repo": job.get("repo"),
                "rev": op.rev,
                "sha": job["sha"],
                **payload,
                "compute": {"backend": "ec2", "instance_id": job["instance_id"], "job_id": job["job_id"]},
            }

    def commit(self, job: dict[str, Any], outcome: Any) -> dict[str, Any]:
        """Write the job's lock entries and metrics into a checkout of its commit; commit them."""
        from airflow_provider_mlci.core import dvc_ops
        from airflow_provider_mlci.core.process import CommandRunner
        from airflow_provider_mlci.operators.dvc import _commit

        op = self.op
        op._runner = CommandRunner(log=self.log)
        with op.hook.open_workspace(job["sha"], runner=op._runner) as workspace:
            changed = dvc_ops.apply_handoff(workspace, outcome.handoff) if outcome.handoff else ()
            return _commit(workspace, list(changed), op.commit_spec(), self.log)

    def copy_log(self, store: JobStore, job_id: str, start: int) -> None:
        """Copy the job's log chunks from ``start`` on into the task log."""
        for _, text in store.log_chunks(job_id, start=start):
            for line in text.splitlines():
                self.log.info("[instance] %s", line)
