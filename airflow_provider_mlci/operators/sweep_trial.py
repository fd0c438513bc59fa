"""One trial of a sweep, on this worker or on a GPU instance of its own: :class:`SweepTrialOperator`.

Re-exported by :mod:`airflow_provider_mlci.operators.sweep` (see there for the whole sweep).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.config import Compute, Ec2Compute, resolve_compute
from airflow_provider_mlci.operators.base import (
    SWEEP_COLOR,
    DvcWorkspaceMixin,
    airflow_failures,
    map_index_of,
    terminate_without_waiting,
)
from airflow_provider_mlci.operators.remote_job import RemoteJobMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.experiments.sweep import Objective
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["SweepTrialOperator"]


class SweepTrialOperator(RemoteJobMixin, DvcWorkspaceMixin, BaseOperator):
    """Run one trial of a sweep as a DVC experiment in a checkout of its own; map it over the trials.

    ``dvc exp run --name <trial> -S <param>=<value> ...`` on this worker (each stage first looks in
    the run-cache), then the outputs and run-cache go to the DVC remote and the experiment's ref
    to the git remote. Returns ``{"name", "params", "status", "value", "metrics", "exp_ref",
    "sha", ...}`` (see :func:`~airflow_provider_mlci.core.experiments.trials.run_trial`).

    A trial whose stage fails returns ``status: "failed"`` and the task succeeds, so that the
    leaderboard can count failures against ``max_failed_trials``; with
    ``fail_on_trial_failure=True`` the task fails instead (the leaderboard still counts it, as
    long as it runs with ``trigger_rule="all_done"``). An objective metric that the pipeline does
    not produce fails the task: the sweep itself is wrong.

    With an objective ``target`` and ``stop_when_target_met``, a trial that starts after another
    trial of the run reached the target is skipped; trials already running finish.

    A slot of an adaptive sweep (``trial["study"]``, from ``SweepTrialsOperator(study=...)``) asks
    the study for its point when it starts (keyed by the task instance: a retry gets the point its
    first try asked for), runs it as any trial, and tells the study the objective, or ``FAIL`` when
    the trial failed. A task that fails for another reason (DVC, the network) tells nothing: its
    retry takes the same point up again. With a pruner, a local trial's task watches the per-step
    table its stage writes; on ``ec2`` the instance's agent copies that table to the job's mailbox
    and the trigger reports it to the study (from the triggerer): a pruned trial's instance is
    terminated as soon as the task resumes, and the trial returns ``status: "pruned"``.

    With ``compute="ec2"`` the trial runs on a GPU instance of its own: the task launches it (a
    retry adopts the one an earlier try launched), submits the trial to the instance's agent as
    a reproduction of a commit holding the trial's params, and waits in the triggerer; then it
    commits the params, ``dvc.lock`` and metrics the instance handed back as the experiment
    (parent: the baseline) and pushes its ref, so the trial is a DVC experiment like a local
    one; the result also says ``"compute": {"backend": "ec2", "instance_id", "job_id"}``. The
    instance is terminated when the trial ends, whatever the outcome, and by ``on_kill`` before
    the task defers; after that, the sweep's ``terminate`` teardown task ends what is left (see
    :class:`~airflow_provider_mlci.task_groups.sweep.SweepTaskGroup`).

    :param trial: ``{"name", "params", "rev"}`` from :class:`SweepTrialsOperator` (templated; map
        with ``.expand(trial=...)``)
    :param objective: ``{"metric": "accuracy", "goal": "max", "target": 0.9}``
    :param rev: the revision, when the trial carries none (templated)
    :param targets: stages to run (templated); default: the whole pipeline
    :param fail_on_trial_failure: fail the task when the trial fails
    :param stop_when_target_met: skip this trial when another one already met the target
    :param python: the interpreter (or virtualenv folder) stage commands run with
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    :param compute: where the trial runs: ``"local"`` (this worker) or an
        :class:`~airflow_provider_mlci.config.Ec2Compute` whose ``instance`` each trial launches
        for itself (``compute="ec2", instance=...`` and the other ec2-only keywords still work
        for this release, deprecated)
    """

    template_fields: Sequence[str] = ("trial", "rev", "targets", "ec2")
    ui_color = SWEEP_COLOR

    def __init__(
        self,
        *,
        trial: Mapping[str, Any] | str,
        objective: Mapping[str, Any] | None = None,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        fail_on_trial_failure: bool = False,
        stop_when_target_met: bool = True,
        python: str | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        compute: str | Compute | Ec2Compute = Compute.LOCAL,
        **kwargs: Any,
    ) -> None:
        self.compute, self.ec2 = resolve_compute(compute, kwargs, owner=f"SweepTrialOperator {kwargs.get('task_id')!r}")
        super().__init__(**kwargs)
        self.trial = trial
        self.objective = objective
        self.rev = rev
        self.targets = targets
        self.fail_on_trial_failure = fail_on_trial_failure
        self.stop_when_target_met = stop_when_target_met
        self.python = python
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir
        self._instance_ids: list[str] = []
        self._asked: Any = None

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.experiments.sweep import Objective
        from airflow_provider_mlci.exceptions import MlciConfigError

        with airflow_failures():
            if not isinstance(self.trial, Mapping) or not isinstance(self.trial.get("params"), Mapping):
                raise MlciConfigError(f"trial={self.trial!r}: give {{'name', 'params'}} from SweepTrialsOperator.")
            objective = Objective.of(self.objective) if self.objective else None
        self._skip_if_target_met(context, objective)
        self._skip_if_out_of_time()
        if self.trial.get("rev"):
            self.rev = str(self.trial["rev"])
        asked = None
        if self.trial.get("study"):
            with airflow_failures():
                study, asked = self._ask(context)
        # On ec2 the task defers, unless the trial is on the git remote already.
        result = self.submit_to_instance(context) if self.compute is Compute.EC2 else self._with_workspace(context)
        if asked is not None:
            self._tell(study, asked.number, result)
        return self._finished(result)

    def _study(self, ti: Any) -> Any:
        """Open the sweep's study (its database through its connection), its sampler seeded from the
        sweep's seed and this task's place in the sweep (not the run: the same seed asks alike run
        after run).

        :param ti: the task instance
        """
        from airflow_provider_mlci.hooks.study import open_sweep_study

        return open_sweep_study(self.trial["study"], key=f"{ti.dag_id}/{ti.task_id}/{map_index_of(ti)}")

    def _ask(self, context: Context) -> tuple[Any, Any]:
        """Ask the sweep's study for this slot's point; make it this task's trial."""
        from airflow_provider_mlci.core.experiments.study import ask
        from airflow_provider_mlci.core.experiments.sweep import SearchSpace, Trial

        spec = dict(self.trial["study"])
        ti = context["ti"]
        key = f"{ti.dag_id}/{ti.run_id}/{ti.task_id}/{map_index_of(ti)}"
        study = self._study(ti)
        asked = self._asked = ask(study, key, SearchSpace.of(spec["space"]))
        trial = Trial(name=str(self.trial["name"]), params=asked.params)
        self.trial = {**self.trial, "params": asked.params, "overrides": trial.overrides, "study_trial": asked.number}
        again = " (this task's earlier try asked for it)" if asked.retried else ""
        self.log.info("Study %s trial %d%s: %s", spec["name"], asked.number, again, " ".join(trial.overrides))
        return study, asked

    def _pruned_or_run(self, workspace: Workspace) -> dict[str, Any]:
        """Run the trial while watching its per-step values; stop its stage when the pruner says so."""
        from airflow_provider_mlci.core.experiments.pruning import PruneOn, PruneWatch
        from airflow_provider_mlci.core.experiments.remote import save_pruned
        from airflow_provider_mlci.core.experiments.trials import run_trial
        from airflow_provider_mlci.exceptions import MlciError

        spec = self.trial["study"]
        on = PruneOn.of(spec.get("prune_on"), metric=self._metric, goal=str(spec.get("goal") or "max"))
        watch = PruneWatch(
            workspace.path / on.file,
            on,
            goal=str(spec.get("goal")),
            trial=self._asked.trial,
            stop=self._runner.interrupt,
            root=workspace.path,
        )
        try:
            with watch:
                result = run_trial(workspace, self.trial, objective=self.objective, targets=self.targets)
        except MlciError:
            if watch.pruned is None:
                raise
            result = None
        if watch.error is not None:
            raise watch.error
        if watch.pruned is None:
            return result  # type: ignore[return-value]
        step, value = watch.pruned
        pruned = self._pruned_result(workspace.sha, step, value, on.column)
        try:  # for inspection only: the trial stands as pruned without it
            pruned["partial_ref"] = save_pruned(workspace, self.trial, on.file)
        except MlciError as exc:
            self.log.warning("Could not keep the pruned trial's partial work: %s", exc)
        return pruned

    def _tell(self, study: Any, number: int, result: dict[str, Any]) -> None:
        """Tell the study how the trial ended: its objective, pruned, or a failure."""
        from airflow_provider_mlci.core.experiments.study import tell

        if result["status"] == "pruned":
            tell(study, number, None, state="pruned")
        elif result["status"] == "success" and result.get("value") is not None:
            tell(study, number, float(result["value"]))
        else:
            tell(study, number, None, state="fail")
        result["study_trial"] = number

    def _pruned_result(self, sha: str, step: int, value: float, column: str) -> dict[str, Any]:
        """The result of a trial the pruner stopped at ``step``."""
        from airflow_provider_mlci.core.experiments.sweep import Trial
        from airflow_provider_mlci.core.experiments.trials import trial_result

        pruned = trial_result(Trial(name=str(self.trial["name"]), params=dict(self.trial["params"])), sha)
        pruned.update(status="pruned", error=f"pruned at step {step} ({column} = {value:g})", pruned_at=step)
        self.log.info(
            "Trial %s pruned at step %d (%s = %g); its stage was stopped", pruned["name"], step, column, value
        )
        return pruned

    def _progress(self, poll_interval: float) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """What an ec2 trial's agent copies to the mailbox, and what the trigger needs to prune it
        (``None, None`` when the sweep has no pruner)."""
        from airflow_provider_mlci.core.experiments.pruning import PruneOn

        spec = dict(self.trial.get("study") or {})
        if not spec.get("pruner"):
            return None, None
        on = PruneOn.of(spec.get("prune_on"), metric=self._metric, goal=str(spec.get("goal") or "max"))
        prune = {"study": spec, "number": int(self.trial["study_trial"]), "metric": self._metric}
        return {"file": on.file, "interval": max(0.5, min(poll_interval, 5.0))}, prune

    def submit_to_instance(self, context: Context) -> dict[str, Any]:
        """Return the trial's result if its experiment exists; else launch an instance of its own
        (or adopt the one an earlier try launched), submit the trial there and defer (``ec2``)."""
        from airflow_provider_mlci.core.compute.jobs import parse_s3_url
        from airflow_provider_mlci.core.compute.remote import RemoteJob, submit_or_resume
        from airflow_provider_mlci.core.experiments.remote import existing_trial, submit_trial
        from airflow_provider_mlci.core.runtime.process import CommandRunner
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.hooks.gpu import job_base_setting
        from airflow_provider_mlci.operators.gpu import INSTANCE_XCOM_KEY

        ti = context["ti"]
        with airflow_failures():
            self.check_arguments()
            ec2 = self.ec2_compute
            spec = ec2.spec
            base = ec2.job_base or job_base_setting()
            if not base:
                raise MlciConfigError(
                    "Ec2Compute needs job_base or the setting [mlci] compute_job_base (s3://bucket/prefix): "
                    "the trial's job goes through the instance's mailbox there."
                )
            parse_s3_url(base)
            task_key = self.task_key(context)
            mailbox = f"{base.rstrip('/')}/{task_key}"
            self._runner = CommandRunner(log=self.log)
            with self.hook.open_workspace(self.rev, runner=self._runner, python=self.python) as workspace:
                done = existing_trial(workspace, self.trial, objective=self.objective)
                if done is not None:
                    self.log.info("Trial %s is on the git remote already (%s)", done["name"], done["sha"])
                    return {"repo": workspace.access.git.display_url, "rev": self.rev, **done}
                hook = self.gpu_hook(spec.region)
                store = self.job_store(mailbox, spec.region)
                instance = hook.launch_for_task(
                    spec,
                    dag_id=ti.dag_id,
                    run_id=ti.run_id,
                    task_id=ti.task_id,
                    map_index=map_index_of(ti),
                    mailbox=mailbox,
                )
                self._instance_ids = [instance["instance_id"]]
                ti.xcom_push(key=INSTANCE_XCOM_KEY, value=instance)
                self.log.info(
                    "%s instance %s (%s, %s) for trial %s, deadline %s",
                    "Adopted" if instance["adopted"] else "Launched",
                    instance["instance_id"],
                    instance["instance_type"],
                    instance["market"],
                    self.trial.get("name"),
                    instance["expires_at"],
                )

                progress, prune = self._progress(ec2.poll_interval)

                def submit(job_id: str) -> Any:
                    job_spec = submit_trial(
                        workspace,
                        store,
                        job_id=job_id,
                        trial=self.trial,
                        targets=self.target_list(),
                        heartbeat_interval=ec2.heartbeat_interval,
                        progress=progress,
                    )
                    self.log.info(
                        "Submitted trial %s (%s) as job %s to %s",
                        self.trial.get("name"),
                        " ".join(self.trial.get("overrides") or []),
                        job_id,
                        mailbox,
                    )
                    return job_spec

                try:
                    job_id, job_spec = submit_or_resume(
                        store, task_key, submit, heartbeat_timeout=ec2.heartbeat_timeout, log=self.log
                    )
                except BaseException:
                    self._terminate_trial_instances([instance["instance_id"]], spec.region)
                    raise
                job = RemoteJob(
                    job_id=job_id,
                    mailbox=mailbox,
                    instance_id=instance["instance_id"],
                    region=instance.get("region"),
                    repo=workspace.access.git.display_url,
                    sha=job_spec.sha if job_spec else None,
                    submitted=job_spec.created if job_spec else None,
                    extra={"baseline": workspace.sha, "trial": dict(self.trial)},
                )
        return self.wait_for_job(job, prune=prune)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish a trial on a GPU instance: its log, its experiment, the instance terminated (``ec2``)."""
        from airflow_provider_mlci.core.compute.remote import RemoteJob, job_outcome
        from airflow_provider_mlci.core.experiments.remote import failed_trial, record_trial
        from airflow_provider_mlci.core.runtime.process import CommandRunner
        from airflow_provider_mlci.exceptions import DvcStageFailedError, MlciConfigError

        job = RemoteJob.from_json(event["job"])
        # The trial as the task asked for it (an adaptive slot's point is not in the mapped input).
        self.trial = job.extra.get("trial") or self.trial
        try:
            with airflow_failures():
                job, store = self.ended_job(event)
                baseline = job.extra["baseline"]
                result = {"repo": job.repo, "rev": self.rev}
                if event.get("status") == "bad_progress":
                    raise MlciConfigError(f"Trial {self.trial.get('name')}: {event.get('message')}")
                if event.get("status") == "pruned":  # nothing to record: the instance goes at once
                    extra = event.get("extra") or {}
                    step, value, column = int(extra["step"]), float(extra["value"]), str(extra["column"])
                    result.update(self._pruned_result(baseline, step, value, column), compute=job.compute_record())
                else:
                    try:
                        outcome = job_outcome(store, job, event)
                    except DvcStageFailedError as exc:
                        found = failed_trial(baseline, self.trial, str(exc))
                        result.update(found, compute=job.compute_record())
                    else:
                        self._runner = CommandRunner(log=self.log)
                        with self.hook.open_workspace(baseline, runner=self._runner) as workspace:
                            found = record_trial(workspace, self.trial, outcome, objective=self.objective)
                        result.update(found, stages=dict(outcome.stages), compute=job.compute_record())
        finally:
            self._terminate_trial_instances([job.instance_id, *self._instance_ids], job.region)
        if result["status"] == "success":
            self.log.info(
                "Trial %s: %s = %s (experiment %s)", result["name"], self._metric, result["value"], result["exp_ref"]
            )
        elif result["status"] != "pruned":
            self.log.warning("Trial %s failed: %s", result["name"], result["error"])
        return self._told(context, result)

    def _told(self, context: Context, result: dict[str, Any]) -> dict[str, Any]:
        """Tell an adaptive sweep's study how this ec2 trial ended; return its result."""
        if self.trial.get("study") and self.trial.get("study_trial") is not None:
            ti = context["ti"]
            study = self._study(ti)
            with airflow_failures():
                self._tell(study, int(self.trial["study_trial"]), result)
        return self._finished(result)

    def _terminate_trial_instances(self, instance_ids: list[str], region: str | None) -> None:
        """Terminate the trial's instance(s) without waiting; a failure is logged (the sweep's
        teardown, the instance's deadline and the reaper remain)."""
        if not any(instance_ids):
            return
        others = "the sweep's teardown and the reaper"
        if ids := terminate_without_waiting(self.gpu_hook(region), instance_ids, self.log, others=others):
            self.log.info("Terminated instance(s) %s of trial %s", ids, self.trial.get("name"))

    def _finished(self, result: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import MlciError

        if result["status"] not in ("success", "pruned") and self.fail_on_trial_failure:
            with airflow_failures():
                raise MlciError(f"Trial {result['name']} failed: {result['error']}")
        return result

    def on_kill(self) -> None:
        """Stop the running git or DVC process; with ``ec2``, terminate the instance this try launched."""
        super().on_kill()
        ids, self._instance_ids = self._instance_ids, []
        if ids:
            self.log.warning("Task killed: terminating instance(s) %s", ids)
            self._terminate_trial_instances(ids, self.ec2_compute.spec.region)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets

        check_targets(self.targets)
        if self.compute is Compute.EC2 and self.ec2_compute.instance is None:
            from airflow_provider_mlci.exceptions import MlciConfigError

            raise MlciConfigError(
                "compute=Ec2Compute(...) needs instance: the GpuInstanceSpec (or its mapping) each trial launches."
            )

    def target_list(self) -> list[str]:
        """The stages to run, as a list (empty: the whole pipeline)."""
        from airflow_provider_mlci.core.dvc.ops import check_targets

        return list(check_targets(self.targets))

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.experiments.trials import run_trial

        if getattr(self, "_asked", None) is not None and (self.trial.get("study") or {}).get("pruner"):
            return self._pruned_or_run(workspace)
        result = run_trial(workspace, self.trial, objective=self.objective, targets=self.targets)
        if result["status"] == "success":
            self.log.info(
                "Trial %s: %s = %s (experiment %s)", result["name"], self._metric, result["value"], result["exp_ref"]
            )
        else:
            self.log.warning("Trial %s failed: %s", result["name"], result["error"])
        return result

    @property
    def _metric(self) -> str:
        return str((self.objective or {}).get("metric", "value"))

    def _skip_if_out_of_time(self) -> None:
        """Skip this trial when the sweep's time budget (``trial["deadline"]``) is spent."""
        import time

        from airflow.providers.common.compat.sdk import AirflowSkipException

        deadline = self.trial.get("deadline")
        if deadline is not None and time.time() > float(deadline):
            late = time.time() - float(deadline)
            raise AirflowSkipException(
                f"Trial {self.trial.get('name')} skipped: the sweep's time budget ran out {late:.0f} s ago."
            )

    def _skip_if_target_met(self, context: Context, objective: Objective | None) -> None:
        from airflow.providers.common.compat.sdk import AirflowSkipException

        from airflow_provider_mlci.core.experiments.sweep import best_trial, target_met

        if objective is None or objective.target is None or not self.stop_when_target_met:
            return
        # Every map index of this task in this run, in one call; the unfinished have no value yet.
        done = [r for r in context["ti"].xcom_pull(task_ids=[self.task_id]) or [] if isinstance(r, Mapping)]
        if target_met(done, objective):
            best = best_trial(done, objective) or {}
            raise AirflowSkipException(
                f"Trial {self.trial.get('name')} skipped: trial {best.get('name')} already reached "
                f"{objective.metric} = {best.get('value')} (target {objective.target})."
            )
