"""``make demo``: run the demo DAGs end to end on the embedded default.

Everything lives under ``.demo/`` in the checkout: an Airflow home with a SQLite database, the
demo DVC project (copied from ``example_dags/demo_project``) pushed to a local bare git remote
and a local DVC remote, and the worker cache. Then ``airflow dags test`` runs the DAG that
validates the data and reproduces the pipeline, and the script prints the run's state and the
metrics the pipeline produced. Last, a change (more training epochs, on a branch) is reported
against ``main`` with ``example_pr_report``, and the script prints where the report is.

Options (also as ``make demo REV=...``): ``--rev`` reproduces another revision, ``--repo-url``
points the connection at another repository (both to see how bad input fails).
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
DAG_ID = "example_dvc_repro"
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


def commit_training(project: Any, epochs: int, branch: str) -> str:
    """Train for ``epochs`` in the working copy, commit the results to ``branch`` and push it."""
    params = project.work / "params.yaml"
    params.write_text(re.sub(r"epochs: \d+", f"epochs: {epochs}", params.read_text()))
    project.dvc("repro", "--quiet")
    return project.commit_and_push(f"Train for {epochs} epochs", branch=branch)


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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", default=os.environ.get("REV") or "main", help="revision to reproduce (default main)")
    parser.add_argument("--repo-url", default=os.environ.get("REPO_URL") or None, help="another repository URL")
    args = parser.parse_args()
    started = time.monotonic()
    total = 5

    step(1, total, "Creating the demo DVC project with a local git remote and a local DVC remote")
    for scratch in ("project", "worker-cache"):
        shutil.rmtree(DEMO / scratch, ignore_errors=True)
    project = build_project(DEMO / "project")
    repo_url = args.repo_url or str(project.remote)

    step(2, total, f"Preparing Airflow (SQLite metadata database in {DEMO / 'airflow'})")
    env = airflow_env(repo_url)
    (DEMO / "logs").mkdir(parents=True, exist_ok=True)
    if run_logged([str(BIN / "airflow"), "db", "migrate"], env, DEMO / "logs" / "db-migrate.log") != 0:
        print(f"    airflow db migrate failed: see {DEMO / 'logs' / 'db-migrate.log'}")
        return 1

    step(3, total, f"Running the DAG {DAG_ID} with `airflow dags test` (rev={args.rev!r}, repo={repo_url})")
    log_path = DEMO / "logs" / "dags-test.log"
    conf = json.dumps({"rev": args.rev})
    show = ("Checked out", "Validating", "rows valid", "failure case", "Running stage", "is cached",
            "didn't change", "Stage ", "Pulled", "pushed",
            "Error", "Marking task", "Task instance in", "Dag run")  # fmt: skip
    code = run_logged([str(BIN / "airflow"), "dags", "test", DAG_ID, "--conf", conf], env, log_path, show=show)

    step(4, total, "Result")
    os.environ.update(env)
    from airflow_provider_mlci.testing.airflow import latest_run

    record = latest_run(DAG_ID)
    state = record.state if record else "missing"
    result = record.xcom.get("reproduce") if record else None
    for task_id, task_state in sorted(record.task_states.items()) if record else ():
        print(f"    task {task_id}: {task_state}")
    print(f"    DAG run state: {state}")
    checked = record.xcom.get("validate_data") if record else None
    if checked:
        print(f"    data {checked['dataset']}: {checked['rows_checked']} rows against {checked['schema']}, "
              f"valid={checked['valid']} (report: {checked['report_uri']})")  # fmt: skip
    if result:
        print(f"    commit: {result['sha']} ({result['rev']})")
        for stage, outcome in result["stages"].items():
            print(f"    stage {stage}: {outcome}")
        for path, values in result["metrics"].items():
            print(f"    metrics {path}: {json.dumps(values)}")
    print(f"    full log: {log_path}")
    ok = state == "success" and code == 0
    if ok and not args.repo_url:
        ok = report_a_change(project, env, total)
    print(f"    took {time.monotonic() - started:.0f} s")
    return 0 if ok else 1


def report_a_change(project: Any, env: dict[str, str], total: int) -> bool:
    """Commit a trained model on main and a better-trained one on a branch; report the branch against main."""
    from airflow_provider_mlci.testing.airflow import latest_run

    step(5, total, "Reporting a change: branch more-epochs (150 epochs) against main (10 epochs)")
    commit_training(project, 10, "main")
    project.git("checkout", "--quiet", "-b", "more-epochs")
    commit_training(project, 150, "more-epochs")
    log_path = DEMO / "logs" / "report.log"
    conf = json.dumps({"rev": "more-epochs", "baseline_rev": "main"})
    code = run_logged(
        [str(BIN / "airflow"), "dags", "test", "example_pr_report", "--conf", conf],
        env,
        log_path,
        show=("Report:", "Report problem", "Error"),
    )
    record = latest_run("example_pr_report")
    result = record.xcom.get("report") if record else None
    if code != 0 or not result:
        print(f"    the report failed: see {log_path}")
        return False
    print(f"    metrics changed: {', '.join(result['metrics_changed']) or 'none'}")
    print(f"    plots: {', '.join(result['plots'])}")
    print(f"    report: {result['html']}")
    print(f"            {result['markdown']}")
    return True


if __name__ == "__main__":
    sys.exit(main())
