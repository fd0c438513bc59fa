"""Three nights of ``example_nightly_refinement`` in the UI: the model page, its trend, the run view, the paged index.

Night 1 trains from scratch and promotes v0.1.0; night 2 brings no new data, and the gate keeps
v0.1.0 (the refined candidate is not better on the frozen evaluation set); night 3's data breaks its
schema, so the night fails at ``validate_data`` and nothing is released. Real ``dag.test()`` runs
(git, DVC), then a real ``airflow api-server`` on the same metadata database and report store,
looked at by headless Chromium. Screenshots stay in ``test-artifacts/``. The store also holds 24
other Dags' reports, so the index has two pages.
"""

from __future__ import annotations

import html
import os
import re

import pendulum

from airflow_provider_mlci.report_store import ReportKey, ReportStore, safe_run
from tests.conftest import ARTIFACTS, EXAMPLE_DAGS
from tests.helpers.api_server import browse, png_pixels, serve_api_server
from tests.helpers.tools import require_tool

DAG_ID = "example_nightly_refinement"
DAG_FILE = EXAMPLE_DAGS / "example_nightly_refinement.py"
MODEL = "fraud-detector"
NIGHTS = [pendulum.datetime(2026, 11, day, 2, tz="UTC") for day in (1, 2, 3)]
#: The trend's candidate line and the promoted night's diamond (history.trend_spec's colours).
CANDIDATE_RGB, PROMOTED_RGB = (21, 101, 192), (46, 125, 50)


def near(pixels, rgb, tolerance=12) -> int:
    return sum(1 for p in pixels if all(abs(a - b) <= tolerance for a, b in zip(p, rgb, strict=True)))


def text_of(dom: str, element_id: str) -> str:
    """The text of the element with ``id`` (tags dropped, whitespace squeezed)."""
    match = re.search(rf'<(\w+)[^>]*\bid="{element_id}"[^>]*>(.*?)</\1>', dom, re.S)
    assert match, f"no element #{element_id} on the page"
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", match.group(2))).split())


