"""Every hour, find GPU instances of ours that should be gone, and (unless a dry run) terminate them.

A GPU instance launched by this provider is terminated by its teardown task, by ``on_kill``, and
by its own deadline (``max_lifetime``). This DAG catches what all of those missed: instances
whose ``mlci:expires_at`` has passed or whose DAG run has ended. The run fails when it finds
any, so a leak shows red in the UI (and alerts, if the DAG has failure callbacks).

Dry-run by default: it only reports. Trigger with ``{"dry_run": false}`` (or change the
param's default) to terminate what it finds. Connection: ``aws_default``.
"""

from __future__ import annotations

import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_mlci.operators.gpu import GpuReaperOperator

with DAG(
    dag_id="example_gpu_reaper",
    description="Terminate leaked GPU instances (expired, or their run ended); fail loudly when any are found.",
    schedule="@hourly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    params={"dry_run": Param(True, type="boolean", description="Only report what would be terminated")},
    tags=["mlci", "gpu", "example"],
):
    GpuReaperOperator(
        task_id="reap",
        aws_conn_id="aws_default",
        dry_run="{{ params.dry_run }}",
        fail_on_leaks=True,
    )
