"""The sweep example, run for real with ``dag.test()``: an adaptive sweep (TPE, median pruner) whose
trials are mapped tasks, each a DVC experiment or pruned while its training runs; the best one
branched, gated and promoted with GTO tags; a refusing gate or a failed leaderboard promotes nothing."""

from __future__ import annotations

import json
import subprocess
import sys

import pendulum
import pytest

from tests.conftest import EXAMPLE_DAGS

DAG_ID = "example_hyperparameter_sweep"
DAG_FILE = EXAMPLE_DAGS / "example_hyperparameter_sweep.py"
MODEL = "fraud-detector"
LOGICAL_DATE = pendulum.datetime(2026, 1, 2, tz="UTC")
#: The example's known-good point, then three more, so that a laggard is pruned whatever the timing.
#: Two trials run at a time and the pruner waits for two finished ones: which sampled trial starts
#: last, and so sees two finished, depends on the scheduler. With these points enqueued, the fourth
#: to ask (a free slot means a second trial finished, or was pruned, which also needs two finished)
#: gets learning rate 0.03, whose loss at epoch 10 is worse than any faster one's. The fifth trial's
#: point comes from the sampler.
LAGGARD_LAST = (0.3, 0.7, 0.05, 0.03)
ENQUEUE = "[" + ", ".join(f'{{"train.learning_rate": {lr}, "train.epochs": 100}}' for lr in LAGGARD_LAST) + "]"
EXAMPLE_ENQUEUE = '[{"train.learning_rate": 0.3, "train.epochs": 100}]'


@pytest.fixture
def use_cache(monkeypatch, worker_cache, tmp_path):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    return worker_cache


