"""Adaptive search: an Optuna study that a sweep's trial tasks ask for points and tell their results.

A sweep's search space (:class:`~airflow_provider_mlci.core.experiments.sweep.SearchSpace`, as
written today or as DVC's ``-S`` strings) becomes Optuna distributions (:func:`distributions`):
a list, ``choice`` or ``range`` is categorical, ``uniform`` a float, ``loguniform`` a float on a
log scale. The engine is chosen by name (:class:`StudyConfig`): ``tpe`` (with the constant liar,
so trials running side by side do not pick the same point), ``random``, or ``grid`` (the grid's
points are enqueued in the order ``SearchSpace.trials`` lists them, so a grid runs as it did); the
pruner is ``median``, ``hyperband`` or none.

The study lives in a storage that every trial task can reach (:func:`storage_url`): a database
named by an Airflow connection (``postgres://`` and ``mysql://`` URIs as Airflow writes them are
turned into what SQLAlchemy accepts), or a journal file on one machine (local executors). Each trial
task asks with a key naming its task instance (Dag, run, task, map index): a retried task finds the
trial its first try asked for, still running, and gets the same point (:func:`ask`), never a new one.
A trial is told its objective (``COMPLETE``), ``FAIL`` or ``PRUNED`` (:func:`tell`).

Optuna is imported only when a study is opened (the ``optuna`` extra).
"""

from __future__ import annotations

import enum
import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_mlci.core.experiments.sweep import Goal, SearchSpace
from airflow_provider_mlci.exceptions import MlciConfigError

if TYPE_CHECKING:
    import optuna

__all__ = [
    "KEY_ATTR",
    "Asked",
    "Pruner",
    "Search",
    "StudyConfig",
    "ask",
    "contains",
    "describe",
    "distributions",
    "fail_abandoned",
    "open_study",
    "prune_studies",
    "storage_url",
    "study_charts",
    "study_config",
    "tell",
    "trial_of",
]

log = logging.getLogger(__name__)

#: The user attribute of an Optuna trial that names the task instance that asked for it.
KEY_ATTR = "mlci_key"
#: Airflow's connection types and URI schemes -> SQLAlchemy's dialects (with the driver Airflow uses).
_DIALECTS = {
    "postgres": "postgresql+psycopg2",
    "postgresql": "postgresql+psycopg2",
    "mysql": "mysql+mysqldb",
    "sqlite": "sqlite",
}


class Search(enum.StrEnum):
    """How the next point is chosen."""

    TPE = "tpe"
    RANDOM = "random"
    GRID = "grid"

    @classmethod
    def of(cls, value: Any) -> Search:
        """The search ``value`` names.

        :param value: a :class:`Search` or its name
        :raises MlciConfigError: another value, naming the choices
        """
        try:
            return cls(value)
        except ValueError:
            raise MlciConfigError(f"search={value!r} is not one of {', '.join(repr(s.value) for s in cls)}.") from None


class Pruner(enum.StrEnum):
    """How trials that will not win are stopped early (from the per-step values they report)."""

    MEDIAN = "median"
    HYPERBAND = "hyperband"

    @classmethod
    def of(cls, value: Any) -> Pruner | None:
        """The pruner ``value`` names (``None``: no pruning).

        :param value: a :class:`Pruner`, its name, or ``None``
        :raises MlciConfigError: another value, naming the choices
        """
        if value is None:
            return None
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join([*(repr(p.value) for p in cls), "None"])
            raise MlciConfigError(f"pruner={value!r} is not one of {choices}.") from None


@dataclass(frozen=True, kw_only=True)
class StudyConfig:
    """How a study searches and prunes.

    :param search: ``tpe``, ``random`` or ``grid``
    :param pruner: ``median``, ``hyperband`` or ``None``
    :param goal: whether the objective should go up or down
    :param seed: the sampler's seed (same seed and same results, same points for ``random``)
    :param sampler_options: passed to the sampler (``n_startup_trials`` for TPE: keep it below the
        trial budget, or TPE never leaves random sampling)
    :param pruner_options: passed to the pruner (``n_startup_trials``, ``n_warmup_steps``, ...)
    """

    search: Search = Search.TPE
    pruner: Pruner | None = None
    goal: Goal = Goal.MAXIMIZE
    seed: int | None = None
    sampler_options: Mapping[str, Any] = field(default_factory=dict)
    pruner_options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "search", Search.of(self.search))
        object.__setattr__(self, "pruner", Pruner.of(self.pruner))
        object.__setattr__(self, "goal", Goal(self.goal))
        for name, options in (("sampler_options", self.sampler_options), ("pruner_options", self.pruner_options)):
            if not isinstance(options, Mapping):
                raise MlciConfigError(f"{name}={options!r} must be a mapping of keyword arguments.")


