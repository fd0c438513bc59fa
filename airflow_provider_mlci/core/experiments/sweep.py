"""Hyperparameter sweeps: a search space, the trials it expands to, and the best of their results.

A space maps a param (``train.lr``, dotted as in ``params.yaml``) to a distribution::

    {"train.epochs": [50, 100],                       # a list: every value (grid)
     "train.lr": {"loguniform": [1e-4, 1e-1]},        # sampled
     "train.l2": {"uniform": [0.0, 0.01]},
     "train.batch": {"range": [16, 65, 16]},          # 16, 32, 48, 64
     "model.kind": {"choice": ["linear", "tree"]}}

or as DVC's ``-S`` strings: ``["train.lr=0.01,0.1", "train.epochs=range(50,150,50)",
"model.kind=choice(linear,tree)"]``. Discrete params expand as a grid; with any sampled param,
``max_trials`` random trials are drawn (seeded). Each trial carries its ``-S`` overrides. A sweep
larger than Airflow's map limit (``[core] max_map_length``, 1024) fails when it is generated.
Results become a leaderboard in the shape the report renders: ``{"objective", "trials"}``.
"""

from __future__ import annotations

import enum
import itertools
import math
import random
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow_provider_mlci.core.dvc.metrics import lookup_metric
from airflow_provider_mlci.exceptions import MlciConfigError, MlciError

__all__ = [
    "Goal",
    "Objective",
    "Param",
    "SearchSpace",
    "Trial",
    "best_trial",
    "check_sweep",
    "leaderboard",
    "rank_sweep",
    "target_met",
]

_KINDS = ("grid", "choice", "range", "uniform", "loguniform")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.-]*(?::[A-Za-z_][A-Za-z0-9_.-]*)?$")
_FUNC = re.compile(r"^(?P<kind>[a-z]+)\((?P<args>.*)\)$")
_GOAL_ALIASES = {"max": "maximize", "min": "minimize"}
#: Airflow's default ``[core] max_map_length``.
DEFAULT_MAP_LIMIT = 1024


class Goal(enum.StrEnum):
    """Whether the objective metric should go up or down."""

    MAXIMIZE = "maximize"
    MINIMIZE = "minimize"


@dataclass(frozen=True, kw_only=True)
class Param:
    """One dimension of the space.

    :param name: the param, dotted as in ``params.yaml`` (``file.yaml:key`` for another file)
    :param kind: ``grid``, ``choice``, ``range``, ``uniform`` or ``loguniform``
    :param values: the values of a discrete kind
    :param low: the lower bound of a sampled kind
    :param high: the upper bound of a sampled kind
    """

    name: str
    kind: str
    values: tuple[Any, ...] = ()
    low: float = 0.0
    high: float = 0.0

    @property
    def sampled(self) -> bool:
        """Whether values are drawn rather than listed."""
        return self.kind in ("uniform", "loguniform")

    def draw(self, rng: random.Random) -> Any:
        """One value: a random pick of a discrete kind, or a sample of a continuous one.

        :param rng: the sweep's random source
        """
        if self.kind == "uniform":
            return rng.uniform(self.low, self.high)
        if self.kind == "loguniform":
            return math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        return rng.choice(self.values)


@dataclass(frozen=True, kw_only=True)
class Trial:
    """One point of the space.

    :param name: ``trial-001`` …
    :param params: ``{param: value}``
    """

    name: str
    params: dict[str, Any]

    @property
    def overrides(self) -> list[str]:
        """The params as DVC's ``-S`` / ``--set-param`` strings."""
        return [f"{name}={_literal(value)}" for name, value in self.params.items()]

    def to_json(self) -> dict[str, Any]:
        """The trial as small JSON (what a mapped task receives)."""
        return {"name": self.name, "params": self.params, "overrides": self.overrides}


