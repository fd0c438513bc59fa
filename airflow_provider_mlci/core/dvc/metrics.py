"""Find one metric in metrics nested as ``dvc metrics show`` nests them.

DVC reads every metrics file that ``dvc.yaml`` names and keys the values by file:
``{"metrics.json": {"accuracy": 0.91, "eval": {"auc": 0.95}}}``. Users name a metric as
``accuracy``, as a dotted path ``eval.auc``, or with its file ``metrics.json:eval.auc`` when two
files hold the same key.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_provider_mlci.exceptions import MlciConfigError

__all__ = ["MetricLookup", "flatten_metrics", "lookup_metric"]


@dataclass(frozen=True, kw_only=True)
class MetricLookup:
    """Where a metric was found and its value.

    :param key: the metric as the user named it
    :param file: the metrics file that holds it (``None``: found in none)
    :param value: its value as a float; ``None`` when missing, not a number, or not finite
    :param problem: why there is no usable value (``None`` when there is one)
    """

    key: str
    file: str | None
    value: float | None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        """Whether the metric exists and is a finite number."""
        return self.problem is None


def flatten_metrics(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Return ``{"file:dotted.key": value}`` for every leaf of ``metrics``.

    :param metrics: ``{file: nested values}`` as ``dvc metrics show`` returns them
    """
    out: dict[str, Any] = {}
    for file, values in metrics.items():
        for dotted, value in _leaves(values, ""):
            out[f"{file}:{dotted}"] = value
    return out


def lookup_metric(metrics: Mapping[str, Any], key: str) -> MetricLookup:
    """Find ``key`` in ``metrics``; say why when it has no usable value.

    :param metrics: ``{file: nested values}`` as ``dvc metrics show`` returns them
    :param key: ``name``, ``dotted.name`` or ``file:dotted.name``
    :raises MlciConfigError: ``key`` is empty, or names a metric that two files hold
    """
    if not isinstance(key, str) or not key.strip():
        raise MlciConfigError(f"{key!r} is not a metric name.")
    file, _, dotted = key.rpartition(":")
    flat = flatten_metrics(metrics)
    if file:
        hits = {f"{file}:{dotted}": flat[f"{file}:{dotted}"]} if f"{file}:{dotted}" in flat else {}
    else:
        hits = {name: value for name, value in flat.items() if name.split(":", 1)[1] == dotted}
    if len(hits) > 1:
        raise MlciConfigError(f"Metric {key!r} is in several files ({', '.join(sorted(hits))}); name it as file:key.")
    if not hits:
        known = ", ".join(sorted(flat)) or "none"
        return MetricLookup(key=key, file=None, value=None, problem=f"metric {key!r} not found (metrics: {known})")
    (name, raw) = next(iter(hits.items()))
    where = name.split(":", 1)[0]
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return MetricLookup(
            key=key, file=where, value=None, problem=f"metric {key!r} in {where} is {raw!r}, not a number"
        )
    value = float(raw)
    if not math.isfinite(value):
        return MetricLookup(key=key, file=where, value=None, problem=f"metric {key!r} in {where} is {raw!r}")
    return MetricLookup(key=key, file=where, value=value)


def _leaves(value: Any, prefix: str) -> Iterator[tuple[str, Any]]:
    if isinstance(value, Mapping):
        for name, inner in value.items():
            yield from _leaves(inner, f"{prefix}.{name}" if prefix else str(name))
    elif prefix:
        yield prefix, value
