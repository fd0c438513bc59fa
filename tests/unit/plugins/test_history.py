"""The plugin's run-outcome view, paged index and model pages, on a real report store and a real git remote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from airflow_provider_mlci.core.model.history import dumps, run_record
from airflow_provider_mlci.plugins import history
from airflow_provider_mlci.plugins.reports import create_app
from airflow_provider_mlci.report_store import ReportKey, ReportStore
from tests.unit.plugins.test_reports import Allow

MODEL = "fraud-detector"
CONN = "mlci_dvc_default"
GATE = [
    {"metric": "logloss", "direction": "lower", "candidate": 0.4714, "champion": 0.4743, "delta": -0.0029},
    {"metric": "accuracy", "direction": "higher", "candidate": 0.781, "champion": 0.781, "delta": 0.0},
]


def client_for(*dag_ids: str) -> TestClient:
    async def authenticate(request: Any) -> Allow:
        return Allow(*dag_ids)

    return TestClient(create_app(authenticate=authenticate))


def tag(repo: Path, name: str, sha: str, when: int, evidence: dict[str, Any]) -> None:
    env = {"GIT_COMMITTER_NAME": "Airflow MLCI", "GIT_COMMITTER_EMAIL": "m@x", "PATH": "/usr/bin:/bin",
           "GIT_COMMITTER_DATE": f"@{1_790_000_000 + when * 3600} +0000"}  # fmt: skip
    message = f"{name}\n\nmlci-evidence: {json.dumps(evidence)}"
    subprocess.run(["git", "tag", "-a", name, sha, "-m", message], cwd=repo, env=env, check=True, capture_output=True)


@pytest.fixture
def nights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """Three nights of ``nightly`` (promoted v0.1.0, promoted v0.2.0, failed), one of ``secret_nightly`` (kept),
    written as the record task writes them, and the registry tags of the first two on a bare remote."""
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("AIRFLOW__MLCI__REPORTS_CONN_ID", raising=False)
    work, remote = tmp_path / "work", tmp_path / "remote.git"
    subprocess.run(["git", "init", "-q", "--bare", str(remote)], check=True)
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True)
    shas = []
    for n in (1, 2):
        (work / "f").write_text(str(n))
        for argv in (["add", "f"], ["-c", "user.name=a", "-c", "user.email=a@b", "commit", "-qm", f"c{n}"]):
            subprocess.run(["git", *argv], cwd=work, check=True)
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, check=True, capture_output=True, text=True)
        shas.append(head.stdout.strip())
    monkeypatch.setenv("AIRFLOW_CONN_MLCI_DVC_DEFAULT", json.dumps({"conn_type": "mlci_dvc", "host": str(remote)}))
    history._registry_cache.clear()
    store = ReportStore.open()
    runs = []
    plan = [
        ("nightly", 1, {"promoted": True, "version": "v0.1.0", "sha": shas[0], "metrics": []}, []),
        (
            "nightly",
            2,
            {
                "promoted": True,
                "version": "v0.2.0",
                "sha": shas[1],
                "metrics": GATE,
                "champion": {"version": "v0.1.0", "sha": shas[0]},
            },
            [],
        ),
        ("nightly", 3, None, ["refine.refine"]),
        (
            "secret_nightly",
            3,
            {
                "promoted": False,
                "sha": "c" * 40,
                "metrics": GATE,
                "reasons": ["worse"],
                "champion": {"version": "v0.2.0", "sha": shas[1]},
            },
            [],
        ),
    ]
    for dag_id, day, outcome, failed in plan:
        run_id = f"scheduled__2026-11-0{day}T02:00:00+00:00"
        started = {"deployed": {"version": "v0.2.0", "sha": shas[1]}} if failed else None
        record = run_record(
            model=MODEL, stage="prod", dag_id=dag_id, run_id=run_id, night=f"2026-11-0{day}T02:00:00+00:00",
            outcome=outcome, started=started, failed_tasks=failed, report="refine.report", dvc_conn_id=CONN,
            cost={"total_usd": 0.0421, "seconds": 960.0, "instances": []} if day == 2 else None,
        )  # fmt: skip
        store.write(ReportKey(dag_id=dag_id, run_id=run_id, task_id="refine.report"), {"report.md": b"# R\n"}, {})
        key = ReportKey(dag_id=dag_id, run_id=run_id, task_id="refine.record")
        store.write(key, {"run-outcome.json": dumps(record), "report.md": b"# Outcome\n"}, record)
        store.write_record(record)
        runs.append(record)
    tag(work, f"{MODEL}@v0.1.0", shas[0], 1, {"dag_id": "nightly", "run_id": runs[0]["run_id"], "metrics": {}})
    tag(work, f"{MODEL}#prod#1", shas[0], 1, {"dag_id": "nightly", "run_id": runs[0]["run_id"]})
    tag(work, f"{MODEL}@v0.2.0", shas[1], 2, {"dag_id": "nightly", "run_id": runs[1]["run_id"],
                                             "metrics": {"logloss": 0.4714}})  # fmt: skip
    tag(work, f"{MODEL}#prod#2", shas[1], 2, {"dag_id": "nightly", "run_id": runs[1]["run_id"]})
    tag(work, f"{MODEL}#staging#3", shas[0], 4, {"dag_id": "secret_nightly", "run_id": "manual__9"})
    subprocess.run(["git", "push", "-q", str(remote), "main", "--tags"], cwd=work, check=True)
    return {"shas": shas, "runs": runs, "remote": remote, "work": work}


def test_the_run_outcome_view_shows_the_outcome_the_deltas_the_cost_and_the_reports(nights):
    page = client_for("nightly").get("/run-outcome/nightly/scheduled__2026-11-02T02:00:00+00:00")
    assert page.status_code == 200
    text = page.text
    line = (
        "Promoted v0.2.0 to prod, replacing v0.1.0: "
        "logloss 0.4743 -&gt; 0.4714 (-0.0029); accuracy 0.781 -&gt; 0.781 (+0)"
    )
    href = "/run-outcome/nightly/scheduled__2026-11-02T02_00_00+00_00"
    assert (
        f"<p id='outcome' class='outcome-line'><a class='outcome promoted' href='{href}'>promoted</a> {line}</p>"
        in text
    )
    assert "<td>logloss</td><td>lower</td><td class='num'>0.4743</td><td class='num'>0.4714</td>" in text
    assert "<p id='cost'>GPU cost: 0.0421 USD</p>" in text
    assert "<a target='_top' href='/dags/nightly/runs/scheduled__2026-11-02T02%3A00%3A00%2B00%3A00'>" in text
    assert "<a href='/models/fraud-detector'>Model fraud-detector</a>" in text
    assert "<a href='/reports/nightly/scheduled__2026-11-02T02_00_00+00_00/refine.report/'>refine.report</a>" in text
    failed = client_for("nightly").get("/run-outcome/nightly/scheduled__2026-11-03T02:00:00+00:00").text
    assert ">failed</a> Failed at refine.refine: nothing released, v0.2.0 stays on prod</p>" in failed
    nothing = client_for("nightly").get("/run-outcome/nightly/manual__2026-12-01T00:00:00+00:00")
    assert nothing.status_code == 200
    assert "No task of this run stored a report (yet)." in nothing.text
    assert (
        client_for("nightly").get("/run-outcome/secret_nightly/scheduled__2026-11-03T02:00:00+00:00").status_code == 403
    )
    api = client_for("nightly").get("/api/runs/nightly/scheduled__2026-11-02T02:00:00+00:00").json()
    assert api["outcome"]["decision"] == "promoted"
    assert api["record"]["cost"]["total_usd"] == 0.0421
    assert [f["task"] for f in api["folders"]] == ["refine.record", "refine.report"]


def test_the_index_shows_each_run_s_outcome_and_is_paged(nights, monkeypatch):
    text = client_for("*").get("/reports").text
    assert (
        "<a class='outcome failed' href='/run-outcome/nightly/scheduled__2026-11-03T02_00_00+00_00'>failed</a>" in text
    )
    assert ">kept</a> Kept v0.2.0 on prod: worse [logloss" in text
    monkeypatch.setattr(history, "DAGS_PER_PAGE", 1)
    first = client_for("*").get("/api/reports").json()
    assert (first["page"], first["pages"], [d["name"] for d in first["dags"]]) == (1, 2, ["nightly"])
    assert [r["outcome"]["decision"] for r in first["dags"][0]["runs"]] == ["failed", "promoted", "promoted"]
    second = client_for("*").get("/api/reports", params={"page": "2"}).json()
    assert [d["name"] for d in second["dags"]] == ["secret_nightly"]
    page = client_for("*").get("/reports", params={"page": "2"}).text
    assert "<a id='newer' href='/reports?page=1'>Previous page</a>" in page
    assert "id='older'" not in page
    only = client_for("nightly").get("/api/reports").json()  # a Dag the user may not read is not counted
    assert (only["pages"], only["dags_total"]) == (1, 1)


def test_the_model_page_shows_the_stages_the_versions_the_events_and_the_nights(nights):
    shas = nights["shas"]
    data = client_for("nightly").get(f"/api/models/{MODEL}").json()
    assert data["registry_problem"] is None
    assert [(s["stage"], s["version"], s["sha"], s["since"]) for s in data["stages"]] == [
        ("prod", "v0.2.0", shas[1], "2026-09-21T16:13:20+00:00"),  # 1_790_000_000 + 2 h
        ("staging", "v0.1.0", shas[0], "2026-09-21T18:13:20+00:00"),
    ]
    assert data["stages"][0]["run"]["href"] == "/dags/nightly/runs/scheduled__2026-11-02T02%3A00%3A00%2B00%3A00"
    assert data["stages"][1]["run"] == {"label": "a run of a Dag you may not read", "href": None, "outcome": None}
    assert [(v["version"], v["stages"]) for v in data["versions"]] == [
        ("v0.2.0", ["prod"]),
        ("v0.1.0", ["prod", "staging"]),
    ]
    assert [(e["action"], e["stage"], e["version"]) for e in data["events"]] == [
        ("promoted", "staging", "v0.1.0"), ("promoted", "prod", "v0.2.0"), ("promoted", "prod", "v0.1.0")
    ]  # fmt: skip
    # Only the nights of Dags the user may read, newest first; the kept night of secret_nightly is not shown.
    assert [(n["night"], n["decision"]) for n in data["nights"]] == [
        ("2026-11-03 02:00", "failed"), ("2026-11-02 02:00", "promoted"), ("2026-11-01 02:00", "promoted")
    ]  # fmt: skip
    assert data["nights"][1]["cost"] == 0.0421
    page = client_for("nightly").get(f"/models/{MODEL}").text
    assert (
        "<img id='trend' alt='gate metrics by run: candidate against deployed' src='data:image/svg+xml;base64," in page
    )
    assert "<td>prod</td><td>v0.2.0</td>" in page
    assert client_for("nobody").get(f"/models/{MODEL}").status_code == 404
    everything = client_for("*").get(f"/api/models/{MODEL}").json()
    assert len(everything["nights"]) == 4
    listed = client_for("nightly").get("/api/models").json()["models"]
    assert [(m["name"], m["newest"]["decision"]) for m in listed] == [(MODEL, "failed")]
    assert client_for("nobody").get("/api/models").json() == {"models": []}


def test_the_registry_is_cached_briefly_and_a_broken_remote_is_said_on_the_page(nights, monkeypatch):
    client = client_for("nightly")
    assert len(client.get(f"/api/models/{MODEL}").json()["versions"]) == 2
    tag(nights["work"], f"{MODEL}@v0.3.0", nights["shas"][1], 5, {})
    subprocess.run(["git", "push", "-q", str(nights["remote"]), "--tags"], cwd=nights["work"], check=True)
    assert len(client.get(f"/api/models/{MODEL}").json()["versions"]) == 2  # cached
    monkeypatch.setattr(history, "REGISTRY_TTL_S", 0.0)
    assert len(client.get(f"/api/models/{MODEL}").json()["versions"]) == 3
    monkeypatch.setenv("AIRFLOW_CONN_MLCI_DVC_DEFAULT", json.dumps({"conn_type": "mlci_dvc", "host": "/no/such/repo"}))
    history._registry_cache.clear()
    broken = client.get(f"/models/{MODEL}")
    assert broken.status_code == 200
    assert (
        "<p class='muted' id='registry-problem'>Cannot read the registry through the connection "
        "&#39;mlci_dvc_default&#39;" in broken.text
    )
    assert "2026-11-02 02:00" in broken.text  # the nights are still there