@dataclass(frozen=True)
class SearchSpace:
    """Every param of a sweep.

    :param params: the dimensions
    """

    params: tuple[Param, ...]

    @classmethod
    def of(cls, spec: Mapping[str, Any] | Sequence[str] | SearchSpace) -> SearchSpace:
        """Parse a mapping of param to distribution, or DVC ``-S`` strings.

        :param spec: the space as the user wrote it
        :raises MlciConfigError: naming the param whose distribution is unknown or malformed
        """
        if isinstance(spec, SearchSpace):
            return spec
        if isinstance(spec, str):
            spec = [spec]
        if isinstance(spec, Mapping):
            params = tuple(_param(str(name), value) for name, value in spec.items())
        else:
            params = tuple(_from_set_string(str(item)) for item in spec)
        if not params:
            raise MlciConfigError("The search space is empty.")
        names = [p.name for p in params]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise MlciConfigError(f"Params given twice in the search space: {', '.join(twice)}.")
        return cls(params)

    def grid_size(self) -> int | None:
        """How many points the full grid has (``None`` when a param is sampled)."""
        if any(p.sampled for p in self.params):
            return None
        return math.prod(len(p.values) for p in self.params)

    def trials(
        self, *, max_trials: int | None = None, seed: int = 0, map_limit: int = DEFAULT_MAP_LIMIT
    ) -> list[Trial]:
        """Expand the space: the whole grid (up to ``max_trials``), or ``max_trials`` random draws.

        :param max_trials: the trial budget; required when a param is sampled
        :param seed: the random source's seed (same seed, same trials)
        :param map_limit: Airflow's ``[core] max_map_length``
        :raises MlciConfigError: no budget for a sampled space, or more trials than Airflow can map
        """
        if max_trials is not None and (not isinstance(max_trials, int) or max_trials < 1):
            raise MlciConfigError(f"max_trials={max_trials!r} must be a whole number >= 1.")
        size = self.grid_size()
        if size is None and max_trials is None:
            sampled = ", ".join(p.name for p in self.params if p.sampled)
            raise MlciConfigError(f"max_trials is needed: {sampled} {'is' if ',' not in sampled else 'are'} sampled.")
        count = min(size, max_trials) if size is not None and max_trials is not None else (size or max_trials or 0)
        if count > map_limit:
            raise MlciConfigError(
                f"The sweep has {count} trials, more than Airflow maps in one task ([core] max_map_length = "
                f"{map_limit}): lower max_trials, narrow the space, or raise max_map_length."
            )
        if size is not None:
            points = itertools.islice(itertools.product(*(p.values for p in self.params)), count)
            rows = [dict(zip((p.name for p in self.params), point, strict=True)) for point in points]
        else:
            rng = random.Random(seed)  # noqa: S311 (reproducible sampling, not security)
            rows = [{p.name: p.draw(rng) for p in self.params} for _ in range(count)]
        width = max(3, len(str(count)))
        return [Trial(name=f"trial-{index:0{width}d}", params=row) for index, row in enumerate(rows, 1)]


@dataclass(frozen=True, kw_only=True)
class Objective:
    """What a sweep optimises.

    :param metric: the metric, as ``metrics`` lookups name it (``acc``, ``eval.f1``, ``file:key``)
    :param goal: ``maximize`` or ``minimize``
    :param target: stop early once a trial reaches it
    """

    metric: str
    goal: Goal = Goal.MAXIMIZE
    target: float | None = None

    @classmethod
    def of(cls, spec: Objective | Mapping[str, Any]) -> Objective:
        """Build from ``{"metric": "accuracy", "goal": "maximize", "target": 0.95}``.

        :param spec: the objective as written
        :raises MlciConfigError: no metric, an unknown goal or key
        """
        if isinstance(spec, Objective):
            return spec
        unknown = sorted(set(spec) - {"metric", "goal", "target"})
        if unknown or not isinstance(spec.get("metric"), str):
            raise MlciConfigError(f"objective={dict(spec)!r}: give {{'metric', 'goal', 'target'}}.")
        written = str(spec.get("goal") or "maximize").lower()
        try:
            goal = Goal(_GOAL_ALIASES.get(written, written))
        except ValueError:
            raise MlciConfigError(
                f"objective goal={spec.get('goal')!r} is not one of maximize, minimize (or max, min)."
            ) from None
        target = spec.get("target")
        if target in ("", "None"):  # a templated target left empty
            target = None
        if target is not None:
            try:
                target = float(target)
            except (TypeError, ValueError):
                raise MlciConfigError(f"objective target={target!r} is not a number.") from None
        return cls(metric=spec["metric"], goal=goal, target=target)

    def to_json(self) -> dict[str, Any]:
        """The objective as small JSON (what operators store and serialise)."""
        return {"metric": self.metric, "goal": self.goal.value, "target": self.target}

    def value(self, metrics: Mapping[str, Any]) -> float | None:
        """The objective's value in a trial's metrics (``None``: missing or not finite).

        :param metrics: ``{file: values}`` as ``dvc metrics show`` nests them
        """
        return lookup_metric(metrics, self.metric).value

    def better(self, a: float, b: float) -> bool:
        """Whether ``a`` beats ``b``.

        :param a: a value
        :param b: another
        """
        return a > b if self.goal is Goal.MAXIMIZE else a < b