def test_the_sweep_asks_the_study_prunes_the_laggards_ranks_the_rest_and_promotes_the_best(
    run_dag, dvc_project, dvc_connection, use_cache, tmp_path
):
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    assert dvc_project.remote_tags() == {}  # nothing deployed: the gate's floors alone decide
    conf = {"rev": "main", "max_trials": 5, "seed": 1, "stage": "prod"}
    source = DAG_FILE.read_text()
    assert f"enqueue={EXAMPLE_ENQUEUE}" in source
    source = source.replace(f"enqueue={EXAMPLE_ENQUEUE}", f"enqueue={ENQUEUE}")
    record = run_dag(DAG_ID, source=source, conf=conf, logical_date=LOGICAL_DATE)
    assert record.state == "success", record.task_states
    assert record.task_states == {
        "sweep.generate": "success",
        **{f"sweep.trial[{i}]": "success" for i in range(5)},  # a pruned trial is a result, not a failed task
        "sweep.leaderboard": "success",
        "sweep.branch": "success",
        "sweep.gate": "success",
        "sweep.promote": "success",
        "sweep.outcome": "success",
        "best_report": "success",
    }
    planned = record.xcom["sweep.generate"]
    assert len(planned) == 5
    assert {trial["rev"] for trial in planned} == {dvc_project.head()}
    assert {(t["study"]["search"], t["study"]["pruner"]) for t in planned} == {("tpe", "median")}

    # Each trial asked the study for its point as it started: the enqueued points in order, then the sampler's.
    results = sorted((record.xcom[f"sweep.trial[{i}]"] for i in range(5)), key=lambda r: r["study_trial"])
    assert [r["study_trial"] for r in results] == [0, 1, 2, 3, 4]
    assert tuple(r["params"]["train.learning_rate"] for r in results[:4]) == LAGGARD_LAST
    assert all(0.03 <= r["params"]["train.learning_rate"] <= 1.0 for r in results)
    assert all(r["params"]["train.epochs"] in (25, 50, 75, 100) for r in results)
    assert len({r["params"]["train.learning_rate"] for r in results}) == 5

    # The laggards were pruned from the per-epoch training loss the stage logs with DVCLive, after
    # the warm-up epochs; the others are experiments on the git remote, at the commit the sweep started from.
    refs = dvc_project.remote_refs()
    done = [r for r in results if r["status"] == "success"]
    pruned = [r for r in results if r["status"] == "pruned"]
    assert len(done) + len(pruned) == 5
    laggard = results[3]
    assert laggard["status"] == "pruned", [(r["params"], r["status"]) for r in results]
    for result in pruned:
        assert 10 <= result["pruned_at"] < result["params"]["train.epochs"]
        assert result["error"].startswith(f"pruned at step {result['pruned_at']} (logloss = ")
    for result in done:
        head = dvc_project.head()
        assert result["exp_ref"] == f"refs/exps/{head[:2]}/{head[2:]}/{result['name']}"
        assert refs[result["exp_ref"]] == result["sha"]
        assert result["value"] == result["metrics"]["metrics.json"]["logloss"]

    summary = record.xcom["sweep.leaderboard"]
    json.dumps(summary, allow_nan=False)
    board = summary["leaderboard"]
    assert board["objective"] == "logloss"
    assert board["goal"] == "minimize"
    ranked = board["trials"][: len(done)]  # a pruned trial is never ranked: it has no value, and comes last
    assert sorted(t["name"] for t in ranked) == sorted(r["name"] for r in done)
    assert [(t["status"], t["value"]) for t in board["trials"][len(done) :]] == [("pruned", None)] * len(pruned)
    values = [t["value"] for t in ranked]
    assert values == sorted(values)
    assert summary["best"]["name"] == ranked[0]["name"]
    assert summary["best"]["value"] == min(r["value"] for r in done)
    assert summary["target_met"] is False
    assert (summary["succeeded"], summary["failed"], summary["skipped"], summary["pruned"]) == (
        len(done),
        0,
        0,
        len(pruned),
    )
    report = (tmp_path / "reports").rglob("report.md")
    texts = {path.parent.name: path.read_text() for path in report}
    assert "| rank | trial | train.epochs | train.learning_rate | logloss | status |" in texts["sweep.leaderboard"]
    assert f"Best trial: {summary['best']['name']}" in texts["sweep.leaderboard"]
    assert f"{len(pruned)} pruned." in texts["sweep.leaderboard"]
    assert record.xcom["best_report"]["sha"] == summary["best"]["sha"]
    assert f"Best trial: {summary['best']['name']}" in texts["best_report"]  # the leaderboard as a section
    assert "Decision: **promote** (against nothing deployed)." in texts["best_report"]

    # The best trial is on a branch of the remote, and released: GTO tags at its commit.
    best, refs = summary["best"], dvc_project.remote_refs()
    assert refs[f"refs/heads/sweep/{best['name']}"] == best["sha"]
    assert record.xcom["sweep.branch"]["created"] is True
    outcome = record.xcom["sweep.outcome"]
    assert outcome == {
        "promoted": True,
        "decision": "promoted",
        "approval": None,
        "model": MODEL,
        "stage": "prod",
        "trial": best["name"],
        "branch": f"sweep/{best['name']}",
        "sha": best["sha"],
        "version": "v0.1.0",
        "tags": [f"{MODEL}@v0.1.0", f"{MODEL}#prod#1"],
        "replaced": None,
        "reasons": [],
        "champion": None,  # nothing was deployed: the floors alone decided
        "metrics": outcome["metrics"],
    }
    assert [m["metric"] for m in outcome["metrics"]] == ["accuracy", "logloss"]
    assert dvc_project.remote_tags() == {f"{MODEL}@v0.1.0": best["sha"], f"{MODEL}#prod#1": best["sha"]}

    # A fresh clone sees the finished trials with DVC's own commands.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(dvc_project.remote), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "exp", "pull", "origin", *[r["name"] for r in done]], cwd=clone, check=True)
    shown = subprocess.run([*dvc, "exp", "show", "--json"], cwd=clone, check=True, capture_output=True, text=True)
    names = {exp.get("name") for entry in json.loads(shown.stdout) for exp in entry.get("experiments") or []}
    assert {r["name"] for r in done} <= names


