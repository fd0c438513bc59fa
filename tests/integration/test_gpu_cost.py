"""What a run's GPU instance cost, recorded by its teardown task in real DAG runs (``dag.test()``)
against moto's EC2 server.

moto's spot price history answers (one price, 0.00001 USD/h, dated 2006, for every type and
zone), so the spot run is priced from it. moto has no AWS Price List API (its server answers
``pricing`` requests with HTTP 500), so the on-demand run shows the fallback for real: the
request fails and the ``[mlci] gpu_prices`` table prices the instance. The Price List's own
answers are tested in ``tests/unit/core/compute/test_cost.py``.

Every test ends with no instance of ours pending or running.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from tests.helpers.airflow_records import xcom
from tests.helpers.moto_ec2 import AMI, describe, live_instances

COST_DAG = """
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator, GpuTerminateInstanceOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    launch = GpuCreateInstanceOperator(
        task_id="launch",
        spec={{"gpu": "t4", "ami": "{ami}", "spot": {spot}, "max_lifetime": 3600}},
        job_base="",
        aws_conn_id="aws_moto",
        poll_interval=0.2,
        timeout=30,
    )

    @task
    def train(instance: dict) -> None:
        import time

        time.sleep(1.5)  # the work: the instance runs at least this long
        print(f"trained on {{instance['instance_id']}}")

    terminate = GpuTerminateInstanceOperator(task_id="terminate", create_task_id="launch", aws_conn_id="aws_moto")
    launch >> train(launch.output) >> terminate.as_teardown(setups=launch)
"""

#: moto's spot price for every type and zone (``moto/ec2/responses/spot_instances.py``).
MOTO_SPOT_PRICE = 0.00001


def run_priced(run_dag, dag_id: str, *, spot: bool) -> tuple[object, dict, datetime, datetime]:
    started = datetime.now(UTC)
    record = run_dag(dag_id, source=COST_DAG.format(dag_id=dag_id, ami=AMI, spot=spot))
    finished = datetime.now(UTC)
    assert record.task_states == {"launch": "success", "train": "success", "terminate": "success"}
    return record, xcom(record, "terminate", "gpu_cost"), started, finished


def check_times(cost: dict, started: datetime, finished: datetime) -> None:
    """The seconds are the launch-to-termination span, within the run and at least the work's 1.5 s."""
    launched, ended = datetime.fromisoformat(cost["launched_at"]), datetime.fromisoformat(cost["ended_at"])
    # EC2's LaunchTime is whole seconds: up to one second before the real launch.
    assert started - timedelta(seconds=1) <= launched < ended <= finished
    assert cost["seconds"] == pytest.approx((ended - launched).total_seconds(), abs=0.001)
    assert 1.5 <= cost["seconds"] <= (finished - started).total_seconds() + 1


def test_a_spot_runs_teardown_records_its_cost_at_the_spot_price_at_launch(
    run_dag, aws_moto_connection, ec2c, monkeypatch, capfd
):
    monkeypatch.delenv("AIRFLOW__MLCI__GPU_PRICES", raising=False)
    record, gpu_cost, started, finished = run_priced(run_dag, "gpu_cost_spot", spot=True)
    instance = record.xcom["launch"]
    assert record.xcom["terminate"] == [instance["instance_id"]]  # the return value is unchanged
    described = describe(ec2c, instance["instance_id"])
    assert described["State"]["Name"] in ("shutting-down", "terminated")

    (cost,) = gpu_cost["instances"]
    assert cost["instance_id"] == instance["instance_id"]
    assert (cost["instance_type"], cost["market"], cost["region"]) == ("g4dn.xlarge", "spot", "us-east-1")
    assert cost["availability_zone"] == described["Placement"]["AvailabilityZone"] != ""
    assert (cost["hourly_usd"], cost["price_source"]) == (MOTO_SPOT_PRICE, "spot-price-history")
    check_times(cost, started, finished)
    assert cost["cost_usd"] == round(cost["seconds"] / 3600 * MOTO_SPOT_PRICE, 4)
    assert gpu_cost["total_usd"] == cost["cost_usd"]
    assert gpu_cost["seconds"] == cost["seconds"]
    assert (gpu_cost["unpriced"], gpu_cost["error"]) == ([], None)
    assert json.loads(json.dumps(gpu_cost, allow_nan=False)) == gpu_cost
    out = "".join(capfd.readouterr())
    assert (
        f"Instance {cost['instance_id']} (g4dn.xlarge, spot, {cost['availability_zone']}) ran "
        f"{cost['seconds']:.0f} s at 1e-05 USD/h (spot-price-history): 0.0000 USD"
    ) in out
    assert live_instances(ec2c) == []


