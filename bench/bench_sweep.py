"""A hyperparameter sweep under a real scheduler against DVC's own experiment queue.

Every sample of either arm is a whole cold sweep on its own copy of the project (its own git and
DVC remotes, an empty cache): 4 trials of a 10 s stage (grid of ``train.lr``), 2 at a time; 3
samples per arm, interleaved (``_common.interleave``: the baseline goes first in every other
round). The DAG's trials must all succeed and the queue must leave one experiment per trial.

Ours: a DAG with :class:`~airflow_provider_mlci.task_groups.sweep.SweepTaskGroup`
(``parallel_trials=2``) run by a real Airflow
(:class:`~airflow_provider_mlci.testing.cluster.AirflowCluster`: scheduler, dag-processor,
triggerer, api-server; LocalExecutor, parallelism 2, SQLite). Each trial clones, runs ``dvc exp
run``, pushes outputs and run-cache to the DVC remote and the experiment's ref to the git remote.
Ours includes Airflow's start-up, which it pays: the clock starts when the four components are
started (``airflow db migrate`` before it, as an install step) and stops at the run's
``success``, so it counts their start, the DAG's first parse and the trigger.

Baseline: in a clone of the same project (cloned and data pulled before the clock starts, as a
developer's checkout is), ``dvc exp run --queue -S train.lr=<v>`` once per trial with the same
params, then ``dvc queue start -j 2``, timed until every experiment's ref is in the clone (no
push). It includes the start-up it pays: the queue's Celery workers start inside the clock.

Rows: the cold sweep (both start-ups counted), goal <= 1.25x (Airflow's four components and
the DAG's first parse took ~17 s on 2 cores, about what the queue's workers take); and, from
the same samples, ours from the trigger request to success (Airflow already running, as in
production) against the same baseline, goal <= 1.0x.

Ours again on the production topology (:class:`~airflow_provider_mlci.testing.deployment.Deployment`:
PostgreSQL, Redis, two Celery workers as users of their own with one slot each, the project over
HTTP, its DVC remote and the logs on S3), where it can start (root, PostgreSQL's server,
redis-server): one sample from the trigger request (the deployment already running), printed
for reference against the baseline's median, with no goal (one sample cannot be judged).

**Adaptive** (part ``adaptive``; ``python -m bench bench_sweep:adaptive``; the grid above is part
``grid``): the same project, whose stage now also appends its accuracy after each of its 10 steps
(one a second) to DVCLive's table ``dvclive/plots/metrics/accuracy.tsv``, climbing to a final value
that depends on ``train.lr``. Ours: a DAG with ``SweepTaskGroup(search="tpe", pruner="median")``
over ``train.lr`` log-uniform in [1e-4, 10], 8 trials, 2 at a time, ``seed=0``, TPE's first 3
trials random, the median pruner judging from the third step once 2 trials completed; each trial
asks the study (a journal file under the Airflow home) for its point, and a trial behind the
median of the completed ones at the same step has its stage stopped (the trial's task reads the
table once a second) and counts as pruned. Timed as the grid (cold, and from the trigger request),
on the same kind of Airflow. The sweep must end with every trial completed or pruned, the
leaderboard counting the same, at least one completed. Baseline: the queue as above, with one
experiment per trial that the sample of ours just before it COMPLETED, at the points it completed
them. So the rounds are paired, ours first in each (not alternated as above): K varies from run
to run, since which trials the pruner stops depends on which finish first, and a baseline run
before its sweep could not know its points.

What is compared: the wall time of an adaptive sweep that ran N = 8 trials, of which K completed
(the others stopped early), against DVC's queue running just those K points to their end, 2 at a
time. This is the fair question for an adaptive search: the queue cannot choose points or stop
trials, so the best it can do is to be handed the points worth running; ours has to find them,
and pays for the trials it stopped (a few steps each, plus each trial's clone, study and task
start-up). The rows print each sample's K. Both rows are for reference, with no goal: on a
shared 2-core machine, in three runs (7 samples, K from 3 to 8), ours took 1.41-1.52x the
queue's median from the trigger and 1.67-1.87x cold (a pruned trial's task took 11-25 s on
average though its stage ran ~3 s; a completed one 19-23 s), too far from 1.0x, and too dependent
on how many trials the pruner stops, for a ratio goal to say more than this sentence does. With
the venv's bytecode compiled (2026-12-06; before, every process compiled its imports from source):
1.36x from the trigger, 1.69x cold, K = 2 in all three rounds, a pruned trial's task 5.8 s, a
completed one 12.2 s. Not run in quick mode (a real Airflow and the queue, ~3 min a round).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
import urllib.error
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import Comparison, check, interleave, samples
from bench._projects import ROOT, sweep_project

PARALLEL = 2
DAG_ID = "bench_sweep"
CONN_ID = "mlci_bench_sweep"
LEARNING_RATES = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2)
ARTIFACTS = ROOT / "test-artifacts" / "bench-sweep"
_EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38}/[^/]+$")

DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        SweepTaskGroup(
            group_id="sweep",
            space={{"train.lr": {values!r}}},
            objective="accuracy",
            max_trials={trials},
            parallel_trials={parallel},
            max_failed_trials=0,
            rev="main",
            dvc_conn_id={conn_id!r},
        )
    """
)


