"""Hyperparameter sweeps as Airflow mapped tasks: generate the trials, run each one, rank them.

::

    trials = SweepTrialsOperator(task_id="generate", space={"train.lr": {"loguniform": [1e-3, 1]}},
                                 max_trials=8)
    run = SweepTrialOperator.partial(task_id="trial", objective={"metric": "accuracy"},
                                     max_active_tis_per_dagrun=2).expand(trial=trials.output)
    board = SweepLeaderboardOperator(task_id="leaderboard", generate_task_id="generate",
                                     trial_task_id="trial", objective={"metric": "accuracy"},
                                     trigger_rule="all_done")
    trials >> run >> board

:class:`~airflow_provider_mlci.task_groups.sweep.SweepTaskGroup` wires the three for you. Each
trial runs the pipeline in its own checkout of the same commit (the one ``generate`` resolved)
and is recorded as a DVC experiment on the git remote, so ``dvc exp pull origin`` then
``dvc exp show`` list every trial in any clone.

To release the best trial, :class:`SweepBestBranchOperator` puts its experiment on a branch of
the git remote, :class:`~airflow_provider_mlci.operators.model.ModelGateBranchOperator` and
:class:`~airflow_provider_mlci.operators.model.PromoteModelOperator` gate and promote that
commit, and :class:`SweepPromotionOutcomeOperator` says what happened (the task group's
``promote`` option wires them).
"""

from __future__ import annotations

import hashlib
import html
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import DvcWorkspaceMixin, airflow_failures, map_index_of
from airflow_provider_mlci.operators.remote_job import RemoteJobMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.experiments.sweep import Objective
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "SweepBestBranchOperator",
    "SweepLeaderboardOperator",
    "SweepPromotionOutcomeOperator",
    "SweepTrialOperator",
    "SweepTrialsOperator",
]

_SWEEP_COLOR = "#f0b429"
#: The XCom key under which ``generate`` leaves the commit every trial starts from.
BASELINE_KEY = "baseline_sha"


def _int_or_none(value: Any, name: str) -> int | None:
    """Rendered templates are strings: ``"8"`` is 8, ``""`` / ``"None"`` is ``None``."""
    from airflow_provider_mlci.exceptions import MlciConfigError

    if value is None or value in ("", "None"):
        return None
    if isinstance(value, bool):
        raise MlciConfigError(f"{name}={value!r} is not a whole number.")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise MlciConfigError(f"{name}={value!r} is not a whole number.") from None


def check_compute(compute: str, instance: Any) -> None:
    """Check a sweep's ``compute`` and ``instance`` (no I/O).

    :param compute: ``local`` or ``ec2``
    :param instance: with ``ec2``: the GPU instance spec or its mapping
    :raises MlciConfigError: an unknown backend, ``ec2`` without an instance, an instance with
        ``local``, or a bad spec (naming the field)
    """
    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
    from airflow_provider_mlci.exceptions import MlciConfigError

    if compute not in ("local", "ec2"):
        raise MlciConfigError(f"compute={compute!r} is not one of 'local', 'ec2'.")
    if compute == "ec2":
        if instance is None:
            raise MlciConfigError(
                "compute='ec2' needs instance: the GpuInstanceSpec (or its mapping) each trial launches."
            )
        GpuInstanceSpec.from_mapping(instance)
    elif instance is not None:
        raise MlciConfigError("instance is given but compute='local': set compute='ec2' to run trials on it.")


