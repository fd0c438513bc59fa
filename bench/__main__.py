"""``python -m bench [--quick] [NAME[:PART] ...]``: run the benchmarks, print our time, the
baseline's and the ratio, and judge every row against its goal.

Full mode exits 1 when any row misses its goal (the missed rows are printed again at the end, one
line each: name, ratio or delta, goal) or when any result is wrong. Quick mode (one or a few
samples: too few to judge a ratio) checks only that each benchmark's path and baseline give the
right result, and exits 1 when one does not.

``--goal-scale X`` (or ``MLCI_BENCH_GOAL_SCALE=X``) multiplies every goal by ``X``;
``--samples N`` (or ``MLCI_BENCH_SAMPLES=N``) sets every benchmark's samples per arm. Both exist
for ``tests/bench/test_goals.py`` and for trying a goal; ``make bench`` uses neither.
``NAME:PART`` runs one part of a benchmark that has parts (``bench_parse:import``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from collections.abc import Iterable
from pathlib import Path

from bench._common import GOAL_SCALE_ENV, HEADER, SAMPLES_ENV, Comparison, Verdict, WrongResultError, goal_scale

BENCHMARKS = (
    "bench.bench_parse",
    "bench.bench_repro",
    "bench.bench_checkout",
    "bench.bench_operators",
    "bench.bench_validation",
    "bench.bench_registry",
    "bench.bench_reports",
    "bench.bench_gpu",
    "bench.bench_sweep",
    "bench.bench_search",
    "bench.bench_pipeline",
)


def _comparisons(module_name: str, parts: list[str], quick: bool) -> Iterable[Comparison]:
    """The rows of one benchmark module: all of them, or only the named parts (its ``PARTS``)."""
    module = importlib.import_module(module_name)
    if not parts:
        yield from module.run(quick)
        return
    known = getattr(module, "PARTS", {})
    for part in parts:
        if part not in known:
            raise SystemExit(f"{module_name} has no part {part!r} (parts: {', '.join(known) or 'none'})")
        yield from known[part](quick)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="one or a few samples each, so the benchmarks cannot rot")
    parser.add_argument("--goal-scale", type=float, help=f"multiply every goal by this (env {GOAL_SCALE_ENV})")
    parser.add_argument("--samples", type=int, help=f"samples per arm in every benchmark (env {SAMPLES_ENV})")
    parser.add_argument("names", nargs="*", help="run only these (e.g. bench_repro, bench_parse:import)")
    args = parser.parse_args(argv)
    if args.goal_scale is not None:
        os.environ[GOAL_SCALE_ENV] = str(args.goal_scale)
    if args.samples is not None:
        os.environ[SAMPLES_ENV] = str(args.samples)
    scale = goal_scale()
    selected: dict[str, list[str]] = {}
    for name in args.names:
        module, _, part = name.partition(":")
        if f"bench.{module}" not in BENCHMARKS:
            parser.error(f"no benchmark {module!r} (known: {', '.join(b.split('.')[-1] for b in BENCHMARKS)})")
        selected.setdefault(module, [])
        if part:
            selected[module].append(part)
    home = Path(tempfile.mkdtemp(prefix="mlci-bench-airflow-"))
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    missed: list[Verdict] = []
    wrong: list[str] = []
    print(HEADER)
    try:
        for name in BENCHMARKS:
            short = name.split(".")[-1]
            if selected and short not in selected:
                continue
            try:
                for comparison in _comparisons(name, selected.get(short, []), args.quick):
                    print(comparison.row(scale), flush=True)
                    verdict = comparison.judge(scale)
                    if not args.quick and verdict is not None and not verdict.met:
                        missed.append(verdict)
            except AssertionError as error:  # WrongResultError, or a plain assert in a benchmark
                message = str(error) if isinstance(error, WrongResultError) else f"{short}: {error!r}"
                print(f"WRONG RESULT {message}", flush=True)
                wrong.append(message)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the Airflow home of this run (or an unused folder)
    if args.quick:
        print("(quick mode: too few samples to judge ratios; results checked; run `make bench` for medians)")
    if scale != 1.0:
        print(f"(every goal multiplied by {scale:g})")
    for line in wrong:
        print(f"WRONG RESULT {line}")
    for verdict in missed:
        print(verdict.line())
    if missed or wrong:
        print(f"{len(missed)} goal(s) missed, {len(wrong)} wrong result(s)")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
