"""Parse cost.

1. ``dag``: an example DAG file against a control DAG of the same shape using only
   ``airflow.sdk`` (the fair baseline: the same DAG written without us). Goal: <= 1.5x.
2. ``import``: importing our operator module, what every DAG file using us pays on top of
   ``airflow.sdk``, against two baselines: parsing a plain ``airflow.sdk`` DAG file (two
   ``@task``s, no provider import; what any DAG file costs anyway), goal <= 0.5x; and, for
   reference only, importing the Amazon provider's EC2 operators (boto3-heavy, so it flatters us).
   Each sample of 1. and 2. is a fresh interpreter that has already imported ``airflow.sdk`` (as
   the dag-processor has) and times only the thing measured; the arms are interleaved. Each
   sample also checks its result: the DAG file defined its DAG with the expected tasks, our
   import loaded none of dvc, pandas, pandera, numpy, boto3/botocore or sklearn.
3. ``report``: ``airflow dags report`` (how Airflow itself measures parsing) of a DAG holding a
   ``DvcPipelineTaskGroup`` over a 4-stage project against a DAG of the same shape made of plain
   ``@task``s. Goal: within 20 ms. Both files must parse into one DAG each.

``python -m bench bench_parse:import`` runs one part.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path

from bench._common import Comparison, check, rotate, samples

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_dags" / "example_dvc_repro.py"
BIN = Path(sys.executable).parent

CONTROL_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, Param, task

    with DAG(dag_id="control", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             catchup=False, params={"rev": Param("main", type="string")}, tags=["mlci"]):
        @task
        def reproduce(rev: str) -> dict:
            return {"rev": rev}

        @task
        def report(result: dict) -> dict:
            return result

        report(reproduce("{{ params.rev }}"))
    """
)

FOUR_STAGES = textwrap.dedent(
    """
    stages:
      prepare:
        cmd: python prepare.py
        deps: [raw.csv]
        outs: [prepared]
      features:
        cmd: python features.py
        deps: [prepared]
        outs: [features]
      train:
        cmd: python train.py
        deps: [features]
        outs: [model.pkl]
      evaluate:
        cmd: python evaluate.py
        deps: [model.pkl, features]
        metrics:
          - metrics.json:
              cache: false
    """
)

GROUP_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

    with DAG(dag_id="with_group", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        DvcPipelineTaskGroup(group_id="pipeline", project_dir="project", rev="main")
    """
)

PLAIN_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task, task_group

    with DAG(dag_id="plain", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @task_group(group_id="pipeline")
        def pipeline():
            @task
            def resolve():
                return "sha"

            @task
            def prepare(sha):
                return {}

            @task
            def features(sha):
                return {}

            @task
            def train(sha):
                return {}

            @task
            def evaluate(sha):
                return {}

            sha = resolve()
            p = prepare(sha)
            f = features(sha)
            t = train(sha)
            e = evaluate(sha)
            p >> f >> t >> e
            f >> e

        pipeline()
    """
)