def leaderboard(results: Sequence[Mapping[str, Any]], objective: Objective) -> dict[str, Any]:
    """Trials ranked by the objective, failed and metric-less ones last.

    :param results: ``[{"name", "params", "metrics", "status"}]`` per trial
    :param objective: what ranks them
    """
    scored = []
    for result in results:
        value = objective.value(result.get("metrics") or {}) if result.get("status", "success") == "success" else None
        scored.append({**{k: result.get(k) for k in ("name", "params", "status")}, "value": value})
    sign = -1 if objective.goal is Goal.MAXIMIZE else 1
    ranked = sorted(scored, key=lambda t: (t["value"] is None, sign * (t["value"] or 0.0)))
    return {"objective": objective.metric, "goal": objective.goal.value, "trials": ranked}


def best_trial(results: Sequence[Mapping[str, Any]], objective: Objective) -> dict[str, Any] | None:
    """The best successful trial with a value, or ``None``.

    :param results: as for :func:`leaderboard`
    :param objective: what ranks them
    """
    board = leaderboard(results, objective)["trials"]
    return board[0] if board and board[0]["value"] is not None else None


def target_met(results: Sequence[Mapping[str, Any]], objective: Objective) -> bool:
    """Whether some trial reached the objective's target (always ``False`` without one).

    :param results: as for :func:`leaderboard`
    :param objective: the objective
    """
    best = best_trial(results, objective)
    if objective.target is None or best is None:
        return False
    return best["value"] == objective.target or objective.better(best["value"], objective.target)


def rank_sweep(
    planned: Sequence[Mapping[str, Any]],
    results: Sequence[Any],
    objective: Objective,
    *,
    skipped: Iterable[int] = (),
) -> dict[str, Any]:
    """What a sweep came to: every planned trial ranked, the best, the counts (see :func:`check_sweep`).

    A planned trial without a result counts as skipped when its index is in ``skipped`` (the
    target was met before it started), else as failed (its task did not finish).

    :param planned: the trials as generated, ``[{"name", "params", ...}]``, in map-index order
    :param results: what the trial tasks returned (anything that is not a mapping with a
        ``name`` is ignored)
    :param objective: what ranks them
    :param skipped: map indexes of the trials that were skipped
    :returns: ``{"leaderboard", "best", "target", "target_met", "succeeded", "failed", "skipped",
        "pruned"}`` (a pruned trial, stopped early by an adaptive sweep's pruner, is never ranked)
    """
    by_name = {r["name"]: r for r in results if isinstance(r, Mapping) and "name" in r}
    skipped = set(skipped)
    rows: list[dict[str, Any]] = []
    for index, trial in enumerate(planned):
        result = by_name.get(trial["name"])
        if result is not None:
            rows.append(dict(result))
        elif index in skipped:
            rows.append({"name": trial["name"], "params": trial["params"], "status": "skipped"})
        else:
            error = "the trial's task did not finish (see its log)"
            rows.append({"name": trial["name"], "params": trial["params"], "status": "failed", "error": error})
    board = leaderboard(rows, objective)
    extra = {r["name"]: r for r in rows}
    for row in board["trials"]:
        row.update({k: extra[row["name"]].get(k) for k in ("exp_ref", "sha", "error")})
    best = best_trial(rows, objective)
    if best is not None:
        best = next(row for row in board["trials"] if row["name"] == best["name"])
    failed = [r for r in rows if r.get("status") == "failed"]
    n_skipped = sum(1 for r in rows if r.get("status") == "skipped")
    n_pruned = sum(1 for r in rows if r.get("status") == "pruned")
    return {
        "leaderboard": board,
        "best": best,
        "target": objective.target,
        "target_met": target_met(rows, objective),
        "succeeded": len(rows) - len(failed) - n_skipped - n_pruned,
        "failed": len(failed),
        "skipped": n_skipped,
        "pruned": n_pruned,
    }


