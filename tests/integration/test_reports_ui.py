"""The reports plugin in a real ``airflow api-server``, looked at by a real browser (headless Chromium).

The api-server runs on the session's Airflow home with ``[mlci] reports_dir`` pointing at a folder
holding one report (an HTML page with a table and an SVG plot). Login: the SimpleAuthManager with
``simple_auth_manager_all_admins``, so the browser needs none (the unit tests check the real login).
Screenshots stay in ``test-artifacts/``. Without Chromium (``apt-get install chromium``) the browser
tests are skipped and the api-server checks still run.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_provider_mlci.report_store import ReportKey, ReportStore
from tests.conftest import ARTIFACTS
from tests.helpers.api_server import ApiServer, browse, png_pixels, serve_api_server
from tests.helpers.tools import require_tool

DAG_ID = "ui_demo"
RUN = "manual__2026-11-26T10_00_00+00_00"
FOLDER = f"/mlci/reports/{DAG_ID}/{RUN}/evaluate/"
#: The plot's bars, a colour nothing else on the page has: the screenshot shows the image if it has it.
PLOT_RGB = (230, 57, 70)
PLOT_SVG = (
    "<svg xmlns='http://www.w3.org/2000/svg' width='480' height='240' viewBox='0 0 480 240'>"
    "<rect width='480' height='240' fill='#f1faee'/>"
    + "".join(
        f"<rect x='{30 + i * 70}' y='{220 - h}' width='50' height='{h}' fill='#e63946'/>"
        for i, h in enumerate((60, 120, 90, 180, 150, 200))
    )
    + "</svg>"
)
REPORT_HTML = """<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>Evaluation</title>
<style>body{font-family:sans-serif;margin:2rem}td,th{border:1px solid #999;padding:.3rem .8rem}</style>
</head><body><h1>Evaluation of the candidate</h1>
<table id='metrics'><tr><th>metric</th><th>main</th><th>candidate</th></tr>
<tr><td>accuracy</td><td>0.912</td><td>0.934</td></tr><tr><td>f1</td><td>0.871</td><td>0.902</td></tr></table>
<h2>Plots</h2><figure><img id='plot' alt='ROC' src='images/plot.svg'><figcaption>ROC</figcaption></figure>
</body></html>
"""


@pytest.fixture(scope="module")
def api_server(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port, serving one stored report; stopped with all it started."""
    root = tmp_path_factory.mktemp("reports-ui")
    reports = root / "reports"
    store = ReportStore.open(str(reports))
    files = {
        "report.html": REPORT_HTML.encode(),
        "images/plot.svg": PLOT_SVG.encode(),
        "report.md": b"# Evaluation\n\n| metric | value |\n|---|---|\n| accuracy | 0.934 |\n",
    }
    store.write(ReportKey(dag_id=DAG_ID, run_id=RUN, task_id="evaluate"), files, {"accuracy": 0.934})
    (root / "secret.txt").write_text("top secret")
    write_generated_report(store, ReportKey(dag_id="example_pr_report", run_id=RUN, task_id="report"))
    with serve_api_server(root, {"AIRFLOW__MLCI__REPORTS_DIR": str(reports)}, name="reports-ui") as server:
        yield server


# ------------------------------------------------------------------------------------ api-server


@pytest.mark.smoke
def test_the_api_server_loads_the_plugin(api_server):
    status, _, body = api_server.get("/api/v2/plugins")
    assert status == 200
    (plugin,) = [p for p in json.loads(body)["plugins"] if p["name"] == "mlci_reports"]
    assert plugin["fastapi_apps"][0]["url_prefix"] == "/mlci"
    routes = {view["url_route"]: view for view in plugin["external_views"]}
    assert routes["mlci-reports"]["href"] == "/mlci/reports"
    assert routes["mlci-task-report"]["destination"] == "task_instance"
    status, _, body = api_server.get("/api/v2/plugins/importErrors")
    assert status == 200
    assert json.loads(body)["import_errors"] == []


@pytest.mark.smoke
def test_the_api_server_serves_the_index_the_report_and_its_image(api_server):
    status, _, index = api_server.get("/mlci/reports")
    assert status == 200
    assert f"href='{FOLDER}'".encode() in index
    status, headers, page = api_server.get(FOLDER)
    assert status == 200
    assert page.decode() == REPORT_HTML
    assert "default-src 'none'" in headers["content-security-policy"]
    status, headers, image = api_server.get(f"{FOLDER}images/plot.svg")
    assert status == 200
    assert headers["content-type"] == "image/svg+xml"
    assert image.decode() == PLOT_SVG
    status, _, files = api_server.get(f"{FOLDER}?view=files")
    assert b"<td>0.934</td>" in files


def test_the_task_instance_tab_leads_to_the_folder(api_server):
    request = f"/mlci/task-report/{DAG_ID}/manual__2026-11-26T10:00:00%2B00:00/evaluate?map_index=-1"
    status, headers, _ = api_server.get(request)  # urllib follows the redirect
    assert status == 200
    assert headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    "path",
    [
        f"{FOLDER}../../../../secret.txt",
        f"{FOLDER}%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        f"{FOLDER}..%2f..%2f..%2f..%2fsecret.txt",
        f"{FOLDER}%2fetc%2fpasswd",
        "/mlci/reports/%2e%2e/%2e%2e/x/secret.txt",
    ],
)
def test_the_api_server_refuses_paths_out_of_the_reports_dir(api_server, path):
    status, body = api_server.raw_get(path)
    assert status == 404
    assert b"top secret" not in body


