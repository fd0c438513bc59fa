"""Per-stage overhead: a pipeline run as one Airflow task per stage, against DVC by hand.

Project: a chain of four stages ``a -> b -> c -> d`` over ``data/raw.csv`` (tracked by DVC), each
sleeping ``STAGE_SECONDS`` and writing a small output (cached by DVC and pushed, for the next
stage's task to pull on whichever worker), with no ``dvc.lock`` committed: every stage runs.

Ours: a DAG with :class:`~airflow_provider_mlci.task_groups.dvc.DvcPipelineTaskGroup` (per-stage
mode: ``pipeline.resolve``, then one task per stage, each with its own checkout, pull, repro of
its stage and push of outputs and run-cache), run with ``dag.test()``; the whole call is timed.
``dag.test()`` runs the tasks one after another in this process, so they share one worker cache;
every sample has its own copy of the remotes and an empty worker cache (``[mlci] cache_dir``).
The run must succeed with every stage task reporting ``{stage: "ran"}`` and the outputs must
reach the sample's DVC remote. The first ``dag.test()`` of the process also starts Airflow's
in-process execution API (~2.5 s, once). A line per sample says where the time went: each
task's span (metadata DB) and the mean phases of a stage task (timestamps of its log lines).

Baseline: in a fresh clone of another copy, ``dvc pull`` of the data, ``dvc repro`` and
``dvc push --run-cache`` (``bench_repro.by_hand``). Full mode: ``STAGE_SECONDS`` per stage,
3 samples each, interleaved; quick mode: ``QUICK_STAGE_SECONDS``, one sample each (~35 s in
all). The baseline does the same work (every stage run, outputs and run-cache pushed) in one
process, as a CI job would: what the row shows is the price of one task per stage. Checked
(by ``bench_repro.by_hand``): every stage locked with its outputs present. Goal: <= 1.25x.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import statistics
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from bench._common import Comparison, check, interleave, samples, timed
from bench._projects import chain_project
from bench.bench_repro import by_hand

DAG_ID = "bench_pipeline"
STAGES = ("a", "b", "c", "d")
STAGE_SECONDS = 5.0
QUICK_STAGE_SECONDS = 1.0

DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

    with DAG(dag_id={dag_id!r}, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        DvcPipelineTaskGroup(group_id="pipeline", project_dir={project_dir!r}, rev="main")
    """
)


def run(quick: bool) -> Iterator[Comparison]:
    seconds = QUICK_STAGE_SECONDS if quick else STAGE_SECONDS
    repeats = samples(quick, full=3)
    with tempfile.TemporaryDirectory(prefix="mlci-bench-pipeline-") as tmp:
        root = Path(tmp)
        template = chain_project(root / "template", stages=len(STAGES), stage_seconds=seconds)
        saved = {key: os.environ.get(key) for key in ("AIRFLOW_CONN_MLCI_DVC_DEFAULT", "AIRFLOW__MLCI__CACHE_DIR")}
        try:
            with _output_to(root / "setup.log"):  # Airflow's database set-up and parse, quietly
                dag = _dag(template.copy_to(root / "dag-copy").work, root / "parse-cache")
            counter = iter(range(1000))
            notes: list[str] = []
            ours, base = interleave(
                lambda: _ours(dag, template, root / f"ours-{next(counter)}", notes),
                lambda: by_hand(template, root / f"base-{next(counter)}", pull=("data/raw.csv.dvc",)),
                repeats,
            )
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    for note in notes:
        print(f"  pipeline, ours: {note}", flush=True)
    yield Comparison(
        name=f"pipeline as per-stage tasks ({len(STAGES)} stages x {seconds:.0f} s)",
        ours=ours,
        baseline=base,
        baseline_name="git clone + dvc pull + dvc repro + dvc push --run-cache",
        max_ratio=1.25,
    )


def _dag(project_dir: Path, cache: Path) -> Any:
    """Write the DAG file into the DAGs folder and parse it as the dag-processor does."""
    from airflow.configuration import conf

    from airflow_provider_mlci.testing.airflow import dag_bag

    _init_db()
    folder = Path(conf.get("core", "dags_folder"))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{DAG_ID}.py"
    path.write_text(DAG_SOURCE.format(dag_id=DAG_ID, project_dir=str(project_dir)))
    os.environ["AIRFLOW__MLCI__CACHE_DIR"] = str(cache)  # the render cache of the parse
    bag = dag_bag(path)
    if bag.import_errors or DAG_ID not in bag.dags:
        raise RuntimeError(f"{path} did not parse: {bag.import_errors}")
    return bag.dags[DAG_ID]


_DB_READY = False


def _init_db() -> None:
    """Create the SQLite metadata database of the benchmarks' ``AIRFLOW_HOME`` once."""
    global _DB_READY
    if not _DB_READY:
        from airflow.utils import db

        db.initdb()
        _DB_READY = True


