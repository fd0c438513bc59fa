"""Release a trained model only if it proves itself and beats the deployed one.

``validate_model`` checks the model at ``rev`` (the demo project's ``fraud-detector`` artifact):
the packages in ``requirements.txt`` are installed, the pickle loads, inference on the frozen evaluation
sample returns one probability pair per row within [0, 1], deterministically and within the
latency budget, and the recorded scores clear their floors. ``gate`` compares it with the model
on ``stage`` (read from the repository's GTO tags) on the same evaluation data; ``promote``
registers the next minor version and moves the stage in one tag push, after checking that the
stage still holds the model the gate compared against. Trigger with
``{"rev": "<branch or commit>", "stage": "prod"}``; ``gto show`` lists the result.
"""

from __future__ import annotations

import pendulum
from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.operators.model import (
    ModelGateBranchOperator,
    ModelValidationOperator,
    PromoteModelOperator,
)

MODEL = "fraud-detector"
FEATURES = ["amount", "hour", "merchant_risk", "distance_km"]

with DAG(
    dag_id="example_model_release",
    description="Validate a model, gate it against the deployed one, promote it with a GTO tag or keep the old one.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="Branch, tag or commit holding the candidate model"),
        "stage": Param("prod", type="string", description="The stage to release to"),
    },
    tags=["mlci", "model", "example"],
):
    validate = ModelValidationOperator(
        task_id="validate_model",
        model=MODEL,
        rev="{{ params.rev }}",
        requirements="requirements.txt",
        contract={
            "sample_input": "data/eval.csv",
            "input_columns": FEATURES,
            "method": "predict_proba",
            "output": {"shape": [2], "dtype": "float", "min_value": 0.0, "max_value": 1.0},
            "latency_budget_ms": 1000,
        },
        thresholds={"accuracy": {"min": 0.6}, "logloss": {"max": 0.8}},
    )
    gate = ModelGateBranchOperator(
        task_id="gate",
        model=MODEL,
        rev="{{ params.rev }}",
        stage="{{ params.stage }}",
        rules={
            "logloss": {"direction": "lower", "floor": 0.8, "min_improvement": 0.01},
            "accuracy": {"direction": "higher", "floor": 0.6, "max_regression": 0.01},
        },
        if_promote="promote",
        if_skip="keep_deployed",
    )
    promote = PromoteModelOperator(
        task_id="promote", model=MODEL, rev="{{ params.rev }}", stage="{{ params.stage }}", gate_task_id="gate"
    )
    keep_deployed = EmptyOperator(task_id="keep_deployed")

    @task(trigger_rule="none_failed_min_one_success")
    def summary(ti=None) -> dict:
        """Log the gate's decision, every metric's delta, and what was released."""
        decision = ti.xcom_pull(task_ids="gate", key="decision")
        released = ti.xcom_pull(task_ids="promote")
        champion = decision["champion"]
        print(f"Candidate {decision['sha'][:12]} vs {champion['version'] if champion else 'nothing deployed'}")
        for metric in decision["metrics"]:
            print(
                f"  {metric['metric']}: {metric['candidate']} (deployed {metric['champion']}, delta {metric['delta']})"
            )
        for reason in decision["reasons"]:
            print(f"  refused: {reason}")
        if released:
            print(f"Released {released['name']} {released['version']} to {released['stage']}: {released['tags']}")
        return {"promoted": bool(released), "version": released["version"] if released else None}

    validate >> gate >> [promote, keep_deployed] >> summary()
