"""Validate the data at a git revision, reproduce the DVC pipeline there, and report its metrics.

The repository comes from the ``mlci_dvc_default`` connection (``make demo`` creates one that
points at a local bare repository). Trigger with ``{"rev": "<branch, tag or commit>"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.operators.validation import DataValidationOperator

with DAG(
    dag_id="example_dvc_repro",
    description="Check out a DVC project at a revision, reproduce its pipeline, share outputs and run-cache.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"rev": Param("main", type="string", description="Branch, tag or commit to reproduce")},
    tags=["mlci", "dvc", "example"],
):
    # Nothing trains on data that breaks its schema (schemas/raw.yaml, committed with the data).
    validate = DataValidationOperator(
        task_id="validate_data", dataset="data/raw.csv", schema="schemas/raw.yaml", rev="{{ params.rev }}"
    )
    reproduce = DvcReproOperator(task_id="reproduce", rev="{{ params.rev }}")
    validate >> reproduce

    @task
    def report(result: dict) -> dict:
        """Log what each stage did and the metrics the pipeline produced."""
        print(f"Reproduced {result['repo']} at {result['sha'][:12]} ({result['rev']})")
        for stage, outcome in result["stages"].items():
            print(f"  stage {stage}: {outcome}")
        for path, values in result["metrics"].items():
            print(f"  {path}: {values}")
        return result["metrics"]

    report(reproduce.output)