def test_three_nights_show_on_the_model_page_the_trend_the_run_view_and_the_index(
    run_dag, dvc_project, dvc_connection, worker_cache, monkeypatch, tmp_path
):
    chromium = require_tool("chromium", "chromium-browser", install="Debian: apt-get install -y chromium")
    reports = tmp_path / "reports"
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(reports))
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})

    runs = [run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"}, logical_date=NIGHTS[0])]
    runs.append(run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"}, logical_date=NIGHTS[1]))
    raw = dvc_project.work / "data" / "raw.csv"
    raw.write_text(raw.read_text() + "bad-1,-5.0,25,0.5,1.0,1\n")  # a negative amount at hour 25
    dvc_project.dvc("add", "--quiet", "data/raw.csv")
    dvc_project.commit_and_push("A batch that breaks the schema")
    runs.append(run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"}, logical_date=NIGHTS[2]))
    assert [r.state for r in runs] == ["success", "success", "failed"], [r.task_states for r in runs]
    assert runs[2].task_states["refine.validate_data"] == "failed"
    assert runs[2].task_states["refine.record"] == "failed"  # it recorded the night, then failed the run

    store = ReportStore.open()
    records = store.records(MODEL)
    assert [(r["decision"], r["version"]) for r in records] == [
        ("promoted", "v0.1.0"),
        ("kept", None),
        ("failed", None),
    ]
    kept, failed = records[1], records[2]
    assert kept["summary"].startswith("Kept v0.1.0 on prod: ")
    assert failed["summary"] == (
        "Failed at refine.validate_data (then refine.report): nothing released, v0.1.0 stays on prod"
    )
    for n in range(24):  # other Dags, so that the index has a second page
        store.write(ReportKey(dag_id=f"zz_other_{n:02d}", run_id="manual__1", task_id="report"), {"a.md": b"#"}, {})

    settings = {
        "AIRFLOW__MLCI__REPORTS_DIR": str(reports),
        "AIRFLOW__MLCI__CACHE_DIR": str(tmp_path / "api-server-cache"),
        "AIRFLOW_CONN_MLCI_DVC_DEFAULT": os.environ["AIRFLOW_CONN_MLCI_DVC_DEFAULT"],
    }
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with serve_api_server(tmp_path, settings, name="model-pages") as server:
        # The model page: the registry on the git remote, the nights from the run records.
        page = f"{server.url}/mlci/models/{MODEL}"
        dom = browse(chromium, page, "--dump-dom")
        promoted_sha = records[0]["sha"]
        assert text_of(dom, "stages").startswith(
            f"Stage Version Commit Since Promoted by prod v0.1.0 {promoted_sha[:12]}"
        )
        assert f"{DAG_ID} / {runs[0].run_id}" in text_of(dom, "stages")
        nights = text_of(dom, "nights")
        assert nights.index("2026-11-03 02:00 failed Failed at refine.validate_data") < nights.index(
            "2026-11-02 02:00 kept Kept v0.1.0 on prod"
        ) < nights.index("2026-11-01 02:00 promoted Promoted v0.1.0 to prod")  # fmt: skip
        assert text_of(dom, "versions").startswith(
            f"Version Commit Registered Stages Made by Metrics v0.1.0 {promoted_sha[:12]}"
        )
        assert "promoted prod v0.1.0 fraud-detector#prod#1" in text_of(dom, "events")
        assert (
            '<img id="trend" alt="gate metrics by run: candidate against deployed" src="data:image/svg+xml;base64,'
            in dom
        )
        shot = ARTIFACTS / "model-page.png"
        shot.unlink(missing_ok=True)
        browse(chromium, page, f"--screenshot={shot}", "--window-size=1280,1600")
        _, _, pixels = png_pixels(shot.read_bytes())
        assert near(pixels, CANDIDATE_RGB) > 150, "the trend's candidate line is not on the screenshot"
        assert near(pixels, PROMOTED_RGB) > 40, "the promoted night's mark is not on the screenshot"

        # The run view of each night (the Dag run's "Outcome" tab).
        for run, decision, summary in (
            (runs[1], "kept", kept["summary"]),
            (runs[2], "failed", failed["summary"]),
        ):
            view = f"{server.url}/mlci/run-outcome/{DAG_ID}/{safe_run(run.run_id)}"
            dom = browse(chromium, view, "--dump-dom")
            assert text_of(dom, "outcome") == f"{decision} {summary}"
            assert f'href="/dags/{DAG_ID}/runs/' in dom
        dom = browse(chromium, f"{server.url}/mlci/run-outcome/{DAG_ID}/{safe_run(runs[1].run_id)}", "--dump-dom")
        assert text_of(dom, "deltas").startswith("metric better deployed candidate delta logloss lower")
        shot = ARTIFACTS / "run-outcome-kept.png"
        shot.unlink(missing_ok=True)
        browse(chromium, f"{server.url}/mlci/run-outcome/{DAG_ID}/{safe_run(runs[1].run_id)}", f"--screenshot={shot}")
        assert shot.stat().st_size > 5_000

        # The Airflow UI shows the view in the run's "Outcome" tab.
        tab = f"{server.url}/dags/{DAG_ID}/runs/{runs[1].run_id}/plugin/mlci-run-outcome"
        dom = browse(chromium, tab, "--dump-dom", budget_ms=10_000)
        assert f'src="/mlci/run-outcome/{DAG_ID}/' in dom

        # The index: a page of Dags with each run's outcome; the rest on the next page.
        dom = browse(chromium, f"{server.url}/mlci/reports", "--dump-dom")
        assert "Dags 25, page 1 of 2" in dom
        first = html.unescape(re.sub(r"<[^>]+>", " ", dom))
        assert "failed Failed at refine.validate_data" in " ".join(first.split())
        assert "zz_other_18" in dom
        assert "zz_other_19" not in dom
        assert '<a id="older" href="/mlci/reports?page=2">Next page</a>' in dom
        dom = browse(chromium, f"{server.url}/mlci/reports?page=2", "--dump-dom")
        assert "Dags 25, page 2 of 2" in dom
        assert [f"zz_other_{n}" in dom for n in (18, 19, 23)] == [False, True, True]
        shot = ARTIFACTS / "reports-index.png"
        shot.unlink(missing_ok=True)
        browse(chromium, f"{server.url}/mlci/reports", f"--screenshot={shot}")
        assert shot.stat().st_size > 5_000