def _ours(dag: Any, template: Any, scratch: Path, notes: list[str]) -> float:
    """Run the DAG once on a fresh copy of the project with an empty worker cache."""
    project = template.copy_to(scratch / "p")
    cache = scratch / "worker-cache"
    connection = {
        "conn_type": "mlci_dvc",
        "host": str(project.remote),
        "extra": {"dvc_remote_url": project.dvc_remote_url},
    }
    os.environ["AIRFLOW_CONN_MLCI_DVC_DEFAULT"] = json.dumps(connection)
    os.environ["AIRFLOW__MLCI__CACHE_DIR"] = str(cache)
    objects = _remote_objects(project.dvc_remote_url)
    log = scratch / "dag-test.log"
    result: list[Any] = []
    with _output_to(log):
        seconds = timed(lambda: result.append(dag.test()))
    try:
        _check(result[0].run_id, project, cache, objects)
    except AssertionError:
        print(log.read_text()[-20000:], file=sys.stderr)
        raise
    notes.append(f"{seconds:.1f} s in dag.test(); {_breakdown(result[0].run_id)}; {_phases(log.read_text())}")
    return seconds


@contextlib.contextmanager
def _output_to(path: Path) -> Iterator[None]:
    """Send everything written to this process's stdout and stderr (and its children's) to ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with path.open("w") as fh:
        os.dup2(fh.fileno(), 1)
        os.dup2(fh.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)


def _check(run_id: str, project: Any, cache: Path, objects_before: int) -> None:
    """The run succeeded, each stage ran in its own task, and the work went to this sample's
    remote and worker cache (not somewhere else)."""
    from airflow_provider_mlci.testing.airflow import latest_run

    record = latest_run(DAG_ID, run_id)
    check(record is not None and record.state == "success", "bench_pipeline", f"the run did not succeed: {record}")
    states = set(record.task_states.values())
    check(states == {"success"}, "bench_pipeline", f"not every task succeeded: {record.task_states}")
    for stage in STAGES:
        stages = (record.xcom.get(f"pipeline.{stage}") or {}).get("stages")
        check(stages == {stage: "ran"}, "bench_pipeline", f"pipeline.{stage} returned stages={stages!r}")
    check(any((cache / "mirrors").iterdir()), "bench_pipeline", f"the run did not use the worker cache {cache}")
    added = _remote_objects(project.dvc_remote_url) - objects_before
    check(added >= len(STAGES), "bench_pipeline", f"only {added} objects reached the DVC remote")


def _remote_objects(url: str) -> int:
    return sum(len(files) for _, _, files in os.walk(url))


def _breakdown(run_id: str) -> str:
    """Each task's span (start to end) and the gaps between them, from the metadata database."""
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == DAG_ID, TaskInstance.run_id == run_id)
        ).all()
        spans = sorted((ti.start_date.timestamp(), ti.end_date.timestamp(), ti.task_id) for ti in tis)
    parts, previous = [], None
    for start, end, task_id in spans:
        gap = f"+{start - previous:.1f} " if previous is not None else ""
        parts.append(f"{gap}{task_id.removeprefix('pipeline.')} {end - start:.1f}")
        previous = end
    total = spans[-1][1] - spans[0][0]
    mean = statistics.mean(end - start for start, end, task_id in spans if task_id != "pipeline.resolve")
    return f"tasks {total:.1f} s [{', '.join(parts)}] (s; stage tasks {mean:.1f} s on average)"


# Log lines that mark where a stage task's time goes (Airflow's, ours, DVC's): the first of each.
_MARKS = {
    "start": "[DAG TEST] running task",
    "checkout": "Checked out ",
    "command": "> python stage.py",
    "lock": " lock file 'dvc.lock'",
    "outcome": "Stage ",  # the operator's "Stage <name>: ran"
    "end": "[DAG TEST] end task",
}
_PHASES = (
    ("task start + checkout", "start", "checkout"),
    ("DVC child start + hand-off + pull", "checkout", "command"),
    ("stage command", "command", "lock"),
    ("push + hand-off + child exit", "lock", "outcome"),
    ("task end", "outcome", "end"),
)
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z?")


def _phases(log: str) -> str:
    """The mean of each phase of the stage tasks, from the timestamps of their log lines."""
    tasks: list[dict[str, float]] = []
    for line in log.splitlines():
        stamp = _STAMP.match(line)
        if not stamp:
            continue
        when = datetime.fromisoformat(stamp.group(1)).timestamp()
        if _MARKS["start"] in line:
            tasks.append({})
        for mark, text in _MARKS.items():
            if tasks and text in line:
                tasks[-1].setdefault(mark, when)
    stage_tasks = [marks for marks in tasks if "command" in marks]
    parts = []
    for name, first, last in _PHASES:
        spans = [marks[last] - marks[first] for marks in stage_tasks if first in marks and last in marks]
        if spans:
            parts.append(f"{name} {statistics.mean(spans):.2f}")
    return f"stage task phases, mean s: {', '.join(parts) or 'not found in the log'}"
