"""Pull-request triggers over real HTTP against a real api-server, scheduler and workers.

GitHub's webhook: signed deliveries POSTed to the plugin's ``/mlci/webhooks/github`` (with no Airflow
login) start ``example_pr_validation``, which runs end to end under the cluster against a real git
and DVC remote and the GitHub stand-in (tests/helpers/github_server.py), for a pull request from a
fork: its head commit is only at ``refs/pull/<n>/head`` of the repository. The CI-workflow
alternative: the script of example_dags/ci/github-actions-pr-validation.yml, run as written, triggers
through the REST API with a token.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import time
import urllib.error
import urllib.request
import uuid
from typing import Any

import pytest
import yaml

from airflow_provider_mlci.plugins.webhooks import sign
from tests.conftest import EXAMPLE_DAGS
from tests.helpers.demo_project import train
from tests.helpers.flagships import PR_IN_SYNC_STATES
from tests.helpers.github_server import GitHubServer
from tests.helpers.tools import require_tool

pytestmark = pytest.mark.cluster

DAG_ID = "example_pr_validation"
REPO = "acme/fraud-model"
WORKFLOW = EXAMPLE_DAGS / "ci" / "github-actions-pr-validation.yml"
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"


def post(url: str, body: bytes, headers: dict[str, str]) -> tuple[int, Any]:
    """POST ``body`` and return the status and the decoded JSON answer (errors included)."""
    request = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def run_exists(cluster: Any, run_id: str) -> bool:
    try:
        cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def run_count(cluster: Any) -> int:
    return cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns?limit=1")["total_entries"]


def wait_for_run(cluster: Any, run_id: str, timeout: float) -> str:
    """Wait for the run to end and return its state; a poll the busy api-server answers late is retried."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            state = cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")["state"]
        except (TimeoutError, urllib.error.URLError):
            state = None
        if state in ("success", "failed"):
            return state
        time.sleep(1)
    raise TimeoutError(f"run {run_id} did not end in {timeout} s; logs in {cluster.log_dir}")


@pytest.fixture
def pr_dag(airflow_cluster):
    """The PR-validation Dag, parsed by the cluster; the connections the tests add are removed afterwards."""
    shutil.copyfile(EXAMPLE_DAGS / f"{DAG_ID}.py", airflow_cluster.dags_folder / f"{DAG_ID}.py")
    airflow_cluster.wait_for_dag(DAG_ID)
    yield DAG_ID
    for conn_id in ("mlci_dvc_default", "github_default", "mlci_github_webhook"):
        try:
            airflow_cluster.api("DELETE", f"/api/v2/connections/{conn_id}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise


@pytest.fixture
def fork_pull(dvc_project):
    """The demo project trained on main, and a fork's pull request on it: a commit at refs/pull/7/head only."""
    dvc_project.base = train(dvc_project, 10)
    (dvc_project.work / "NOTES.md").write_text("Notes from a fork.\n")
    dvc_project.git("add", "NOTES.md")
    dvc_project.git("commit", "--quiet", "-m", "A fork's change")
    dvc_project.head_sha = dvc_project.head()
    dvc_project.git("push", "--quiet", "origin", "HEAD:refs/pull/7/head")
    assert dvc_project.head_sha not in {
        sha for ref, sha in dvc_project.remote_refs().items() if ref.startswith("refs/heads/")
    }
    return dvc_project


def test_a_signed_delivery_runs_pr_validation_for_a_fork_and_nothing_else_does(airflow_cluster, pr_dag, fork_pull):
    project = fork_pull
    head = project.head_sha
    airflow_cluster.add_connection(
        "mlci_dvc_default", "mlci_dvc", host=str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url}
    )
    webhook_secret = secrets.token_urlsafe(24)
    airflow_cluster.add_connection("mlci_github_webhook", "generic", password=webhook_secret, extra={"dag_id": DAG_ID})
    airflow_cluster.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": False})
    url = f"{airflow_cluster.base_url}/mlci/webhooks/github"
    payload = {
        "action": "opened",
        "number": 7,
        "pull_request": {
            "number": 7,
            "head": {"ref": "notes", "sha": head, "repo": {"full_name": "mallory/fraud-model"}},
            "base": {"ref": "main", "sha": project.base, "repo": {"full_name": REPO}},
        },
        "repository": {"full_name": REPO},
        "sender": {"login": "mallory"},
    }
    body = json.dumps(payload).encode()

    def deliver(delivery: str, *, event: str = "pull_request", data: bytes = body, key: str = webhook_secret):
        headers = {
            "Content-Type": "application/json",
            "X-GitHub-Event": event,
            "X-GitHub-Delivery": delivery,
            "X-Hub-Signature-256": sign(key, data),
            "User-Agent": "GitHub-Hookshot/test",
        }
        return post(url, data, headers)

    token = "ghp_" + secrets.token_hex(16)
    with GitHubServer(token=token) as github:
        github.add_pull(REPO, 7, head)
        airflow_cluster.add_connection("github_default", "github", host=github.url, password=token)
        before = run_count(airflow_cluster)

        forged = str(uuid.uuid4())
        assert deliver(forged, key="a guess")[0] == 401
        assert not run_exists(airflow_cluster, f"gh-{forged}")
        status, _ = post(url, body, {"X-GitHub-Event": "pull_request", "X-GitHub-Delivery": forged})
        assert status == 401
        ping = b'{"zen": "Practicality beats purity."}'
        assert deliver(str(uuid.uuid4()), event="ping", data=ping) == (200, {"status": "pong"})

        delivery = str(uuid.uuid4())
        started = time.monotonic()
        status, answer = deliver(delivery)
        assert time.monotonic() - started < 10
        assert status == 201, answer
        run_id = f"gh-{delivery}"
        assert answer["dag_run_id"] == run_id
        run = airflow_cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        assert run["conf"] == {"repo": REPO, "pr_number": 7, "head_rev": head, "base_rev": "main"}
        assert run["run_type"] == "manual"

        assert deliver(delivery) == (200, {**answer, "status": "already triggered"})  # a replay
        assert run_count(airflow_cluster) == before + 1

        state = wait_for_run(airflow_cluster, run_id, timeout=240)
        tis = {ti["task_id"]: ti["state"] for ti in airflow_cluster.task_instances(DAG_ID, run_id)}
        assert state == "success", airflow_cluster.explain(DAG_ID, run_id, lines=40)
        assert tis == PR_IN_SYNC_STATES
        (comment,) = github.comments(REPO, pr_number=7)
        assert "accuracy" in comment["body"]
        assert [s["state"] for s in github.statuses(REPO, head)] == ["success"]
    assert run_count(airflow_cluster) == before + 1


