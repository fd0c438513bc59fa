"""Every night, and whenever new data lands: fine-tune the deployed model on it; release it only if it is better.

The demo project's data arrives in daily batches appended to the DVC-tracked ``data/raw.csv``;
its ``evaluate`` stage scores on a frozen ``data/eval.csv``; its ``train`` stage starts from the
DVC-tracked ``models/base.pkl`` when that holds a model. ``refine`` (a ``RefinementTaskGroup``):

1. ``validate_data`` checks ``data/raw.csv`` at ``rev`` against ``schemas/raw.yaml``;
2. ``start`` reads the registry for the ``fraud-detector`` model on ``prod`` and commits, to the
   branch ``mlci/refine/<run time>``, a ``models/base.pkl.dvc`` naming that model (no data moves:
   the DVC remote has it). With nothing on ``prod`` yet it writes nothing and says so: the
   pipeline then trains from scratch (the project's base model is empty);
3. ``drift`` compares the data with what the deployed model was trained on (skipped when nothing
   is deployed);
4. ``refine`` reproduces the pipeline at that commit, on this worker or, with
   ``[mlci] compute_backend = ec2``, on a GPU instance launched for it (nothing is launched when
   DVC says no stage would run) and terminated after, whatever happened; data and model go to the
   DVC remote, ``dvc.lock`` to the branch;
5. ``validate_model`` loads the candidate and checks its I/O contract and score floors;
6. ``gate`` compares it with the deployed model on the same frozen evaluation set; ``promote``
   registers the next minor version and moves ``prod`` with one GTO tag push, or
   ``keep_deployed`` leaves it;
7. ``outcome`` says which, and ``report`` writes metrics, params and plots against the deployed
   model with the gate's decision (the task's "Report" link), whatever happened.

Schedule: daily at 02:00 UTC, and on every event of the Asset that a ``DvcDataChangedSensor``
watching ``data/raw.csv`` through ``mlci_dvc_default`` emits. Connections: ``mlci_dvc_default``
(the repository and its DVC remote); with the ec2 backend also ``aws_default`` and
``[mlci] compute_job_base``. Trigger by hand with ``{"rev": "main"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Asset, Param
from airflow.timetables.assets import AssetOrTimeSchedule
from airflow.timetables.trigger import CronTriggerTimetable

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.task_groups.refine import RefinementTaskGroup

#: What ``DvcDataChangedSensor(targets=["data/raw.csv"])`` emits on by default.
NEW_DATA = Asset("x-dvc-data://mlci_dvc_default/data/raw.csv")

with DAG(
    dag_id="example_nightly_refinement",
    description="Fine-tune the deployed fraud model on the new data; promote it only if it beats the deployed one.",
    schedule=AssetOrTimeSchedule(timetable=CronTriggerTimetable("0 2 * * *", timezone="UTC"), assets=[NEW_DATA]),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"rev": Param("main", type="string", description="The branch (or commit) holding the new data")},
    tags=["mlci", "model", "example"],
):
    RefinementTaskGroup(
        group_id="refine",
        model="fraud-detector",
        stage="prod",
        rev="{{ params.rev }}",
        dataset="data/raw.csv",
        schema="schemas/raw.yaml",
        # The features, not the ids; batches accumulate, so the data grows every day.
        drift={"columns": ["amount", "hour", "merchant_risk", "distance_km"], "mode": "warn", "max_row_ratio": 3.0},
        requirements="requirements.txt",
        contract={
            "sample_input": "data/eval.csv",
            "input_columns": ["amount", "hour", "merchant_risk", "distance_km"],
            "method": "predict_proba",
            "output": {"shape": [2], "dtype": "float", "min_value": 0.0, "max_value": 1.0},
            "latency_budget_ms": 1000,
        },
        thresholds={"accuracy": {"min": 0.6}, "logloss": {"max": 0.8}},
        rules={
            # Lower log loss than the deployed model on the frozen evaluation set, and accuracy
            # no more than half a point worse.
            "logloss": {"direction": "lower", "floor": 0.8, "min_improvement": 0.0},
            "accuracy": {"direction": "higher", "floor": 0.6, "max_regression": 0.005},
        },
        compute=None,  # [mlci] compute_backend: local (default) or ec2
        instance=GpuInstanceSpec(  # used when the backend is ec2
            gpu="t4",
            spot=True,
            spot_fallback_on_demand=True,
            max_lifetime=3 * 3600,
            instance_profile="mlci-gpu-runner",  # S3 access for the instance: no credentials travel
        ),
        pool="mlci_gpu",
        refine_args={"retries": 1},
    )
