"""Our operators under a real scheduler, dag-processor, api-server and triggerer (LocalExecutor).

``dag.test()`` runs one task at a time in one process. Here DvcReproOperator runs in a supervised
task process, as in production: marked failed, its stage command stops; an Asset watcher
schedules runs on data changes only; a deferred GPU job holds no worker slot; a release waits for a
person (approve -> promoted, reject -> kept, no answer -> kept: the refinement group with
``approval=``, answered through the REST API as a reviewer would from the UI, each outcome read back
from the plugin's run view on the cluster's api-server). Mapped tasks side by
side, retries and deferral across a triggerer restart run on the production topology
(test_deployment.py), and two repros at once on one worker cache in
tests/unit/core/dvc/test_ops.py. That a stopped cluster leaves no process behind is checked at the
end of the ``airflow_cluster`` fixture; that the cluster shares neither database nor DAGs folder
with this session's ``dag.test()`` runs (its scheduler would run them), by the first test.
"""

from __future__ import annotations

import contextlib
import re
import textwrap
import time
import urllib.error
from datetime import datetime
from typing import Any

import pytest

from airflow_provider_mlci.report_store import safe_run
from airflow_provider_mlci.testing.procs import alive, wait_dead

pytestmark = pytest.mark.cluster

HANG_DAG_ID = "mlci_cluster_kill"
HANG_DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.operators.dvc import DvcReproOperator

    with DAG(dag_id="mlci_cluster_kill", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        DvcReproOperator(task_id="reproduce", rev="main", dvc_conn_id="mlci_dvc_hang")
    """
)


ECHO_DAG = """
import pendulum
from airflow.sdk import DAG, task

with DAG(dag_id="mlci_session_only", schedule="@daily", start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

    @task
    def echo():
        return 1

    echo()
"""


def test_the_cluster_shares_no_database_and_no_dags_folder_with_dag_test_runs(airflow_cluster, run_dag):
    record = run_dag("mlci_session_only", source=ECHO_DAG)
    assert record.state == "success"
    with pytest.raises(urllib.error.HTTPError) as info:
        airflow_cluster.api("GET", "/api/v2/dags/mlci_session_only")
    assert info.value.code == 404
    assert not (airflow_cluster.dags_folder / "mlci_session_only.py").exists()


def test_marking_a_running_repro_failed_stops_its_stage_command(airflow_cluster, dvc_project, tmp_path):
    """The supervisor's SIGTERM reaches on_kill, which stops DVC and the stage it runs."""
    pidfile = tmp_path / "stage.pid"
    train = dvc_project.work / "src" / "train.py"
    train.write_text(f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(600)\n")
    dvc_project.commit_and_push("A training that hangs", dvc_push=False)
    airflow_cluster.add_connection(
        "mlci_dvc_hang", "mlci_dvc", host=str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url}
    )
    (airflow_cluster.dags_folder / f"{HANG_DAG_ID}.py").write_text(HANG_DAG_SOURCE)
    run_id = airflow_cluster.trigger(HANG_DAG_ID)
    deadline = time.monotonic() + 180
    while not (pidfile.exists() and pidfile.read_text()) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert pidfile.exists(), "the stage never started"
    stage_pid = int(pidfile.read_text())
    assert alive(stage_pid)
    airflow_cluster.api(
        "PATCH",
        f"/api/v2/dags/{HANG_DAG_ID}/dagRuns/{run_id}/taskInstances/reproduce",
        {"new_state": "failed"},
    )
    assert wait_dead(stage_pid, timeout=60), "the stage command outlived the killed task"
    assert airflow_cluster.wait_for_run(HANG_DAG_ID, run_id, timeout=120) == "failed"


def _ts(value: str) -> float:
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


WATCH_DAG_ID = "mlci_cluster_watch"
WATCH_DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, Asset, AssetWatcher, task

    from airflow_provider_mlci.triggers.dvc import DvcDataChangedTrigger

    RAW = Asset(
        "x-dvc-data://cluster-watch/raw",
        watchers=[
            AssetWatcher(
                name="raw_data_watch",
                trigger=DvcDataChangedTrigger(
                    dvc_conn_id="mlci_dvc_watch", targets=["data/raw.csv"], rev="main", poll_interval=2
                ),
            )
        ],
    )

    with DAG(dag_id="mlci_cluster_watch", schedule=[RAW], start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @task
        def on_new_data():
            return "seen"

        on_new_data()
    """
)


#: The lines the triggerer logs at each look of the watch's trigger, finding nothing new or a change.
LOOK_LINE = "Looked at data/raw.csv on main (mlci_dvc_watch): unchanged"
CHANGED_LINE = "Looked at data/raw.csv on main (mlci_dvc_watch): changed"


class TriggererLog:
    """The cluster's ``triggerer.log``, counted from a mark on."""

    def __init__(self, path):
        self.path = path

    def mark(self) -> int:
        """Where the log ends now (a look logs its line when it has looked)."""
        return self.path.stat().st_size

    def count(self, text: str, since: int) -> int:
        """How many log lines after ``since`` carry the message ``text`` (whole: between the level and the logger)."""
        lines = self.path.read_bytes()[since:].decode(errors="replace").splitlines()
        message = re.compile(rf"\] {re.escape(text)} +\[")
        return sum(bool(message.search(line)) for line in lines)

    def wait_for_looks(self, looks: int, since: int, timeout: float = 60) -> int:
        deadline = time.monotonic() + timeout
        while self.count(LOOK_LINE, since) < looks and time.monotonic() < deadline:
            time.sleep(0.5)
        return self.count(LOOK_LINE, since)


def test_an_asset_watcher_schedules_runs_on_data_changes_only(airflow_cluster, dvc_project):
    """Event-driven: no DAG run waits; the triggerer watches and the scheduler starts runs."""
    import subprocess
    import sys

    airflow_cluster.add_connection(
        "mlci_dvc_watch", "mlci_dvc", host=str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url}
    )
    (airflow_cluster.dags_folder / f"{WATCH_DAG_ID}.py").write_text(WATCH_DAG_SOURCE)
    airflow_cluster.wait_for_dag(WATCH_DAG_ID)
    triggerer = TriggererLog(airflow_cluster.log_dir / "triggerer.log")

    def runs() -> int:
        return airflow_cluster.api("GET", f"/api/v2/dags/{WATCH_DAG_ID}/dagRuns")["total_entries"]

    def wait_for_runs(count: int, timeout: float = 120) -> int:
        deadline = time.monotonic() + timeout
        while runs() < count and time.monotonic() < deadline:
            time.sleep(1)
        return runs()

    assert wait_for_runs(1) == 1, "the first look did not fire"
    (dvc_project.work / "data" / "raw.csv").touch()
    dvc_project.dvc("add", "--quiet", "data/raw.csv")
    touched = triggerer.mark()  # before the push, as below: a look that saw the touch logs after the mark
    dvc_project.commit_and_push("Touch the data")
    after_push = triggerer.mark()
    assert triggerer.wait_for_looks(3, since=after_push) >= 3, "the watcher did not look three times at the touch"
    assert triggerer.count(CHANGED_LINE, since=touched) == 0, "a touch fired the watcher"
    assert runs() == 1, "a touch scheduled a run"

    subprocess.run(
        [sys.executable, "src/generate.py", "data/raw.csv", "--rows", "300", "--seed", "9"],
        cwd=dvc_project.work,
        check=True,
    )
    dvc_project.dvc("add", "--quiet", "data/raw.csv")
    changed = triggerer.mark()  # before the push: the look that sees it cannot log before the mark
    dvc_project.commit_and_push("New data")
    assert wait_for_runs(2) == 2, "new data did not schedule a run"
    fired = triggerer.mark()  # the run exists, so the look that fired came before this
    assert triggerer.wait_for_looks(3, since=fired) >= 3, "the watcher did not look three times at the new data"
    assert triggerer.count(CHANGED_LINE, since=changed) == 1, "one change fired the watcher more than once"
    assert runs() == 2, "one change scheduled more than one run"


GPU_DAG_ID = "mlci_cluster_gpu"
GPU_DAG_SOURCE = """
import time
import pendulum
from airflow.sdk import DAG, task
from airflow_provider_mlci.config import Ec2Compute
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.task_groups.gpu import GpuRunTaskGroup

with DAG(dag_id="mlci_cluster_gpu", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    with GpuRunTaskGroup(
        group_id="gpu", spec=GpuInstanceSpec(gpu="t4"), aws_conn_id="aws_cluster", job_base="JOB_BASE"
    ) as gpu:
        train = DvcReproOperator(
            task_id="train", targets=["train"], dvc_conn_id="mlci_dvc_gpu",
            compute=Ec2Compute(instance_task_id=gpu.setup_task_id, aws_conn_id="aws_cluster", poll_interval=0.5),
            pool="one_slot", priority_weight=100,
        )

    @task(pool="one_slot", priority_weight=1)
    def meanwhile() -> float:
        return time.time()

    gpu.launch >> meanwhile()
"""


def test_a_deferred_gpu_job_holds_no_worker_slot(airflow_cluster, s3_dvc_project, s3_bucket, moto_endpoint, tmp_path):
    """One pool slot between the GPU job's wait and another task: the other task runs while the job waits."""
    from tests.helpers.ec2_instances import InstanceEmulator
    from tests.helpers.gpu_runs import ours_alive

    train = s3_dvc_project.work / "src" / "train.py"
    train.write_text(train.read_text() + "\nimport time\n\ntime.sleep(10)\n")
    s3_dvc_project.commit_and_push("Slow training", dvc_push=False)
    airflow_cluster.add_connection(
        "aws_cluster", "aws", login="testing", password="testing", extra={"endpoint_url": moto_endpoint}
    )
    airflow_cluster.add_connection(
        "mlci_dvc_gpu",
        "mlci_dvc",
        host=str(s3_dvc_project.remote),
        extra={"dvc_remote_url": s3_dvc_project.dvc_remote_url, "endpoint_url": moto_endpoint},
    )
    with contextlib.suppress(urllib.error.HTTPError):
        airflow_cluster.api("DELETE", "/api/v2/pools/one_slot")
    airflow_cluster.api("POST", "/api/v2/pools", {"name": "one_slot", "slots": 1, "include_deferred": False})
    source = GPU_DAG_SOURCE.replace("JOB_BASE", f"s3://{s3_bucket}/jobs")
    (airflow_cluster.dags_folder / f"{GPU_DAG_ID}.py").write_text(source)
    with InstanceEmulator(moto_endpoint):
        run_id = airflow_cluster.trigger(GPU_DAG_ID)
        state = airflow_cluster.wait_for_run(GPU_DAG_ID, run_id, timeout=300)
    tis = {ti["task_id"]: ti for ti in airflow_cluster.task_instances(GPU_DAG_ID, run_id)}
    assert state == "success", airflow_cluster.explain(GPU_DAG_ID, run_id)
    assert "deferred" in airflow_cluster.seen_states[("gpu.train", -1)]
    # The other task took the only slot and finished while the GPU job was still waiting.
    assert tis["meanwhile"]["end_date"] < tis["gpu.train"]["end_date"]
    assert tis["meanwhile"]["start_date"] > tis["gpu.train"]["start_date"]
    assert ours_alive(moto_endpoint) == []


# ------------------------------------------------------------------ human approval of a release
# The gate lets any candidate pass here: the person decides.
MODEL = "fraud-detector"
APPROVAL_DAG_SOURCE = textwrap.dedent(
    """
    from datetime import timedelta

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.config import Approval
    from airflow_provider_mlci.task_groups.refine import RefinementTaskGroup

    # The timeout outlasts the scheduler's handling of the exit of the process that parked the task: a
    # timeout that fires first races Airflow 3.3 as an early answer does (see `answer`): the scheduler
    # marks the resumed try failed and the try's own report gets 409. A 2 s timeout met it once.
    for dag_id, wait in (("mlci_approval", timedelta(minutes=20)), ("mlci_approval_timeout", timedelta(seconds=20))):
        with DAG(dag_id=dag_id, schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
            RefinementTaskGroup(
                group_id="refine",
                model="fraud-detector",
                rev="main",
                rules={"accuracy": {"direction": "higher", "floor": 0.0, "max_regression": 1.0}},
                approval=Approval(timeout=wait),
            )
    """
)


def wait_for_approval(cluster: Any, dag_id: str, run_id: str, timeout: float = 240) -> str:
    """Wait until the run's approval task waits for a person; return that state."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = {ti["task_id"]: str(ti["state"]) for ti in cluster.task_instances(dag_id, run_id)}
        if states.get("refine.approve") in ("awaiting_input", "deferred"):
            return states["refine.approve"]
        failed = sorted(task for task, state in states.items() if state in ("failed", "upstream_failed"))
        assert not failed, f"{dag_id} {run_id}: {failed} failed before the approval:\n{cluster.explain(dag_id, run_id)}"
        time.sleep(1)
    raise TimeoutError(f"{dag_id} {run_id} never asked for approval:\n{cluster.explain(dag_id, run_id)}")


def answer(cluster: Any, dag_id: str, run_id: str, option: str) -> None:
    # An answer that comes before the scheduler has handled the exit of the process that parked the
    # task races Airflow 3.3: the scheduler then sees that process "finished with state success" while
    # the resumed task runs, marks it failed, and the resumed try's own report is refused (409). A
    # person takes longer than that; the test waits for the scheduler to log that exit.
    event = f"Received executor event with state success for task instance TaskInstanceKey(dag_id='{dag_id}', "
    mark = f"task_id='refine.approve', run_id='{run_id}'"
    log = cluster.log_dir / "scheduler.log"
    deadline = time.monotonic() + 60
    while not any(event in line and mark in line for line in log.read_text(errors="replace").splitlines()):
        assert time.monotonic() < deadline, "the scheduler never handled the parked task's exit"
        time.sleep(0.5)
    time.sleep(1)
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/refine.approve/-1/hitlDetails"
    cluster.api("PATCH", path, {"chosen_options": [option], "params_input": {}})


def finished(cluster: Any, dag_id: str, run_id: str) -> None:
    state = cluster.wait_for_run(dag_id, run_id, timeout=300)
    assert state == "success", cluster.explain(dag_id, run_id)


def run_view(cluster: Any, dag_id: str, run_id: str) -> dict[str, Any]:
    return cluster.api("GET", f"/mlci/api/runs/{dag_id}/{safe_run(run_id)}")


def test_approve_promotes_reject_and_timeout_keep_the_deployed_model(airflow_cluster, dvc_project):
    cluster = airflow_cluster
    cluster.add_connection(
        "mlci_dvc_default",
        "mlci_dvc",
        host=str(dvc_project.remote),
        extra={"dvc_remote_url": dvc_project.dvc_remote_url},
    )
    (cluster.dags_folder / "mlci_approval.py").write_text(APPROVAL_DAG_SOURCE)

    approved = cluster.trigger("mlci_approval", logical_date="2026-11-01T02:00:00Z")
    assert wait_for_approval(cluster, "mlci_approval", approved) == "awaiting_input"
    assert dvc_project.remote_tags(MODEL) == {}  # nothing is released before a person says so
    answer(cluster, "mlci_approval", approved, "Approve")
    finished(cluster, "mlci_approval", approved)
    first = cluster.xcom("mlci_approval", approved, "refine.outcome")
    assert (first["decision"], first["version"], first["approval"]["decision"]) == ("promoted", "v0.1.0", "approved")
    assert first["approval"]["by"] == "Anonymous"  # who answered, as the auth manager names them (all admins here)
    assert run_view(cluster, "mlci_approval", approved)["outcome"]["summary"].startswith("Promoted v0.1.0 to prod")

    rejected = cluster.trigger("mlci_approval", logical_date="2026-11-02T02:00:00Z")
    unanswered = cluster.trigger("mlci_approval_timeout", logical_date="2026-11-03T02:00:00Z")
    wait_for_approval(cluster, "mlci_approval", rejected)
    answer(cluster, "mlci_approval", rejected, "Reject")
    finished(cluster, "mlci_approval", rejected)
    finished(cluster, "mlci_approval_timeout", unanswered)

    states = {ti["task_id"]: ti["state"] for ti in cluster.task_instances("mlci_approval", rejected)}
    assert (states["refine.approve"], states["refine.promote"], states["refine.keep_deployed"]) == (
        "success", "skipped", "skipped"
    )  # fmt: skip
    kept = cluster.xcom("mlci_approval", rejected, "refine.outcome")
    assert (kept["decision"], kept["promoted"], kept["approval"]["decision"]) == ("rejected", False, "rejected")
    view = run_view(cluster, "mlci_approval", rejected)["outcome"]
    assert view == {
        "decision": "rejected",
        "summary": view["summary"],
        "version": None,
        "href": f"/mlci/run-outcome/mlci_approval/{safe_run(rejected)}",
    }
    assert view["summary"].startswith("Kept v0.1.0 on prod: a reviewer rejected the candidate")

    late = cluster.xcom("mlci_approval_timeout", unanswered, "refine.outcome")
    assert (late["decision"], late["approval"]) == ("timed_out", {"decision": "timed_out", "by": None, "at": None})
    late_view = run_view(cluster, "mlci_approval_timeout", unanswered)["outcome"]
    assert late_view["decision"] == "timed_out"
    assert late_view["summary"].startswith("Kept v0.1.0 on prod: no reviewer answered in time")
    timeout_states = {ti["task_id"]: ti["state"] for ti in cluster.task_instances("mlci_approval_timeout", unanswered)}
    assert timeout_states["refine.promote"] == "skipped"
    # One release in all: the approved one.
    assert set(dvc_project.remote_tags(MODEL)) == {f"{MODEL}@v0.1.0", f"{MODEL}#prod#1"}