TRIALS, TRIAL_SECONDS, SAMPLES = 4, 10.0, 3

ADAPTIVE_DAG_ID = "bench_adaptive_sweep"
ADAPTIVE_TRIALS = 8
ADAPTIVE_SPACE = {"train.lr": {"loguniform": [0.0001, 10.0]}}
ADAPTIVE_SAMPLER = {"n_startup_trials": 3}
ADAPTIVE_PRUNER = {"n_startup_trials": 2, "n_warmup_steps": 2}
ADAPTIVE_WARM_NO_GOAL = "for reference"
ADAPTIVE_COLD_NO_GOAL = "for reference"
ADAPTIVE_DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        SweepTaskGroup(
            group_id="sweep",
            space={space!r},
            objective="accuracy",
            goal="max",
            max_trials={trials},
            parallel_trials={parallel},
            max_failed_trials=0,
            seed=0,
            rev="main",
            dvc_conn_id={conn_id!r},
            search="tpe",
            sampler_options={sampler!r},
            pruner="median",
            pruner_options={pruner!r},
        )
    """
)


def run(quick: bool) -> Iterator[Comparison]:
    yield from _grid(quick)
    yield from _adaptive(quick)


def _grid(quick: bool) -> Iterator[Comparison]:
    """The grid sweep against the queue with the same trials (and on the deployment)."""
    if quick:
        # Starting a real Airflow and DVC's queue costs ~80 s even for two trials of nothing: too
        # much for every `make test`. The sweep itself runs in the test suite (dag.test()), and
        # mapped tasks under a real scheduler in tests/integration/test_cluster.py.
        print("  sweep vs dvc queue: not run in quick mode (~80 s of start-up); `make bench` runs it", flush=True)
        return
    trials, seconds = TRIALS, TRIAL_SECONDS
    values = list(LEARNING_RATES[:trials])
    warm: list[float] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="mlci-bench-sweep-") as tmp:
        root = Path(tmp)
        env = _environment(root)
        template = sweep_project(root / "template", trial_seconds=seconds)
        overrides = _overrides(values)
        counter = iter(range(1000))

        def ours() -> float:
            index = next(counter)
            cold, trigger_to_success, note = _ours(
                template.copy_to(root / f"ours-{index}"), values, env, root / f"airflow-{index}"
            )
            warm.append(trigger_to_success)
            notes.append(f"ours: {note}")
            return cold

        def baseline() -> float:
            index = next(counter)
            took, note = _baseline(template.copy_to(root / f"base-{index}"), overrides, env, root / f"scratch-{index}")
            notes.append(f"baseline: {note}")
            return took

        cold, base = interleave(ours, baseline, samples(quick, full=SAMPLES))
        deployed = _ours_on_deployment(template, values, root / "deployment")
    for note in notes:
        print(f"  sweep, {note}", flush=True)
    baseline_name = f"dvc exp run --queue x{trials} + dvc queue start -j {PARALLEL}"
    shape = f"{trials} trials x {seconds:.0f} s, {PARALLEL} parallel"
    yield Comparison(
        name=f"sweep: {shape}, cold (Airflow start-up counted)",
        ours=cold,
        baseline=base,
        baseline_name=f"{baseline_name} (its workers' start counted)",
        max_ratio=1.25,
    )
    yield Comparison(
        name=f"sweep: {shape}, Airflow already running",
        ours=warm,
        baseline=base,
        baseline_name=f"{baseline_name} (its workers' start counted)",
        max_ratio=1.0,
    )
    if deployed is None:
        print("  sweep on the deployment: not run (it needs root, PostgreSQL and redis-server)", flush=True)
        return
    print(f"  sweep, ours on the deployment: {deployed[1]}", flush=True)
    yield Comparison(
        name=f"  for reference: sweep {trials} x {seconds:.0f} s on Postgres + 2 Celery",
        ours=[deployed[0]],
        baseline=base,
        baseline_name=baseline_name,
        no_goal="one sample, the deployment already running",
    )


def _adaptive(quick: bool) -> Iterator[Comparison]:
    """The adaptive sweep (TPE, median pruner) against the queue with the trials it completed."""
    if quick:
        print(
            "  adaptive sweep vs dvc queue: not run in quick mode (a real Airflow and the queue, as the grid "
            "sweep); `make bench` runs it",
            flush=True,
        )
        return
    from airflow_provider_mlci.core.experiments.sweep import Trial

    trials, seconds = ADAPTIVE_TRIALS, TRIAL_SECONDS
    warm: list[float] = []
    notes: list[str] = []
    completed: list[list[list[str]]] = []  # each sample of ours: the -S strings of its completed trials
    ran: list[int] = []  # each baseline sample: how many experiments it queued
    source = ADAPTIVE_DAG_SOURCE.format(
        dag_id=ADAPTIVE_DAG_ID,
        space=ADAPTIVE_SPACE,
        trials=trials,
        parallel=PARALLEL,
        conn_id=CONN_ID,
        sampler=ADAPTIVE_SAMPLER,
        pruner=ADAPTIVE_PRUNER,
    )
    with tempfile.TemporaryDirectory(prefix="mlci-bench-adaptive-") as tmp:
        root = Path(tmp)
        env = _environment(root)
        template = sweep_project(root / "template", trial_seconds=seconds)
        counter = iter(range(1000))

        def ours() -> float:
            index = next(counter)
            project = template.copy_to(root / f"ours-{index}")
            run = _cluster_sweep(project, env, root / f"airflow-{index}", dag_id=ADAPTIVE_DAG_ID, source=source)
            results = run["results"]
            statuses = [(r or {}).get("status") for r in results]
            ok = len(results) == trials and all(status in ("success", "pruned") for status in statuses)
            check(ok, "bench_sweep", f"the adaptive sweep's trials: {statuses}")
            done = [r for r in results if r["status"] == "success"]
            pruned = [r for r in results if r["status"] == "pruned"]
            board = run["leaderboard"] or {}
            counts = (board.get("succeeded"), board.get("pruned"), board.get("failed"))
            check(counts == (len(done), len(pruned), 0), "bench_sweep", f"the leaderboard counted {counts}")
            check(done, "bench_sweep", "the adaptive sweep completed no trial")
            completed.append([Trial(name=r["name"], params=r["params"]).overrides for r in done])
            warm.append(run["warm"])
            at = ", ".join(str(r.get("pruned_at")) for r in pruned) or "-"
            spans = {
                ti["map_index"]: _ts(ti["end_date"]) - _ts(ti["start_date"])
                for ti in run["tis"]
                if ti["task_id"] == "sweep.trial"
            }
            took = {
                status: [spans[i] for i, r in zip(sorted(spans), results, strict=True) if r["status"] == status]
                for status in ("success", "pruned")
            }
            each = "; ".join(
                f"a {word} trial's task {statistics.mean(took[status]):.1f} s on average"
                for status, word in (("success", "completed"), ("pruned", "pruned"))
                if took[status]
            )
            notes.append(
                f"ours: {len(done)} of {trials} trials completed, {len(pruned)} pruned (at steps {at}); {each}; "
                f"{run['note']}"
            )
            return run["cold"]

        def baseline() -> float:
            # The points the sample of ours just before completed (same round).
            index = next(counter)
            overrides = completed[-1]
            ran.append(len(overrides))
            project = template.copy_to(root / f"base-{index}")
            took, note = _baseline(project, overrides, env, root / f"scratch-{index}")
            notes.append(f"baseline: {len(overrides)} experiments; {note}")
            return took

        # Paired rounds, ours first: the baseline needs the points this round's sweep completed,
        # and K varies from run to run (which trials the pruner stops depends on which finish first).
        cold, base = [], []
        for _ in range(samples(quick, full=SAMPLES)):
            cold.append(ours())
            base.append(baseline())
    for note in notes:
        print(f"  adaptive sweep, {note}", flush=True)
    kept = "/".join(str(len(points)) for points in completed)
    queued = "/".join(str(count) for count in ran)
    shape = f"tpe+median {trials} trials x {seconds:.0f} s ({kept} completed), {PARALLEL} parallel"
    baseline_name = f"dvc exp run --queue x{queued} (ours' completed) + dvc queue start -j {PARALLEL}"
    yield Comparison(
        name=f"adaptive sweep: {shape}, cold (Airflow start-up counted)",
        ours=cold,
        baseline=base,
        baseline_name=f"{baseline_name} (its workers' start counted)",
        no_goal=ADAPTIVE_COLD_NO_GOAL,
    )
    yield Comparison(
        name=f"adaptive sweep: {shape}, Airflow already running",
        ours=warm,
        baseline=base,
        baseline_name=f"{baseline_name} (its workers' start counted)",
        no_goal=ADAPTIVE_WARM_NO_GOAL,
    )


PARTS = {"grid": _grid, "adaptive": _adaptive}


def _environment(root: Path) -> dict[str, str]:
    """What both arms run with: this interpreter first on ``PATH``, a git identity of their own."""
    gitconfig = root / "gitconfig"
    gitconfig.write_text("[user]\n\tname = mlci bench\n\temail = mlci-bench@example.invalid\n")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "GIT_CONFIG_GLOBAL": str(gitconfig), "GIT_CONFIG_NOSYSTEM": "1"}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _overrides(values: list[float]) -> list[list[str]]:
    """The ``-S`` strings of each trial, as the sweep's ``generate`` task makes them."""
    from airflow_provider_mlci.core.experiments.sweep import SearchSpace

    trials = SearchSpace.of({"train.lr": values}).trials(max_trials=len(values), seed=0, map_limit=1024)
    return [trial.overrides for trial in trials]