def test_an_on_demand_run_without_a_price_list_is_priced_from_the_gpu_prices_table(
    run_dag, aws_moto_connection, ec2c, monkeypatch, capfd
):
    # 3600 USD/h: one USD a second, so the cost shows the seconds.
    monkeypatch.setenv("AIRFLOW__MLCI__GPU_PRICES", json.dumps({"g4dn.xlarge": 3600.0, "g5.xlarge": 1.006}))
    record, gpu_cost, started, finished = run_priced(run_dag, "gpu_cost_on_demand", spot=False)
    instance = record.xcom["launch"]
    (cost,) = gpu_cost["instances"]
    assert cost["instance_id"] == instance["instance_id"]
    assert (cost["instance_type"], cost["market"]) == ("g4dn.xlarge", "on-demand")
    assert (cost["hourly_usd"], cost["price_source"]) == (3600.0, "table")
    check_times(cost, started, finished)
    assert cost["cost_usd"] == pytest.approx(cost["seconds"], abs=0.0001)
    assert gpu_cost["total_usd"] == cost["cost_usd"]
    out = "".join(capfd.readouterr())
    # moto lacks the Price List API: the warning names the type and why, then the table prices it.
    assert "No on-demand price from AWS for g4dn.xlarge (asking for the price failed" in out
    assert "using [mlci] gpu_prices" in out
    assert f"ran {cost['seconds']:.0f} s at 3600 USD/h (table): {cost['cost_usd']:.4f} USD" in out
    assert live_instances(ec2c) == []


def test_an_unpriced_instance_has_no_cost_and_the_teardown_still_succeeds(
    run_dag, aws_moto_connection, ec2c, monkeypatch, capfd
):
    monkeypatch.setenv("AIRFLOW__MLCI__GPU_PRICES", json.dumps({"g5.xlarge": 1.006}))
    _, gpu_cost, started, finished = run_priced(run_dag, "gpu_cost_unpriced", spot=False)
    (cost,) = gpu_cost["instances"]
    assert (cost["hourly_usd"], cost["price_source"], cost["cost_usd"]) == (None, None, None)
    check_times(cost, started, finished)
    assert (gpu_cost["total_usd"], gpu_cost["unpriced"]) == (None, [cost["instance_id"]])
    out = "".join(capfd.readouterr())
    assert "[mlci] gpu_prices does not list it: its cost is unknown" in out
    assert live_instances(ec2c) == []


def test_a_bad_gpu_prices_table_is_named_and_the_teardown_still_terminates_and_records_the_rest(
    run_dag, aws_moto_connection, ec2c, monkeypatch, capfd
):
    monkeypatch.setenv("AIRFLOW__MLCI__GPU_PRICES", "g4dn.xlarge=0.526")
    record, gpu_cost, started, finished = run_priced(run_dag, "gpu_cost_bad_table", spot=False)
    instance_id = record.xcom["launch"]["instance_id"]
    assert record.xcom["terminate"] == [instance_id]
    assert describe(ec2c, instance_id)["State"]["Name"] in ("shutting-down", "terminated")
    (cost,) = gpu_cost["instances"]  # what is known: the instance, its seconds; no price
    assert (cost["instance_id"], cost["market"], cost["cost_usd"]) == (instance_id, "on-demand", None)
    check_times(cost, started, finished)
    assert gpu_cost["total_usd"] is None
    assert "[mlci] gpu_prices='g4dn.xlarge=0.526' is not JSON" in gpu_cost["error"]
    assert "[mlci] gpu_prices='g4dn.xlarge=0.526' is not JSON" in "".join(capfd.readouterr())
    assert live_instances(ec2c) == []
