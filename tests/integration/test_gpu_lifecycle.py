"""GPU instance lifecycle in real DAG runs (``dag.test()``) against moto's EC2 server.

Every test ends with no instance of ours pending or running.
"""

from __future__ import annotations

import contextlib
import json
from datetime import UTC, datetime, timedelta

import pytest

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.hooks.gpu import GpuInstanceHook
from tests.conftest import EXAMPLE_DAGS
from tests.helpers.moto_ec2 import (
    AMI,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    live_instances,
    user_data_of,
)

LIFECYCLE_DAG = """
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator, GpuTerminateInstanceOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    launch = GpuCreateInstanceOperator(
        task_id="launch",
        spec={{"gpu": "t4", "ami": "{ami}", "max_lifetime": 3600, "tags": {{"team": "tests"}}}},
        job_base="s3://mlci-jobs/lifecycle",
        aws_conn_id="aws_secrets",
        poll_interval=0.2,
        timeout=30,
    )

    @task
    def train(instance: dict) -> None:
        print(f"training on {{instance['instance_id']}}")
        raise RuntimeError("the training failed")

    terminate = GpuTerminateInstanceOperator(task_id="terminate", create_task_id="launch", aws_conn_id="aws_secrets")
    work = train(launch.output)
    launch >> work >> terminate.as_teardown(setups=launch)
"""


@pytest.fixture
def secret_connection(monkeypatch, moto_endpoint):
    """The aws connection ``aws_secrets`` with known (fake) keys, to look for them where they must not be."""
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    value = {"conn_type": "aws", "login": FAKE_ACCESS_KEY, "password": FAKE_SECRET_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SECRETS", json.dumps(value))
    return "aws_secrets"


def test_teardown_terminates_the_instance_when_the_work_fails(run_dag, secret_connection, ec2c, capfd):
    dag_id = "gpu_lifecycle_work_fails"
    record = run_dag(dag_id, source=LIFECYCLE_DAG.format(dag_id=dag_id, ami=AMI))
    assert record.state == "failed"
    assert record.task_states == {"launch": "success", "train": "failed", "terminate": "success"}
    instance = record.xcom["launch"]
    assert instance["run_key"]
    assert instance["mailbox"].startswith("s3://mlci-jobs/lifecycle/")
    assert record.xcom["terminate"] == [instance["instance_id"]]
    described = ec2c.describe_instances(InstanceIds=[instance["instance_id"]])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] in ("shutting-down", "terminated")
    tags = {t["Key"]: t["Value"] for t in described["Tags"]}
    assert (tags["mlci:dag_id"], tags["mlci:run_id"], tags["mlci:group"]) == (dag_id, record.run_id, "launch")
    seen = user_data_of(ec2c, instance["instance_id"]) + json.dumps(record.xcom) + "".join(capfd.readouterr())
    assert "the training failed" in seen
    assert FAKE_ACCESS_KEY not in seen
    assert FAKE_SECRET_KEY not in seen


@pytest.fixture
def aws_default_on_moto(monkeypatch, moto_endpoint):
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    value = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(value))
    return "aws_default"


def test_the_reaper_dag_reports_then_terminates_leaks_and_fails_loudly(run_dag, aws_default_on_moto, ec2c, capfd):
    hook = GpuInstanceHook(aws_conn_id=aws_default_on_moto)
    spec = GpuInstanceSpec(ami=AMI, max_lifetime=3600)
    past = datetime.now(UTC) - timedelta(hours=2)
    expired = hook.launch_for_task(spec, dag_id="nightly", run_id="r_old", task_id="launch", job_base="", now=past)
    # A run that the metadata database does not have (ended and deleted): a leak too.
    orphan = hook.launch_for_task(spec, dag_id="nightly", run_id="r_gone", task_id="launch", job_base="")
    leaks = {expired["instance_id"], orphan["instance_id"]}
    try:
        record = run_dag("example_gpu_reaper", path=EXAMPLE_DAGS / "example_gpu_reaper.py", conf={"dry_run": True})
        out = "".join(capfd.readouterr())
        assert record.state == "failed"
        assert record.task_states == {"reap": "failed"}
        assert "dry run: nothing was terminated" in out
        for instance_id in leaks:
            assert instance_id in out
        assert "nightly/r_gone has ended" in out
        assert leaks <= {i["InstanceId"] for i in live_instances(ec2c)}

        record = run_dag("example_gpu_reaper", path=EXAMPLE_DAGS / "example_gpu_reaper.py", conf={"dry_run": False})
        out = "".join(capfd.readouterr())
        assert record.state == "failed"
        assert "Found 2 leaked GPU instance(s); terminated" in out
        assert not leaks & {i["InstanceId"] for i in live_instances(ec2c)}

        record = run_dag("example_gpu_reaper", path=EXAMPLE_DAGS / "example_gpu_reaper.py", conf={"dry_run": False})
        assert record.state == "success"
        assert record.xcom["reap"]["leaks"] == []
    finally:
        hook.terminate(sorted(leaks))


