"""The pull-request validation DAG, run for real with ``dag.test()``.

Real git and DVC (a bare remote, a local DVC remote); GitHub is stood in for by the loopback
server in tests/helpers/github_server.py (nothing outside this machine is reachable).
"""

from __future__ import annotations

import json
import re
import secrets

import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.helpers.flagships import PR_IN_SYNC_STATES
from tests.helpers.github_server import GitHubServer

DAG_ID = "example_pr_validation"
DAG_FILE = EXAMPLE_DAGS / "example_pr_validation.py"
REPO = "acme/fraud-model"


@pytest.fixture
def github(monkeypatch):
    token = "ghp_" + secrets.token_hex(16)
    with GitHubServer(token=token) as server:
        value = {"conn_type": "github", "host": server.url, "password": token}
        monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps(value))
        server.token = token
        yield server


def test_a_pull_request_in_sync_passes_and_gets_one_comment_and_a_green_status(run_dag, two_revisions, github, capfd):
    project = two_revisions
    github.add_pull(REPO, 7, project.head_sha)
    conf = {"repo": REPO, "pr_number": 7, "head_rev": project.head_sha, "base_rev": "main"}
    record = run_dag(DAG_ID, path=DAG_FILE, conf=conf)
    out = capfd.readouterr().out
    assert record.state == "success"
    assert record.task_states == PR_IN_SYNC_STATES
    # The head's lock matched: nothing ran again.
    assert set(record.xcom["reproduce"]["stages"].values()) <= {"skipped", "restored"}
    (comment,) = github.comments(REPO, pr_number=7)
    assert "accuracy" in comment["body"]
    assert [s["state"] for s in github.statuses(REPO, project.head_sha)] == ["success"]
    assert github.token not in out


def test_a_pull_request_out_of_sync_fails_with_a_report_and_a_red_status(run_dag, two_revisions, github):
    project = two_revisions
    params = project.work / "params.yaml"
    params.write_text(re.sub(r"epochs: \d+", "epochs: 40", params.read_text()))
    head = project.commit_and_push("Change epochs without running the pipeline", branch="experiment")
    github.add_pull(REPO, 8, head)
    conf = {"repo": REPO, "pr_number": 8, "head_rev": head, "base_rev": "main"}
    record = run_dag(DAG_ID, path=DAG_FILE, conf=conf)
    assert record.state == "failed"
    assert record.task_states["in_sync"] == "failed"
    assert record.task_states["reproduce"] == "upstream_failed"
    assert record.task_states["report"] == "success"
    assert record.task_states["comment"] == "success"
    assert record.task_states["outcome"] == "failed"
    (comment,) = github.comments(REPO, pr_number=8)
    assert "epochs" in comment["body"]
    assert [s["state"] for s in github.statuses(REPO, head)] == ["failure"]


def test_without_a_pull_request_nothing_is_posted(run_dag, two_revisions, github):
    record = run_dag(DAG_ID, path=DAG_FILE, conf={"head_rev": "experiment", "base_rev": "main"})
    assert record.state == "success"
    assert record.task_states["comment"] == "skipped"
    assert github.requests == []