def distributions(space: SearchSpace) -> dict[str, Any]:
    """The space as Optuna distributions, ``{param: distribution}``.

    :param space: the sweep's space
    :raises MlciConfigError: a choice Optuna cannot store (a list, a mapping), naming the param
    """
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    found: dict[str, Any] = {}
    for param in space.params:
        if param.kind == "uniform":
            found[param.name] = FloatDistribution(param.low, param.high)
        elif param.kind == "loguniform":  # SearchSpace already refused bounds at or below 0
            found[param.name] = FloatDistribution(param.low, param.high, log=True)
        else:
            values = tuple(param.values)
            if any(not isinstance(v, str | int | float | bool) and v is not None for v in values):
                raise MlciConfigError(
                    f"{param.name}: Optuna takes only strings, numbers, booleans and None as choices, not {values!r}."
                )
            found[param.name] = CategoricalDistribution(values)
    return found


def contains(space: SearchSpace, point: Mapping[str, Any]) -> bool:
    """Whether ``point`` sets every param of ``space`` to a value the space holds (a point to enqueue).

    :param space: the sweep's space
    :param point: ``{param: value}``
    """
    for key, distribution in distributions(space).items():
        if key not in point:
            return False
        try:
            if not distribution._contains(distribution.to_internal_repr(point[key])):
                return False
        except (ValueError, TypeError):
            return False
    return True


def prune_studies(storage: str | Any, prefix: str, *, older_than: float, now: float | None = None) -> list[str]:
    """Delete the per-run studies of one sweep that started more than ``older_than`` seconds ago.

    Only studies named ``<prefix>.<7 hex digits>`` (a run's study, see the sweep's ``generate``) are
    looked at; the study every run continues (``resume``, named ``<prefix>`` alone), other sweeps'
    studies and studies without a trial are never deleted. Returns the names deleted.

    :param storage: the studies' storage (URL or object)
    :param prefix: ``<dag_id>.<group_id>``
    :param older_than: seconds
    :param now: the current time (epoch seconds); default: now
    """
    import optuna

    now = time.time() if now is None else now
    pattern = re.compile(re.escape(prefix) + r"\.[0-9a-f]{7}")
    store = _storage(storage)
    deleted = []
    for summary in optuna.get_all_study_summaries(store, include_best_trial=False):
        started = summary.datetime_start
        if not pattern.fullmatch(summary.study_name) or started is None:
            continue
        if now - started.timestamp() > older_than:
            optuna.delete_study(study_name=summary.study_name, storage=store)
            deleted.append(summary.study_name)
    return deleted


