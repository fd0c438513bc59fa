"""Data validation: our path against hand-written vectorised pandas checks of the same rules.

- 1,000,000 rows x 10 columns of CSV; rules: dtype, not-null, range, set membership, uniqueness.
  Ours: the validation the operator runs (pyarrow reading, pandera, failure cases found in full).
  Baseline: ``pandas.read_csv`` and the same rules written by hand. Goal <= 1.5x. For reference,
  pandera alone on the frame pandas read, against the same baseline.
- The same file with one column failing on every row, against the all-pass file: goal <= 3x,
  with the summary (what goes to XCom) small.
  Baseline: the same validation of the all-pass file (fair: same rules, same reader, the
  failure cases are the only difference).
- A CSV larger than the memory allowed, validated in a child process: its peak RSS must stay
  within the budget (full mode: a 3 GiB file, 1 GiB budget; quick mode: 640 MiB, 512 MiB budget;
  the file is larger than the budget in every mode, or the row would not show bounded memory).

Every mode checks the results: our validation passes the good file and fails the bad one (every
row of the failing column counted), the hand-written rules find no failure in the good file, and
the large file validates with every row checked in more than one chunk.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench._common import Comparison, check, interleave, samples, timed

ROWS = 1_000_000
CATEGORIES = ["card", "cash", "transfer", "wallet"]


def run(quick: bool) -> list[Comparison]:
    import numpy as np  # noqa: F401  (fail early if the stack is missing)

    rows = 100_000 if quick else ROWS
    repeats = samples(quick, full=7)
    with tempfile.TemporaryDirectory(prefix="mlci-bench-validation-") as tmp:
        good, bad = Path(tmp) / "good.csv", Path(tmp) / "bad.csv"
        _write(good, rows, seed=1, failing=False)
        _write(bad, rows, seed=1, failing=True)
        schema = _schema()
        results = []
        ours, base = interleave(lambda: timed(lambda: _ours(good, schema)), lambda: timed(lambda: _hand(good)), repeats)
        results.append(
            Comparison(
                name=f"validate CSV [{rows:,} x 10] (5 rule kinds)",
                ours=ours,
                baseline=base,
                baseline_name="pandas.read_csv + the same rules by hand",
                max_ratio=1.5,
            )
        )
        pandera, base = interleave(
            lambda: timed(lambda: _pandera_alone(good, schema)), lambda: timed(lambda: _hand(good)), repeats
        )
        results.append(
            Comparison(
                name=f"  for reference: pandera alone [{rows:,} x 10]",
                ours=pandera,
                baseline=base,
                baseline_name="pandas.read_csv + the same rules by hand",
                no_goal="reference: how much of ours is pandera",
            )
        )
        failing, passing = interleave(
            lambda: timed(lambda: _ours(bad, schema, expect_valid=False)),
            lambda: timed(lambda: _ours(good, schema)),
            repeats,
        )
        summary = _ours(bad, schema, expect_valid=False)
        failed = json.dumps(summary)
        check(str(rows) in failed and "risk" in failed, "bench_validation", f"the failing summary: {failed[:500]}")
        size = len(failed)
        results.append(
            Comparison(
                name=f"one column failing on all {rows:,} rows (XCom {size / 1024:.0f} KiB)",
                ours=failing,
                baseline=passing,
                baseline_name="the same validation, all rows passing",
                max_ratio=3.0,
            )
        )
        results.append(_memory(Path(tmp), quick))
    return results


def _write(path: Path, rows: int, *, seed: int, failing: bool) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pacsv

    rng = np.random.default_rng(seed)
    columns = {
        "id": np.arange(rows, dtype=np.int64),
        "amount": rng.gamma(2.0, 30.0, rows).round(2),
        "hour": rng.integers(0, 24, rows),
        "risk": rng.random(rows).round(4),
        "distance": rng.exponential(20.0, rows).round(2),
        "age": rng.integers(18, 90, rows),
        "score": rng.normal(0.0, 1.0, rows).clip(-5, 5).round(4),
        "channel": rng.choice(CATEGORIES, rows),
        "country": rng.choice(["DE", "FR", "NL", "US"], rows),
        "fraud": rng.integers(0, 2, rows),
    }
    if failing:
        columns["risk"] = columns["risk"] + 2.0  # out of [0, 1] on every row
    pacsv.write_csv(pa.table(columns), path)


def _schema():
    import pandera.pandas as pa

    return pa.DataFrameSchema(
        {
            "id": pa.Column("int64", unique=True),
            "amount": pa.Column("float64", pa.Check.ge(0)),
            "hour": pa.Column("int64", pa.Check.in_range(0, 23)),
            "risk": pa.Column("float64", pa.Check.in_range(0, 1)),
            "distance": pa.Column("float64", pa.Check.ge(0)),
            "age": pa.Column("int64", pa.Check.in_range(18, 120)),
            "score": pa.Column("float64", pa.Check.in_range(-5, 5)),
            "channel": pa.Column("str", pa.Check.isin(CATEGORIES)),
            "country": pa.Column("str", pa.Check.isin(["DE", "FR", "NL", "US"])),
            "fraud": pa.Column("int64", pa.Check.isin([0, 1])),
        },
        strict=True,
    )


def _ours(path: Path, schema, *, expect_valid: bool = True) -> dict:
    from airflow_provider_mlci.core.data.tabular import TableFormat, TableReader
    from airflow_provider_mlci.core.data.validation import schema_column_types, validate_table

    reader = TableReader(path=str(path), format=TableFormat.CSV, column_types=schema_column_types(schema))
    report = validate_table(reader, schema, failure_sink=lambda cases: None)
    check(report.valid is expect_valid, "bench_validation", f"{path.name}: {report.describe()}")
    return report.to_json()


def _pandera_alone(path: Path, schema) -> None:
    import pandas as pd

    schema.validate(pd.read_csv(path), lazy=True)


def _hand(path: Path) -> int:
    import pandas as pd

    frame = pd.read_csv(path)
    expected = {"id": "int64", "amount": "float64", "hour": "int64", "risk": "float64", "distance": "float64"}
    expected |= {"age": "int64", "score": "float64", "fraud": "int64"}
    failures = sum(str(frame[c].dtype) != t for c, t in expected.items())
    failures += int(set(frame.columns) != {*expected, "channel", "country"})
    failures += int(frame.isna().sum().sum())
    failures += int((frame["amount"] < 0).sum() + (frame["distance"] < 0).sum())
    failures += int((~frame["hour"].between(0, 23)).sum() + (~frame["risk"].between(0, 1)).sum())
    failures += int((~frame["age"].between(18, 120)).sum() + (~frame["score"].between(-5, 5)).sum())
    failures += int((~frame["channel"].isin(CATEGORIES)).sum())
    failures += int((~frame["country"].isin(["DE", "FR", "NL", "US"])).sum())
    failures += int((~frame["fraud"].isin([0, 1])).sum())
    failures += int(frame["id"].duplicated(keep=False).sum())
    check(failures == 0, "bench_validation", f"the hand-written rules found {failures} failures in {path.name}")
    return failures


_MEMORY_CHILD = textwrap.dedent(
    """
    import json, sys
    sys.path.insert(0, {root!r})
    from bench.bench_validation import _schema
    from airflow_provider_mlci.core.data.tabular import TableFormat, TableReader
    from airflow_provider_mlci.core.data.validation import schema_column_types, validate_table

    schema = _schema()
    reader = TableReader(path={path!r}, format=TableFormat.CSV, chunk_bytes={chunk},
                         column_types=schema_column_types(schema))
    report = validate_table(reader, schema, failure_sink=lambda cases: None)
    # VmHWM: this process's own high-water mark (ru_maxrss keeps the parent's across fork + exec).
    peak = next(int(line.split()[1]) * 1024 for line in open("/proc/self/status") if line.startswith("VmHWM:"))
    print(json.dumps({{"valid": report.valid, "rows": report.rows_checked, "chunks": report.chunks, "peak": peak}}))
    """
)


def _memory(tmp: Path, quick: bool) -> Comparison:
    """Validate a CSV larger than the budget in a child process; compare its peak RSS with the budget."""
    budget = (512 if quick else 1024) * 2**20
    target = budget * 5 // 4 if quick else 3 * budget  # full: 3 GiB for 1 GiB; quick: 640 MiB for 512 MiB
    path = tmp / "large.csv"
    rows = _write_large(path, target)
    size = path.stat().st_size
    check(size > budget, "bench_validation", f"the memory file ({size} bytes) is not larger than the budget")
    from airflow_provider_mlci.core.data.tabular import chunk_bytes_for_budget

    chunk = chunk_bytes_for_budget(budget)  # what DataValidationOperator(memory_budget_mb=...) uses
    code = _MEMORY_CHILD.format(root=str(Path(__file__).resolve().parent.parent), path=str(path), chunk=chunk)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"the memory benchmark's child failed: {proc.stderr[-2000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    check(result["valid"] and result["rows"] == rows, "bench_validation", f"the large file ({rows} rows): {result}")
    check(result["chunks"] > 1, "bench_validation", f"the large file was read in one chunk: {result}")
    os.remove(path)
    return Comparison(
        name=f"peak RSS validating a {size / 2**30:.1f} GiB CSV ({result['rows']:,} rows, {result['chunks']} chunks)",
        ours=[float(result["peak"])],
        baseline=[float(budget)],
        baseline_name="the memory budget",
        max_ratio=1.0,
        unit="bytes",
    )


def _write_large(path: Path, target_bytes: int) -> int:
    """Write blocks of rows, each with ids of its own (so every row is distinct), until the file
    reaches ``target_bytes``; return the rows written."""
    import pyarrow.csv as pacsv

    block = Path(str(path) + ".block")
    rows, written, start = 500_000, 0, 0
    _write(block, rows, seed=0, failing=False)
    table = pacsv.read_csv(block)
    block.unlink()
    with pacsv.CSVWriter(path, table.schema) as out:
        while written < target_bytes:
            out.write_table(table.set_column(0, "id", _ids(start, rows)))
            start += rows
            written = path.stat().st_size
    return start


def _ids(start: int, rows: int):
    import numpy as np
    import pyarrow as pa

    return pa.array(np.arange(start, start + rows, dtype=np.int64))
