"""The ``compute="ec2"`` path of every operator: a job on a GPU instance, waited for deferred.

:class:`RemoteJobMixin` is the one way an operator runs work on an instance: it submits a job
to the instance's mailbox (or resumes the one an earlier try left, see
:func:`~airflow_provider_mlci.core.compute.remote.submit_or_resume`), defers to
:class:`~airflow_provider_mlci.triggers.compute.RemoteJobTrigger` (holding no worker slot), and
when the trigger fires copies the rest of the instance's log into the task log and reads the
job's outcome. What the job is (a reproduction, a sweep trial) and what its outcome becomes are
the operator's: it hands values in and gets values back.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.config import Ec2Compute
    from airflow_provider_mlci.core.compute.jobs import JobStore
    from airflow_provider_mlci.core.compute.remote import RemoteJob
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

__all__ = ["RemoteJobMixin"]

_ALIVE = ("pending", "running")


class RemoteJobMixin:
    """Submit, resume, wait for and finish a job on a GPU instance (for a ``BaseOperator``).

    The operator sets ``ec2`` (an :class:`~airflow_provider_mlci.config.Ec2Compute`: the
    connection and the waits of :class:`~airflow_provider_mlci.triggers.compute.RemoteJobTrigger`)
    and has an ``execute_complete(context, event)`` that calls :meth:`ended_job`.
    """

    ec2: Ec2Compute | None
    _gpu_hooks: dict[str | None, GpuInstanceHook] | None = None

    @property
    def ec2_compute(self) -> Ec2Compute:
        """The operator's :class:`~airflow_provider_mlci.config.Ec2Compute` (defaults when it has none)."""
        from airflow_provider_mlci.config import Ec2Compute

        return self.ec2 if self.ec2 is not None else Ec2Compute()

    def gpu_hook(self, region_name: str | None) -> GpuInstanceHook:
        """The operator's hook for instances in ``region_name`` (one per region, made once).

        :param region_name: the AWS region (``None``: the connection's)
        """
        from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

        if self._gpu_hooks is None:
            self._gpu_hooks = {}
        if region_name not in self._gpu_hooks:
            self._gpu_hooks[region_name] = GpuInstanceHook(
                aws_conn_id=self.ec2_compute.aws_conn_id, region_name=region_name
            )
        return self._gpu_hooks[region_name]

    def job_store(self, mailbox: str, region_name: str | None) -> JobStore:
        """The instance's mailbox, through the operator's hook.

        :param mailbox: ``s3://bucket/prefix/...``
        :param region_name: the instance's region
        """
        from airflow_provider_mlci.core.compute.jobs import JobStore

        return JobStore(self.gpu_hook(region_name).s3_client, mailbox)

    @staticmethod
    def task_key(context: Context) -> str:
        """The task's key (DAG, run, task, map index): what its jobs and launches are named after."""
        from airflow_provider_mlci.core.compute.ec2 import run_key
        from airflow_provider_mlci.operators.base import map_index_of

        ti = context["ti"]
        return run_key(ti.dag_id, ti.run_id, ti.task_id, map_index_of(ti))

    def upstream_instance(self, context: Context, instance_task_id: str) -> dict[str, Any]:
        """The live instance this task's job runs on: the one ``instance_task_id`` started (or a
        replacement an earlier try launched); a new replacement when a spot reclaim or the
        deadline took it, recorded in this task's XCom for its later tries.

        :param context: the task's context
        :param instance_task_id: the ``GpuCreateInstanceOperator`` task upstream
        :raises MlciConfigError: that task left no instance
        """
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.operators.gpu import INSTANCE_XCOM_KEY

        ti = context["ti"]
        instance = ti.xcom_pull(task_ids=ti.task_id, key=INSTANCE_XCOM_KEY, map_indexes=ti.map_index)
        if not instance:
            instance = ti.xcom_pull(task_ids=instance_task_id, key=INSTANCE_XCOM_KEY)
            if isinstance(instance, list):  # a mapped setup task: the one with our map index
                instance = instance[ti.map_index] if 0 <= ti.map_index < len(instance) else None
        if not instance or not instance.get("mailbox"):
            raise MlciConfigError(
                f"Task {instance_task_id!r} left no instance (XCom key {INSTANCE_XCOM_KEY!r}): is it a "
                "GpuCreateInstanceOperator upstream of this task, and did it succeed?"
            )
        hook = self.gpu_hook(instance.get("region"))
        state = hook.instance_state(instance["instance_id"])
        if state in _ALIVE:
            return instance
        log = self.log  # type: ignore[attr-defined]
        log.warning(
            "Instance %s is %s (spot reclaim or deadline): launching a replacement", instance["instance_id"], state
        )
        replacement = hook.launch_replacement(
            instance, dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=ti.map_index
        )
        ti.xcom_push(key=INSTANCE_XCOM_KEY, value=replacement)
        log.info(
            "Replacement instance %s (%s, %s)",
            replacement["instance_id"],
            replacement.get("instance_type"),
            replacement.get("market"),
        )
        return replacement

    def wait_for_job(self, job: RemoteJob, *, prune: dict[str, Any] | None = None) -> NoReturn:
        """Defer until the job ends; the task resumes in ``execute_complete`` with the event.

        :param job: the job submitted (or resumed)
        :param prune: what the trigger needs to prune an adaptive sweep's trial (see
            :class:`~airflow_provider_mlci.triggers.compute.RemoteJobTrigger`)
        """
        from airflow_provider_mlci.triggers.compute import RemoteJobTrigger

        ec2 = self.ec2_compute
        self.defer(  # type: ignore[attr-defined]
            trigger=RemoteJobTrigger(
                mailbox=job.mailbox,
                job_id=job.job_id,
                aws_conn_id=ec2.aws_conn_id,
                region_name=job.region,
                instance_id=job.instance_id,
                poll_interval=ec2.poll_interval,
                heartbeat_timeout=ec2.heartbeat_timeout,
                start_timeout=ec2.start_timeout,
                submitted=job.submitted,
                job=job.to_json(),
                prune=prune,
            ),
            method_name="execute_complete",
        )
        raise AssertionError("defer() returned")  # pragma: no cover (it raises TaskDeferred)

    def ended_job(self, event: dict[str, Any]) -> tuple[RemoteJob, JobStore]:
        """The job the trigger's event is about, and its mailbox, with the rest of its log
        copied into the task log. :func:`~airflow_provider_mlci.core.compute.remote.job_outcome`
        then gives its outcome or raises its error.

        :param event: the trigger's event
        """
        from airflow_provider_mlci.core.compute.remote import RemoteJob, copy_job_log

        job = RemoteJob.from_json(event["job"])
        store = self.job_store(job.mailbox, job.region)
        copy_job_log(store, job.job_id, int(event.get("log_index") or 0), self.log)  # type: ignore[attr-defined]
        return job, store
