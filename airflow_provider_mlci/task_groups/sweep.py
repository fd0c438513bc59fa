"""A hyperparameter sweep as a task group: generate the trials, run them as mapped tasks, rank them.

::

    sweep = SweepTaskGroup(
        group_id="sweep",
        space={"train.learning_rate": {"loguniform": [0.01, 1.0]}, "train.epochs": {"range": [20, 101, 40]}},
        objective="accuracy", goal="max", target=0.9,
        max_trials=8, parallel_trials=2, max_failed_trials=1,
    )

``<group>.generate`` expands the space (failing at once, naming ``[core] max_map_length``, when
Airflow could not map that many trials) and pins the commit; ``<group>.trial`` is mapped over
the trials, at most ``parallel_trials`` at a time in one DAG run, each running the pipeline in
its own checkout and recording it as a DVC experiment on the git remote; ``<group>.leaderboard``
ranks them, returns the best and stores a leaderboard report.

**Early stop.** With a ``target``, a trial that *starts* after another trial of the run has reached
the target is skipped; trials already running finish (and are ranked). The leaderboard says
``target_met`` and counts the skipped trials. With ``parallel_trials`` = n, up to n - 1 trials
may still start after the one that met the target, while it is finishing. With a ``timeout`` (a time
budget beside ``max_trials``), a trial that would start later than that after ``generate`` ran is
skipped the same way.

**Adaptive search.** With ``search="tpe"`` (or ``"random"``, ``"grid"``), ``<group>.generate`` opens an
Optuna study (:mod:`airflow_provider_mlci.core.experiments.study`; in the database of ``optuna_conn_id``,
else a journal file under the Airflow home) and returns ``max_trials`` slots; each ``<group>.trial``
asks the study for its point as it starts (a retry gets its first try's point), runs it, and tells
the study the objective or a failure. With a ``pruner``, a trial's task reads the per-step values its
training writes (``prune_on``, DVCLive's table by default) and stops the stage when the pruner says
it will not win (on ``ec2``, the instance's agent copies those values to the job's mailbox, the
trial's trigger applies the pruner, and the instance is terminated); a pruned trial is recorded as
such and never ranked. The leaderboard report charts
the study (optimisation history, parallel coordinates, parameter importances).

**Promotion.** With ``promote=SweepPromotion(model=..., rules=..., stage="prod")``, the best trial
goes through the same release gate as any other candidate::

    leaderboard >> branch >> gate >> [promote] >> outcome

``<group>.branch`` puts the best trial's experiment on a branch of the git remote (``sweep/<trial
name>`` unless ``branch`` says otherwise; never force-pushed); ``<group>.gate`` compares that commit
with the model on the stage (:class:`~airflow_provider_mlci.operators.model.ModelGateBranchOperator`:
the same evaluation data, every rule); ``<group>.promote`` registers a version and moves the stage
in one tag push, or is skipped when the gate refuses; ``<group>.outcome`` says which, and is the
group's last task, so ``sweep >> next_task`` runs either way. Nothing is promoted when no trial
succeeded, when the leaderboard fails (too many failed trials), or when the gate refuses. The model
name and the stage are checked by ``generate``, before any trial runs (and when the DAG is parsed,
unless templated).

**On GPU instances.** With ``compute=Ec2Compute(instance=GpuInstanceSpec(...))``, each trial
launches a GPU instance of its own (tagged with the DAG, run, task and map index; a retry adopts
it), runs there, is recorded as a DVC experiment on the git remote as a local trial is, and
terminates its instance when it ends. ``<group>.terminate``, a teardown task after the
leaderboard, terminates every instance of the run's trials that is still up, whatever happened
to them (a trial waiting in the triggerer runs no ``on_kill``); as a teardown it is no leaf of the
group, so ``sweep >> next_task`` waits for the same tasks as without it::

    generate >> trial (mapped, each on its instance) >> leaderboard >> terminate (teardown)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from airflow_provider_mlci.config import Approval, Compute, Ec2Compute, resolve_compute
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.gpu import GpuTerminateInstanceOperator
from airflow_provider_mlci.operators.model import ModelGateBranchOperator, PromoteModelOperator
from airflow_provider_mlci.operators.sweep import (
    SweepBestBranchOperator,
    SweepLeaderboardOperator,
    SweepPromotionOutcomeOperator,
    SweepTrialOperator,
    SweepTrialsOperator,
)

__all__ = ["SweepPromotion", "SweepTaskGroup"]


@dataclass(frozen=True, kw_only=True)
class SweepPromotion:
    """Release the best trial of a sweep through the model gate.

    ::

        SweepPromotion(
            model="fraud-detector",
            stage="prod",
            rules={"accuracy": {"direction": "higher", "floor": 0.8, "min_improvement": 0.005}},
        )

    :param model: the model's name in the registry (and in ``dvc.yaml``'s ``artifacts:``) (templated)
    :param rules: the gate's rules, ``{metric: {"direction", "floor", "min_improvement",
        "min_relative_improvement", "max_regression"}}`` (see
        :class:`~airflow_provider_mlci.operators.model.ModelGateOperator`)
    :param stage: the stage to promote to; the model on it is the one to beat (templated)
    :param branch: the branch of the git remote the best trial's experiment is put on
        (templated); default: ``sweep/<best trial's name>``
    :param bump: the part of the version a new registration increments: ``major``, ``minor``
        or ``patch``
    :param metrics_files: the metrics files the gate reads (default: every one ``dvc.yaml`` names)
    :param eval_data: the evaluation inputs that must match the deployed model's (default: every
        dependency of the stage that writes the metrics, except the model)
    :param allow_different_data: compare even when the evaluations differ (recorded in the decision)
    :param approval: ``True``, an :class:`~airflow_provider_mlci.config.Approval` or its mapping: a
        person approves the release the gate passed (Airflow's human-in-the-loop); reject or no
        answer in time keeps the deployed model
    :param stage_order: the stages in the order a version must pass them (``("staging", "prod")``)
    :raises MlciConfigError: an invalid model or stage name, a bad rule or bump, naming it
    """

    model: str
    rules: Mapping[str, Mapping[str, Any]]
    stage: str = "prod"
    branch: str | None = None
    bump: str = "minor"
    metrics_files: Sequence[str] | None = None
    eval_data: Sequence[str] | None = None
    allow_different_data: bool = False
    approval: Any = None
    stage_order: Sequence[str] = ()

    def __post_init__(self) -> None:
        from airflow_provider_mlci.core.model.gate import GateSpec
        from airflow_provider_mlci.core.model.registry import Bump, check_model_name, check_stage_name

        if not _templated(self.model):
            check_model_name(self.model)
        if not _templated(self.stage):
            check_stage_name(self.stage)
        if not isinstance(self.rules, Mapping):
            raise MlciConfigError(f"promote rules must be a mapping of metric to rule, not {self.rules!r}.")
        GateSpec.of(self.rules)
        Bump.of(self.bump)
        object.__setattr__(self, "approval", Approval.of(self.approval))
        for stage in self.stage_order:
            check_stage_name(stage)

    @classmethod
    def of(cls, value: SweepPromotion | Mapping[str, Any]) -> SweepPromotion:
        """Build from a :class:`SweepPromotion` or its mapping (``{"model", "rules", "stage", ...}``).

        :param value: the promotion as written
        :raises MlciConfigError: an unknown key or a bad value, naming it
        """
        if isinstance(value, cls):
            return value
        if not isinstance(value, Mapping):
            raise MlciConfigError(f"promote={value!r}: give a SweepPromotion or its mapping.")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - known)
        if unknown:
            raise MlciConfigError(f"promote: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))}).")
        missing = sorted({"model", "rules"} - set(value))
        if missing:
            raise MlciConfigError(f"promote: {' and '.join(missing)} missing.")
        return cls(**value)


def _templated(value: Any) -> bool:
    return isinstance(value, str) and "{{" in value


class SweepTaskGroup(TaskGroup):
    """Run a hyperparameter sweep over a DVC pipeline: one Airflow mapped task per trial.

    :param group_id: the group's id
    :param space: ``{param: distribution}`` (a list for a grid, ``{"choice": [...]}``, ``{"range":
        [start, stop, step]}``, ``{"uniform": [low, high]}``, ``{"loguniform": [low, high]}``) or
        DVC ``-S`` strings (``"train.epochs=range(20,101,40)"``) (templated)
    :param objective: the metric to optimise, as ``metrics.json`` names it (``accuracy``,
        ``eval.auc``, ``metrics.json:accuracy``)
    :param goal: ``max`` or ``min`` (also ``maximize`` / ``minimize``)
    :param target: stop early once a trial reaches this value (see the module's docs)
    :param max_trials: the trial budget (templated); required when a param is sampled
    :param parallel_trials: at most this many trials run at once in one DAG run
        (``max_active_tis_per_dagrun`` of the mapped task); ``None``: as many as Airflow allows
    :param max_failed_trials: fail the leaderboard when more trials than this failed (templated);
        ``None``: any number, as long as one succeeds
    :param fail_on_trial_failure: also fail each failed trial's task (red in the grid); the
        leaderboard runs anyway
    :param seed: the seed of the random draws (templated)
    :param rev: the revision every trial starts from (templated)
    :param targets: stages to run in each trial (templated); default: the whole pipeline
    :param python: the interpreter (or virtualenv folder) stage commands run with
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    :param trial_args: more keyword arguments for the trial tasks (``pool``, ``retries``,
        ``execution_timeout``, ...)
    :param report_base: the folder or URL the leaderboard report goes under
    :param promote: release the best trial through the model gate: a :class:`SweepPromotion` or
        its mapping (see the module's docs); ``None``: rank only
    :param search: ``None`` (the default): every trial is known before any runs (a grid, or seeded
        random draws); ``"tpe"``, ``"random"`` or ``"grid"``: an adaptive sweep, whose trials ask an
        Optuna study for their points as they start and tell it their results (see the module's docs)
    :param sampler_options: with ``search``: passed to Optuna's sampler (TPE's ``n_startup_trials``:
        keep it below ``max_trials``)
    :param pruner: with ``search``: ``"median"`` or ``"hyperband"`` stops trials that will not win,
        from the per-step values their training writes (``prune_on``); ``None``: every trial runs to its end
    :param pruner_options: passed to Optuna's pruner (``n_startup_trials``, ``n_warmup_steps``, ...)
    :param prune_on: ``(file, column, direction)`` of the per-step values; default DVCLive's
        ``dvclive/plots/metrics/<objective>.tsv``, the objective's column and goal
    :param optuna_conn_id: with ``search``: a ``postgres``/``mysql``/``sqlite`` connection to the
        studies' own database; ``None``: a journal file under the Airflow home (local executors)
    :param study_name: with ``search``: the study's name; default ``<dag_id>.<group_id>`` (and the
        run, unless ``resume``)
    :param resume: with ``search``: continue the same study run after run (its past trials inform
        the next points)
    :param enqueue: with ``search``: known-good points tried first, ``[{param: value}]``; default,
        with ``promote``: the params of the model deployed on the promotion's stage (when its commit
        has a value inside the space for every param; not for a grid)
    :param timeout: a time budget beside ``max_trials`` (a ``timedelta`` or seconds): trials that
        would start later than this after ``generate`` ran are skipped (those running finish)
    :param compute: where each trial runs: ``"local"`` (the worker) or an
        :class:`~airflow_provider_mlci.config.Ec2Compute` whose ``instance`` each trial launches
        for itself (see the module's docs); the old ``compute="ec2", instance=..., aws_conn_id=...,
        job_base=...`` still work for this release, deprecated
    :param kwargs: passed to ``TaskGroup`` (``tooltip``, ``default_args``, ...)
    """

    def __init__(
        self,
        *,
        group_id: str,
        space: Mapping[str, Any] | Sequence[str],
        objective: str,
        goal: str = "max",
        target: float | None = None,
        max_trials: int | str | None = None,
        parallel_trials: int | None = None,
        max_failed_trials: int | str | None = None,
        fail_on_trial_failure: bool = False,
        seed: int | str = 0,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        python: str | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        trial_args: Mapping[str, Any] | None = None,
        report_base: str | None = None,
        promote: SweepPromotion | Mapping[str, Any] | None = None,
        compute: str | Compute | Ec2Compute = Compute.LOCAL,
        search: str | None = None,
        pruner: str | None = None,
        pruner_options: Mapping[str, Any] | None = None,
        prune_on: Sequence[str] | Mapping[str, str] | None = None,
        sampler_options: Mapping[str, Any] | None = None,
        optuna_conn_id: str | None = None,
        study_name: str | None = None,
        resume: bool = False,
        enqueue: Sequence[Mapping[str, Any]] | None = None,
        timeout: timedelta | float | None = None,
        **kwargs: Any,
    ) -> None:
        promotion = SweepPromotion.of(promote) if promote is not None else None
        budget = timeout.total_seconds() if isinstance(timeout, timedelta) else timeout
        if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int | float) or budget <= 0):
            raise MlciConfigError(f"SweepTaskGroup {group_id!r}: timeout={timeout!r} is not a positive duration.")
        study = None
        if search is not None:
            from airflow_provider_mlci.core.experiments.pruning import PruneOn
            from airflow_provider_mlci.core.experiments.study import Pruner, Search

            chosen = Pruner.of(pruner)
            on = PruneOn.of(prune_on, metric=objective, goal=goal) if chosen else None
            study = {
                "search": Search.of(search).value,
                "goal": goal,
                "pruner": chosen.value if chosen else None,
                "pruner_options": dict(pruner_options or {}),
                "prune_on": {"file": on.file, "column": on.column, "direction": on.direction} if on else None,
                "sampler_options": dict(sampler_options or {}),
                "optuna_conn_id": optuna_conn_id,
                "name": study_name,
                "resume": bool(resume),
                "enqueue": None if enqueue is None else [dict(point) for point in enqueue],
            }
        elif any(v for v in (pruner, pruner_options, prune_on, sampler_options, optuna_conn_id, study_name, resume,
                             enqueue)):  # fmt: skip
            raise MlciConfigError(
                f"SweepTaskGroup {group_id!r}: pruner, pruner_options, prune_on, sampler_options, optuna_conn_id, "
                "study_name, resume and enqueue need search= ('tpe', 'random' or 'grid')."
            )
        backend, ec2 = resolve_compute(compute, kwargs, owner=f"SweepTaskGroup {group_id!r}")
        if ec2 is not None and ec2.instance is None:
            raise MlciConfigError(
                f"SweepTaskGroup {group_id!r}: compute=Ec2Compute(...) needs instance: the GpuInstanceSpec "
                "(or its mapping) each trial launches."
            )
        super().__init__(group_id=group_id, **kwargs)
        #: where the trials run
        self.compute = backend
        goal_spec = {"metric": objective, "goal": goal, "target": target}
        extra = dict(trial_args or {})
        if parallel_trials is not None:
            extra["max_active_tis_per_dagrun"] = parallel_trials
        if ec2 is not None:
            extra["compute"] = ec2
        with self:
            self.generate = SweepTrialsOperator(
                task_id="generate",
                space=space,
                max_trials=max_trials,
                seed=seed,
                rev=rev,
                promotion={"model": promotion.model, "stage": promotion.stage} if promotion else None,
                study=study,
                time_budget=budget,
                dvc_conn_id=dvc_conn_id,
                cache_dir=cache_dir,
            )
            self.trials = SweepTrialOperator.partial(
                task_id="trial",
                objective=goal_spec,
                targets=targets,
                fail_on_trial_failure=fail_on_trial_failure,
                python=python,
                dvc_conn_id=dvc_conn_id,
                cache_dir=cache_dir,
                **extra,
            ).expand(trial=self.generate.output)
            self.leaderboard = SweepLeaderboardOperator(
                task_id="leaderboard",
                generate_task_id=self.generate.task_id,
                trial_task_id=self.child_id("trial"),
                objective=goal_spec,
                max_failed_trials=max_failed_trials,
                report_base=report_base,
                trigger_rule="all_done",
            )
            self.trials >> self.leaderboard
            self.terminate: GpuTerminateInstanceOperator | None = None
            if ec2 is not None:
                self.terminate = GpuTerminateInstanceOperator(
                    task_id="terminate",
                    create_task_id=self.child_id("trial"),
                    aws_conn_id=ec2.aws_conn_id,
                    region_name=ec2.spec.region,
                )
                # After the leaderboard (which runs once every trial is done, whatever the outcome).
                self.leaderboard >> self.terminate
                self.terminate.as_teardown()
            self.branch: SweepBestBranchOperator | None = None
            self.gate: ModelGateBranchOperator | None = None
            self.promote: PromoteModelOperator | None = None
            self.outcome: SweepPromotionOutcomeOperator | None = None
            if promotion is not None:
                self._promotion(promotion, dvc_conn_id=dvc_conn_id, cache_dir=cache_dir)

    def _promotion(self, promotion: SweepPromotion, *, dvc_conn_id: str, cache_dir: str | None) -> None:
        """Add branch >> gate >> [promote] >> outcome after the leaderboard (inside the group)."""
        repo = {"dvc_conn_id": dvc_conn_id, "cache_dir": cache_dir}
        self.branch = SweepBestBranchOperator(
            task_id="branch", leaderboard_task_id=self.leaderboard.task_id, branch=promotion.branch, **repo
        )
        best = f"{{{{ ti.xcom_pull(task_ids='{self.child_id('branch')}')['sha'] }}}}"
        promote_id, outcome_id = self.child_id("promote"), self.child_id("outcome")
        approve = None
        if promotion.approval is not None:
            from airflow_provider_mlci.operators.approval import ReleaseApprovalOperator

            approve = ReleaseApprovalOperator(
                task_id="approve",
                model=promotion.model,
                stage=promotion.stage,
                gate_task_id=self.child_id("gate"),
                approval=promotion.approval,
            )
        self.gate = ModelGateBranchOperator(
            task_id="gate",
            model=promotion.model,
            rules=promotion.rules,
            rev=best,
            stage=promotion.stage,
            metrics_files=promotion.metrics_files,
            eval_data=promotion.eval_data,
            allow_different_data=promotion.allow_different_data,
            if_promote=[approve.task_id if approve else promote_id, outcome_id],
            if_skip=outcome_id,
            **repo,
        )
        self.promote = PromoteModelOperator(
            task_id="promote",
            model=promotion.model,
            rev=best,
            stage=promotion.stage,
            bump=promotion.bump,
            gate_task_id=self.gate.task_id,
            stage_order=promotion.stage_order,
            approval_task_id=approve.task_id if approve else None,
            **repo,
        )
        self.outcome = SweepPromotionOutcomeOperator(
            task_id="outcome",
            branch_task_id=self.branch.task_id,
            gate_task_id=self.gate.task_id,
            promote_task_id=promote_id,
            approval_task_id=approve.task_id if approve else None,
            trigger_rule="none_failed_min_one_success",
        )
        self.leaderboard >> self.branch >> self.gate >> [approve or self.promote, self.outcome]
        if approve is not None:
            approve >> self.promote
        self.promote >> self.outcome