SIGTERM_DAG = '''
import os
import pathlib
import time
from functools import cached_property

import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator

MARKS = pathlib.Path({marks!r})


class SlowBootCreate(GpuCreateInstanceOperator):
    """Stand-in for an instance slow to boot (moto's run at once): once launched, the wait hangs."""

    @cached_property
    def hook(self):
        hook = super().hook
        events = hook.conn.meta.events

        def launched(**kwargs):
            (MARKS / "launched").write_text(str(os.getpid()))

        def hang(**kwargs):
            if (MARKS / "launched").exists():
                (MARKS / "waiting").write_text("")
                time.sleep(120)

        def terminating(**kwargs):
            with open(MARKS / "terminations", "a") as out:
                out.write("TerminateInstances\\n")

        events.register("after-call.ec2.RunInstances", launched)
        events.register("before-call.ec2.DescribeInstances", hang)
        events.register("before-call.ec2.TerminateInstances", terminating)
        return hook


with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    SlowBootCreate(
        task_id="launch",
        spec={{"ami": "{ami}", "max_lifetime": 3600}},
        aws_conn_id="aws_moto",
        deferrable=False,
        poll_interval=0.2,
        timeout=300,
    )
'''

_RUN_DAG = """
import sys
from airflow_provider_mlci.testing.airflow import dag_bag

dag_bag(sys.argv[1]).dags[sys.argv[2]].test()
"""


def _wait_for(predicate, timeout: float, what: str) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def test_sigterm_during_the_wait_terminates_the_instance_once(
    airflow_db, dags_folder, aws_moto_connection, ec2c, tmp_path
):
    """The task process gets SIGTERM (user marked it failed, execution_timeout): on_kill terminates, once."""
    import os
    import signal
    import subprocess
    import sys

    dag_id = "gpu_lifecycle_sigterm"
    marks = tmp_path / "marks"
    marks.mkdir()
    dag_file = dags_folder / f"{dag_id}.py"
    dag_file.write_text(SIGTERM_DAG.format(dag_id=dag_id, ami=AMI, marks=str(marks)))
    log = (tmp_path / "task.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-c", _RUN_DAG, str(dag_file), dag_id],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_for(lambda: (marks / "waiting").exists(), 240, "the launch (a loaded machine)")
        assert int((marks / "launched").read_text()) == proc.pid  # the task runs in this process
        os.kill(proc.pid, signal.SIGTERM)
        _wait_for(lambda: (marks / "terminations").exists(), 30, "on_kill")
        _wait_for(lambda: not live_instances(ec2c, **{"mlci:dag_id": dag_id}), 30, "the instance to go")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the supervisor's escalation after SIGTERM
        proc.wait(30)
        log.close()
    assert (marks / "terminations").read_text().splitlines() == ["TerminateInstances"]
    gone = ec2c.describe_instances(Filters=[{"Name": "tag:mlci:dag_id", "Values": [dag_id]}])["Reservations"]
    assert [i["State"]["Name"] for r in gone for i in r["Instances"]] in (["shutting-down"], ["terminated"])


def test_a_worker_sigkilled_after_launch_leaves_the_instance_to_the_reaper(
    run_dag, airflow_db, dags_folder, aws_moto_connection, aws_default_on_moto, ec2c, tmp_path, capfd
):
    """SIGKILL (OOM, node loss): no on_kill, no teardown of a setup that never succeeded. The scheduler
    fails the run; the reaper then finds the instance by its tags and terminates it."""
    import os
    import signal
    import subprocess
    import sys

    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    dag_id = "gpu_lifecycle_sigkill"
    for attempt in range(2):
        marks = tmp_path / f"marks-{attempt}"
        marks.mkdir()
        dag_file = dags_folder / f"{dag_id}.py"
        dag_file.write_text(SIGTERM_DAG.format(dag_id=dag_id, ami=AMI, marks=str(marks)))
        log_path = tmp_path / f"task-{attempt}.log"
        with log_path.open("w") as log:
            proc = subprocess.Popen(
                [sys.executable, "-c", _RUN_DAG, str(dag_file), dag_id],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            _wait_for(
                lambda marks=marks, proc=proc: (marks / "waiting").exists() or proc.poll() is not None,
                240,
                "the launch (a loaded machine)",
            )
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have ended, its group with it
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        if (marks / "waiting").exists():
            break
        # Airflow's dag.test() on a loaded machine: its API client can retry a "start" call whose
        # first try went through, and the task then dies with "TI was not in a state where it
        # could be marked as running" before our operator runs. A harness race, not ours: run again.
        assert "could be marked as running" in log_path.read_text(), log_path.read_text()[-3000:]
    assert (marks / "waiting").exists(), log_path.read_text()[-3000:]
    assert not (marks / "terminations").exists()  # nothing ran after the kill
    (leaked,) = live_instances(ec2c, **{"mlci:dag_id": dag_id})
    # What the scheduler does once the task's heartbeat times out: the run ends, failed.
    with create_session() as session:
        for run in session.query(DagRun).filter(DagRun.dag_id == dag_id):
            run.state = DagRunState.FAILED
    record = run_dag("example_gpu_reaper", path=EXAMPLE_DAGS / "example_gpu_reaper.py", conf={"dry_run": False})
    out = "".join(capfd.readouterr())
    assert record.state == "failed"  # leaks were found: loudly
    assert leaked["InstanceId"] in out
    assert not live_instances(ec2c, **{"mlci:dag_id": dag_id})