# ------------------------------------------------------------------------------------ browser


@pytest.fixture(scope="module")
def chromium() -> str:
    return require_tool("chromium", "chromium-browser", install="Debian: apt-get install -y chromium")


def test_a_browser_shows_the_report_with_its_table_and_image(api_server, chromium):
    dom = browse(chromium, f"{api_server.url}{FOLDER}", "--dump-dom")
    assert '<table id="metrics">' in dom
    assert "<td>0.934</td>" in dom
    assert '<img id="plot" alt="ROC" src="images/plot.svg">' in dom

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "reports-ui-report.png"
    shot.unlink(missing_ok=True)
    browse(chromium, f"{api_server.url}{FOLDER}", f"--screenshot={shot}", "--window-size=1280,900")
    assert shot.stat().st_size > 5_000
    width, height, pixels = png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 900)
    assert len(set(pixels)) > 20, "the screenshot is (nearly) blank"
    plot = sum(1 for p in pixels if all(abs(a - b) <= 6 for a, b in zip(p, PLOT_RGB, strict=True)))
    assert plot > 5_000, "the plot's bars are not on the screenshot: the image did not load"


GENERATED = f"/mlci/reports/example_pr_report/{RUN}/report/"
SHA, BASE = "c" * 40, "d" * 40


def write_generated_report(store: ReportStore, key: ReportKey) -> None:
    """A report as MetricsReportOperator writes it: tables, and a plot rendered by vl-convert."""
    from airflow_provider_mlci.core.reports.html import build_report

    bars = {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "width": 420,
        "height": 240,
        "data": {"values": [{"step": i, "loss": v, "rev": SHA} for i, v in enumerate((9, 7, 6, 4, 3, 2))]},
        "mark": {"type": "bar", "color": "#e63946"},
        "encoding": {"x": {"field": "step", "type": "ordinal"}, "y": {"field": "loss", "type": "quantitative"}},
    }
    report = build_report(
        title="Fraud detector: experiment against main",
        rev="experiment",
        sha=SHA,
        baseline_rev="main",
        baseline_sha=BASE,
        inputs={
            "metrics": {SHA: {"metrics.json": {"accuracy": 0.934}}, BASE: {"metrics.json": {"accuracy": 0.912}}},
            "params": {
                SHA: {"params.yaml": {"train": {"epochs": 150}}},
                BASE: {"params.yaml": {"train": {"epochs": 10}}},
            },
            "plots": [{"name": "eval/loss.csv", "type": "vega", "revisions": [SHA], "content": bars}],
        },
    )
    files = {image.file: image.data for image in report.images}
    store.write(key, {**files, "report.md": report.markdown.encode(), "report.html": report.html.encode()}, {})


def test_a_browser_shows_a_generated_metrics_report(api_server, chromium):
    dom = browse(chromium, f"{api_server.url}{GENERATED}", "--dump-dom")
    assert "<td>metrics.json</td><td>accuracy</td>" in dom
    assert "<td>params.yaml</td><td>train.epochs</td>" in dom
    assert '<img alt="eval/loss.csv" src="data:image/svg+xml;base64,' in dom
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "reports-ui-metrics-report.png"
    shot.unlink(missing_ok=True)
    browse(chromium, f"{api_server.url}{GENERATED}", f"--screenshot={shot}", "--window-size=1280,1400")
    _, _, pixels = png_pixels(shot.read_bytes())
    plot = sum(1 for p in pixels if all(abs(a - b) <= 6 for a, b in zip(p, PLOT_RGB, strict=True)))
    assert plot > 5_000, "the rendered plot is not on the screenshot"


def test_the_airflow_ui_shows_the_reports_page(api_server, chromium):
    url = f"{api_server.url}/plugin/mlci-reports"
    dom = browse(chromium, url, "--dump-dom", budget_ms=10_000)
    assert 'src="/mlci/reports"' in dom
    assert 'title="MLCI reports"' in dom
    shot = ARTIFACTS / "reports-ui-airflow.png"
    shot.unlink(missing_ok=True)
    browse(chromium, url, f"--screenshot={shot}", "--window-size=1280,900", budget_ms=10_000)
    assert shot.stat().st_size > 5_000
    _, _, pixels = png_pixels(shot.read_bytes())
    assert len(set(pixels)) > 20, "the screenshot is (nearly) blank"
