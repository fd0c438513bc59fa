"""Candidate versus deployed model: per-metric rules, evidence on the same data, a decision.

A rule per metric says which direction is better, the worst acceptable value (``floor``), the
improvement over the deployed model the candidate must show (absolute and relative), or instead
the regression it may show (``max_regression``, for secondary metrics). Every rule must pass.
Missing or NaN values fail closed. With no deployed model, the floors alone decide.

Metrics are only comparable when both were computed on the same evaluation: the dependencies
of the pipeline stage that wrote the metrics files (its data, code and params, as ``dvc.lock``
records them, less the model itself) must be equal at both revisions.
:func:`evaluation_fingerprint` reads them; :func:`compare_evaluations` says what differs.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_provider_mlci.core.dvc.metrics import lookup_metric
from airflow_provider_mlci.exceptions import MlciConfigError

__all__ = [
    "Direction",
    "GateDecision",
    "GateSpec",
    "MetricRule",
    "MetricVerdict",
    "compare_evaluations",
    "decide",
    "evaluation_fingerprint",
]

_ALIASES = {
    "higher": "higher",
    "maximize": "higher",
    "max": "higher",
    "lower": "lower",
    "minimize": "lower",
    "min": "lower",
}
#: Differences this small (relative to the values) are float rounding, not a change.
_FLOAT_SLACK = 1e-9
_RULE_KEYS = {"direction", "floor", "min_improvement", "min_relative_improvement", "max_regression"}


class Direction(enum.StrEnum):
    """Which way a metric gets better."""

    HIGHER = "higher"
    LOWER = "lower"

    @classmethod
    def of(cls, value: Any, metric: str) -> Direction:
        """Return the direction ``value`` names (``higher``/``maximize``, ``lower``/``minimize``).

        :param value: the direction as written
        :param metric: the metric it is for (named in the error)
        :raises MlciConfigError: an unknown direction
        """
        if isinstance(value, Direction):
            return value
        name = _ALIASES.get(str(value).lower()) if isinstance(value, str) else None
        if name is None:
            raise MlciConfigError(
                f"Gate rule for {metric!r}: direction={value!r} is not one of higher, lower (or maximize, minimize)."
            )
        return cls(name)


@dataclass(frozen=True, kw_only=True)
class MetricRule:
    """How one metric decides.

    :param metric: ``name``, ``dotted.name`` or ``file:dotted.name``
    :param direction: which way is better
    :param floor: the worst acceptable value (a minimum when higher is better, a maximum when lower is)
    :param min_improvement: how much better than the deployed model, in the metric's units
    :param min_relative_improvement: how much better, as a fraction of the deployed model's value
    :param max_regression: how much worse than the deployed model is tolerated (instead of an
        improvement; for metrics that must merely not degrade)
    """

    metric: str
    direction: Direction
    floor: float | None = None
    min_improvement: float = 0.0
    min_relative_improvement: float = 0.0
    max_regression: float | None = None

    def __post_init__(self) -> None:
        for name in ("floor", "min_improvement", "min_relative_improvement", "max_regression"):
            value = getattr(self, name)
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float) or math.isnan(value)
            ):
                raise MlciConfigError(f"Gate rule for {self.metric!r}: {name}={value!r} is not a number.")
        if self.max_regression is not None and (self.min_improvement or self.min_relative_improvement):
            raise MlciConfigError(
                f"Gate rule for {self.metric!r}: max_regression and min_improvement/min_relative_improvement "
                "exclude each other (a metric either must improve or may regress)."
            )
        if self.max_regression is not None and self.max_regression < 0:
            raise MlciConfigError(f"Gate rule for {self.metric!r}: max_regression must be >= 0.")

    @classmethod
    def from_mapping(cls, metric: str, data: Mapping[str, Any]) -> MetricRule:
        """Build a rule from ``{"direction": "higher", "floor": 0.8, "min_improvement": 0.01}``.

        :param metric: the metric
        :param data: the rule's settings
        :raises MlciConfigError: unknown keys, a missing or unknown direction, non-numbers
        """
        if not isinstance(data, Mapping):
            raise MlciConfigError(f"Gate rule for {metric!r} must be a mapping, not {data!r}.")
        unknown = sorted(set(data) - _RULE_KEYS)
        if unknown:
            raise MlciConfigError(
                f"Gate rule for {metric!r}: unknown setting(s) {', '.join(unknown)} "
                f"(known: {', '.join(sorted(_RULE_KEYS))})."
            )
        if "direction" not in data:
            raise MlciConfigError(f"Gate rule for {metric!r} needs a direction (higher or lower).")
        settings = {k: v for k, v in data.items() if k != "direction"}
        return cls(metric=metric, direction=Direction.of(data["direction"], metric), **settings)

    def to_json(self) -> dict[str, Any]:
        """The rule as JSON."""
        return {
            "metric": self.metric,
            "direction": self.direction.value,
            "floor": self.floor,
            "min_improvement": self.min_improvement,
            "min_relative_improvement": self.min_relative_improvement,
            "max_regression": self.max_regression,
        }


@dataclass(frozen=True)
class GateSpec:
    """Every rule of a gate.

    :param rules: one rule per metric
    """

    rules: tuple[MetricRule, ...]

    def __post_init__(self) -> None:
        if not self.rules:
            raise MlciConfigError("A gate needs at least one metric rule.")

    @classmethod
    def of(cls, spec: GateSpec | Mapping[str, Mapping[str, Any]] | Iterable[MetricRule]) -> GateSpec:
        """Build from ``{metric: {direction, floor, …}}``, a list of rules, or a spec.

        :param spec: the rules
        :raises MlciConfigError: naming the first bad rule
        """
        if isinstance(spec, GateSpec):
            return spec
        if isinstance(spec, Mapping):
            return cls(tuple(MetricRule.from_mapping(str(metric), rule) for metric, rule in spec.items()))
        return cls(tuple(spec))


@dataclass(frozen=True, kw_only=True)
class MetricVerdict:
    """How one metric of the candidate fared.

    :param metric: the metric
    :param direction: which way is better
    :param candidate: the candidate's value (``None``: missing or not finite)
    :param champion: the deployed model's value (``None``: none, missing or not finite)
    :param delta: ``candidate - champion``
    :param relative_delta: ``delta / |champion|``
    :param passed: whether every condition held
    :param reasons: what failed
    """

    metric: str
    direction: str
    candidate: float | None
    champion: float | None
    delta: float | None
    relative_delta: float | None
    passed: bool
    reasons: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The verdict as JSON."""
        return {
            "metric": self.metric,
            "direction": self.direction,
            "candidate": self.candidate,
            "champion": self.champion,
            "delta": self.delta,
            "relative_delta": self.relative_delta,
            "passed": self.passed,
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True, kw_only=True)
class GateDecision:
    """What the gate decided, and why.

    :param promote: whether the candidate may replace the deployed model
    :param metrics: one verdict per rule
    :param reasons: every failed condition, across metrics and evidence
    :param candidate: the candidate's revision and metrics
    :param champion: the deployed model (``None``: the stage is empty)
    :param evaluation: what the metrics were computed on, and whether it matched
    """

    promote: bool
    metrics: tuple[MetricVerdict, ...]
    reasons: tuple[str, ...]
    candidate: dict[str, Any]
    champion: dict[str, Any] | None
    evaluation: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The decision as small JSON (for XCom and the report)."""
        return {
            "promote": self.promote,
            "reasons": list(self.reasons),
            "metrics": [v.to_json() for v in self.metrics],
            "candidate": self.candidate,
            "champion": self.champion,
            "evaluation": self.evaluation,
        }


def decide(
    spec: GateSpec, candidate: Mapping[str, Any], champion: Mapping[str, Any] | None
) -> tuple[bool, tuple[MetricVerdict, ...]]:
    """Apply every rule; return whether all passed and each metric's verdict.

    :param spec: the rules
    :param candidate: the candidate's metrics, ``{file: nested values}``
    :param champion: the deployed model's metrics, or ``None`` when nothing is deployed
    """
    verdicts = tuple(_judge(rule, candidate, champion) for rule in spec.rules)
    return all(v.passed for v in verdicts), verdicts


def _judge(rule: MetricRule, candidate: Mapping[str, Any], champion: Mapping[str, Any] | None) -> MetricVerdict:
    reasons: list[str] = []
    new = lookup_metric(candidate, rule.metric)
    old = lookup_metric(champion, rule.metric) if champion is not None else None
    higher = rule.direction is Direction.HIGHER
    if not new.usable:
        reasons.append(f"candidate: {new.problem}")
    elif rule.floor is not None and (new.value < rule.floor if higher else new.value > rule.floor):
        reasons.append(f"{rule.metric} = {new.value:g} is {'below' if higher else 'above'} the floor {rule.floor:g}")
    delta = relative = None
    if old is not None:
        if not old.usable:
            reasons.append(f"deployed model: {old.problem}; cannot compare")
        elif new.usable:
            delta = round(new.value - old.value, 12)  # 0.4623 - 0.4625 is -0.00020000000000003348
            relative = delta / abs(old.value) if old.value else None
            gain = delta if higher else -delta
            # Metrics files round their values: 0.781 - 0.791 must count as exactly -0.01.
            slack = _FLOAT_SLACK * max(1.0, abs(old.value), abs(new.value))
            if rule.max_regression is not None:
                if gain < -rule.max_regression - slack:
                    reasons.append(
                        f"{rule.metric} regressed by {-gain:g} (from {old.value:g} to {new.value:g}); "
                        f"at most {rule.max_regression:g} tolerated"
                    )
            else:
                if gain < rule.min_improvement - slack:
                    need = (
                        f"an improvement of at least {rule.min_improvement:g} is required"
                        if rule.min_improvement
                        else "no regression is allowed"
                    )
                    moved = f"regressed by {-gain:g}" if gain < 0 else f"improved by only {gain:g}"
                    reasons.append(f"{rule.metric} {moved} (from {old.value:g} to {new.value:g}); {need}")
                wanted = rule.min_relative_improvement * abs(old.value)
                if rule.min_relative_improvement and gain < wanted - slack:
                    reasons.append(
                        f"{rule.metric} improved by {gain:g}, less than {rule.min_relative_improvement:.2%} "
                        f"of {old.value:g} ({wanted:g})"
                    )
    return MetricVerdict(
        metric=rule.metric,
        direction=rule.direction.value,
        candidate=new.value,
        champion=old.value if old is not None else None,
        delta=delta,
        relative_delta=relative,
        passed=not reasons,
        reasons=tuple(reasons),
    )


def evaluation_fingerprint(
    lock: Mapping[str, Any] | None,
    metrics_files: Iterable[str],
    *,
    exclude: Iterable[str] = (),
    include: Iterable[str] | None = None,
) -> dict[str, Any]:
    """What the metrics files were computed on, as ``dvc.lock`` records it.

    Returns ``{path: hash}`` for the dependencies of every stage whose outputs include one of
    ``metrics_files``, and ``{"params:<file>:<key>": value}`` for its params; ``exclude``
    (the model) and whatever is under it leave out. ``{}`` when no stage writes them.

    :param lock: the parsed ``dvc.lock`` (``None``: there is none)
    :param metrics_files: the metrics files the gate reads
    :param exclude: paths to leave out (the model artifact)
    :param include: only these paths (default: every dependency)
    """
    wanted = set(metrics_files)
    skip = [p.rstrip("/") for p in exclude]
    only = set(include) if include is not None else None
    out: dict[str, Any] = {}
    for stage in ((lock or {}).get("stages") or {}).values():
        if not isinstance(stage, Mapping):
            continue
        outs = {o.get("path") for o in stage.get("outs") or [] if isinstance(o, Mapping)}
        if not outs & wanted:
            continue
        for dep in stage.get("deps") or []:
            path = dep.get("path") if isinstance(dep, Mapping) else None
            if not path or any(path == s or path.startswith(f"{s}/") for s in skip):
                continue
            if only is not None and path not in only:
                continue
            out[path] = dep.get("md5") or dep.get("etag") or dep.get("checksum") or dep.get("hash")
        if only is None:
            for file, values in (stage.get("params") or {}).items():
                for key, value in (values or {}).items():
                    out[f"params:{file}:{key}"] = value
    return out


def compare_evaluations(candidate: Mapping[str, Any], champion: Mapping[str, Any]) -> list[str]:
    """What differs between two evaluation fingerprints (empty: the same evaluation).

    :param candidate: the candidate's fingerprint
    :param champion: the deployed model's fingerprint
    """
    if not candidate or not champion:
        side = "candidate's" if not candidate else "deployed model's"
        return [f"the {side} dvc.lock does not say which stage wrote the metrics, nor from what data"]
    diffs = []
    for key in sorted(set(candidate) | set(champion)):
        a, b = candidate.get(key), champion.get(key)
        if a != b:
            diffs.append(f"{key}: {_short(b)} for the deployed model, {_short(a)} for the candidate")
    return diffs


def _short(value: Any) -> str:
    if value is None:
        return "absent"
    text = str(value)
    return text[:12] if len(text) == 32 else text