def test_the_ci_workflow_triggers_through_the_rest_api_with_a_token(airflow_cluster, pr_dag):
    """The workflow's own script, as GitHub Actions would run it (its ``${{ }}`` values given as environment)."""
    require_tool("curl", install="apt-get install -y curl")
    workflow = yaml.safe_load(WORKFLOW.read_text())
    triggers = workflow.get("on", workflow.get(True))  # YAML 1.1 reads the key "on" as true
    assert triggers == {"pull_request_target": {"types": ["opened", "synchronize", "reopened"]}}
    (step,) = workflow["jobs"]["trigger"]["steps"]
    airflow_cluster.api("PATCH", f"/api/v2/dags/{DAG_ID}", {"is_paused": True})  # queued, not run
    run_id = f"gha-{uuid.uuid4().hex[:12]}-1"
    values = {
        "AIRFLOW_URL": airflow_cluster.base_url + "/",
        "AIRFLOW_USERNAME": "ci",
        "AIRFLOW_PASSWORD": secrets.token_hex(8),
        "DAG_ID": DAG_ID,
        "REPO": REPO,
        "PR_NUMBER": "8",
        "HEAD_REV": HEAD,
        "BASE_REV": "main",
        "RUN_ID": run_id,
    }
    assert set(step["env"]) == set(values)
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), **values}
    try:
        outputs = []
        for _ in range(2):  # the second time, as a retried step: the run exists, nothing new
            proc = subprocess.run(["bash", "-c", step["run"]], env=env, capture_output=True, text=True, timeout=60)
            assert proc.returncode == 0, (proc.stdout, proc.stderr)
            outputs.append(proc.stdout + proc.stderr)
        assert f"Triggered {DAG_ID} run {run_id}" in outputs[0]
        assert f"{DAG_ID} run {run_id} exists already" in outputs[1]
        run = airflow_cluster.api("GET", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
        assert run["conf"] == {"repo": REPO, "pr_number": 8, "head_rev": HEAD, "base_rev": "main"}
        assert run["state"] == "queued"
        assert run["logical_date"] is None
        assert values["AIRFLOW_PASSWORD"] not in "".join(outputs)
    finally:
        airflow_cluster.api("DELETE", f"/api/v2/dags/{DAG_ID}/dagRuns/{run_id}")
