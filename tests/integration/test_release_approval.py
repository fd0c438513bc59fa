"""Human approval of a release, on a real scheduler: approve -> promoted, reject -> kept, no answer -> kept.

The refinement group with ``approval=`` on the demo project, run by a real Airflow (scheduler,
triggerer, api-server; LocalExecutor): the approval task waits for input (Airflow 3.3 parks it in
``awaiting_input``), the test answers through the REST API as a reviewer would from the UI, and the
scheduler's timeout sweep ends the unanswered one. Each run's outcome is read back from the run view
the plugin serves on that api-server. The gate's rules here let any candidate pass, so that it is
the person who decides.
"""

from __future__ import annotations

import textwrap
import time
from typing import Any

import pytest

from airflow_provider_mlci.report_store import safe_run

pytestmark = pytest.mark.cluster

MODEL = "fraud-detector"
DAG_SOURCE = textwrap.dedent(
    """
    from datetime import timedelta

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.config import Approval
    from airflow_provider_mlci.task_groups.refine import RefinementTaskGroup

    for dag_id, wait in (("mlci_approval", timedelta(minutes=20)), ("mlci_approval_timeout", timedelta(seconds=2))):
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
    (cluster.dags_folder / "mlci_approval.py").write_text(DAG_SOURCE)

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
