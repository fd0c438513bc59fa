"""A GPU instance around the tasks that need it: setup, the work, teardown.

::

    with GpuRunTaskGroup(group_id="gpu", spec=GpuInstanceSpec(gpu="t4", spot=True)) as gpu:
        DvcReproOperator(task_id="train", targets=["train"], compute=gpu.compute())

``<group>.launch`` starts the instance (a setup task), the tasks written inside the ``with``
block run after it, and ``<group>.terminate`` (a teardown task) runs after them whatever their
outcome: Airflow runs a teardown when its setup succeeded, even when the work failed or the
run was marked failed by hand. The instance also carries its own deadline, and the reaper
finds what all of that missed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup

from airflow_provider_mlci.config import Ec2Compute
from airflow_provider_mlci.operators.dvc import DvcWillItRunBranchOperator
from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator, GpuTerminateInstanceOperator

if TYPE_CHECKING:
    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec

__all__ = ["GpuRunTaskGroup"]


class GpuRunTaskGroup(TaskGroup):
    """Launch a GPU instance, run the group's tasks, terminate the instance whatever happened.

    :param group_id: the group's id
    :param spec: the instance (a :class:`~airflow_provider_mlci.core.compute.spec.GpuInstanceSpec`
        or its mapping)
    :param aws_conn_id: the ``aws`` connection (credentials, region, role)
    :param region_name: the AWS region; default: the spec's, else the connection's
    :param job_base: ``s3://bucket/prefix`` for the instance's mailbox; default: the provider
        setting ``[mlci] compute_job_base``
    :param pool: an Airflow pool the launch and the work tasks take a slot of; size it to the
        account's GPU quota (create it with ``include_deferred`` so deferred waits count)
    :param skip_if_nothing_runs: first ask DVC whether a reproduction of ``targets`` at ``rev``
        would run any stage (lock file and run-cache); if none would, launch nothing and skip
        the group's tasks
    :param rev: with ``skip_if_nothing_runs``: the revision (templated)
    :param targets: with ``skip_if_nothing_runs``: the stages
    :param dvc_conn_id: with ``skip_if_nothing_runs``: the ``mlci_dvc`` connection
    :param launch_args: more keyword arguments for the launch task (``retries``, ``timeout``, ...)
    :param kwargs: passed to ``TaskGroup`` (``tooltip``, ``default_args``, ...)
    """

    def __init__(
        self,
        *,
        group_id: str,
        spec: GpuInstanceSpec | Mapping[str, Any],
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        job_base: str | None = None,
        pool: str | None = None,
        skip_if_nothing_runs: bool = False,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        launch_args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(group_id=group_id, **kwargs)
        self.terminate: GpuTerminateInstanceOperator | None = None
        self._wired = True  # not while the launch task is being added below
        self.pool_name = pool
        extra: dict[str, Any] = dict(launch_args or {})
        if pool:
            extra.setdefault("pool", pool)
        with self:
            self.plan = None
            if skip_if_nothing_runs:
                self.plan = DvcWillItRunBranchOperator(
                    task_id="will_it_run",
                    if_run=self.child_id("launch"),
                    if_nothing=[],
                    rev=rev,
                    targets=targets,
                    dvc_conn_id=dvc_conn_id,
                )
            self.launch = GpuCreateInstanceOperator(
                task_id="launch",
                spec=spec,
                job_base=job_base,
                aws_conn_id=aws_conn_id,
                region_name=region_name,
                **extra,
            )
            if self.plan is not None:
                self.plan >> self.launch
        self._aws = {"aws_conn_id": aws_conn_id, "region_name": region_name}
        self._wired = False

    @property
    def setup_task_id(self) -> str:
        """The launch task's id: what the work tasks' ``Ec2Compute(instance_task_id=...)`` names."""
        return self.launch.task_id

    def compute(self, **options: Any) -> Ec2Compute:
        """Where the work tasks run: this group's instance, through its ``aws`` connection.

        :param options: more :class:`~airflow_provider_mlci.config.Ec2Compute` fields
            (``poll_interval``, ``heartbeat_timeout``, ``start_timeout``)
        """
        return Ec2Compute(
            **{"instance_task_id": self.setup_task_id, "aws_conn_id": self._aws["aws_conn_id"], **options}
        )

    def __exit__(self, _type: Any, _value: Any, _tb: Any) -> None:
        super().__exit__(_type, _value, _tb)
        if _type is not None or self._wired:
            return
        self._wired = True
        own = {self.launch.task_id, *([self.plan.task_id] if self.plan is not None else [])}
        work = [task for task in self if task.task_id not in own]
        with self:
            self.terminate = GpuTerminateInstanceOperator(
                task_id="terminate", create_task_id=self.launch.task_id, **self._aws
            )
        ids = {task.task_id for task in work}
        for task in work:
            if self.pool_name and task.pool == "default_pool":
                task.pool = self.pool_name
            if task.upstream_task_ids.isdisjoint(ids):
                self.launch >> task
            if task.downstream_task_ids.isdisjoint(ids):
                task >> self.terminate
        if not work:
            self.launch >> self.terminate
        self.terminate.as_teardown(setups=self.launch)
