"""Compare a dataset with its previous version: columns, row count, and per-column distribution shift.

Each version is read once, in chunks, into a :class:`DatasetProfile`: its columns and dtypes, its
row count, for numeric columns a uniform random sample of values (reservoir, fixed seed), and for
other columns the frequency of each category. Two profiles are then compared:

- columns added, removed or retyped;
- the row count's ratio new / old outside ``[min_row_ratio, max_row_ratio]``;
- numeric columns: the population stability index (PSI) over ten bins cut at the baseline's
  deciles, and the two-sample Kolmogorov-Smirnov statistic (the largest gap between the two
  empirical distribution functions);
- other columns: the PSI over categories.

A resample of the same distribution gives PSI near 0.01 and KS near 0.02 on a few thousand
rows; the default thresholds (PSI 0.2, KS 0.1) are the usual "significant shift" levels.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.exceptions import MlciConfigError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["DatasetProfile", "DriftReport", "DriftThresholds", "compare_profiles", "profile_chunks"]

_EPS = 1e-4
_MAX_CATEGORIES = 10_000


@dataclass(frozen=True, kw_only=True)
class DriftThresholds:
    """When a change counts as drift.

    :param psi: population stability index above which a column has drifted
    :param ks: Kolmogorov-Smirnov statistic above which a numeric column has drifted
    :param min_row_ratio: the new row count must be at least this fraction of the old
    :param max_row_ratio: and at most this multiple of it
    :param sample_size: values kept per numeric column to compare distributions
    """

    psi: float = 0.2
    ks: float = 0.1
    min_row_ratio: float = 0.5
    max_row_ratio: float = 2.0
    sample_size: int = 100_000

    def __post_init__(self) -> None:
        if not self.psi > 0 or not 0 < self.ks <= 1:
            raise MlciConfigError(f"Drift thresholds must be positive (psi={self.psi}, ks={self.ks} <= 1).")
        if not 0 <= self.min_row_ratio <= 1 <= self.max_row_ratio:
            raise MlciConfigError(
                f"Row ratio bounds must satisfy 0 <= min_row_ratio ({self.min_row_ratio}) <= 1 "
                f"<= max_row_ratio ({self.max_row_ratio})."
            )
        if self.sample_size < 100:
            raise MlciConfigError(f"sample_size must be at least 100, not {self.sample_size}.")


@dataclass(kw_only=True)
class DatasetProfile:
    """What the comparison needs of one version of a dataset.

    :param rows: its row count
    :param dtypes: ``{column: dtype name}``
    :param samples: numeric columns: a uniform sample of the non-null values
    :param categories: other columns: ``{value: count}`` (``None`` past 10,000 categories)
    """

    rows: int = 0
    dtypes: dict[str, str] = field(default_factory=dict)
    samples: dict[str, np.ndarray] = field(default_factory=dict)
    categories: dict[str, dict[str, int] | None] = field(default_factory=dict)


def profile_chunks(
    chunks: Iterable[pd.DataFrame], *, columns: Iterable[str] | None = None, sample_size: int = 100_000, seed: int = 0
) -> DatasetProfile:
    """Profile a dataset read in chunks.

    :param chunks: the dataset's rows, in chunks
    :param columns: only these columns (default: all)
    :param sample_size: values kept per numeric column
    :param seed: the sampling seed (the same for both versions)
    """
    import numpy as np
    import pandas as pd

    wanted = set(columns) if columns is not None else None
    profile = DatasetProfile()
    rng = np.random.default_rng(seed)
    seen: dict[str, int] = {}
    for chunk in chunks:
        profile.rows += len(chunk)
        for name in chunk.columns:
            key = str(name)
            if wanted is not None and key not in wanted:
                continue
            series = chunk[name]
            profile.dtypes.setdefault(key, str(series.dtype))
            if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
                values = series.dropna().to_numpy(dtype=np.float64)
                profile.samples[key] = _reservoir(profile.samples.get(key), values, seen.get(key, 0), sample_size, rng)
                seen[key] = seen.get(key, 0) + len(values)
            else:
                counts = profile.categories.setdefault(key, {})
                if counts is None:
                    continue
                for value, count in series.astype(str).where(series.notna(), "<null>").value_counts().items():
                    counts[str(value)] = counts.get(str(value), 0) + int(count)
                if len(counts) > _MAX_CATEGORIES:
                    profile.categories[key] = None
    return profile


def _reservoir(kept: np.ndarray | None, values: np.ndarray, seen: int, size: int, rng: Any) -> np.ndarray:
    """Keep a uniform sample of ``size`` of all values seen so far (Algorithm R, vectorised)."""
    import numpy as np

    kept = np.empty(0) if kept is None else kept
    room = max(size - len(kept), 0)
    kept = np.concatenate([kept, values[:room]])
    rest = values[room:]
    if len(rest):
        positions = seen + room + np.arange(len(rest))  # 0-based positions of these values
        slots = (rng.random(len(rest)) * (positions + 1)).astype(np.int64)
        take = slots < size
        kept = kept.copy()
        kept[slots[take]] = rest[take]
    return kept


@dataclass(kw_only=True)
class DriftReport:
    """How a dataset changed from its baseline.

    :param rows: ``{"baseline": n, "current": n, "ratio": r}``
    :param added: columns only in the current version
    :param removed: columns only in the baseline
    :param retyped: ``{column: [baseline dtype, current dtype]}``
    :param columns: ``{column: {"psi": ..., "ks": ..., "drifted": bool}}``
    :param failures: each reason the dataset counts as drifted, in words
    """

    rows: dict[str, Any]
    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: dict[str, list[str]] = field(default_factory=dict)
    columns: dict[str, dict[str, Any]] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def drifted(self) -> bool:
        """Whether anything is beyond its threshold."""
        return bool(self.failures)

    def to_json(self) -> dict[str, Any]:
        """The report as small JSON."""
        return {
            "drifted": self.drifted,
            "rows": self.rows,
            "added": self.added,
            "removed": self.removed,
            "retyped": self.retyped,
            "columns": self.columns,
            "failures": self.failures,
        }


def compare_profiles(baseline: DatasetProfile, current: DatasetProfile, thresholds: DriftThresholds) -> DriftReport:
    """Compare two versions of a dataset.

    :param baseline: the previous version
    :param current: the version being checked
    :param thresholds: when a change counts as drift
    """
    ratio = current.rows / baseline.rows if baseline.rows else (1.0 if not current.rows else float("inf"))
    report = DriftReport(
        rows={
            "baseline": baseline.rows,
            "current": current.rows,
            "ratio": round(ratio, 6) if math.isfinite(ratio) else None,
        }
    )
    if not thresholds.min_row_ratio <= ratio <= thresholds.max_row_ratio:
        report.failures.append(
            f"row count {baseline.rows} -> {current.rows} (ratio {ratio:.3g}) outside "
            f"[{thresholds.min_row_ratio}, {thresholds.max_row_ratio}]"
        )
    report.added = sorted(set(current.dtypes) - set(baseline.dtypes))
    report.removed = sorted(set(baseline.dtypes) - set(current.dtypes))
    for name in report.added:
        report.failures.append(f"column {name!r} added")
    for name in report.removed:
        report.failures.append(f"column {name!r} removed")
    for name in sorted(set(baseline.dtypes) & set(current.dtypes)):
        old, new = baseline.dtypes[name], current.dtypes[name]
        if old != new:
            report.retyped[name] = [old, new]
            report.failures.append(f"column {name!r} retyped {old} -> {new}")
            continue
        stats = _column_shift(name, baseline, current)
        if stats is None:
            continue
        drifted = []
        if stats.get("psi") is not None and stats["psi"] > thresholds.psi:
            drifted.append(f"PSI {stats['psi']:.3f} > {thresholds.psi}")
        if stats.get("ks") is not None and stats["ks"] > thresholds.ks:
            drifted.append(f"KS {stats['ks']:.3f} > {thresholds.ks}")
        stats["drifted"] = bool(drifted)
        report.columns[name] = stats
        if drifted:
            report.failures.append(f"column {name!r} shifted: {', '.join(drifted)}")
    return report


def _column_shift(name: str, baseline: DatasetProfile, current: DatasetProfile) -> dict[str, Any] | None:
    if name in baseline.samples and name in current.samples:
        old, new = baseline.samples[name], current.samples[name]
        if not len(old) or not len(new):
            return {"psi": None, "ks": None, "note": "no values to compare"}
        return {"psi": round(_numeric_psi(old, new), 6), "ks": round(_ks(old, new), 6)}
    old_counts, new_counts = baseline.categories.get(name), current.categories.get(name)
    if old_counts is None or new_counts is None:
        return {"psi": None, "note": f"more than {_MAX_CATEGORIES} categories: not compared"}
    return {"psi": round(_category_psi(old_counts, new_counts), 6)}


def _numeric_psi(old: np.ndarray, new: np.ndarray, bins: int = 10) -> float:
    import numpy as np

    edges = np.unique(np.quantile(old, np.linspace(0, 1, bins + 1)[1:-1]))
    old_share = np.bincount(np.searchsorted(edges, old, side="right"), minlength=len(edges) + 1) / len(old)
    new_share = np.bincount(np.searchsorted(edges, new, side="right"), minlength=len(edges) + 1) / len(new)
    return _psi(old_share, new_share)


def _category_psi(old: dict[str, int], new: dict[str, int]) -> float:
    import numpy as np

    keys = sorted(set(old) | set(new))
    old_share = np.array([old.get(k, 0) for k in keys], dtype=np.float64)
    new_share = np.array([new.get(k, 0) for k in keys], dtype=np.float64)
    return _psi(old_share / max(old_share.sum(), 1), new_share / max(new_share.sum(), 1))


def _psi(old_share: np.ndarray, new_share: np.ndarray) -> float:
    import numpy as np

    old_share = np.clip(old_share, _EPS, None)
    new_share = np.clip(new_share, _EPS, None)
    return float(np.sum((new_share - old_share) * np.log(new_share / old_share)))


def _ks(old: np.ndarray, new: np.ndarray) -> float:
    import numpy as np

    old, new = np.sort(old), np.sort(new)
    points = np.concatenate([old, new])
    gap = np.searchsorted(old, points, side="right") / len(old) - np.searchsorted(new, points, side="right") / len(new)
    return float(np.max(np.abs(gap)))
