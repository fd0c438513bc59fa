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
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import (
    SWEEP_COLOR,
    DvcWorkspaceMixin,
    airflow_failures,
    rendered_int,
)
from airflow_provider_mlci.operators.sweep_results import (
    SweepBestBranchOperator,
    SweepLeaderboardOperator,
    SweepPromotionOutcomeOperator,
)
from airflow_provider_mlci.operators.sweep_trial import SweepTrialOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = [
    "SweepBestBranchOperator",
    "SweepLeaderboardOperator",
    "SweepPromotionOutcomeOperator",
    "SweepTrialOperator",
    "SweepTrialsOperator",
]

#: The XCom key under which ``generate`` leaves the commit every trial starts from.
BASELINE_KEY = "baseline_sha"


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
    :param study: an adaptive search: ``{"search", "goal", "sampler_options", "name", "resume",
        "optuna_conn_id", "enqueue"}`` (see :class:`~airflow_provider_mlci.task_groups.sweep.SweepTaskGroup`).
        Then ``generate`` opens the study (failing before any trial when its database cannot be
        reached), enqueues ``enqueue``'s points, and returns ``max_trials`` slots, each asking the
        study for its point when its trial starts
    :param time_budget: seconds from now after which no trial starts (each trial gets its
        ``deadline``, epoch seconds; a later one is skipped); ``None``: no time budget
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("space", "max_trials", "seed", "name_suffix", "rev", "promotion", "study")
    ui_color = SWEEP_COLOR

    def __init__(
        self,
        *,
        space: Mapping[str, Any] | Sequence[str],
        max_trials: int | str | None = None,
        seed: int | str = 0,
        name_suffix: str | None = None,
        rev: str = "HEAD",
        promotion: Mapping[str, str] | None = None,
        study: Mapping[str, Any] | None = None,
        time_budget: float | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.study = study
        self.time_budget = time_budget
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

        started = time.time()
        with airflow_failures():
            trials = None if self.study else self.expand_space(context)
            if self.promotion:
                check_model_name(self.promotion.get("model"))
        with airflow_failures(), self.hook.open_workspace(self.rev) as workspace:
            sha = workspace.sha
            registry = GitRegistry(workspace=workspace) if self.promotion else None
            if registry is not None:
                registry.check_stage(self.promotion.get("stage"))  # type: ignore[union-attr]
            if trials is None:
                trials = self.open_study(context, deployed=lambda: self.deployed_point(workspace, registry))
        context["ti"].xcom_push(key=BASELINE_KEY, value=sha)
        self.log.info("%d trials from %s (%s)", len(trials), self.rev, sha[:12])
        for trial in trials:
            self.log.info("  %s: %s", trial["name"], " ".join(trial["overrides"]))
        deadline = {"deadline": started + float(self.time_budget)} if self.time_budget else {}
        return [{**trial, "rev": sha, **deadline} for trial in trials]

    def deployed_point(self, workspace: Any, registry: Any) -> list[dict[str, Any]]:
        """The params of the model deployed on the promotion's stage, as a point of the space to try
        first (``[]`` when nothing is deployed, or its commit lacks a param or holds a value outside
        the space).

        :param workspace: a checkout of the repository
        :param registry: its :class:`~airflow_provider_mlci.core.model.registry.GitRegistry`, or ``None``
        """
        from airflow_provider_mlci.core.experiments.study import contains
        from airflow_provider_mlci.core.experiments.sweep import SearchSpace
        from airflow_provider_mlci.core.experiments.trials import params_at

        if registry is None or not self.promotion:
            return []
        model, stage = self.promotion.get("model"), self.promotion.get("stage")
        champion = registry.refresh().champion(model, stage)
        if champion is None:
            return []
        space = SearchSpace.of(self.space)
        point = params_at(workspace, champion.tag, [p.name for p in space.params])
        if not contains(space, point):
            self.log.info(
                "The params of %s on %s (%s) are not a point of the space: not tried first", model, stage, point
            )
            return []
        self.log.info(
            "Trying first the params of %s %s on %s: %s", model, champion.version or champion.sha[:12], stage, point
        )
        return [point]

    def open_study(self, context: Context, *, deployed: Any = None) -> list[dict[str, Any]]:
        """Open (or resume) the sweep's study, enqueue the known-good points, return the trial slots:
        ``[{"name", "params": {}, "overrides": [], "study": {...}}]`` (no secret in them).

        :param context: the task's context
        :param deployed: called for the known-good points when the sweep names none (``enqueue``
            not given; not for a grid): the deployed model's params
        :raises MlciConfigError: a bad search or space, a grid larger than ``max_trials``, no budget,
            more slots than ``[core] max_map_length``, or a study database that cannot be reached
        """
        from airflow.configuration import conf

        from airflow_provider_mlci.core.experiments.study import describe, open_study, study_config
        from airflow_provider_mlci.core.experiments.sweep import SearchSpace
        from airflow_provider_mlci.core.experiments.trials import check_experiment_name
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.hooks.study import StudyHook

        study = dict(self.study or {})
        space = SearchSpace.of(self.space)
        config = study_config(study, seed=rendered_int(self.seed, "seed"))
        budget = rendered_int(self.max_trials, "max_trials")
        size = space.grid_size()
        if config.search.value == "grid" and size is not None and budget is not None and size > budget:
            raise MlciConfigError(
                f"search='grid': the grid has {size} points, more than max_trials={budget}: raise max_trials or "
                "narrow the space (a grid search runs every point)."
            )
        budget = budget if budget is not None else size
        if budget is None:
            raise MlciConfigError("An adaptive sweep needs max_trials: the number of trials it may run.")
        limit = conf.getint("core", "max_map_length", fallback=1024)
        if budget > limit:
            raise MlciConfigError(f"max_trials={budget} is more than Airflow maps in one task ({limit}).")
        hook = StudyHook(study.get("optuna_conn_id"))
        ti = context["ti"]
        name = study.get("name") or study_name(ti.dag_id, ti.task_id, None if study.get("resume") else ti.run_id)
        storage = hook.storage()
        enqueue = study.get("enqueue")
        if enqueue is None:
            enqueue = deployed() if deployed is not None and config.search.value != "grid" else []
        try:
            opened = open_study(
                storage, name, config, space, max_trials=budget, key=f"{ti.dag_id}/generate", enqueue=enqueue,
            )  # fmt: skip
        except MlciConfigError:
            raise
        except Exception as exc:  # a database that cannot be reached: say so before any trial runs
            raise MlciConfigError(f"Cannot open the study {name!r} in {hook.where()}: {type(exc).__name__}") from exc
        self.log.info("Adaptive sweep (%s): %s in %s", config.search.value, describe(opened), hook.where())
        self._prune_old_studies(storage, study_name(ti.dag_id, ti.task_id, None))
        suffix = self.name_suffix
        if suffix is None:
            suffix = hashlib.sha1(f"{ti.dag_id}/{ti.run_id}/{self.task_id}".encode()).hexdigest()[:7]  # noqa: S324
        width = max(3, len(str(budget)))
        public = {k: v for k, v in study.items() if k != "enqueue"}
        return [
            {
                "name": check_experiment_name(f"trial-{n:0{width}d}-{suffix}" if suffix else f"trial-{n:0{width}d}"),
                "params": {},
                "overrides": [],
                "study": {
                    **public,
                    "name": name,
                    "search": config.search.value,
                    "goal": config.goal.value,
                    "seed": config.seed,
                    "space": self.space,
                },
            }
            for n in range(1, budget + 1)
        ]

    def _prune_old_studies(self, storage: str, prefix: str) -> None:
        """Delete this sweep's per-run studies older than ``[mlci] study_retention_days`` (never fails the sweep)."""
        from airflow_provider_mlci import settings
        from airflow_provider_mlci.core.experiments.study import prune_studies

        days = settings.study_retention_days()
        if not days:
            return
        try:
            gone = prune_studies(storage, prefix, older_than=days * 86400.0)
        except Exception as exc:  # retention must never stop a sweep
            self.log.warning("Could not delete the old studies of %s: %s", prefix, exc)
            return
        if gone:
            self.log.info("Deleted %d studies older than %d days: %s", len(gone), days, ", ".join(gone))

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
            max_trials=rendered_int(self.max_trials, "max_trials"),
            seed=rendered_int(self.seed, "seed") or 0,
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


def study_name(dag_id: str, task_id: str, run_id: str | None) -> str:
    """The study of a sweep: its Dag and group (``generate``'s task id less its last part), and the run
    unless the study resumes from run to run.

    :param dag_id: the Dag
    :param task_id: the ``generate`` task's id
    :param run_id: the run; ``None`` for a study every run continues
    """
    group = task_id.rsplit(".", 1)[0] if "." in task_id else "sweep"
    base = f"{dag_id}.{group}"
    return base if run_id is None else f"{base}.{hashlib.sha1(run_id.encode()).hexdigest()[:7]}"  # noqa: S324
