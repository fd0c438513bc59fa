"""What every benchmark shares: interleaved timing, medians, goals judged in one place, the table.

A row's goal is numeric: ``max_ratio`` (median of ours over median of the baseline) or
``delta_goal_ms`` (median of ours minus median of the baseline, in ms); a row with neither says
why in ``no_goal``. :meth:`Comparison.judge` is the only place a goal is checked. A goal scale
(``python -m bench --goal-scale X`` or ``MLCI_BENCH_GOAL_SCALE=X``) multiplies every goal: the
test of the exit code sets it impossibly low (and generously high).

Correctness is checked in every mode with :func:`check`: a benchmark whose path or baseline gives
a wrong result raises :class:`WrongResultError` (an ``AssertionError`` naming the benchmark).
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

GOAL_SCALE_ENV = "MLCI_BENCH_GOAL_SCALE"
SAMPLES_ENV = "MLCI_BENCH_SAMPLES"


class WrongResultError(AssertionError):
    """A benchmark's path or baseline did not give the result it must (the timing means nothing)."""


def check(condition: object, benchmark: str, message: str) -> None:
    """Raise :class:`WrongResultError` naming ``benchmark`` unless ``condition`` holds.

    :param condition: what must be true of the result
    :param benchmark: the benchmark (module) whose result is checked, e.g. ``bench_parse``
    :param message: what was wrong, with the value found
    """
    if not condition:
        raise WrongResultError(f"{benchmark}: {message}")


def samples(quick: bool, *, full: int, quick_samples: int = 1) -> int:
    """How many samples per arm: ``full`` in full mode, ``quick_samples`` in quick mode, unless
    ``MLCI_BENCH_SAMPLES`` (``python -m bench --samples N``) overrides both (for tests: a full-mode
    run judged on fewer samples, so it is fast).

    :param quick: quick mode
    :param full: the full-mode default
    :param quick_samples: the quick-mode default
    """
    override = os.environ.get(SAMPLES_ENV)
    if override:
        return max(1, int(override))
    return quick_samples if quick else full


def goal_scale() -> float:
    """The factor every goal is multiplied by (``MLCI_BENCH_GOAL_SCALE``, default 1)."""
    value = float(os.environ.get(GOAL_SCALE_ENV) or 1.0)
    if value <= 0:
        raise ValueError(f"{GOAL_SCALE_ENV} must be > 0, not {value}")
    return value


