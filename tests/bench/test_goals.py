"""``python -m bench`` judges every row against its numeric goal and fails a full run that misses one.

The subprocess tests run one cheap part of a real benchmark (``bench_parse:import``: three fresh
interpreters with one sample) with every goal multiplied by a documented scale (``--goal-scale``):
impossibly low, a full run must exit 1 and print the missed row as one whole line; a quick run
judges nothing and exits 0.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench._common import Comparison, Verdict, WrongResultError, check

ROOT = Path(__file__).resolve().parents[2]


def _bench(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {key: value for key, value in os.environ.items() if not key.startswith("MLCI_BENCH_")}
    return subprocess.run(
        [sys.executable, "-m", "bench", *args],
        cwd=ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def _ratio_row(ours: float, baseline: float, *, max_ratio: float) -> Comparison:
    return Comparison(name="a row", ours=[ours], baseline=[baseline], baseline_name="b", max_ratio=max_ratio)


# --------------------------------------------------------------------------- the whole run


def test_a_full_run_that_misses_a_goal_exits_non_zero_and_prints_the_missed_row() -> None:
    # The scale and the samples from the environment (the flags set the same variables).
    proc = _bench("bench_parse:import", MLCI_BENCH_GOAL_SCALE="0.001", MLCI_BENCH_SAMPLES="1")

    assert proc.returncode == 1, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    missed = [line for line in lines if line.startswith("MISSED ")]
    assert len(missed) == 1, proc.stdout
    ratio = missed[0].removeprefix("MISSED import operators.dvc: ratio ").removesuffix("x, goal <= 0.00x")
    assert missed[0] == f"MISSED import operators.dvc: ratio {ratio}x, goal <= 0.00x", missed
    assert float(ratio) > 0
    assert "(every goal multiplied by 0.001)" in lines
    assert lines[-1] == "1 goal(s) missed, 0 wrong result(s)"


def test_quick_mode_does_not_judge_ratios_and_exits_zero() -> None:
    proc = _bench("--quick", "--samples", "1", "--goal-scale", "0.001", "bench_parse:import")

    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert not [line for line in lines if line.startswith(("MISSED", "WRONG"))], proc.stdout
    assert [line for line in lines if line.startswith("import operators.dvc ")], proc.stdout  # the row is printed
    assert lines[-1] == "(every goal multiplied by 0.001)"


def test_an_unknown_part_is_refused() -> None:
    proc = _bench("--quick", "bench_parse:nothing")

    assert proc.returncode != 0
    assert (
        proc.stderr.strip().splitlines()[-1] == "bench.bench_parse has no part 'nothing' (parts: dag, import, report)"
    )


# --------------------------------------------------------------------------- judging, no timing


def test_a_ratio_at_its_goal_meets_it_and_above_misses_it() -> None:
    assert _ratio_row(1.0, 2.0, max_ratio=0.5).judge() == Verdict(
        comparison=_ratio_row(1.0, 2.0, max_ratio=0.5), met=True, measured=0.5, limit=0.5
    )
    verdict = _ratio_row(1.1, 2.0, max_ratio=0.5).judge()
    assert verdict is not None
    assert not verdict.met
    assert verdict.line() == "MISSED a row: ratio 0.55x, goal <= 0.50x"


def test_the_median_is_judged_not_the_best_sample() -> None:
    row = Comparison(name="m", ours=[1.0, 5.0, 6.0], baseline=[2.0, 2.0, 2.0], baseline_name="b", max_ratio=2.0)

    verdict = row.judge()

    assert verdict is not None
    assert (verdict.met, verdict.measured) == (False, 2.5)


def test_a_delta_goal_is_judged_in_milliseconds() -> None:
    row = Comparison(name="d", ours=[0.130], baseline=[0.100], baseline_name="b", delta_goal_ms=20)

    verdict = row.judge()

    assert verdict is not None
    assert not verdict.met
    assert verdict.line() == "MISSED d: delta +30.0 ms, goal <= +20.0 ms"
    assert row.judge(scale=2.0).met  # type: ignore[union-attr]


def test_the_scale_multiplies_the_goal() -> None:
    row = _ratio_row(1.0, 1.0, max_ratio=1.0)

    assert row.judge(scale=1.0).met  # type: ignore[union-attr]
    assert not row.judge(scale=0.5).met  # type: ignore[union-attr]
    assert row.goal_text(scale=0.5) == "goal <= 0.50"


def test_a_row_without_a_goal_is_never_judged_and_says_so() -> None:
    row = Comparison(name="r", ours=[9.0], baseline=[1.0], baseline_name="b", no_goal="for reference")

    assert row.judge() is None
    assert row.goal_text() == "no goal (for reference)"


@pytest.mark.parametrize(
    "goals",
    [{}, {"max_ratio": 1.0, "delta_goal_ms": 5.0}, {"max_ratio": 1.0, "no_goal": "x"}],
    ids=["none", "ratio and delta", "ratio and no goal"],
)
def test_a_row_has_exactly_one_kind_of_goal(goals: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"^n: give exactly one of max_ratio, delta_goal_ms, no_goal$"):
        Comparison(name="n", ours=[1.0], baseline=[1.0], baseline_name="b", **goals)  # type: ignore[arg-type]


def test_a_memory_row_is_judged_like_any_ratio() -> None:
    row = Comparison(
        name="peak", ours=[600 * 2**20], baseline=[512 * 2**20], baseline_name="budget", max_ratio=1.0, unit="bytes"
    )

    assert not row.judge().met  # type: ignore[union-attr]
    assert " 600 MiB " in row.row()


def test_a_wrong_result_names_the_benchmark() -> None:
    check(True, "bench_x", "fine")
    with pytest.raises(WrongResultError, match=r"^bench_x: returned 3, not 4$"):
        check(3 == 4, "bench_x", "returned 3, not 4")
