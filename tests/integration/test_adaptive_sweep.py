"""An adaptive sweep, run for real with ``dag.test()``: each trial asks an Optuna study for its point,
runs it as a DVC experiment and tells the study the result; ``resume=True`` carries the study to the
next run; a study database that cannot be reached fails ``generate`` before any trial runs.

The study lives in the default journal file under the Airflow home (a local executor).
"""

from __future__ import annotations

import textwrap

import pytest
from optuna.trial import TrialState

from airflow_provider_mlci.core.experiments.study import StudyConfig, open_study
from airflow_provider_mlci.core.experiments.sweep import SearchSpace
from airflow_provider_mlci.hooks.study import StudyHook
from airflow_provider_mlci.report_store import safe_run
from tests.helpers.slow_training import install_slow_training, trace_of

DAG_ID = "adaptive_sweep"
SPACE = {"train.learning_rate": {"loguniform": [0.03, 1.0]}, "train.epochs": [10, 20]}
DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with DAG(dag_id="adaptive_sweep", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        SweepTaskGroup(
            group_id="sweep",
            space={space},
            objective="accuracy",
            goal="max",
            max_trials=3,
            seed=5,
            rev="main",
            search="tpe",
            sampler_options={{"n_startup_trials": 2}},
            resume=True,
            enqueue=[{{"train.learning_rate": 0.3, "train.epochs": 20}}],
            optuna_conn_id={conn!r},
        )
    """
)


def trials_of(name: str) -> list:
    study = open_study(StudyHook().storage(), name, StudyConfig(), SearchSpace.of(SPACE))
    return study.get_trials(deepcopy=False)


def test_trials_ask_the_study_tell_it_and_the_next_run_resumes_it(run_dag, dvc_project, dvc_connection, worker_cache,
                                                                  monkeypatch, tmp_path):  # fmt: skip
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    source = DAG_SOURCE.format(space=SPACE, conn=None)

    first = run_dag(DAG_ID, source=source)
    assert first.state == "success", first.task_states
    slots = first.xcom["sweep.generate"]
    assert [(s["params"], s["study"]["name"], s["study"]["search"]) for s in slots] == [
        ({}, "adaptive_sweep.sweep", "tpe")
    ] * 3
    results = [first.xcom[f"sweep.trial[{i}]"] for i in range(3)]
    assert all(r["status"] == "success" for r in results)
    # The enqueued known-good point came first (study trial 0, whichever slot asked first); every
    # trial's params are the study's, and so is its value.
    first_asked = next(r for r in results if r["study_trial"] == 0)
    assert first_asked["params"] == {"train.learning_rate": 0.3, "train.epochs": 20}
    told = {t.number: t for t in trials_of("adaptive_sweep.sweep")}
    assert [t.state for t in told.values()] == [TrialState.COMPLETE] * 3
    for result in results:
        trial = told[result["study_trial"]]
        assert (trial.params, trial.value) == (result["params"], result["value"])
        assert trial.user_attrs["mlci_key"].startswith(f"{DAG_ID}/{first.run_id}/sweep.trial/")
    refs = dvc_project.remote_refs()
    assert all(refs[r["exp_ref"]] == r["sha"] for r in results)  # each trial is a DVC experiment
    assert first.xcom["sweep.leaderboard"]["best"]["value"] == max(t.value for t in told.values())
    # The leaderboard report charts the study: history, parallel coordinates, importances.
    page = (tmp_path / "reports" / DAG_ID / safe_run(first.run_id) / "sweep.leaderboard" / "report.html").read_text()
    for chart in ("history", "parallel", "importance"):
        assert f"<img id='study-{chart}' alt=" in page, chart

    second = run_dag(DAG_ID, source=source)
    assert second.state == "success", second.task_states
    after = trials_of("adaptive_sweep.sweep")
    assert len(after) == 6  # resume=True: the same study, the first run's trials still in it
    assert {t.user_attrs["mlci_key"].split("/")[1] for t in after} == {first.run_id, second.run_id}


def test_a_study_database_that_cannot_be_reached_fails_generate_naming_the_connection(
    run_dag, dvc_project, dvc_connection, worker_cache, monkeypatch, capfd
):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    monkeypatch.setenv("AIRFLOW_CONN_OPTUNA_DB", "postgres://optuna:secret@127.0.0.1:1/studies")
    record = run_dag(DAG_ID, source=DAG_SOURCE.format(space=SPACE, conn="optuna_db"))
    assert record.state == "failed"
    assert record.task_states["sweep.generate"] == "failed"
    out = capfd.readouterr().out
    said = "Cannot open the study 'adaptive_sweep.sweep' in the database of connection 'optuna_db': OperationalError"
    assert said in out
    assert "secret" not in out  # the password is in the storage URL only
    assert {k: v for k, v in record.task_states.items() if k.startswith("sweep.trial")} in (
        {"sweep.trial": "upstream_failed"},
        {},
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"search": "bayes"}, r"search='bayes' is not one of 'tpe', 'random', 'grid'"),
        ({"resume": True}, r"sampler_options, optuna_conn_id, study_name, resume and enqueue need search="),
    ],
)
def test_bad_adaptive_options_fail_when_the_dag_is_parsed(args, message):
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.exceptions import MlciConfigError
    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with (
        DAG(dag_id="bad", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")),
        pytest.raises(MlciConfigError, match=message),
    ):
        SweepTaskGroup(group_id="s", space=SPACE, objective="accuracy", max_trials=3, **args)


PRUNED_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with DAG(dag_id="pruned_sweep", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        SweepTaskGroup(
            group_id="sweep",
            space={"train.learning_rate": {"uniform": [0.05, 0.95]}},
            objective="accuracy",
            goal="max",
            max_trials=2,
            rev="main",
            search="random",
            pruner="median",
            pruner_options={"n_startup_trials": 1, "n_warmup_steps": 1},
            enqueue=[{"train.learning_rate": 0.1}, {"train.learning_rate": 0.9}],
        )
    """
)


