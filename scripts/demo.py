"""``make demo``: two nights of refinement and a hyperparameter sweep, end to end on the embedded default.

Everything lives under ``.demo/`` in the checkout: an Airflow home with a SQLite database, the
demo DVC project (copied from ``example_dags/demo_project``, day 0's data generated) pushed to a
local bare git remote and a local DVC remote, the worker cache and the reports. Then, with
``airflow dags test``:

1. ``example_nightly_refinement`` for day 1: nothing is deployed yet, so it trains from scratch,
   validates, and the gate (floors only) releases ``fraud-detector`` v0.1.0 to ``prod``;
2. a new day of data lands on ``main``; ``example_nightly_refinement`` for day 2 fine-tunes the
   deployed model on all the data and the gate compares it with v0.1.0 on the frozen evaluation
   set: it is promoted or the deployed model is kept;
3. ``example_hyperparameter_sweep`` runs 8 trials of an adaptive sweep: each asks an Optuna study
   (TPE) for its point, and the median pruner stops the ones whose per-epoch training loss (which
   the demo's training logs with DVCLive) lags the finished trials'; the others are DVC experiments
   pushed to the git remote. It ranks them and releases the best one only if it beats the
   deployed model.

The script prints each decision, every trial's outcome (pruned ones with the epoch they were
stopped at), the best trial and where the reports are. ``--trials`` changes
the sweep's size; ``--repo-url`` points the connection at another repository (to see how bad
input fails).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / ".demo"
BIN = Path(sys.executable).parent

sys.path.insert(0, str(ROOT))

# "2026-11-26T14:04:35.964Z [info     ] Running stage 'prepare':   [logger.name] key=value"
_LOG_LINE = re.compile(r"^\S+ \[(?P<level>[a-z ]+)\] (?P<message>.*?)\s+\[[\w.]+\]( .*)?$")


def step(number: int, total: int, text: str) -> None:
    print(f"\n[{number}/{total}] {text}", flush=True)


def build_project(root: Path) -> Any:
    """Create the demo project, its bare git remote and its DVC remote."""
    from airflow_provider_mlci.testing import create_demo_project

    project = create_demo_project(ROOT / "example_dags" / "demo_project", root, rows=2000)
    print(f"    git remote: {project.remote}  (branch main at {project.head()[:12]})")
    print(f"    DVC remote: {project.dvc_remote_url}")
    return project


def airflow_env(repo_url: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(DEMO / "airflow"),
            "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "example_dags"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
            "AIRFLOW__MLCI__CACHE_DIR": str(DEMO / "worker-cache"),
            "AIRFLOW_CONN_MLCI_DVC_DEFAULT": json.dumps({"conn_type": "mlci_dvc", "host": repo_url}),
            "PATH": os.pathsep.join([str(BIN), env.get("PATH", "")]),
        }
    )
    return env


def run_logged(argv: list[str], env: dict[str, str], log_path: Path, *, show: tuple[str, ...] = ()) -> int:
    """Run a command with its full output in ``log_path``, echoing lines that contain ``show``."""
    with log_path.open("w") as log:
        proc = subprocess.Popen(argv, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        for line in proc.stdout:
            log.write(line)
            if any(marker in line for marker in show):
                match = _LOG_LINE.match(line)
                text = f"{match['level'].strip():7} {match['message']}" if match else line.rstrip()
                print(f"    {text[:160]}", flush=True)
        return proc.wait()


def dags_test(dag_id: str, env: dict[str, str], log_name: str, *, conf: dict[str, Any]) -> Any:
    """``airflow dags test`` one DAG now, echoing the lines that tell the story."""
    from airflow_provider_mlci.testing.airflow import latest_run

    show = ("No fraud-detector model", "Refining", "train: fitted", "evaluate:", "drifted", "no drift",
            "Gate decision", "  because", "ok    ", "FAILED", "Pushed", "Promoted", "Kept the deployed", "on prod:",
            "Trial ", "Error", "Marking task as FAILED", "Dag run in failure")  # fmt: skip
    argv = [str(BIN / "airflow"), "dags", "test", dag_id, "--conf", json.dumps(conf)]
    log_path = DEMO / "logs" / log_name
    code = run_logged(argv, env, log_path, show=show)
    os.environ.update(env)
    record = latest_run(dag_id)
    if code != 0 or record is None or record.state != "success":
        failed = sorted(t for t, s in (record.task_states.items() if record else ()) if s == "failed")
        print(f"    {dag_id} did not succeed (failed: {', '.join(failed) or 'see the log'}); log: {log_path}")
        return None
    print(f"    full log: {log_path}")
    return record


def say_outcome(outcome: dict[str, Any], report: dict[str, Any] | None) -> None:
    champion = outcome.get("champion") or {}
    against = f"against {champion.get('version')}" if champion else "with nothing deployed (floors only)"
    print(f"    candidate {str(outcome.get('sha'))[:12]} {against}:")
    for metric in outcome.get("metrics") or []:
        values = f"{metric['candidate']} (deployed {metric['champion']}, delta {metric['delta']})"
        print(f"      {metric['metric']}: {values}")
    if outcome["promoted"]:
        tags = ", ".join(outcome["tags"])
        print(f"    => PROMOTED {outcome['model']} {outcome['version']} to {outcome['stage']}: {tags}")
    else:
        print(f"    => KEPT the deployed model: {'; '.join(outcome['reasons'])}")
    if report:
        print(f"    report: {report['html']}")


def say_trials(record: Any, trials: int, objective: str) -> None:
    """Each trial's point and outcome, in the order the study gave them out."""
    results = [record.xcom.get(f"sweep.trial[{i}]") for i in range(trials)]
    results = sorted((r for r in results if r), key=lambda r: r.get("study_trial", 0))
    for result in results:
        params = " ".join(f"{name.split('.')[-1]}={value:.4g}" for name, value in sorted(result["params"].items()))
        if result["status"] == "pruned":
            outcome = f"PRUNED at epoch {result['pruned_at']} ({result['error'].split('(', 1)[1].rstrip(')')})"
        elif result["status"] == "success":
            outcome = f"{objective} {result['value']}"
        else:
            outcome = f"{result['status']}: {result.get('error') or ''}"[:100]
        print(f"    trial {result.get('study_trial', '?')}: {params:36} {outcome}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=int(os.environ.get("TRIALS") or 8), help="sweep size (8)")
    parser.add_argument("--repo-url", default=os.environ.get("REPO_URL") or None, help="another repository URL")
    args = parser.parse_args()
    started = time.monotonic()
    total = 6

    step(1, total, "Creating the demo DVC project (day 0's data) with a local git remote and a local DVC remote")
    for scratch in ("project", "worker-cache", "airflow"):
        shutil.rmtree(DEMO / scratch, ignore_errors=True)
    project = build_project(DEMO / "project")
    repo_url = args.repo_url or str(project.remote)

    step(2, total, f"Preparing Airflow (SQLite metadata database in {DEMO / 'airflow'})")
    env = airflow_env(repo_url)
    (DEMO / "logs").mkdir(parents=True, exist_ok=True)
    if run_logged([str(BIN / "airflow"), "db", "migrate"], env, DEMO / "logs" / "db-migrate.log") != 0:
        print(f"    airflow db migrate failed: see {DEMO / 'logs' / 'db-migrate.log'}")
        return 1

    decisions = []
    # Each night runs "now" (no logical date a month back): the UI then shows them as the short runs they are.
    for day in (1, 2):
        if day == 2:
            step(4, total, "Day 2: a new batch of transactions lands on main; the nightly refinement runs again")
            sha = add_a_day_of_data(project, day - 1)
            print(f"    main is now {sha[:12]}: data/raw.csv grew by one day's batch (dvc add, dvc push, git push)")
        else:
            step(3, total, "Day 1: the nightly refinement, with no model deployed yet")
        record = dags_test("example_nightly_refinement", env, f"refinement-day{day}.log", conf={"rev": "main"})
        if record is None:
            return 1
        begun = record.xcom["refine.start"]
        if begun["from_scratch"]:
            print("    nothing was on prod: trained from scratch")
        else:
            deployed = begun["deployed"]
            print(f"    refined {deployed['version']} ({deployed['sha'][:12]}) on branch {begun['commit']['branch']}")
        print(f"    stages: {record.xcom['refine.refine']['stages']}")
        say_outcome(record.xcom["refine.outcome"], record.xcom.get("refine.report"))
        print(f"    recorded: {record.xcom['refine.record']['summary']}")
        decisions.append((f"day {day}", record.xcom["refine.outcome"]))

    step(
        5, total, f"A hyperparameter sweep: {args.trials} trials, each a DVC experiment; the best one through the gate"
    )
    conf = {"rev": "main", "max_trials": args.trials, "seed": 1, "stage": "prod"}
    record = dags_test("example_hyperparameter_sweep", env, "sweep.log", conf=conf)
    if record is None:
        return 1
    board = record.xcom["sweep.leaderboard"]
    ranked = board["leaderboard"]
    say_trials(record, args.trials, ranked["objective"])
    counts = f"{board['succeeded']} trials succeeded, {board['pruned']} pruned, {board['failed']} failed"
    print(f"    {counts}, {board['skipped']} skipped; top 3:")
    for rank, row in enumerate([r for r in ranked["trials"] if r["value"] is not None][:3], start=1):
        print(f"    #{rank} {row['name']}: {ranked['objective']} {row['value']} {json.dumps(row['params'])}")
    best = board["best"]
    print(f"    best trial: {best['name']} ({best['sha'][:12]}), on branch {record.xcom['sweep.branch']['branch']}")
    say_outcome(record.xcom["sweep.outcome"], record.xcom.get("best_report"))
    decisions.append(("sweep", record.xcom["sweep.outcome"]))

    step(6, total, "Summary")
    for label, outcome in decisions:
        verdict = f"promoted {outcome['version']}" if outcome["promoted"] else "kept the deployed model"
        print(f"    {label:6} {verdict}")
    print(f"    releases: cd {project.work} && git fetch -q --tags && {BIN / 'gto'} show")
    print(
        f"    reports under {DEMO / 'airflow' / 'mlci-reports'}; `make airflow` shows the runs and their Report links"
    )
    port = os.environ.get("PORT", "8080")
    print(f"    model page (after `make airflow`): http://localhost:{port}/mlci/models/fraud-detector")
    print(f"    took {time.monotonic() - started:.0f} s")
    return 0


def add_a_day_of_data(project: Any, day: int) -> str:
    """Append day ``day``'s batch to data/raw.csv, track it, push data and commit; return the commit."""
    subprocess.run(
        [sys.executable, "src/generate.py", "--day", str(day), "--rows", "1000"], cwd=project.work, check=True
    )
    project.dvc("add", "--quiet", "data/raw.csv")
    return project.commit_and_push(f"Transactions of day {day}")


if __name__ == "__main__":
    sys.exit(main())