PLAIN_SDK_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    with DAG(dag_id="plain_sdk", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
        @task
        def extract() -> dict:
            return {"rows": 1}

        @task
        def load(result: dict) -> None:
            print(result)

        load(extract())
    """
)

#: What importing our operators must not load (DESIGN.md: "Parsing is free").
HEAVY = ("dvc", "pandas", "pandera", "numpy", "boto3", "botocore", "sklearn")

_PROBE = """
import json, sys, time, runpy, importlib
import airflow.sdk
from airflow.sdk.definitions._internal.contextmanager import DagContext
DagContext.current_autoregister_module_name = "__main__"  # collect the DAGs a file defines
started = time.perf_counter()
{action}
seconds = time.perf_counter() - started
dags = {{dag.dag_id: sorted(dag.task_ids) for dag, _ in DagContext.autoregistered_dags}}
heavy = sorted(name for name in {heavy!r} if name in sys.modules)
print(json.dumps({{"seconds": seconds, "dags": dags, "heavy": heavy}}))
"""


def _probe(action: str) -> dict:
    """Run ``action`` in a fresh interpreter that has imported ``airflow.sdk``; return its timing
    (``seconds``), the DAGs it defined (``dags``) and which of :data:`HEAVY` it loaded."""
    code = _PROBE.format(action=action, heavy=HEAVY)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _parse_file(path: Path, dag_id: str, tasks: list[str]) -> float:
    """Seconds to run the DAG file ``path``, checked to define ``dag_id`` with ``tasks``."""
    found = _probe(f"runpy.run_path({str(path)!r})")
    check(found["dags"] == {dag_id: tasks}, "bench_parse", f"{path.name} defined {found['dags']}, not {dag_id}")
    return found["seconds"]


def _import(module: str, *, light: bool) -> float:
    """Seconds to import ``module``; ``light``: checked to load none of :data:`HEAVY`."""
    found = _probe(f"importlib.import_module({module!r})")
    if light:
        check(not found["heavy"], "bench_parse", f"importing {module} loaded {found['heavy']}")
    else:
        check(
            "boto3" in found["heavy"], "bench_parse", f"importing {module} did not load boto3: not the baseline meant"
        )
    return found["seconds"]


def _seconds(text: str) -> float:
    hours, minutes, seconds = text.split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(seconds)


def _dags_report(repeats: int) -> Comparison:
    with tempfile.TemporaryDirectory(prefix="mlci-bench-parse-") as tmp:
        home, dags = Path(tmp) / "home", Path(tmp) / "dags"
        (dags / "project").mkdir(parents=True)
        (dags / "project" / "dvc.yaml").write_text(FOUR_STAGES)
        (dags / ".airflowignore").write_text("project/\n")
        env = {
            **os.environ,
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__MLCI__CACHE_DIR": str(Path(tmp) / "cache"),
        }
        airflow = str(BIN / "airflow")
        subprocess.run([airflow, "db", "migrate"], env=env, check=True, capture_output=True)
        ours, base = [], []
        for index in range(repeats):
            # Files parse in name order and the first pays some one-off imports: alternate.
            group_file, plain_file = ("a_group.py", "b_plain.py") if index % 2 == 0 else ("b_group.py", "a_plain.py")
            for stale in dags.glob("*.py"):
                stale.unlink()
            (dags / group_file).write_text(GROUP_DAG)
            (dags / plain_file).write_text(PLAIN_DAG)
            out = subprocess.run(
                [airflow, "dags", "report", "-o", "json"], env=env, check=True, capture_output=True, text=True
            ).stdout
            table = next(line for line in out.splitlines() if line.startswith("[{"))
            rows = {Path(row["file"]).name: row for row in json.loads(table)}
            for name, dag_id in ((group_file, "with_group"), (plain_file, "plain")):
                found = rows.get(name, {})
                check(
                    str(found.get("dag_num")) == "1" and found.get("dags") == [dag_id],
                    "bench_parse",
                    f"airflow dags report did not find the DAG {dag_id} in {name}: {found}",
                )
            by_file = {name: _seconds(row["duration"]) for name, row in rows.items()}
            ours.append(by_file[group_file])
            base.append(by_file[plain_file])
        shutil.rmtree(home, ignore_errors=True)
    return Comparison(
        name="airflow dags report: DvcPipelineTaskGroup (4 stages)",
        ours=ours,
        baseline=base,
        baseline_name="the same shape made of plain @task",
        delta_goal_ms=20,
    )


def _dag_part(quick: bool) -> Iterator[Comparison]:
    repeats = samples(quick, full=9)
    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp) / "control_dag.py"
        control.write_text(CONTROL_DAG)
        tasks = ["report", "reproduce"]
        dag_ours, dag_base = rotate(
            [
                lambda: _parse_file(EXAMPLE, "example_dvc_repro", ["report", "reproduce", "validate_data"]),
                lambda: _parse_file(control, "control", tasks),
            ],
            repeats,
        )
    yield Comparison(
        name="parse example_dvc_repro.py",
        ours=dag_ours,
        baseline=dag_base,
        baseline_name="same DAG shape with airflow.sdk @task only",
        max_ratio=1.5,
    )


def _import_part(quick: bool) -> Iterator[Comparison]:
    repeats = samples(quick, full=9)
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "plain_sdk_dag.py"
        plain.write_text(PLAIN_SDK_DAG)
        ours, sdk_dag, ec2 = rotate(
            [
                lambda: _import("airflow_provider_mlci.operators.dvc", light=True),
                lambda: _parse_file(plain, "plain_sdk", ["extract", "load"]),
                lambda: _import("airflow.providers.amazon.aws.operators.ec2", light=False),
            ],
            repeats,
        )
    yield Comparison(
        name="import operators.dvc",
        ours=ours,
        baseline=sdk_dag,
        baseline_name="parse a plain airflow.sdk DAG file (2 @task, no provider)",
        max_ratio=0.5,
    )
    yield Comparison(
        name="  for reference: import operators.dvc",
        ours=ours,
        baseline=ec2,
        baseline_name="import amazon EC2 operators (boto3-heavy)",
        no_goal="reference: a heavy baseline flatters us",
    )


def _report_part(quick: bool) -> Iterator[Comparison]:
    yield _dags_report(samples(quick, full=20))


#: The parts ``python -m bench bench_parse:<part>`` can run alone.
PARTS = {"dag": _dag_part, "import": _import_part, "report": _report_part}


def run(quick: bool) -> Iterator[Comparison]:
    for part in PARTS.values():
        yield from part(quick)