def test_a_trial_that_will_not_win_is_pruned_and_its_stage_stopped(
    run_dag, dvc_project, dvc_connection, worker_cache, monkeypatch, tmp_path
):
    from airflow_provider_mlci.core.runtime.process import pid_alive

    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    trace = tmp_path / "trace.log"
    install_slow_training(dvc_project, trace)

    record = run_dag("pruned_sweep", source=PRUNED_DAG)
    assert record.state == "success", record.task_states
    good, bad = record.xcom["sweep.trial[0]"], record.xcom["sweep.trial[1]"]
    assert (good["status"], good["value"], good["params"]) == ("success", 0.78, {"train.learning_rate": 0.1})
    assert bad["status"] == "pruned"
    assert bad["params"] == {"train.learning_rate": 0.9}
    step = bad["pruned_at"]
    assert bad["error"] == f"pruned at step {step} (accuracy = {0.5 - 0.4 * step / 10:g})"
    # The bad trial's stage was stopped: it wrote no step after the one it was pruned at, bar the
    # ones written while the watcher's next look came (one a second), and its process is gone.
    pid, written = trace_of(trace, 0.9)
    assert step <= max(written) <= step + 3 < 7, written
    assert not pid_alive(pid)
    # Its partial work is an experiment of its own on the git remote (never ranked): its params and
    # the per-step table as far as the stage wrote it.
    partial = bad["partial_ref"]
    assert partial == bad["exp_ref"] + "-pruned"
    assert partial in dvc_project.remote_refs()
    kept = dvc_project.git("show", f"{partial}:params.yaml", cwd=dvc_project.remote)
    assert "learning_rate: 0.9" in kept
    table = dvc_project.git("show", f"{partial}:dvclive/plots/metrics/accuracy.tsv", cwd=dvc_project.remote)
    assert f"\t{step}\t" in table
    parent = dvc_project.git("rev-parse", f"{partial}^", cwd=dvc_project.remote).strip()
    assert parent == bad["baseline_sha"]
    study = trials_of(record.xcom["sweep.generate"][0]["study"]["name"])  # pruned_sweep.sweep.<run>
    assert [t.state for t in study] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert max(study[1].intermediate_values) == step
    summary = record.xcom["sweep.leaderboard"]
    assert (summary["succeeded"], summary["pruned"], summary["failed"]) == (1, 1, 0)
    page = tmp_path / "reports" / "pruned_sweep" / safe_run(record.run_id) / "sweep.leaderboard" / "report.md"
    assert "- Trials: 1 succeeded, 0 failed, 0 skipped, 1 pruned." in page.read_text()
    assert summary["best"]["name"] == good["name"]


def test_two_workers_ask_and_tell_on_one_study_in_a_real_postgres(monkeypatch):
    """What a distributed executor needs: a study database named by an Airflow connection. Both workers
    open the study at once, so one of them loses the race to create Optuna's tables and tries again."""
    import json
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    from pathlib import Path

    from airflow_provider_mlci.testing.deployment import postgres_server
    from tests.helpers.tools import require_tool
    from tests.unit.core.experiments.test_study import WORKER

    require_tool("runuser", install="Debian: util-linux (run the suite as root: the server runs as postgres)")
    root = Path(tempfile.mkdtemp(prefix="mlci-optuna-pg-", dir="/var/tmp"))  # the postgres user reaches it
    root.chmod(0o755)
    try:
        with postgres_server(root / "pg", database="studies") as url:
            port = int(url.rsplit(":", 1)[1].split("/")[0])
            monkeypatch.setenv("AIRFLOW_CONN_OPTUNA_PG", f"postgres://airflow@127.0.0.1:{port}/studies")
            storage = StudyHook("optuna_pg").storage()
            assert storage == f"postgresql+psycopg2://airflow@127.0.0.1:{port}/studies"
            procs = [
                subprocess.Popen(
                    [sys.executable, "-c", WORKER, storage, str(w)],
                    stdout=subprocess.PIPE,
                    text=True,
                    env={**os.environ, "PYTHONPATH": os.getcwd()},
                )
                for w in (1, 2)
            ]
            numbers = [json.loads(p.communicate(timeout=180)[0]) for p in procs]
            assert [p.returncode for p in procs] == [0, 0]
            assert sorted(numbers[0] + numbers[1]) == list(range(12))
            study = open_study(storage, "shared", StudyConfig(goal="minimize"), SearchSpace.of({"x": [0]}))
            assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 12
            assert len({(t.params["x"], t.params["y"]) for t in study.trials}) == 12
    finally:
        shutil.rmtree(root, ignore_errors=True)
