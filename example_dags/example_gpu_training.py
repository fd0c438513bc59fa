"""Train the demo model on a GPU instance that is always terminated.

``gpu.will_it_run`` asks DVC (lock file and run-cache) whether training at the revision would
run at all; if not, no instance starts. Otherwise ``gpu.launch`` starts a spot GPU instance
(falling back over instance types, zones and to on-demand), ``train`` hands the commit to the
agent on the instance through S3 and waits in the triggerer (no worker slot held) while the
instance pulls its inputs from the DVC remote, trains, and pushes the model and run-cache back;
``gpu.terminate`` ends the instance whatever happened. The instance also shuts itself down at
its ``max_lifetime``, and ``example_gpu_reaper`` finds anything all of that missed.

Connections: ``mlci_dvc_default`` (the repository; its DVC remote must be S3, which the instance
reaches through its instance profile) and ``aws_default`` (launches instances, writes jobs).
Setting: ``[mlci] compute_job_base = s3://<bucket>/<prefix>``. Trigger with
``{"rev": "<branch, tag or commit>", "commit_to": "<branch or empty>"}``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.task_groups.gpu import GpuRunTaskGroup

GPU = GpuInstanceSpec(
    gpu="t4",
    fallback_instance_types=("g5.xlarge", "g6.xlarge"),
    spot=True,
    spot_fallback_on_demand=True,
    idle_timeout=600,
    max_lifetime=3 * 3600,
    instance_profile="mlci-gpu-runner",
    tags={"team": "fraud"},
)

with DAG(
    dag_id="example_gpu_training",
    description="Reproduce the training stage on a GPU instance launched for it and terminated after.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={
        "rev": Param("main", type="string", description="Branch, tag or commit to train"),
        "commit_to": Param("", type="string", description="Branch to commit dvc.lock to (empty: none)"),
    },
    tags=["mlci", "gpu", "example"],
):
    with GpuRunTaskGroup(
        group_id="gpu",
        spec=GPU,
        aws_conn_id="aws_default",
        pool="mlci_gpu",
        skip_if_nothing_runs=True,
        rev="{{ params.rev }}",
        targets=["train"],
    ) as gpu:
        train = DvcReproOperator(
            task_id="train",
            rev="{{ params.rev }}",
            targets=["train"],
            compute=gpu.compute(),  # Ec2Compute(instance_task_id=gpu.setup_task_id, aws_conn_id="aws_default")
            commit_to="{{ params.commit_to or '' }}",
            retries=2,
        )

    @task
    def summary(result: dict) -> dict:
        """Say where the training ran and what each stage did."""
        print(f"Trained {result['sha'][:12]} on {result['compute']['instance_id']}: {result['stages']}")
        return result["stages"]

    summary(train.output)