def storage_url(
    *, conn_type: str, host: str | None, port: int | None, login: str | None, password: str | None, schema: str | None
) -> str:
    """The SQLAlchemy URL of a database an Airflow connection names (its own database: not Airflow's).

    :param conn_type: ``postgres``, ``mysql`` or ``sqlite``
    :param host: the server (for ``sqlite``: the database file)
    :param port: its port
    :param login: the user
    :param password: the password (it goes into the URL only; never log the result)
    :param schema: the database
    :raises MlciConfigError: a connection type that is no database Optuna can use
    """
    dialect = _DIALECTS.get((conn_type or "").lower())
    if dialect is None:
        known = ", ".join(sorted(_DIALECTS))
        raise MlciConfigError(f"A study database must be one of {known}; the connection's type is {conn_type!r}.")
    if dialect == "sqlite":
        return f"sqlite:///{host or schema}"
    auth = ""
    if login:
        auth = quote(login, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
    where = f"{host or 'localhost'}" + (f":{port}" if port else "")
    return f"{dialect}://{auth}{where}/{schema or ''}"


def open_study(
    storage: str | Any,
    name: str,
    config: StudyConfig,
    space: SearchSpace,
    *,
    max_trials: int | None = None,
    key: str = "",
    enqueue: Sequence[Mapping[str, Any]] = (),
) -> optuna.Study:
    """Create or load the study ``name`` in ``storage`` with ``config``'s sampler and pruner.

    When the study is new, ``grid`` enqueues the grid's points and ``random`` the points today's
    random sweep draws for ``seed`` (:meth:`SearchSpace.trials`), in that order: both run as they
    did. Every task opens its own sampler, seeded from ``seed`` and ``key``, so tasks side by side
    do not draw alike.

    :param storage: an SQLAlchemy URL, a journal file's path (``journal:///path``), or an Optuna storage
    :param name: the study's name
    :param config: how it searches and prunes
    :param space: the space (for the grid)
    :param max_trials: the trial budget (what ``random`` enqueues)
    :param key: names the task instance that opens it (seeds its sampler)
    :param enqueue: known-good points to try first (``[{param: value}]``), when the study is new
    :raises MlciConfigError: a grid over a sampled space, or a sampler or pruner option Optuna refuses
    """
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        sampler = _sampler(config, space, key)
        pruner = _pruner(config)
    except TypeError as exc:
        raise MlciConfigError(f"Optuna refuses an option: {exc}") from exc
    for attempt in range(1, 4):
        try:
            study = optuna.create_study(
                storage=_storage(storage),
                study_name=name,
                direction=config.goal.value,
                sampler=sampler,
                pruner=pruner,
                load_if_exists=True,
            )
            break
        except Exception as exc:  # another task created the schema or the study at the same moment
            if attempt == 3 or not _lost_a_race(exc):
                raise
            time.sleep(0.2 * attempt)
    if not study.trials and not study.user_attrs.get("mlci_enqueued"):
        study.set_user_attr("mlci_enqueued", True)
        for point in enqueue:
            study.enqueue_trial(dict(point), skip_if_exists=True)
    if config.search is not Search.TPE and not study.user_attrs.get("mlci_space_enqueued"):
        study.set_user_attr("mlci_space_enqueued", True)
        seed = config.seed if config.seed is not None else 0
        if config.search is Search.GRID:
            points = space.trials(seed=seed)
        else:  # today's seeded draws fill what the known-good points leave of the budget
            left = (max_trials or 0) - len(enqueue)
            points = space.trials(max_trials=left, seed=seed) if left > 0 else []
        for trial in points:
            study.enqueue_trial(trial.params, skip_if_exists=True)
    return study


@dataclass(frozen=True)
class Asked:
    """A point a trial task got from the study.

    :param trial: the Optuna trial (report per-step values to it, ask it whether to prune)
    :param params: ``{param: value}``
    :param retried: whether an earlier try of the same task instance asked for it
    """

    trial: Any
    params: dict[str, Any]
    retried: bool = False

    @property
    def number(self) -> int:
        """The trial's number in the study."""
        return int(self.trial.number)


def ask(study: optuna.Study, key: str, space: SearchSpace) -> Asked:
    """The point of the task instance ``key``: the one its earlier try asked for if that trial is
    still running (a retry gets the same point), else a new one (the next enqueued point, or the sampler's).

    :param study: the study
    :param key: names the task instance: ``<dag_id>/<run_id>/<task_id>/<map_index>``
    :param space: the sweep's space
    """
    import optuna
    from optuna.trial import TrialState

    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if frozen.user_attrs.get(KEY_ATTR) == key:
            # FrozenTrial keeps its storage id private; Trial(study, id) is how Study.ask makes one too.
            return Asked(optuna.Trial(study, frozen._trial_id), dict(frozen.params), retried=True)
    trial = study.ask(distributions(space))
    trial.set_user_attr(KEY_ATTR, key)
    return Asked(trial, dict(trial.params))


def fail_abandoned(study: optuna.Study, prefix: str) -> list[int]:
    """Tell ``FAIL`` for the trials still running that task instances under ``prefix`` asked for: a
    trial task that failed for good (no retry left) told the study nothing, and a running trial
    would stay running (and, for TPE, a "liar" point) for ever.

    Call it once the tasks are done (the leaderboard does). Returns the trials' numbers.

    :param study: the study
    :param prefix: the keys' start, ``<dag_id>/<run_id>/<task_id>/``
    """
    from optuna.trial import TrialState

    closed = []
    for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if str(frozen.user_attrs.get(KEY_ATTR, "")).startswith(prefix):
            study.tell(frozen.number, state=TrialState.FAIL, skip_if_finished=True)
            closed.append(frozen.number)
    return closed


def trial_of(study: optuna.Study, number: int) -> tuple[Any, int | None]:
    """The trial ``number`` of the study, to report to (from another process: the triggerer), and the
    last step it reported (``None``: none yet).

    :param study: the study
    :param number: the trial's number
    :raises MlciConfigError: the study has no such trial
    """
    import optuna

    for frozen in study.get_trials(deepcopy=False):
        if frozen.number == number:
            steps = frozen.intermediate_values
            return optuna.Trial(study, frozen._trial_id), (max(steps) if steps else None)
    raise MlciConfigError(f"The study {study.study_name!r} has no trial {number}.")


def tell(study: optuna.Study, trial: optuna.Trial | int, value: float | None, *, state: str = "complete") -> None:
    """Tell the study how a trial ended: its objective value, or ``fail`` / ``pruned``.

    :param study: the study
    :param trial: the trial or its number
    :param value: the objective (``complete``; ``None`` makes it a failure); ignored otherwise (a
        pruned trial's last value is what it reported)
    :param state: ``complete``, ``fail`` or ``pruned``
    """
    from optuna.trial import TrialState

    states = {"complete": TrialState.COMPLETE, "fail": TrialState.FAIL, "pruned": TrialState.PRUNED}
    if state not in states:
        raise MlciConfigError(f"A trial ends complete, fail or pruned, not {state!r}.")
    if state == "complete" and value is None:
        state = "fail"
    study.tell(trial, value if state == "complete" else None, state=states[state], skip_if_finished=True)


def _sampler(config: StudyConfig, space: SearchSpace, key: str) -> Any:
    import optuna

    options = dict(config.sampler_options)
    seed = None if config.seed is None else _task_seed(config.seed, key)
    if config.search is Search.TPE:
        options.setdefault("constant_liar", True)  # trials side by side do not pick the same point
        return optuna.samplers.TPESampler(seed=seed, **options)
    if config.search is Search.RANDOM:
        return optuna.samplers.RandomSampler(seed=seed, **options)
    if space.grid_size() is None:
        sampled = ", ".join(p.name for p in space.params if p.sampled)
        raise MlciConfigError(f"search='grid' needs a grid: {sampled} is sampled (use tpe or random).")
    # The enqueued points come first; the grid sampler only covers a point none was enqueued for.
    return optuna.samplers.GridSampler(
        {p.name: list(p.values) for p in space.params}, seed=config.seed if config.seed is not None else 0, **options
    )


def _lost_a_race(exc: BaseException) -> bool:
    """Whether opening a study failed because another process created the same tables, types or
    study at the same moment (a second try finds them)."""
    from optuna.exceptions import DuplicatedStudyError

    if isinstance(exc, DuplicatedStudyError):
        return True
    text = str(exc).lower()
    return "already exists" in text or "duplicate key" in text or "unique constraint" in text


def _task_seed(seed: int, key: str) -> int:
    """A seed per task from the sweep's seed: the same task draws alike on every try, two tasks do not."""
    import hashlib

    return int.from_bytes(hashlib.sha256(f"{seed}/{key}".encode()).digest()[:4], "big")


def _pruner(config: StudyConfig) -> Any:
    import optuna

    options = dict(config.pruner_options)
    if config.pruner is Pruner.MEDIAN:
        return optuna.pruners.MedianPruner(**options)
    if config.pruner is Pruner.HYPERBAND:
        return optuna.pruners.HyperbandPruner(**options)
    return optuna.pruners.NopPruner()


def _storage(storage: str | Any) -> Any:
    """An Optuna storage from a URL: ``journal:///path`` is a journal file, anything else SQLAlchemy's."""
    if not isinstance(storage, str):
        return storage
    if storage.startswith("journal://"):
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        path = storage.removeprefix("journal://")
        return JournalStorage(JournalFileBackend(path, lock_obj=JournalFileOpenLock(path)))
    return storage


def describe(study: optuna.Study) -> str:
    """The study in one line (its name and how many trials ended which way), for logs.

    :param study: the study
    """
    counts: dict[str, int] = {}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
    return f"study {study.study_name}: {json.dumps(counts, sort_keys=True)}"


def study_charts(study: optuna.Study) -> dict[str, dict[str, Any]]:
    """Vega-Lite charts of a study, for the leaderboard report: ``history`` (each finished trial's
    objective by trial number, the best so far as a line, pruned trials at their last reported value),
    ``parallel`` (each complete trial's params and objective, normalised to 0..1) and ``importance``
    (Optuna's parameter importances, when at least two trials completed with different params).

    :param study: the study
    """
    from optuna.trial import TrialState

    maximize = study.direction.name == "MAXIMIZE"
    history, best = [], None
    for trial in sorted(study.get_trials(deepcopy=False), key=lambda t: t.number):
        if trial.state is TrialState.COMPLETE and trial.value is not None:
            best = trial.value if best is None else (max if maximize else min)(best, trial.value)
            history.append({"trial": trial.number, "value": trial.value, "state": "complete", "best": best})
        elif trial.state is TrialState.PRUNED and trial.intermediate_values:
            step = max(trial.intermediate_values)
            value = trial.intermediate_values[step]
            history.append({"trial": trial.number, "value": value, "state": f"pruned at step {step}", "best": best})
    x = {"field": "trial", "type": "quantitative", "title": "trial"}
    charts: dict[str, dict[str, Any]] = {
        "history": {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "Optimisation history",
            "width": 520,
            "height": 240,
            "data": {"values": history},
            "layer": [
                {
                    "mark": {"type": "point", "filled": True, "size": 60},
                    "encoding": {
                        "x": x,
                        "y": {"field": "value", "type": "quantitative", "scale": {"zero": False}, "title": "objective"},
                        "color": {"field": "state", "type": "nominal", "title": "trial"},
                    },
                },
                {
                    "transform": [{"filter": "datum.best != null"}],
                    "mark": {"type": "line", "interpolate": "step-after", "color": "#2e7d32"},
                    "encoding": {"x": x, "y": {"field": "best", "type": "quantitative"}},
                },
            ],
        }
    }
    complete = [t for t in study.get_trials(deepcopy=False) if t.state is TrialState.COMPLETE and t.value is not None]
    names = sorted({name for t in complete for name in t.params})
    if complete and names:
        axes = [*names, "objective"]
        # Long rows, one per trial and axis: params' dotted names would read as nested fields in Vega-Lite.
        rows = [
            {"trial": t.number, "axis": axis, "raw": _axis_value(_on_axis(t, axis)), "objective": t.value}
            for t in complete
            for axis in axes
        ]
        charts["parallel"] = {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "Parallel coordinates (each axis scaled to its range)",
            "width": max(240, 110 * len(axes)),
            "height": 240,
            "data": {"values": rows},
            "transform": [
                {"joinaggregate": [_agg("min", "lo"), _agg("max", "hi")], "groupby": ["axis"]},
                {
                    "calculate": "datum.hi == datum.lo ? 0.5 : (datum.raw - datum.lo) / (datum.hi - datum.lo)",
                    "as": "scaled",
                },
            ],
            "mark": {"type": "line", "opacity": 0.6},
            "encoding": {
                "x": {"field": "axis", "type": "nominal", "sort": axes, "title": None},
                "y": {"field": "scaled", "type": "quantitative", "axis": None},
                "detail": {"field": "trial", "type": "nominal"},
                "color": {"field": "objective", "type": "quantitative"},
            },
        }
    importances = _importances(study, complete)
    if importances:
        charts["importance"] = {
            "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
            "title": "Parameter importances",
            "width": 420,
            "height": 30 * len(importances),
            "data": {"values": [{"param": k, "importance": v} for k, v in importances.items()]},
            "mark": "bar",
            "encoding": {
                "y": {"field": "param", "type": "nominal", "sort": "-x", "title": None},
                "x": {"field": "importance", "type": "quantitative"},
            },
        }
    return charts


#: A value's place on its parallel-coordinates axis, 0 (the axis' lowest) to 1 (its highest).
_SCALED = "datum.hi == datum.lo ? 0.5 : (datum.raw - datum.lo) / (datum.hi - datum.lo)"


def _on_axis(trial: Any, axis: str) -> Any:
    return trial.value if axis == "objective" else trial.params.get(axis)


def _agg(op: str, name: str) -> dict[str, str]:
    return {"op": op, "field": "raw", "as": name}


def _axis_value(value: Any) -> Any:
    """A param's value on a parallel-coordinates axis: numbers as they are, anything else by its text's rank."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return sum(ord(c) for c in str(value)) % 997  # categorical: a stable position, not a quantity
    return value


def _importances(study: optuna.Study, complete: list[Any]) -> dict[str, float]:
    if len(complete) < 2 or len({tuple(sorted(t.params.items())) for t in complete}) < 2:
        return {}
    names = {name for trial in complete for name in trial.params}
    if len(names) == 1:  # all of it, without importing Optuna's evaluators (seconds) or fitting a forest
        return dict.fromkeys(names, 1.0)
    from optuna.importance import get_param_importances

    try:
        return {k: float(v) for k, v in get_param_importances(study).items()}
    except (RuntimeError, ValueError) as exc:  # too few distinct values for Optuna to judge
        log.debug("No parameter importances for %s: %s", study.study_name, exc)
        return {}


def study_config(study: Mapping[str, Any], *, seed: int | None = None) -> StudyConfig:
    """The :class:`StudyConfig` a sweep slot's ``study`` describes.

    :param study: ``{"search", "goal", "sampler_options", ...}``
    :param seed: the sweep's seed
    """
    goal = str(study.get("goal") or "maximize")
    return StudyConfig(
        search=study.get("search") or "tpe",
        pruner=study.get("pruner"),
        goal=Goal({"max": "maximize", "min": "minimize"}.get(goal, goal)),
        seed=seed if seed is not None else study.get("seed"),
        sampler_options=study.get("sampler_options") or {},
        pruner_options=study.get("pruner_options") or {},
    )
