"""Validate a versioned dataset before anything trains on it, and check it did not drift.

``validate`` reads ``data/raw.csv`` of the ``mlci_dvc_default`` repository at ``rev`` (pulling
only that file from the DVC remote) and checks it against the pandera schema committed next to
it, ``schemas/raw.yaml``; every failure case goes to the task's report, a summary to XCom.
``drift`` compares the same file at ``rev`` with ``baseline_rev``: columns, row count and each
column's distribution. Trigger with ``{"rev": "<branch or commit>", "baseline_rev": "main"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.operators.validation import DataDriftCheckOperator, DataValidationOperator

with DAG(
    dag_id="example_data_validation",
    description="Validate a dataset at a git revision with pandera, and compare it with a baseline revision.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="Branch, tag or commit whose data to validate"),
        "baseline_rev": Param("main", type="string", description="The revision to compare the data with"),
    },
    tags=["mlci", "pandera", "example"],
):
    validate = DataValidationOperator(
        task_id="validate",
        dataset="data/raw.csv",
        schema="schemas/raw.yaml",
        rev="{{ params.rev }}",
        min_rows=100,
        memory_budget_mb=512,  # files larger than this are validated in chunks that fit
    )
    drift = DataDriftCheckOperator(
        task_id="drift",
        dataset="data/raw.csv",
        rev="{{ params.rev }}",
        baseline_rev="{{ params.baseline_rev }}",
        columns=["amount", "hour", "merchant_risk", "distance_km", "fraud"],
    )

    @task
    def summary(validation: dict, comparison: dict) -> dict:
        """Log what was checked and what was found."""
        print(f"{validation['dataset']}: {validation['rows_checked']} rows, valid={validation['valid']}")
        print(f"  failure cases: {validation['failure_cases_total']} (all of them: {validation['report_uri']})")
        print(f"  drift against {comparison['baseline']}: {comparison['drifted']}")
        for column, stats in comparison["columns"].items():
            print(f"    {column}: {stats}")
        return {"valid": validation["valid"], "drifted": comparison["drifted"]}

    summary(validate.output, drift.output)
