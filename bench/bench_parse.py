"""Parse cost.

1. An example DAG file against a control DAG of the same shape using only ``airflow.sdk``, and
   importing our operator module against importing the Amazon provider's EC2 operators; each
   sample is a fresh interpreter that has already imported ``airflow.sdk`` (as the
   dag-processor has) and times only the thing measured.
2. ``airflow dags report`` (how Airflow itself measures parsing) of a DAG holding a
   ``DvcPipelineTaskGroup`` over a 4-stage project against a DAG of the same shape made of plain
   ``@task``s. Goal: within 20 ms.
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

from bench._common import Comparison, interleave

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

_PROBE = """
import sys, time, runpy, importlib
import airflow.sdk
started = time.perf_counter()
{action}
print(time.perf_counter() - started)
"""


def _sample(action: str) -> float:
    proc = subprocess.run([sys.executable, "-c", _PROBE.format(action=action)], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-2000:])
    return float(proc.stdout.strip().splitlines()[-1])


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
            by_file = {Path(row["file"]).name: _seconds(row["duration"]) for row in json.loads(table)}
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


def run(quick: bool) -> Iterator[Comparison]:
    repeats = 1 if quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp) / "control_dag.py"
        control.write_text(CONTROL_DAG)
        dag_ours, dag_base = interleave(
            lambda: _sample(f"runpy.run_path({str(EXAMPLE)!r})"),
            lambda: _sample(f"runpy.run_path({str(control)!r})"),
            repeats,
        )
    yield Comparison(
        name="parse example_dvc_repro.py",
        ours=dag_ours,
        baseline=dag_base,
        baseline_name="same DAG shape with airflow.sdk @task only",
        goal="<= 1.5",
    )
    imp_ours, imp_base = interleave(
        lambda: _sample("importlib.import_module('airflow_provider_mlci.operators.dvc')"),
        lambda: _sample("importlib.import_module('airflow.providers.amazon.aws.operators.ec2')"),
        repeats,
    )
    yield Comparison(
        name="import operators.dvc",
        ours=imp_ours,
        baseline=imp_base,
        baseline_name="import amazon EC2 operators",
        goal="<= 0.5",
    )
    yield _dags_report(1 if quick else 20)
