"""What every benchmark shares: interleaved timing, medians, the result table."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, kw_only=True)
class Comparison:
    """One benchmark's outcome: our path against its baseline, same machine, same run.

    :param name: what was measured
    :param ours: our path's timings in seconds
    :param baseline: the baseline's timings in seconds
    :param baseline_name: what the baseline is
    :param goal: the ratio we aim at, as text (for example ``<= 1.10``)
    :param delta_goal_ms: a goal on the difference instead (ours - baseline, in ms)
    """

    name: str
    ours: list[float]
    baseline: list[float]
    baseline_name: str
    goal: str = ""
    delta_goal_ms: float | None = None

    @property
    def delta_ms(self) -> float:
        """Median of ours minus median of the baseline, in milliseconds."""
        return (statistics.median(self.ours) - statistics.median(self.baseline)) * 1000

    @property
    def ratio(self) -> float:
        """Median of ours over median of the baseline."""
        return statistics.median(self.ours) / statistics.median(self.baseline)

    def row(self) -> str:
        ours, base = statistics.median(self.ours), statistics.median(self.baseline)
        goal = (
            f"delta {self.delta_ms:+.1f} ms, goal <= +{self.delta_goal_ms:.0f} ms"
            if self.delta_goal_ms
            else (f"goal {self.goal}")
        )
        return (
            f"{self.name:<58} {ours * 1000:>10.1f} ms {base * 1000:>10.1f} ms {self.ratio:>7.2f}x"
            f"  {goal:<12} n={len(self.ours)}  baseline: {self.baseline_name}"
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


def timed(func: Callable[[], object]) -> float:
    """Wall-clock seconds of one call."""
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


HEADER = f"{'benchmark':<58} {'ours':>13} {'baseline':>13} {'ratio':>8}"
