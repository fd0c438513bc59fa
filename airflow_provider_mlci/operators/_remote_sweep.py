"""The ``ec2`` compute backend of :class:`~airflow_provider_mlci.operators.sweep.SweepTrialOperator`.

Each trial gets an instance of its own: ``start`` launches it (or adopts the one an earlier try
of the same map index launched: the launch is keyed by DAG, run, task and map index), submits
the trial as a reproduction job to its mailbox and defers; ``finish`` copies the instance's log
into the task log, records the trial as a DVC experiment on the git remote (see
:mod:`~airflow_provider_mlci.core.experiments_remote`), and terminates the instance whatever
the outcome. ``on_kill`` terminates it while the task has not deferred; the sweep's
``terminate`` teardown task, the instance's own deadline and the reaper cover the rest.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.operators._errors import airflow_failures

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
    from airflow_provider_mlci.operators.sweep import SweepTrialOperator

__all__ = ["RemoteTrial"]

#: The XCom key each trial pushes its instance under, before submitting anything.
INSTANCE_KEY = "instance"


class RemoteTrial:
    """Run one :class:`SweepTrialOperator` trial on a GPU instance of its own.

    :param operator: the operator (its arguments, log and ``defer``)
    """

    def __init__(self, operator: SweepTrialOperator) -> None:
        self.op = operator
        self.log = operator.log

    def gpu_hook(self, region_name: str | None) -> GpuInstanceHook:
        from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

        return GpuInstanceHook(aws_conn_id=self.op.aws_conn_id, region_name=region_name)

    def start(self, context: Context) -> Any:
        """Return the trial's result if its experiment exists; else launch, submit, and defer."""
        from airflow_provider_mlci.core.compute.ec2 import run_key
        from airflow_provider_mlci.core.compute.jobs import JobStore, job_id_for, parse_s3_url
        from airflow_provider_mlci.core.compute.remote import resumable_job
        from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
        from airflow_provider_mlci.core.experiments_remote import existing_trial, submit_trial
        from airflow_provider_mlci.core.process import CommandRunner
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.hooks.gpu import job_base_setting
        from airflow_provider_mlci.triggers.compute import RemoteJobTrigger

        op = self.op
        ti = context["ti"]
        map_index = -1 if ti.map_index is None else int(ti.map_index)
        with airflow_failures():
            op.check_arguments()
            spec = GpuInstanceSpec.from_mapping(op.instance or {})
            base = op.job_base or job_base_setting()
            if not base:
                raise MlciConfigError(
                    "compute='ec2' needs job_base or the setting [mlci] compute_job_base (s3://bucket/prefix): "
                    "the trial's job goes through the instance's mailbox there."
                )
            parse_s3_url(base)
            task_key = run_key(ti.dag_id, ti.run_id, ti.task_id, map_index)
            mailbox = f"{base.rstrip('/')}/{task_key}"
            op._runner = CommandRunner(log=self.log)
            with op.hook.open_workspace(op.rev, runner=op._runner, python=op.python) as workspace:
                done = existing_trial(workspace, op.trial, objective=op.objective)
                if done is not None:
                    self.log.info("Trial %s is on the git remote already (%s)", done["name"], done["sha"])
                    return {"repo": workspace.access.git.display_url, "rev": op.rev, **done}
                hook = self.gpu_hook(spec.region)
                store = JobStore(hook.s3_client, mailbox)
                job_id, attempt = resumable_job(store, task_key, heartbeat_timeout=op.heartbeat_timeout)
                instance = hook.launch_for_task(
                    spec,
                    dag_id=ti.dag_id,
                    run_id=ti.run_id,
                    task_id=ti.task_id,
                    map_index=map_index,
                    mailbox=mailbox,
                )
                op._instance_ids = [instance["instance_id"]]
                ti.xcom_push(key=INSTANCE_KEY, value=instance)
                self.log.info(
                    "%s instance %s (%s, %s) for trial %s, deadline %s",
                    "Adopted" if instance["adopted"] else "Launched",
                    instance["instance_id"],
                    instance["instance_type"],
                    instance["market"],
                    op.trial.get("name"),
                    instance["expires_at"],
                )
                try:
                    if job_id is not None:
                        self.log.info("Waiting again for job %s, which an earlier try submitted", job_id)
                        job_spec = store.job(job_id)
                    else:
                        job_id = job_id_for(task_key, attempt)
                        job_spec = submit_trial(
                            workspace,
                            store,
                            job_id=job_id,
                            trial=op.trial,
                            targets=op.target_list(),
                            heartbeat_interval=max(1.0, min(10.0, op.heartbeat_timeout / 6)),
                        )
                        self.log.info(
                            "Submitted trial %s (%s) as job %s to %s",
                            op.trial.get("name"),
                            " ".join(op.trial.get("overrides") or []),
                            job_id,
                            mailbox,
                        )
                except BaseException:
                    self.terminate(hook, [instance["instance_id"]])
                    raise
                job = {
                    "job_id": job_id,
                    "repo": workspace.access.git.display_url,
                    "sha": job_spec.sha if job_spec else None,
                    "baseline": workspace.sha,
                    "mailbox": mailbox,
                    "instance_id": instance["instance_id"],
                    "region": instance.get("region"),
                }
        return op.defer(  # raises TaskDeferred
            trigger=RemoteJobTrigger(
                mailbox=mailbox,
                job_id=job_id,
                aws_conn_id=op.aws_conn_id,
                region_name=instance.get("region"),
                instance_id=instance["instance_id"],
                poll_interval=op.poll_interval,
                heartbeat_timeout=op.heartbeat_timeout,
                start_timeout=op.start_timeout,
                submitted=job_spec.created if job_spec else None,
                job=job,
            ),
            method_name="execute_complete",
        )

    def finish(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Copy the job's log, record the trial (or its failure), and terminate the instance in any case."""
        from airflow_provider_mlci.core.compute.jobs import JobStore
        from airflow_provider_mlci.core.compute.remote import outcome_from_result, raise_for_event
        from airflow_provider_mlci.core.experiments_remote import failed_trial, record_trial
        from airflow_provider_mlci.core.process import CommandRunner
        from airflow_provider_mlci.exceptions import DvcStageFailedError, RemoteJobFailedError

        op = self.op
        job = event["job"]
        hook = self.gpu_hook(job.get("region"))
        try:
            with airflow_failures():
                store = JobStore(hook.s3_client, job["mailbox"])
                for _, text in store.log_chunks(job["job_id"], start=int(event.get("log_index") or 0)):
                    for line in text.splitlines():
                        self.log.info("[instance] %s", line)
                where = f"job {job['job_id']} on instance {job['instance_id']}"
                try:
                    raise_for_event(event, where)
                except DvcStageFailedError as exc:
                    result = failed_trial(job["baseline"], op.trial, str(exc))
                    return {"repo": job.get("repo"), "rev": op.rev, **result, "compute": self.compute(job)}
                found = store.result(job["job_id"])
                if found is None:
                    raise RemoteJobFailedError(f"The job says it succeeded but left no result.json [{where}]")
                outcome = outcome_from_result(found)
                op._runner = CommandRunner(log=self.log)
                with op.hook.open_workspace(job["baseline"], runner=op._runner) as workspace:
                    result = record_trial(workspace, op.trial, outcome, objective=op.objective)
                return {
                    "repo": job.get("repo"),
                    "rev": op.rev,
                    **result,
                    "stages": dict(outcome.stages),
                    "compute": self.compute(job),
                }
        finally:
            self.terminate(hook, [job["instance_id"], *op._instance_ids])

    @staticmethod
    def compute(job: dict[str, Any]) -> dict[str, Any]:
        """Where the trial ran, for its XCom."""
        return {"backend": "ec2", "instance_id": job["instance_id"], "job_id": job["job_id"]}

    def terminate(self, hook: GpuInstanceHook, instance_ids: list[str]) -> None:
        """Terminate the trial's instance without waiting; a failure is logged (teardown and the reaper remain)."""
        ids = list(dict.fromkeys(i for i in instance_ids if i))
        if not ids:
            return
        try:
            hook.terminate(ids)
        except Exception:
            self.log.exception("Could not terminate %s (the sweep's teardown and the reaper will)", ids)
        else:
            self.log.info("Terminated instance(s) %s of trial %s", ids, self.op.trial.get("name"))
