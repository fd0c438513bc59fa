"""Parse cost: an example DAG file against a control DAG of the same shape using only ``airflow.sdk``,
and importing our operator against importing the Amazon provider's EC2 operator.

Each sample is a fresh interpreter that has already imported ``airflow.sdk`` (as the
dag-processor has) and then times the one thing measured.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

from bench._common import Comparison, interleave

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "example_dags" / "example_dvc_repro.py"

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


def run(quick: bool) -> list[Comparison]:
    repeats = 1 if quick else 9
    with tempfile.TemporaryDirectory() as tmp:
        control = Path(tmp) / "control_dag.py"
        control.write_text(CONTROL_DAG)
        dag_ours, dag_base = interleave(
            lambda: _sample(f"runpy.run_path({str(EXAMPLE)!r})"),
            lambda: _sample(f"runpy.run_path({str(control)!r})"),
            repeats,
        )
    imp_ours, imp_base = interleave(
        lambda: _sample("importlib.import_module('airflow_provider_mlci.operators.dvc')"),
        lambda: _sample("importlib.import_module('airflow.providers.amazon.aws.operators.ec2')"),
        repeats,
    )
    return [
        Comparison(
            name="parse example_dvc_repro.py",
            ours=dag_ours,
            baseline=dag_base,
            baseline_name="same DAG shape with airflow.sdk @task only",
            goal="<= 1.5",
        ),
        Comparison(
            name="import operators.dvc",
            ours=imp_ours,
            baseline=imp_base,
            baseline_name="import amazon EC2 operators",
            goal="<= 0.5",
        ),
    ]