@dataclass(frozen=True, kw_only=True)
class Verdict:
    """A row judged against its goal.

    :param comparison: the row
    :param met: whether it met its goal
    :param measured: the ratio (or the delta in ms) that was judged
    :param limit: the goal it was judged against, scale applied
    """

    comparison: Comparison
    met: bool
    measured: float
    limit: float

    def line(self) -> str:
        """One whole line naming the row, what it measured and its goal."""
        if self.comparison.delta_goal_ms is not None:
            what = f"delta {self.measured:+.1f} ms, goal <= {self.limit:+.1f} ms"
        else:
            what = f"ratio {self.measured:.2f}x, goal <= {self.limit:.2f}x"
        return f"MISSED {self.comparison.name.strip()}: {what}"


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One benchmark's outcome: our path against its baseline, same machine, same run.

    Exactly one of ``max_ratio``, ``delta_goal_ms`` and ``no_goal`` is given.

    :param name: what was measured
    :param ours: our path's samples (seconds, or bytes for ``unit="bytes"``)
    :param baseline: the baseline's samples, same unit
    :param baseline_name: what the baseline is
    :param max_ratio: the goal: median of ours / median of the baseline at most this
    :param delta_goal_ms: the goal on the difference instead: ours - baseline at most this many ms
    :param no_goal: why this row has no goal (printed; the row is never judged)
    :param unit: ``"s"`` (printed in ms), ``"bytes"`` (printed in MiB) or ``"trial_s"`` (simulated
        trial-seconds, printed as they are)
    """

    name: str
    ours: list[float]
    baseline: list[float]
    baseline_name: str
    max_ratio: float | None = None
    delta_goal_ms: float | None = None
    no_goal: str | None = None
    unit: Literal["s", "bytes", "trial_s"] = "s"

    def __post_init__(self) -> None:
        given = [g for g in (self.max_ratio, self.delta_goal_ms, self.no_goal) if g is not None]
        if len(given) != 1:
            raise ValueError(f"{self.name}: give exactly one of max_ratio, delta_goal_ms, no_goal")
        if not self.ours or not self.baseline:
            raise ValueError(f"{self.name}: no samples")

    @property
    def delta_ms(self) -> float:
        """Median of ours minus median of the baseline, in milliseconds."""
        return (statistics.median(self.ours) - statistics.median(self.baseline)) * 1000

    @property
    def ratio(self) -> float:
        """Median of ours over median of the baseline."""
        return statistics.median(self.ours) / statistics.median(self.baseline)

    def judge(self, scale: float = 1.0) -> Verdict | None:
        """This row against its goal, every goal multiplied by ``scale``; ``None`` without a goal.

        :param scale: the goal scale (see :func:`goal_scale`)
        """
        if self.max_ratio is not None:
            limit = self.max_ratio * scale
            return Verdict(comparison=self, met=self.ratio <= limit, measured=self.ratio, limit=limit)
        if self.delta_goal_ms is not None:
            # A delta goal of +20 ms scaled by 0.001 is +0.02 ms: still "ours no slower than that".
            limit = self.delta_goal_ms * scale
            return Verdict(comparison=self, met=self.delta_ms <= limit, measured=self.delta_ms, limit=limit)
        return None

    def goal_text(self, scale: float = 1.0) -> str:
        """The goal as printed in the table."""
        if self.max_ratio is not None:
            return f"goal <= {self.max_ratio * scale:.2f}"
        if self.delta_goal_ms is not None:
            return f"delta {self.delta_ms:+.1f} ms, goal <= {self.delta_goal_ms * scale:+.0f} ms"
        return f"no goal ({self.no_goal})"

    def row(self, scale: float = 1.0) -> str:
        """The table line of this row."""
        ours, base = statistics.median(self.ours), statistics.median(self.baseline)
        if self.unit == "bytes":
            values = f"{ours / 2**20:>9.0f} MiB {base / 2**20:>9.0f} MiB"
        elif self.unit == "trial_s":
            values = f"{ours:>8.0f} trial-s {base:>8.0f} trial-s"
        else:
            values = f"{ours * 1000:>10.1f} ms {base * 1000:>10.1f} ms"
        return (
            f"{self.name:<58} {values} {self.ratio:>7.2f}x"
            f"  {self.goal_text(scale):<12} n={len(self.ours)}  baseline: {self.baseline_name}"
        )


def interleave(
    ours: Callable[[], float], baseline: Callable[[], float], repeats: int
) -> tuple[list[float], list[float]]:
    """Run both arms alternately ``repeats`` times each; each callable returns its own timing."""
    a, b = [], []
    for index in range(repeats):
        # Alternate which arm goes first, so neither always meets a warm or a cold machine.
        if index % 2 == 0:
            a.append(ours())
            b.append(baseline())
        else:
            b.append(baseline())
            a.append(ours())
    return a, b


def rotate(arms: list[Callable[[], float]], repeats: int) -> list[list[float]]:
    """Like :func:`interleave` for any number of arms: each round starts with the next arm.

    :param arms: callables, each returning its own timing
    :param repeats: rounds (samples per arm)
    :return: each arm's timings, in the order of ``arms``
    """
    found: list[list[float]] = [[] for _ in arms]
    for index in range(repeats):
        for offset in range(len(arms)):
            arm = (index + offset) % len(arms)
            found[arm].append(arms[arm]())
    return found


def timed(func: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


HEADER = f"{'benchmark':<58} {'ours':>13} {'baseline':>13} {'ratio':>8}"
