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
may still start after the one that met the target, while it is finishing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import TaskGroup

from airflow_provider_mlci.operators.sweep import (
    SweepLeaderboardOperator,
    SweepTrialOperator,
    SweepTrialsOperator,
)

__all__ = ["SweepTaskGroup"]


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
        **kwargs: Any,
    ) -> None:
        super().__init__(group_id=group_id, **kwargs)
        goal_spec = {"metric": objective, "goal": goal, "target": target}
        extra = dict(trial_args or {})
        if parallel_trials is not None:
            extra["max_active_tis_per_dagrun"] = parallel_trials
        with self:
            self.generate = SweepTrialsOperator(
                task_id="generate",
                space=space,
                max_trials=max_trials,
                seed=seed,
                rev=rev,
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
