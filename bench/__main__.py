"""``python -m bench [--quick]``: run every benchmark and print our time, the baseline's, and the ratio."""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import sys
import tempfile
from pathlib import Path

from bench._common import HEADER

BENCHMARKS = (
    "bench.bench_parse",
    "bench.bench_repro",
    "bench.bench_checkout",
    "bench.bench_operators",
    "bench.bench_validation",
    "bench.bench_registry",
    "bench.bench_gpu",
    "bench.bench_sweep",
    "bench.bench_pipeline",
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="one or a few samples each, so the benchmarks cannot rot")
    parser.add_argument("names", nargs="*", help="run only these (e.g. bench_repro)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="mlci-bench-airflow-"))
    os.environ.setdefault("AIRFLOW_HOME", str(home))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    print(HEADER)
    try:
        for name in BENCHMARKS:
            if args.names and name.split(".")[-1] not in args.names:
                continue
            for comparison in importlib.import_module(name).run(args.quick):
                print(comparison.row(), flush=True)
    finally:
        shutil.rmtree(home, ignore_errors=True)  # the Airflow home of this run (or an unused folder)
    if args.quick:
        print("(quick mode: too few samples to judge; run `make bench` for medians)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
