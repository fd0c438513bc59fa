"""A DVC pipeline as Airflow tasks: one task per stage, wired by the stage graph.

The stages come from ``demo_project/dvc.yaml`` (a copy of the repository shipped with the DAGs,
read at parse time); they run on the repository of the ``mlci_dvc_default`` connection, at the
revision given when triggering (``{"rev": ...}``). Each stage task starts from a fresh checkout
on whichever worker runs it, receives the new lock entries of the stages above it, and pushes
its outputs and run-cache to the DVC remote. The last task reports what each stage did.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(
    dag_id="example_dvc_pipeline",
    description="Reproduce a DVC pipeline with one Airflow task per stage, on any worker.",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    params={"rev": Param("main", type="string", description="Branch, tag or commit to reproduce")},
    tags=["mlci", "dvc", "example"],
):
    pipeline = DvcPipelineTaskGroup(
        group_id="pipeline",
        project_dir="demo_project",
        rev="{{ params.rev }}",
        operator_args={"retries": 1},
    )
    stage_tasks = [pipeline.child_id(task_id) for task_id in pipeline.stage_task_ids.values()]

    @task
    def report(**context) -> dict:
        """Log what each stage did and the metrics the pipeline produced."""
        results = context["ti"].xcom_pull(task_ids=stage_tasks)
        metrics: dict = {}
        for result in results:
            for stage, outcome in result["stages"].items():
                print(f"stage {stage}: {outcome} at {result['sha'][:12]}")
            metrics.update(result["metrics"])
        print(f"metrics: {metrics}")
        return metrics

    pipeline >> report()