def check_sweep(summary: Mapping[str, Any], *, max_failed: int | None = None) -> None:
    """Fail a sweep that :func:`rank_sweep` summed up as failed.

    :param summary: what :func:`rank_sweep` returned
    :param max_failed: how many failed trials are tolerated; ``None``: any number
    :raises MlciError: more failures than ``max_failed`` (naming each), or no trial with a value
    """
    rows = summary["leaderboard"]["trials"]
    failed = [r for r in rows if r.get("status") == "failed"]
    if max_failed is not None and len(failed) > max_failed:
        raise MlciError(
            f"{len(failed)} of {len(rows)} trials failed, more than max_failed_trials={max_failed}: "
            + "; ".join(f"{r['name']}: {r.get('error')}" for r in failed)
        )
    if summary["best"] is None:
        raise MlciError(
            f"No trial of {len(rows)} produced a usable {summary['leaderboard']['objective']!r} "
            f"({len(failed)} failed, {summary['skipped']} skipped)."
        )


def _param(name: str, value: Any) -> Param:
    if not _NAME.match(name):
        raise MlciConfigError(f"{name!r} is not a param name (dotted, as in params.yaml).")
    if isinstance(value, list | tuple):
        return _discrete(name, "grid", list(value))
    if not isinstance(value, Mapping) or len(value) != 1:
        raise MlciConfigError(
            f"Param {name!r}: give a list of values or one of {{{', '.join(_KINDS)}: ...}}, not {value!r}."
        )
    ((kind, args),) = value.items()
    return _build(name, str(kind), args)


def _build(name: str, kind: str, args: Any) -> Param:
    if kind in ("grid", "choice"):
        return _discrete(name, kind, list(args) if isinstance(args, list | tuple) else [args])
    if kind == "range":
        numbers = _numbers(name, kind, args, (2, 3))
        start, stop, step = (*numbers, 1)[:3] if len(numbers) == 2 else numbers
        if step == 0:
            raise MlciConfigError(f"Param {name!r}: range step is 0.")
        count = math.ceil((stop - start) / step)
        values = [start + i * step for i in range(max(count, 0))]
        if all(isinstance(v, int) for v in (start, stop, step)):
            values = [int(v) for v in values]
        return _discrete(name, kind, values)
    if kind in ("uniform", "loguniform"):
        low, high = _numbers(name, kind, args, (2,))
        if not low < high or (kind == "loguniform" and low <= 0):
            raise MlciConfigError(f"Param {name!r}: {kind}({low}, {high}) needs 0 < low < high for log, low < high.")
        return Param(name=name, kind=kind, low=float(low), high=float(high))
    raise MlciConfigError(f"Param {name!r}: unknown distribution {kind!r} (known: {', '.join(_KINDS)}).")


def _discrete(name: str, kind: str, values: list[Any]) -> Param:
    if not values:
        raise MlciConfigError(f"Param {name!r}: no values.")
    return Param(name=name, kind=kind, values=tuple(values))


def _numbers(name: str, kind: str, args: Any, counts: tuple[int, ...]) -> list[Any]:
    items = list(args) if isinstance(args, list | tuple) else [args]
    if len(items) not in counts or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in items):
        raise MlciConfigError(f"Param {name!r}: {kind} takes {' or '.join(map(str, counts))} numbers, not {args!r}.")
    return items


def _from_set_string(text: str) -> Param:
    """``train.lr=0.01,0.1``, ``x=range(0,1,0.2)``, ``m=choice(a,b)``, ``lr=loguniform(1e-4,1e-1)``."""
    name, sep, rhs = text.partition("=")
    if not sep or not name.strip():
        raise MlciConfigError(f"{text!r} is not a `-S` param string (name=value,... or name=kind(...)).")
    name, rhs = name.strip(), rhs.strip()
    match = _FUNC.match(rhs)
    if match:
        return _build(name, match["kind"], [_scalar(a) for a in _split(match["args"])])
    return _param(name, [_scalar(a) for a in _split(rhs)])


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _scalar(text: str) -> Any:
    for convert in (int, float):
        try:
            return convert(text)
        except ValueError:
            pass
    lowered = text.lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    return text.strip("'\"")


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return repr(value)
    return str(value)