SWEEP_DAG = """
import pendulum
from airflow.sdk import DAG
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

with DAG("{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    SweepTaskGroup(
        group_id="sweep",
        space={{"train.epochs": {epochs}}},
        objective="accuracy",
        target={target},
        max_failed_trials={max_failed},
        rev="main",
        promote={promote!r},
    )
"""
#: A release no trial can earn: accuracy above 1.
UNREACHABLE = {"model": MODEL, "stage": "prod", "rules": {"accuracy": {"direction": "higher", "floor": 1.01}}}


def sweep_dag(
    dag_id: str,
    *,
    epochs: list,
    target: float | None = None,
    max_failed: int | None = None,
    promote: dict | None = None,
) -> str:
    return SWEEP_DAG.format(dag_id=dag_id, epochs=epochs, target=target, max_failed=max_failed, promote=promote)


def test_failed_trials_count_against_max_failed_trials_and_nothing_is_promoted_that_is_refused(
    run_dag, dvc_project, dvc_connection, use_cache, capfd
):
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    source = sweep_dag("sweep_tolerant", epochs=["many", 10], max_failed=1, promote=UNREACHABLE)
    record = run_dag("sweep_tolerant", source=source)
    assert record.state == "success", record.task_states
    assert record.task_states["sweep.trial[0]"] == "success"  # a failed trial is a result, not a failed task
    assert record.xcom["sweep.trial[0]"]["status"] == "failed"
    assert "train" in record.xcom["sweep.trial[0]"]["error"]
    summary = record.xcom["sweep.leaderboard"]
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (1, 1, 0)
    assert summary["best"]["name"] == record.xcom["sweep.trial[1]"]["name"]
    assert [t["status"] for t in summary["leaderboard"]["trials"]] == ["success", "failed"]
    # The gate refuses the best trial: it stays on its branch, nothing is tagged, the run is green.
    assert (record.task_states["sweep.gate"], record.task_states["sweep.promote"]) == ("success", "skipped")
    assert record.task_states["sweep.outcome"] == "success"
    outcome = record.xcom["sweep.outcome"]
    assert (outcome["promoted"], outcome["version"], outcome["tags"]) == (False, None, [])
    assert outcome["reasons"] == [f"accuracy: accuracy = {summary['best']['value']:g} is below the floor 1.01"]
    assert dvc_project.remote_refs()[f"refs/heads/{outcome['branch']}"] == summary["best"]["sha"]
    assert dvc_project.remote_tags() == {}

    # Too many failed trials: the leaderboard fails and the promotion does not even start.
    strict = run_dag(
        "sweep_strict", source=sweep_dag("sweep_strict", epochs=["many", 10], max_failed=0, promote=UNREACHABLE)
    )
    assert strict.state == "failed", strict.task_states
    assert strict.task_states["sweep.leaderboard"] == "failed"
    assert {strict.task_states[f"sweep.{t}"] for t in ("branch", "gate", "promote", "outcome")} == {"upstream_failed"}
    assert "1 of 2 trials failed, more than max_failed_trials=0" in capfd.readouterr().out
    assert dvc_project.remote_tags() == {}


def test_a_met_target_skips_the_trials_that_start_after_it(run_dag, dvc_project, dvc_connection, use_cache, capfd):
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    record = run_dag("sweep_early", source=sweep_dag("sweep_early", epochs=[10, 20, 30], target=0.0))
    assert record.state == "success", record.task_states
    states = sorted(record.task_states[f"sweep.trial[{i}]"] for i in range(3))
    assert states == ["skipped", "skipped", "success"]  # dag.test() runs one task at a time
    summary = record.xcom["sweep.leaderboard"]
    assert summary["target_met"] is True
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (1, 0, 2)
    assert [t["status"] for t in summary["leaderboard"]["trials"]] == ["success", "skipped", "skipped"]
    assert "already reached accuracy" in capfd.readouterr().out
