"""The reports index over a store of 2,000 reports: one page of the plugin against listing the store.

A local report store holds 40 Dags x 50 runs x one task report each (2,000 reports, written with
``ReportStore.write``); every other run's report is its run record (``refine.record`` holding
``run-outcome.json``), half of them promoted, half kept, so the index reads outcomes too. Ours is
one request for the index page (``GET /reports``: 20 Dags, each with its 10 newest runs and their
outcomes) end to end through the plugin's real app (``starlette``'s ``TestClient``, a login that
may read every Dag). The baseline is what a naive index would do first: list the whole store
(``fs.find`` of its root). Each arm runs once untimed (templates compiled, as on a serving
api-server), then the arms take turns. Goal: the page in at most 500 ms (the row against that
budget, <= 1x); the ratio against listing the store is shown beside it, without a goal.

Every sample checks its result: the page lists the first page's 20 Dags (and not the 21st), each
with its 10 newest runs, and shows their 100 outcomes; the listing found 2,000 ``outcome.json``.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench._common import Comparison, check, interleave, samples, timed
from bench.bench_operators import _Quiet

DAGS = 40
RUNS = 50
#: The absolute goal: one index page in at most this (seconds).
BUDGET_S = 0.5
_ENV = ("AIRFLOW__MLCI__REPORTS_DIR", "AIRFLOW__MLCI__REPORTS_CONN_ID")


class _Everyone:
    """A login that may read every Dag."""

    def allows(self, dag_id: str) -> bool:
        return True


def _night(n: int) -> datetime:
    return datetime(2026, 6, 1, 2, tzinfo=UTC) + timedelta(days=n)


def _fill(root: Path) -> None:
    """Write :data:`DAGS` x :data:`RUNS` reports, one per run; every other run's is its run record."""
    from airflow_provider_mlci.core.model.history import dumps, run_record
    from airflow_provider_mlci.report_store import ReportKey, ReportStore, safe_run

    store = ReportStore.open(str(root))
    gate = [{"metric": "logloss", "direction": "lower", "candidate": 0.47, "champion": 0.48, "delta": -0.01}]
    for d in range(DAGS):
        dag_id = f"nightly_{d:02d}"
        for n in range(RUNS):
            night = _night(n)
            run_id = f"scheduled__{night.isoformat()}"
            if n % 2:
                key = ReportKey(dag_id=dag_id, run_id=run_id, task_id="refine.report")
                store.write(key, {"report.md": b"# R\n"}, {})
            else:
                promoted = n % 4 == 0
                outcome = {"promoted": promoted, "version": f"v0.{n}.0", "sha": f"{n:040x}", "metrics": gate}
                if not promoted:
                    outcome["reasons"] = ["worse"]
                record = run_record(
                    model=f"model-{d:02d}", stage="prod", dag_id=dag_id, run_id=run_id, night=night.isoformat(),
                    outcome=outcome, report="refine.record",
                )  # fmt: skip
                key = ReportKey(dag_id=dag_id, run_id=run_id, task_id="refine.record")
                store.write(key, {"run-outcome.json": dumps(record), "report.md": b"# Outcome\n"}, record)
            # Runs ordered by when their folder was written: make it the night's, whatever the clock.
            stamp = night.timestamp()
            os.utime(root / dag_id / safe_run(run_id), (stamp, stamp))


def _check_page(response: Any) -> None:
    check(response.status_code == 200, "bench_reports", f"GET /reports answered {response.status_code}")
    text = response.text
    check(f"Dags {DAGS}, page 1 of 2" in text, "bench_reports", "the page does not say 'Dags 40, page 1 of 2'")
    shown = re.findall(r"<h2><a href='/reports/([^/']+)/'>", text)
    expected = [f"nightly_{d:02d}" for d in range(20)]
    check(shown == expected, "bench_reports", f"the page lists the Dags {shown}, not {expected}")
    runs = re.findall(r"<tr><td><a href='/reports/[^/']+/([^/']+)/'>", text)
    newest = [f"scheduled__{_night(n).isoformat()}".replace(":", "_") for n in range(RUNS - 1, RUNS - 11, -1)]
    check(runs == newest * 20, "bench_reports", f"the page lists {len(runs)} runs, not each Dag's 10 newest")
    promoted, kept = text.count("<a class='outcome promoted' "), text.count("<a class='outcome kept' ")
    # The 10 newest runs of a Dag (40..49): 5 with a record, 3 promoted (40, 44, 48) and 2 kept.
    check((promoted, kept) == (60, 40), "bench_reports", f"outcomes shown: {promoted} promoted, {kept} kept")
    check(text.count(f">All {RUNS} runs</a>") == 20, "bench_reports", "the page does not link each Dag's runs")


def run(quick: bool) -> Iterator[Comparison]:
    repeats = samples(quick, full=9, quick_samples=2)
    from starlette.testclient import TestClient

    from airflow_provider_mlci.plugins.reports import create_app
    from airflow_provider_mlci.report_store import OUTCOME_FILE, ReportStore

    async def authenticate(request: Any) -> _Everyone:
        return _Everyone()

    saved = {name: os.environ.get(name) for name in _ENV}
    with tempfile.TemporaryDirectory(prefix="mlci-bench-reports-") as tmp:
        root = Path(tmp) / "reports"
        try:
            os.environ["AIRFLOW__MLCI__REPORTS_DIR"] = str(root)
            os.environ.pop("AIRFLOW__MLCI__REPORTS_CONN_ID", None)
            _fill(root)
            with _Quiet(), TestClient(create_app(authenticate=authenticate)) as client:

                def ours() -> float:
                    found: list[Any] = []
                    took = timed(lambda: found.append(client.get("/reports")))
                    _check_page(found[0])
                    return took

                def listing() -> float:
                    found: list[dict[str, Any]] = []

                    def job() -> None:
                        store = ReportStore.open()
                        found.append(store.root.fs.find(store.root.path.rstrip("/"), detail=True))

                    took = timed(job)
                    outcomes = sum(1 for name in found[0] if name.rsplit("/", 1)[-1] == OUTCOME_FILE)
                    total = DAGS * RUNS
                    check(outcomes == total, "bench_reports", f"the listing found {outcomes} outcomes, not {total}")
                    return took

                ours(), listing()  # once each untimed: templates compiled, imports done, as on a serving api-server
                mine, base = interleave(ours, listing, repeats)
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    name = f"reports index page, {DAGS * RUNS:,} reports in {DAGS} Dags"
    yield Comparison(
        name=name,
        ours=mine,
        baseline=base,
        baseline_name="fs.find of the whole store",
        no_goal="for reference; the goal is the next row",
    )
    yield Comparison(
        name=f"{name} (budget)",
        ours=mine,
        baseline=[BUDGET_S],
        baseline_name=f"the budget, {BUDGET_S * 1000:.0f} ms",
        max_ratio=1.0,
    )