class SweepTrialsOperator(DvcWorkspaceMixin, BaseOperator):
    """Expand a search space into the list of trials that a mapped task runs, one per trial.

    Resolves ``rev`` to a commit once, so that every trial starts from the same one even if the
    branch moves during the sweep, and names each trial ``trial-001-<run key>``: the run key
    (7 hex characters derived from the DAG run) keeps experiment names unique across runs, so
    no run's experiments ever collide with another's on the git remote. Fails at once, naming
    Airflow's ``[core] max_map_length``, when the sweep has more trials than Airflow can map.

    Returns ``[{"name", "params", "overrides", "rev"}]``; also pushes the commit under the XCom
    key ``baseline_sha``. With ``promotion``, also checks, before any trial runs, that the model
    name is valid and that the repository's ``.gto`` allows the stage.

    :param space: ``{param: distribution}`` (``[values]`` for a grid, ``{"choice": [...]}``,
        ``{"range": [start, stop, step]}``, ``{"uniform": [low, high]}``, ``{"loguniform": [low,
        high]}``) or DVC ``-S`` strings (``"train.lr=0.01,0.1"``, ``"train.epochs=range(5,20,5)"``)
        (templated)
    :param max_trials: the trial budget (templated); required when a param is sampled; a grid
        larger than it is cut to its first ``max_trials`` points
    :param seed: the seed of the random draws (templated)
    :param name_suffix: what follows ``trial-NNN-`` in the experiments' names (templated);
        default: derived from the DAG run; ``""`` for none (then re-running the same sweep on the
        same commit reuses the experiments already on the remote)
    :param rev: the revision every trial starts from (templated)
    :param promotion: ``{"model", "stage"}`` the best trial will be promoted to (templated)
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("space", "max_trials", "seed", "name_suffix", "rev", "promotion")
    ui_color = _SWEEP_COLOR

    def __init__(
        self,
        *,
        space: Mapping[str, Any] | Sequence[str],
        max_trials: int | str | None = None,
        seed: int | str = 0,
        name_suffix: str | None = None,
        rev: str = "HEAD",
        promotion: Mapping[str, str] | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.space = space
        self.max_trials = max_trials
        self.seed = seed
        self.name_suffix = name_suffix
        self.rev = rev
        self.promotion = promotion
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> list[dict[str, Any]]:
        from airflow_provider_mlci.core.model.registry import GitRegistry, check_model_name

        with airflow_failures():
            trials = self.expand_space(context)
            if self.promotion:
                check_model_name(self.promotion.get("model"))
        with airflow_failures(), self.hook.open_workspace(self.rev) as workspace:
            sha = workspace.sha
            if self.promotion:
                GitRegistry(workspace=workspace).check_stage(self.promotion.get("stage"))
        context["ti"].xcom_push(key=BASELINE_KEY, value=sha)
        self.log.info("%d trials from %s (%s)", len(trials), self.rev, sha[:12])
        for trial in trials:
            self.log.info("  %s: %s", trial["name"], " ".join(trial["overrides"]))
        return [{**trial, "rev": sha} for trial in trials]

    def expand_space(self, context: Context | None = None) -> list[dict[str, Any]]:
        """The trials of the space, named and checked (no I/O): ``[{"name", "params", "overrides"}]``.

        :param context: the task's context (for the default name suffix)
        :raises MlciConfigError: an unknown or malformed distribution (naming the param), no
            budget for a sampled space, more trials than ``[core] max_map_length``
        """
        from airflow.configuration import conf

        from airflow_provider_mlci.core.experiments.sweep import SearchSpace
        from airflow_provider_mlci.core.experiments.trials import check_experiment_name

        space = SearchSpace.of(self.space)
        map_limit = conf.getint("core", "max_map_length", fallback=1024)
        trials = space.trials(
            max_trials=_int_or_none(self.max_trials, "max_trials"),
            seed=_int_or_none(self.seed, "seed") or 0,
            map_limit=map_limit,
        )
        suffix = self.name_suffix
        if suffix is None:
            key = f"{context['ti'].dag_id}/{context['ti'].run_id}/{self.task_id}" if context else self.task_id
            suffix = hashlib.sha1(key.encode()).hexdigest()[:7]  # noqa: S324 (a name, not security)
        out = []
        for trial in trials:
            name = check_experiment_name(f"{trial.name}-{suffix}" if suffix else trial.name)
            out.append({**trial.to_json(), "name": name})
        return out


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
    :param compute: where the trial runs: ``local`` (this worker) or ``ec2`` (a GPU instance of its own)
    :param instance: with ``ec2``: the instance (a
        :class:`~airflow_provider_mlci.core.compute.spec.GpuInstanceSpec` or its mapping)
    :param aws_conn_id: with ``ec2``: the ``aws`` connection (launches the instance, reaches its mailbox)
    :param job_base: with ``ec2``: ``s3://bucket/prefix`` for the instance's mailbox (templated);
        default: the provider setting ``[mlci] compute_job_base``
    :param poll_interval: with ``ec2``: seconds between looks at the job
    :param heartbeat_timeout: with ``ec2``: seconds without a heartbeat after which the job counts
        as lost (the task fails and is retried as configured)
    :param start_timeout: with ``ec2``: seconds the job may wait for the instance's agent to take it
    """

    template_fields: Sequence[str] = ("trial", "rev", "targets", "job_base")
    ui_color = _SWEEP_COLOR

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
        compute: str = "local",
        instance: Mapping[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        job_base: str | None = None,
        poll_interval: float = 10.0,
        heartbeat_timeout: float = 300.0,
        start_timeout: float = 1800.0,
        **kwargs: Any,
    ) -> None:
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
        self.compute = compute
        self.instance = instance
        self.aws_conn_id = aws_conn_id
        self.job_base = job_base
        self.poll_interval = poll_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self._instance_ids: list[str] = []

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.experiments.sweep import Objective
        from airflow_provider_mlci.exceptions import MlciConfigError

        with airflow_failures():
            if not isinstance(self.trial, Mapping) or not isinstance(self.trial.get("params"), Mapping):
                raise MlciConfigError(f"trial={self.trial!r}: give {{'name', 'params'}} from SweepTrialsOperator.")
            objective = Objective.of(self.objective) if self.objective else None
        self._skip_if_target_met(context, objective)
        if self.trial.get("rev"):
            self.rev = str(self.trial["rev"])
        if self.compute == "ec2":
            return self._finished(self.submit_to_instance(context))
        return self._finished(self._with_workspace(context))

    def submit_to_instance(self, context: Context) -> dict[str, Any]:
        """Return the trial's result if its experiment exists; else launch an instance of its own
        (or adopt the one an earlier try launched), submit the trial there and defer (``ec2``)."""
        from airflow_provider_mlci.core.compute.jobs import parse_s3_url
        from airflow_provider_mlci.core.compute.remote import RemoteJob, submit_or_resume
        from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
        from airflow_provider_mlci.core.experiments.remote import existing_trial, submit_trial
        from airflow_provider_mlci.core.runtime.process import CommandRunner
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.hooks.gpu import job_base_setting
        from airflow_provider_mlci.operators.gpu import INSTANCE_XCOM_KEY

        ti = context["ti"]
        with airflow_failures():
            self.check_arguments()
            spec = GpuInstanceSpec.from_mapping(self.instance or {})
            base = self.job_base or job_base_setting()
            if not base:
                raise MlciConfigError(
                    "compute='ec2' needs job_base or the setting [mlci] compute_job_base (s3://bucket/prefix): "
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

                def submit(job_id: str) -> Any:
                    job_spec = submit_trial(
                        workspace,
                        store,
                        job_id=job_id,
                        trial=self.trial,
                        targets=self.target_list(),
                        heartbeat_interval=self.heartbeat_interval,
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
                        store, task_key, submit, heartbeat_timeout=self.heartbeat_timeout, log=self.log
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
                    extra={"baseline": workspace.sha},
                )
        return self.wait_for_job(job)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish a trial on a GPU instance: its log, its experiment, the instance terminated (``ec2``)."""
        from airflow_provider_mlci.core.compute.remote import RemoteJob, job_outcome
        from airflow_provider_mlci.core.experiments.remote import failed_trial, record_trial
        from airflow_provider_mlci.core.runtime.process import CommandRunner
        from airflow_provider_mlci.exceptions import DvcStageFailedError

        job = RemoteJob.from_json(event["job"])
        try:
            with airflow_failures():
                job, store = self.ended_job(event)
                baseline = job.extra["baseline"]
                try:
                    outcome = job_outcome(store, job, event)
                except DvcStageFailedError as exc:
                    found = failed_trial(baseline, self.trial, str(exc))
                    result = {"repo": job.repo, "rev": self.rev, **found, "compute": job.compute_record()}
                else:
                    self._runner = CommandRunner(log=self.log)
                    with self.hook.open_workspace(baseline, runner=self._runner) as workspace:
                        found = record_trial(workspace, self.trial, outcome, objective=self.objective)
                    result = {
                        "repo": job.repo,
                        "rev": self.rev,
                        **found,
                        "stages": dict(outcome.stages),
                        "compute": job.compute_record(),
                    }
        finally:
            self._terminate_trial_instances([job.instance_id, *self._instance_ids], job.region)
        if result["status"] == "success":
            self.log.info(
                "Trial %s: %s = %s (experiment %s)", result["name"], self._metric, result["value"], result["exp_ref"]
            )
        else:
            self.log.warning("Trial %s failed: %s", result["name"], result["error"])
        return self._finished(result)

    def _terminate_trial_instances(self, instance_ids: list[str], region: str | None) -> None:
        """Terminate the trial's instance(s) without waiting; a failure is logged (the sweep's
        teardown, the instance's deadline and the reaper remain)."""
        ids = list(dict.fromkeys(i for i in instance_ids if i))
        if not ids:
            return
        try:
            self.gpu_hook(region).terminate(ids)
        except Exception:
            self.log.exception("Could not terminate %s (the sweep's teardown and the reaper will)", ids)
        else:
            self.log.info("Terminated instance(s) %s of trial %s", ids, self.trial.get("name"))

    def _finished(self, result: dict[str, Any]) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import MlciError

        if result["status"] != "success" and self.fail_on_trial_failure:
            with airflow_failures():
                raise MlciError(f"Trial {result['name']} failed: {result['error']}")
        return result

    def on_kill(self) -> None:
        """Stop the running git or DVC process; with ``ec2``, terminate the instance this try launched."""
        super().on_kill()
        ids, self._instance_ids = self._instance_ids, []
        if ids:
            from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec

            self.log.warning("Task killed: terminating instance(s) %s", ids)
            self._terminate_trial_instances(ids, GpuInstanceSpec.from_mapping(self.instance or {}).region)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets

        check_targets(self.targets)
        check_compute(self.compute, self.instance)

    def target_list(self) -> list[str]:
        """The stages to run, as a list (empty: the whole pipeline)."""
        from airflow_provider_mlci.core.dvc.ops import check_targets

        return list(check_targets(self.targets))

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.experiments.trials import run_trial

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


class SweepLeaderboardOperator(BaseOperator):
    """Rank the trials of a sweep by the objective, pick the best, and store a leaderboard report.

    Reads the trial list from ``generate_task_id`` and the results from the mapped
    ``trial_task_id``. A trial with no result (its task failed) counts as failed; one skipped
    because the target was already met counts as skipped. The report (``report.md`` and
    ``report.html``: the best trial, the counts, the ranked table) goes where
    :class:`~airflow_provider_mlci.operators.report.MetricsReportOperator` puts reports; the
    task's "Report" link opens it. Run it with ``trigger_rule="all_done"``.

    Returns ``{"leaderboard": {"objective", "goal", "trials": [{"name", "params", "value",
    "status"}]}, "best": {..., "exp_ref", "sha"} | None, "target", "target_met", "succeeded",
    "failed", "skipped", "report_uri"}``; give the task's id to
    :class:`~airflow_provider_mlci.operators.report.MetricsReportOperator`'s ``include_tasks``
    to put the leaderboard in another report.

    Fails (no retry) when more than ``max_failed_trials`` trials failed, or when none succeeded.

    :param generate_task_id: the :class:`SweepTrialsOperator` task
    :param trial_task_id: the mapped :class:`SweepTrialOperator` task
    :param objective: ``{"metric": "accuracy", "goal": "max", "target": 0.9}``
    :param max_failed_trials: how many failed trials are tolerated (templated); ``None``: any number,
        as long as one succeeds
    :param title: the report's heading
    :param report_base: the folder or URL reports go under (default: ``[mlci] reports_dir``)
    :param report_conn_id: the connection to write ``report_base`` with
    """

    template_fields: Sequence[str] = ("max_failed_trials", "title")
    operator_extra_links = (MlciReportLink(),)
    ui_color = _SWEEP_COLOR

    def __init__(
        self,
        *,
        generate_task_id: str,
        trial_task_id: str,
        objective: Mapping[str, Any],
        max_failed_trials: int | str | None = None,
        title: str | None = None,
        report_base: str | None = None,
        report_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generate_task_id = generate_task_id
        self.trial_task_id = trial_task_id
        self.objective = objective
        self.max_failed_trials = max_failed_trials
        self.title = title
        self.report_base = report_base
        self.report_conn_id = report_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        with airflow_failures():
            return self._rank(context)

    def _rank(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc.ops import json_safe
        from airflow_provider_mlci.core.experiments.sweep import Objective, best_trial, leaderboard, target_met
        from airflow_provider_mlci.exceptions import MlciError

        objective = Objective.of(self.objective)
        limit = _int_or_none(self.max_failed_trials, "max_failed_trials")
        ti = context["ti"]
        planned = ti.xcom_pull(task_ids=self.generate_task_id)
        if not isinstance(planned, list):
            raise MlciError(f"No trials to rank: task {self.generate_task_id} left no trial list (did it fail?).")
        results = ti.xcom_pull(task_ids=[self.trial_task_id]) or []
        by_name = {r["name"]: r for r in results if isinstance(r, Mapping) and "name" in r}
        skipped_names = self._skipped(context)
        rows: list[dict[str, Any]] = []
        for index, trial in enumerate(planned):
            result = by_name.get(trial["name"])
            if result is not None:
                rows.append(dict(result))
            elif index in skipped_names:
                rows.append({"name": trial["name"], "params": trial["params"], "status": "skipped"})
            else:
                rows.append(
                    {
                        "name": trial["name"],
                        "params": trial["params"],
                        "status": "failed",
                        "error": "the trial's task did not finish (see its log)",
                    }
                )
        board = leaderboard(rows, objective)
        extra = {r["name"]: r for r in rows}
        for row in board["trials"]:
            row.update({k: extra[row["name"]].get(k) for k in ("exp_ref", "sha", "error")})
        best = best_trial(rows, objective)
        if best is not None:
            best = next(row for row in board["trials"] if row["name"] == best["name"])
        failed = [r for r in rows if r.get("status") == "failed"]
        skipped = [r for r in rows if r.get("status") == "skipped"]
        summary = {
            "leaderboard": board,
            "best": best,
            "target": objective.target,
            "target_met": target_met(rows, objective),
            "succeeded": len(rows) - len(failed) - len(skipped),
            "failed": len(failed),
            "skipped": len(skipped),
        }
        summary["report_uri"] = self._write_report(context, summary)
        if best is not None:
            self.log.info(
                "Best trial: %s, %s = %s (%s)", best["name"], objective.metric, best["value"], best.get("exp_ref")
            )
        for row in failed:
            self.log.warning("Trial %s failed: %s", row["name"], row.get("error"))
        if limit is not None and len(failed) > limit:
            raise MlciError(
                f"{len(failed)} of {len(rows)} trials failed, more than max_failed_trials={limit}: "
                + "; ".join(f"{r['name']}: {r.get('error')}" for r in failed)
            )
        if best is None:
            raise MlciError(
                f"No trial of {len(rows)} produced a usable {objective.metric!r} "
                f"({len(failed)} failed, {len(skipped)} skipped)."
            )
        return json_safe(summary)

    def _skipped(self, context: Context) -> set[int]:
        """Map indexes of the trial task that were skipped (the target was already met)."""
        from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

        try:
            states = RuntimeTaskInstance.get_task_states(
                dag_id=context["ti"].dag_id, run_ids=[context["ti"].run_id], task_ids=[self.trial_task_id]
            )
        except Exception as exc:  # only to tell skipped from failed in the report
            self.log.info("Could not read the trials' states (%s): missing results count as failed", exc)
            return set()
        found = set()
        for by_task in states.values():
            for key, state in by_task.items():
                task_id, _, index = str(key).rpartition("_")
                if task_id == self.trial_task_id and state == "skipped" and index.isdigit():
                    found.add(int(index))
        return found

    def _write_report(self, context: Context, summary: Mapping[str, Any]) -> str:
        from airflow_provider_mlci.core.reports.html import section_for
        from airflow_provider_mlci.report_store import store_task_report

        ti = context["ti"]
        title = self.title or f"{ti.dag_id}: sweep leaderboard"
        section = section_for("Leaderboard", summary)
        md = [f"# {title}", "", section.markdown, ""]
        page = (
            f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"</head><body><h1>{html.escape(title)}</h1>{section.html}</body></html>\n"
        )
        files = {"report.md": "\n".join(md).encode(), "report.html": page.encode()}
        outcome = {key: summary.get(key) for key in ("best", "target_met", "succeeded", "failed", "skipped")}
        uri = store_task_report(context, files, outcome, base=self.report_base, conn_id=self.report_conn_id)
        self.log.info("Leaderboard report: %s/report.html", uri)
        return uri


class SweepBestBranchOperator(DvcWorkspaceMixin, BaseOperator):
    """Put the best trial of a sweep on a branch of the git remote, as ``dvc exp branch`` and ``git push`` would.

    Reads the best trial from the leaderboard task and creates ``branch`` at its experiment's
    commit on the git remote, with a plain push (never a force-push). A retried task finds the
    branch already there and changes nothing; a branch that already holds another commit fails
    the task (not retried), naming it. The gate and the release then work on an ordinary branch
    (see :func:`~airflow_provider_mlci.core.experiments.trials.branch_experiment`).

    Returns ``{"repo", "rev", "sha", "branch", "created", "experiment", "exp_ref", "trial":
    {"name", "params", "value"}}``; pin the commit downstream with
    ``{{ ti.xcom_pull(task_ids='<this>')['sha'] }}``.

    :param leaderboard_task_id: the :class:`SweepLeaderboardOperator` task
    :param branch: the branch to create (templated); default: ``sweep/<best trial's name>``,
        unique per DAG run as trial names are
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("branch",)
    ui_color = _SWEEP_COLOR

    def __init__(
        self,
        *,
        leaderboard_task_id: str,
        branch: str | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.leaderboard_task_id = leaderboard_task_id
        self.branch = branch
        self.rev = "HEAD"
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir
        self._best: Mapping[str, Any] = {}

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import MlciError

        summary = context["ti"].xcom_pull(task_ids=self.leaderboard_task_id)
        best = summary.get("best") if isinstance(summary, Mapping) else None
        with airflow_failures():
            if not isinstance(best, Mapping) or not best.get("sha") or not best.get("exp_ref"):
                raise MlciError(f"No best trial to branch: task {self.leaderboard_task_id} ranked none.")
        self._best = best
        self.rev = str(best["sha"])
        return self._with_workspace(context)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.experiments.trials import branch_experiment

        best = self._best
        branch = self.branch or f"sweep/{best['name']}"
        result = branch_experiment(workspace, str(best["exp_ref"]), branch, sha=workspace.sha)
        self.log.info(
            "Best trial %s is on branch %s (%s)%s",
            best["name"],
            branch,
            workspace.sha[:12],
            "" if result["created"] else ", already",
        )
        return {**result, "trial": {k: best.get(k) for k in ("name", "params", "value")}}


class SweepPromotionOutcomeOperator(BaseOperator):
    """Say what became of the best trial of a sweep: promoted (version and tags), or kept off the stage and why.

    The last task of a sweep with a promotion: run it with ``trigger_rule="none_failed_min_one_success"``
    downstream of the gate and of the promotion, so that it runs whichever way the gate went (a
    refused candidate is an outcome, not a failure). Returns ``{"promoted", "model", "stage",
    "trial", "branch", "sha", "version", "tags", "replaced", "reasons"}``.

    :param branch_task_id: the :class:`SweepBestBranchOperator` task
    :param gate_task_id: the :class:`~airflow_provider_mlci.operators.model.ModelGateBranchOperator` task
    :param promote_task_id: the :class:`~airflow_provider_mlci.operators.model.PromoteModelOperator` task
    """

    ui_color = _SWEEP_COLOR

    def __init__(self, *, branch_task_id: str, gate_task_id: str, promote_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.branch_task_id = branch_task_id
        self.gate_task_id = gate_task_id
        self.promote_task_id = promote_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.operators.model import release_outcome

        ti = context["ti"]
        branched = ti.xcom_pull(task_ids=self.branch_task_id) or {}
        released = release_outcome(ti, self.gate_task_id, self.promote_task_id)
        trial = (branched.get("trial") or {}).get("name")
        outcome = {**released, "trial": trial, "branch": branched.get("branch"), "sha": branched.get("sha")}
        if outcome["promoted"]:
            self.log.info(
                "Trial %s is %s %s on %s (%s)",
                trial,
                outcome["model"],
                outcome["version"],
                outcome["stage"],
                ", ".join(outcome["tags"]) or "already there",
            )
        else:
            self.log.info("Trial %s was not promoted to %s:", trial, outcome["stage"])
            for reason in outcome["reasons"]:
                self.log.info("  because %s", reason)
        return outcome