# ----------------------------------------------------------------------------------- baseline


def _baseline(project: Any, overrides: list[list[str]], env: dict[str, str], scratch: Path) -> tuple[float, str]:
    """Queue every trial and run the queue with ``-j 2``; return the seconds and a note.

    :param project: this arm's copy of the project
    :param overrides: each trial's ``-S`` strings
    :param env: the environment of the DVC commands
    :param scratch: an empty folder for the clone
    """
    clone = scratch / "clone"
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(["git", "clone", "--quiet", str(project.remote), str(clone)], env=env, check=True)
    (clone / ".dvc" / "config.local").write_text(f"['remote \"storage\"']\n    url = {project.dvc_remote_url}\n")
    _run([*dvc, "pull", "--quiet", "data/raw.csv.dvc"], clone, env)
    try:
        started = time.perf_counter()
        for sets in overrides:
            _run([*dvc, "exp", "run", "--queue", *[arg for s in sets for arg in ("-S", s)]], clone, env)
        queued = time.perf_counter()
        _run([*dvc, "queue", "start", "-j", str(PARALLEL)], clone, env)
        _wait_for_experiments(clone, len(overrides), env)
        seconds = time.perf_counter() - started
    finally:
        _stop_queue(clone, env)
    refs = _run(["git", "for-each-ref", "--format=%(refname)"], clone, env).split()
    found = sum(1 for ref in refs if _EXP_REF.match(ref))
    check(found == len(overrides), "bench_sweep", f"the DVC queue left {found} experiments, not {len(overrides)}")
    note = (
        f"{seconds:.1f} s from the first queue command to the last experiment's ref; queueing {queued - started:.1f} s"
    )
    return seconds, note


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def _wait_for_experiments(clone: Path, count: int, env: dict[str, str], timeout: float = 1800) -> None:
    """Wait until ``count`` experiment refs are in ``clone`` (cheap: git, not the DVC CLI).

    :raises RuntimeError: an experiment failed, or the queue's workers are gone
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        working = bool(_processes_in(clone))  # before the refs: the workers may end once the last is in
        refs = _run(["git", "for-each-ref", "--format=%(refname)"], clone, env).split()
        if sum(1 for ref in refs if _EXP_REF.match(ref)) >= count:
            return
        if "refs/exps/celery/failed" in refs or not working:
            status = _run([sys.executable, "-m", "dvc", "queue", "status"], clone, env)
            raise RuntimeError(f"the DVC queue failed or stopped early:\n{status}")
        time.sleep(0.25)
    raise TimeoutError(f"the DVC queue did not run {count} experiments in {timeout} s")


def _stop_queue(clone: Path, env: dict[str, str]) -> None:
    """``dvc queue stop``, then stop whatever still runs in the clone (workers, stage commands)."""
    subprocess.run([sys.executable, "-m", "dvc", "queue", "stop"], cwd=clone, env=env, capture_output=True)
    _stop_processes_in(clone, grace=10)


def _stop_processes_in(folder: Path, *, grace: float) -> None:
    """Wait up to ``grace`` seconds for the processes working in ``folder`` to end, then kill them."""
    from airflow_provider_mlci.testing.procs import wait_dead

    deadline = time.monotonic() + grace
    for pid in _processes_in(folder):
        if not wait_dead(pid, timeout=max(0.0, deadline - time.monotonic())):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def _processes_in(folder: Path) -> list[int]:
    """Live processes whose working directory is ``folder`` or below it (what the queue started)."""
    from airflow_provider_mlci.testing.procs import alive

    folder = folder.resolve()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            cwd = Path(os.readlink(f"/proc/{entry}/cwd"))
        except OSError:
            continue
        if cwd.is_relative_to(folder) and alive(int(entry)):
            found.append(int(entry))
    return found


# ----------------------------------------------------------------------------------- ours


def _ours(project: Any, values: list[float], env: dict[str, str], home: Path) -> tuple[float, float, str]:
    """Start a real Airflow and run the grid sweep DAG on it; return the seconds from the components'
    start to success, from the trigger request to success, and a note.

    :param project: this arm's copy of the project
    :param values: the learning rates of the grid
    :param env: the environment the components start from
    :param home: an empty folder for ``AIRFLOW_HOME``
    """
    source = DAG_SOURCE.format(dag_id=DAG_ID, values=values, trials=len(values), parallel=PARALLEL, conn_id=CONN_ID)
    run = _cluster_sweep(project, env, home, dag_id=DAG_ID, source=source, results=False)
    trials = [ti for ti in run["tis"] if ti["task_id"] == "sweep.trial"]
    ok = len(trials) == len(values) and all(ti["state"] == "success" for ti in trials)
    check(ok, "bench_sweep", f"the sweep's trials: {[(ti['map_index'], ti['state']) for ti in trials]}")
    return run["cold"], run["warm"], run["note"]


def _cluster_sweep(
    project: Any, env: dict[str, str], home: Path, *, dag_id: str, source: str, results: bool = True
) -> dict[str, Any]:
    """Start a real Airflow and run a sweep DAG on it.

    :param project: this arm's copy of the project
    :param env: the environment the components start from
    :param home: an empty folder for ``AIRFLOW_HOME``
    :param dag_id: the DAG's id
    :param source: the DAG file's text
    :param results: also read each trial's result and the leaderboard's from XCom (before Airflow stops)
    :return: ``cold`` (seconds from the components' start to success), ``warm`` (from the trigger
        request), ``note``, ``tis``, and with ``results`` the trials' ``results`` (in map index
        order) and the ``leaderboard``'s summary
    """
    from airflow_provider_mlci.testing.cluster import AirflowCluster

    cluster = AirflowCluster(home=home, log_dir=home / "cluster-logs")
    cluster.env.update(_airflow_env(env, project, home))
    dags = home / "dags"
    dags.mkdir(parents=True)
    (dags / f"{dag_id}.py").write_text(source)
    airflow = str(Path(sys.executable).parent / "airflow")
    _run([airflow, "db", "migrate"], home, cluster.env)
    found: dict[str, Any] = {}
    try:
        started = time.perf_counter()
        cluster.start()
        up = time.perf_counter() - started
        seconds, tis, dag_run = _timed_sweep(cluster, dag_id)
        cold = time.perf_counter() - started
        if results:
            run_id = dag_run["dag_run_id"]
            indexes = sorted(ti["map_index"] for ti in tis if ti["task_id"] == "sweep.trial")
            found["results"] = [cluster.xcom(dag_id, run_id, "sweep.trial", map_index=i) for i in indexes]
            found["leaderboard"] = cluster.xcom(dag_id, run_id, "sweep.leaderboard")
    except BaseException:
        _keep_logs(home)
        raise
    finally:
        cluster.stop()
        _stop_processes_in(home / "worker-cache", grace=5)  # a trial's DVC child runs in a session of its own
    note = (
        f"{cold:.1f} s from the start of Airflow to success (components healthy after {up:.1f} s), "
        f"{seconds:.1f} s from the trigger request; {_breakdown(dag_run, tis)}"
    )
    return {"cold": cold, "warm": seconds, "note": note, "tis": tis, **found}


def _timed_sweep(airflow: Any, dag_id: str = DAG_ID) -> tuple[float, list[dict[str, Any]], dict[str, Any]]:
    """Trigger a sweep DAG on a started Airflow (an ``AirflowDriver``) and wait for it; return the
    seconds from the trigger request to success, the task instances and the DAG run.

    :raises RuntimeError: the run did not succeed
    """
    airflow.wait_for_dag(dag_id, timeout=180)
    started = time.perf_counter()
    run_id = airflow.trigger(dag_id)
    deadline = time.monotonic() + 1800
    while True:
        try:
            state = airflow.wait_for_run(dag_id, run_id, timeout=max(1.0, deadline - time.monotonic()))
            break
        except (TimeoutError, urllib.error.URLError) as exc:
            # One request of the poll that timed out or met a server error (a loaded machine,
            # SQLite busy): poll again. A client error (auth, not found) is no passing trouble.
            client_error = isinstance(exc, urllib.error.HTTPError) and exc.code < 500
            if client_error or time.monotonic() >= deadline:
                raise
            print(f"  sweep: polling the run failed ({exc!r}); polling again", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    tis = airflow.task_instances(dag_id, run_id)
    if state != "success":
        raise RuntimeError(f"the sweep ended {state}: {[(ti['task_id'], ti['map_index'], ti['state']) for ti in tis]}")
    return seconds, tis, airflow.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")


def _ours_on_deployment(template: Any, values: list[float], scratch: Path) -> tuple[float, str] | None:
    """Run the sweep DAG on the production topology (PostgreSQL, Redis, two Celery workers as users
    of their own, DAGs from the git DAG bundle, the project over HTTP, its DVC remote, logs and
    reports on the moto server's S3); return the seconds from trigger to success and a note, or
    ``None`` where that topology cannot start (not root, no PostgreSQL server or redis-server).

    :param template: the project (copied; its DVC remote moves to S3)
    :param values: the learning rates of the grid
    :param scratch: an empty folder
    """
    if os.geteuid() != 0 or not shutil.which("redis-server") or not shutil.which("runuser", path="/usr/sbin:/sbin"):
        return None
    import boto3

    from airflow_provider_mlci.testing.deployment import Deployment, dvc_connection
    from airflow_provider_mlci.testing.git_http import GitHttpServer
    from airflow_provider_mlci.testing.moto import moto_server

    token, bucket = "bench-token-0123456789", "mlci-bench"
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing")):
        os.environ.setdefault(name, value)  # any key opens the moto server (this process and DVC's)
    served = scratch / "served"
    with moto_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
        project = template.copy_to(
            served / "project", dvc_remote_url=f"s3://{bucket}/dvc", dvc_remote_options={"endpointurl": endpoint}
        )
        project.dvc("push", "--quiet")
        dags = scratch / "dags"
        (dags / "dags").mkdir(parents=True)
        source = DAG_SOURCE.format(dag_id=DAG_ID, values=values, trials=len(values), parallel=PARALLEL, conn_id=CONN_ID)
        (dags / "dags" / f"{DAG_ID}.py").write_text(source)
        git_env = _environment(scratch)
        for argv in (["init", "-q", "-b", "main"], ["add", "-A"], ["commit", "-q", "-m", "DAGs"]):
            _run(["git", *argv], dags, git_env)
        _run(["git", "clone", "-q", "--bare", str(dags), str(served / "dags.git")], scratch, git_env)
        root = Path(tempfile.mkdtemp(prefix="mlci-bench-deployment-", dir="/var/tmp"))  # every worker user reaches it
        with GitHttpServer(served, username="mlci", token=token) as git:
            url = git.url(str(project.remote.relative_to(served)))
            connection = dvc_connection(url, ("mlci", token), dvc_remote_url=f"s3://{bucket}/dvc", endpoint=endpoint)
            deploy = Deployment(
                root=root,
                project_dir=ROOT,
                dags_url=git.url("dags.git"),
                dags_login=("mlci", token),
                s3_endpoint=endpoint,
                bucket=bucket,
                env={f"AIRFLOW_CONN_{CONN_ID.upper()}": connection},
            )
            try:
                deploy.start()
                seconds, tis, dag_run = _timed_sweep(deploy)
                hosts = sorted({ti["hostname"] for ti in tis if ti["task_id"] == "sweep.trial"})
            except BaseException:
                shutil.copytree(deploy.log_dir, ARTIFACTS / "deployment-logs", dirs_exist_ok=True)
                raise
            finally:
                deploy.stop()
                shutil.rmtree(root, ignore_errors=True)
    note = f"{seconds:.1f} s from the trigger request to success; trials on {', '.join(hosts)}; "
    return seconds, note + _breakdown(dag_run, tis)


def _airflow_env(env: dict[str, str], project: Any, home: Path) -> dict[str, str]:
    """The settings of this arm's Airflow: its own home and database, the project's connection."""
    connection = {
        "conn_type": "mlci_dvc",
        "host": str(project.remote),
        "extra": {"dvc_remote_url": project.dvc_remote_url},
    }
    return {
        **env,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__MLCI__CACHE_DIR": str(home / "worker-cache"),
        "AIRFLOW__MLCI__REPORTS_DIR": str(home / "reports"),
        f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection),
    }


def _breakdown(dag_run: dict[str, Any], tis: list[dict[str, Any]]) -> str:
    """Where the run's time went: its span in the DB, each step's span, the trials' mean."""
    span = _ts(dag_run["end_date"]) - _ts(dag_run["start_date"])
    by_id: dict[str, list[tuple[float, float]]] = {}
    for ti in tis:
        by_id.setdefault(ti["task_id"], []).append((_ts(ti["start_date"]), _ts(ti["end_date"])))
    trials = by_id.get("sweep.trial", [])
    generate, board = by_id["sweep.generate"][0], by_id["sweep.leaderboard"][0]
    first, last = min(s for s, _ in trials), max(e for _, e in trials)
    mean = statistics.mean(e - s for s, e in trials)
    return (
        f"DB run span {span:.1f} s; queued->start {_ts(dag_run['start_date']) - _ts(dag_run['queued_at']):.1f} s; "
        f"generate {generate[1] - generate[0]:.1f} s; gap {first - generate[1]:.1f} s; "
        f"trials {last - first:.1f} s (each {mean:.1f} s on average); gap {board[0] - last:.1f} s; "
        f"leaderboard {board[1] - board[0]:.1f} s; to run end {_ts(dag_run['end_date']) - board[1]:.1f} s"
    )


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


def _keep_logs(home: Path) -> None:
    """Copy the components' and tasks' logs to ``test-artifacts/bench-sweep`` for a look after a failure."""
    for name in ("cluster-logs", "logs"):
        if (home / name).is_dir():
            shutil.copytree(home / name, ARTIFACTS / name, dirs_exist_ok=True)
    print(f"  sweep: logs kept in {ARTIFACTS}", file=sys.stderr)
