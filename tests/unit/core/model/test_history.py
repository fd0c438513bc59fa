"""Run records, their one-line summaries and trend chart, and the registry's story read from a real remote's tags."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from airflow_provider_mlci.core.model.history import fetch_tags, model_story, run_record, summary_line, trend_spec
from airflow_provider_mlci.core.repo.access import GitAccess
from airflow_provider_mlci.core.runtime.process import CommandRunner

GATE = [
    {"metric": "logloss", "direction": "lower", "candidate": 0.5014, "champion": 0.4714, "delta": 0.03},
    {"metric": "accuracy", "direction": "higher", "candidate": 0.78, "champion": 0.781, "delta": -0.001},
]


def record(decision_outcome, **kw):
    base = {"model": "fraud", "stage": "prod", "dag_id": "nightly", "run_id": "scheduled__2026-11-03T02:00:00+00:00"}
    return run_record(**base, night=kw.pop("night", "2026-11-03T02:00:00+00:00"), outcome=decision_outcome, **kw)


def test_a_kept_night_says_what_stayed_and_why_with_the_deltas():
    outcome = {
        "promoted": False,
        "sha": "c" * 40,
        "champion": {"version": "v0.6.0", "sha": "a" * 40},
        "metrics": GATE,
        "reasons": ["logloss regressed by 0.03 (0.4714 -> 0.5014)"],
    }
    kept = record(outcome)
    assert kept["decision"] == "kept"
    assert kept["deployed"] == {"version": "v0.6.0", "sha": "a" * 40}
    assert kept["summary"] == (
        "Kept v0.6.0 on prod: logloss regressed by 0.03 (0.4714 -> 0.5014) "
        "[logloss 0.4714 -> 0.5014 (+0.03); accuracy 0.781 -> 0.78 (-0.001)]"
    )


def test_a_failed_night_names_the_failed_tasks_and_what_stays():
    started = {"from_scratch": False, "deployed": {"version": "v0.6.0", "sha": "a" * 40}}
    failed = record(None, started=started, failed_tasks=["refine.refine"])
    assert failed["decision"] == "failed"
    assert failed["summary"] == "Failed at refine.refine: nothing released, v0.6.0 stays on prod"
    assert record(None)["summary"] == "Failed before the gate decided: nothing released"
    both = record(None, failed_tasks=["refine.validate_data", "refine.report"], deployed={"version": "v0.7.0"})
    assert both["summary"] == (
        "Failed at refine.validate_data (then refine.report): nothing released, v0.7.0 stays on prod"
    )


def test_approval_outcomes_are_named():
    rejected = {"promoted": False, "decision": "rejected", "champion": {"version": "v1.0.0", "sha": "a"}}
    assert summary_line(record(rejected)) == "Kept v1.0.0 on prod: a reviewer rejected the candidate"


def test_the_trend_has_both_series_per_metric_and_marks_promoted_nights():
    promoted = {"promoted": True, "version": "v0.7.0", "metrics": GATE, "champion": {"version": "v0.6.0", "sha": "a"}}
    nights = [record(promoted, night="2026-11-02T02:00:00+00:00"), record(None, night="2026-11-03T02:00:00+00:00")]
    spec = trend_spec("fraud", nights)
    assert [chart["title"] for chart in spec["vconcat"]] == ["logloss", "accuracy"]
    values = spec["data"]["values"]
    assert {(v["night"], v["metric"], v["series"], v["value"], v["promoted"]) for v in values} == {
        ("2026-11-02", "logloss", "candidate", 0.5014, True),
        ("2026-11-02", "logloss", "deployed", 0.4714, False),
        ("2026-11-02", "accuracy", "candidate", 0.78, True),
        ("2026-11-02", "accuracy", "deployed", 0.781, False),
    }
    import vl_convert

    svg = vl_convert.vegalite_to_svg(vl_spec=spec)
    assert svg.startswith("<svg")
    assert "logloss" in svg


def git(*args: str, cwd: Path) -> str:
    env = {"GIT_COMMITTER_NAME": "Airflow MLCI", "GIT_COMMITTER_EMAIL": "mlci@airflow.invalid",
           "GIT_AUTHOR_NAME": "a", "GIT_AUTHOR_EMAIL": "a@b", "PATH": "/usr/bin:/bin"}  # fmt: skip
    return subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True, text=True).stdout


def test_the_story_of_a_model_read_from_a_remote_s_tags(tmp_path):
    work, remote = tmp_path / "work", tmp_path / "remote.git"
    git("init", "--quiet", "--bare", str(remote), cwd=tmp_path)
    git("init", "--quiet", "-b", "main", str(work), cwd=tmp_path)
    shas = []
    for n in (1, 2):
        (work / "f").write_text(str(n))
        git("add", "f", cwd=work)
        git("commit", "--quiet", "-m", f"c{n}", cwd=work)
        shas.append(git("rev-parse", "HEAD", cwd=work).strip())

    run1 = {"dag_id": "nightly", "run_id": "scheduled__1", "task_id": "refine.promote"}
    run2 = {"dag_id": "nightly", "run_id": "scheduled__2", "task_id": "refine.promote"}
    for name, sha, when, evidence in [
        ("fraud@v0.1.0", shas[0], 1, {**run1, "metrics": {"metrics.json": {"logloss": 0.47, "f": {"a": 1}}}}),
        ("fraud#prod#1", shas[0], 1, run1),
        ("fraud@v0.2.0", shas[1], 2, {**run2, "metrics": {"logloss": 0.46}}),
        ("fraud#prod#2", shas[1], 2, run2),
        ("fraud#prod#3", shas[0], 3, {"dag_id": "rollback", "run_id": "manual__3", "rollback": True}),
        ("other@v1.0.0", shas[1], 3, {}),
        ("plain-tag", shas[1], 3, {}),
    ]:
        env_date = f"@{1_780_000_000 + when * 100} +0000"
        subprocess.run(
            ["git", "tag", "-a", name, sha, "-m", f"{name}\n\nmlci-evidence: {json.dumps(evidence)}"],
            cwd=work, check=True, capture_output=True,
            env={"GIT_COMMITTER_NAME": "Airflow MLCI", "GIT_COMMITTER_EMAIL": "m@x", "GIT_COMMITTER_DATE": env_date,
                 "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
    git("push", "--quiet", str(remote), "main", "--tags", cwd=work)

    tags = fetch_tags(GitAccess.from_url(str(remote)), tmp_path / "mirror.git", CommandRunner())
    assert {t.tag for t in tags} == {
        "fraud@v0.1.0", "fraud#prod#1", "fraud@v0.2.0", "fraud#prod#2", "fraud#prod#3", "other@v1.0.0", "plain-tag"
    }  # fmt: skip
    story = model_story(tags, "fraud")
    assert story["stages"] == [
        {
            "stage": "prod",
            "version": "v0.1.0",
            "sha": shas[0],
            "since": "2026-05-28T20:31:40+00:00",  # 1_780_000_300
            "tag": "fraud#prod#3",
            "run": {"dag_id": "rollback", "run_id": "manual__3"},
        }
    ]
    assert [v["metrics"] for v in story["versions"]] == [{"logloss": 0.46}, {"logloss": 0.47, "f.a": 1}]
    assert [(v["version"], v["sha"], v["run"], v["stages"]) for v in story["versions"]] == [
        ("v0.2.0", shas[1], {"dag_id": "nightly", "run_id": "scheduled__2", "task_id": "refine.promote"}, ["prod"]),
        ("v0.1.0", shas[0], {"dag_id": "nightly", "run_id": "scheduled__1", "task_id": "refine.promote"}, ["prod"]),
    ]
    assert [(e["action"], e["version"], e["by"]) for e in story["events"]] == [
        ("rolled back", "v0.1.0", "Airflow MLCI"),
        ("promoted", "v0.2.0", "Airflow MLCI"),
        ("promoted", "v0.1.0", "Airflow MLCI"),
    ]
    # A second read fetches into the same mirror and sees a new tag.
    (work / "f").write_text("3")
    subprocess.run(["git", "-c", "user.name=a", "-c", "user.email=a@b", "tag", "-a", "fraud@v0.3.0", "-m", "x"],
                   cwd=work, check=True)  # fmt: skip
    git("push", "--quiet", str(remote), "--tags", cwd=work)
    again = fetch_tags(GitAccess.from_url(str(remote)), tmp_path / "mirror.git", CommandRunner())
    assert "fraud@v0.3.0" in {t.tag for t in again}


@pytest.mark.parametrize("decision", ["promoted", "kept", "failed"])
def test_every_decision_is_a_known_one(decision):
    from airflow_provider_mlci.core.model.history import DECISIONS

    assert decision in DECISIONS
