"""The nightly refinement DAG for two simulated days, run for real with ``dag.test()``.

Day 1: nothing is deployed, so the pipeline trains from scratch (and says so), and the model is
released as v0.1.0. Day 2: a new batch of data lands on main; the refinement points the base
model at v0.1.0, fine-tunes it on all the data, and the gate decides against v0.1.0 on the same
frozen evaluation set. Real git (a bare remote), real DVC (a local remote), local compute.
"""

from __future__ import annotations

import subprocess
import sys

import pendulum
import yaml

from tests.conftest import EXAMPLE_DAGS
from tests.helpers.flagships import REFINE_NIGHT_1_STATES, REFINE_TASKS

DAG_ID = "example_nightly_refinement"
DAG_FILE = EXAMPLE_DAGS / "example_nightly_refinement.py"
DAY_1 = pendulum.datetime(2026, 11, 1, 2, tz="UTC")
DAY_2 = pendulum.datetime(2026, 11, 2, 2, tz="UTC")


def tags(project) -> dict[str, str]:
    """The registry tags on the git remote and the commits they point at."""
    refs = project.remote_refs()
    return {
        ref.removeprefix("refs/tags/"): project.git("rev-parse", f"{ref}^{{commit}}", cwd=project.remote).strip()
        for ref in refs
        if ref.startswith("refs/tags/fraud-detector")
    }


def add_a_day_of_data(project, day: int) -> str:
    subprocess.run(
        [sys.executable, "src/generate.py", "--day", str(day), "--rows", "300"], cwd=project.work, check=True
    )
    project.dvc("add", "--quiet", "data/raw.csv")
    return project.commit_and_push(f"Data of day {day}")


def test_day_one_trains_from_scratch_and_releases_day_two_refines_and_the_gate_decides(
    run_dag, dvc_project, dvc_connection, worker_cache, monkeypatch, capfd
):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})

    day1 = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"}, logical_date=DAY_1)
    out = capfd.readouterr().out
    assert day1.state == "success", day1.task_states
    states = {task: day1.task_states[f"refine.{task}"] for task in REFINE_TASKS}
    assert states == REFINE_NIGHT_1_STATES
    started = day1.xcom["refine.start"]
    assert started["from_scratch"] is True
    assert started["deployed"] is None
    assert started["commit"] is None
    assert "No fraud-detector model on prod" in out
    assert "from scratch" in out
    assert "train: fitted on" in out
    assert "from scratch" in out
    first = day1.xcom["refine.outcome"]
    assert first["promoted"] is True
    assert first["version"] == "v0.1.0"
    commit = day1.xcom["refine.refine"]["commit"]
    assert commit["branch"] == "mlci/refine/20261101T020000"
    assert tags(dvc_project)["fraud-detector@v0.1.0"] == commit["commit"] == first["sha"]
    assert day1.xcom["refine.report"]["html"].endswith("report.html")

    data_sha = add_a_day_of_data(dvc_project, 1)
    day2 = run_dag(DAG_ID, path=DAG_FILE, conf={"rev": "main"}, logical_date=DAY_2)
    out = capfd.readouterr().out
    assert day2.state == "success", day2.task_states
    started = day2.xcom["refine.start"]
    assert started["sha"] == data_sha
    assert started["from_scratch"] is False
    assert started["deployed"]["version"] == "v0.1.0"
    assert day2.task_states["refine.drift"] == "success"
    assert day2.xcom["refine.drift"]["baseline"].endswith(first["sha"][:12])
    # The base model named in the refinement commit is the deployed model's file, by content.
    branch = started["commit"]["branch"]
    assert branch == "mlci/refine/20261102T020000"
    base = yaml.safe_load(
        dvc_project.git("show", f"{started['refine_sha']}:models/base.pkl.dvc", cwd=dvc_project.remote)
    )
    lock = yaml.safe_load(dvc_project.git("show", f"{first['sha']}:dvc.lock", cwd=dvc_project.remote))
    assert base["outs"][0]["md5"] == lock["stages"]["train"]["outs"][0]["md5"]
    assert day2.xcom["refine.refine"]["stages"] == {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    assert "warm start from models/base.pkl" in out
    # The gate compared on the same frozen evaluation data, and the outcome follows its decision.
    second = day2.xcom["refine.outcome"]
    assert second["champion"]["version"] == "v0.1.0"
    assert "the same data" not in " ".join(second["reasons"])
    assert second["promoted"] is (not second["reasons"])
    expected = {"fraud-detector@v0.1.0"} | ({"fraud-detector@v0.2.0"} if second["promoted"] else set())
    assert {tag for tag in tags(dvc_project) if "@" in tag} == expected
    assert day2.task_states["refine.promote" if second["promoted"] else "refine.keep_deployed"] == "success"
    assert day2.xcom["refine.report"]["baseline_sha"] == first["sha"]
