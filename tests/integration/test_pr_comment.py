"""PullRequestCommentOperator in real DAG runs (dag.test()) against a stand-in for GitHub's REST API.

No GitHub is reachable from the tests: tests/helpers/github_server.py stands in for it on
127.0.0.1 (GitHub's request and response shapes, token checked, requests recorded). The
``github_default`` connection points at it through ``AIRFLOW_CONN_GITHUB_DEFAULT``.
"""

from __future__ import annotations

import json
import secrets
import textwrap

import pytest

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.hooks.forge import MAX_BODY_CHARS
from airflow_provider_mlci.operators.forge import PullRequestCommentOperator
from tests.helpers.github_server import GitHubServer

REPO = "acme/fraud-model"
HEAD = "5a1e0c2d" * 5

DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    from airflow_provider_mlci.operators.forge import PullRequestCommentOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):

        @task
        def gate(**context):
            promote = context["dag_run"].conf["promote"]
            reasons = [] if promote else ["accuracy fell by 0.021 (needs >= 0)"]
            decision = {{"promote": promote, "model": "fraud", "reasons": reasons}}
            context["ti"].xcom_push(key="decision", value=decision)

        comment = PullRequestCommentOperator(
            task_id="comment",
            repo="{repo}",
            pr_number="{{{{ dag_run.conf['pr'] }}}}",
            report_uri="{{{{ dag_run.conf['report'] }}}}",
            report_url="https://reports.example.com/{{{{ run_id }}}}/report.html",
            status_from_task="gate",
            trigger_rule="all_done",
            retries=2,
        )
        gate() >> comment
    """
)


@pytest.fixture
def token() -> str:
    return "ghp_" + secrets.token_hex(16)


@pytest.fixture
def github(token, monkeypatch):
    """The stand-in for GitHub with pull request #12, and ``github_default`` pointing at it."""
    with GitHubServer(token=token) as server:
        server.add_pull(REPO, 12, HEAD)
        value = {"conn_type": "github", "host": server.url, "password": token}
        monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps(value))
        yield server


def write_report(folder, run: int) -> str:
    """Store a report as MetricsReportOperator does (report.md, image links to the stored images)."""
    (folder / "images").mkdir(parents=True)
    text = (
        f"# fraud: metrics, run {run}\n\n| metric | old | new |\n|---|---|---|\n| accuracy | 0.90 | 0.9{run} |\n\n"
        f"![roc](file://{folder}/images/eval-roc.csv.svg)\n"
    )
    (folder / "report.md").write_text(text)
    return text


def test_three_runs_leave_one_comment_with_the_last_report_and_set_the_status(run_dag, github, tmp_path, token, capfd):
    github.add_comment(REPO, "Looks good to me, waiting for the metrics.", pr_number=12)
    dag_id = "mlci_pr_comment_upsert"
    source = DAG_SOURCE.format(dag_id=dag_id, repo=REPO)
    reports, results = [], []
    capfd.readouterr()
    for run, promote in enumerate([True, True, False], start=1):
        folder = tmp_path / f"run{run}"
        reports.append(write_report(folder, run))
        record = run_dag(dag_id, source=source, conf={"pr": 12, "promote": promote, "report": f"file://{folder}"})
        assert record.state == "success", record.task_states
        results.append(record.xcom["comment"])
    out = capfd.readouterr().out

    comments = github.comments(REPO, pr_number=12)
    # Written out by hand, not rendered by the code under test: the hidden marker line (the DAG id
    # is the default key), then the third run's report.md line by line, its image link as it is.
    expected = "\n".join(
        [
            "<!-- mlci-report: mlci_pr_comment_upsert -->",
            "# fraud: metrics, run 3",
            "",
            "| metric | old | new |",
            "|---|---|---|",
            "| accuracy | 0.90 | 0.93 |",
            "",
            f"![roc](file://{tmp_path}/run3/images/eval-roc.csv.svg)",
            "",
        ]
    )
    assert [c["body"] for c in comments] == ["Looks good to me, waiting for the metrics.", expected]
    ours = comments[1:]
    assert reports[2].splitlines() == expected.splitlines()[1:]  # the stored report, unchanged
    assert [r["created"] for r in results] == [True, False, False]
    assert len({r["comment_id"] for r in results}) == 1
    assert results[2]["url"] == ours[0]["html_url"]
    assert [r["status"] for r in results] == ["success", "success", "failure"]
    assert {r["status_sha"] for r in results} == {HEAD}
    statuses = github.statuses(REPO, HEAD)
    assert [s["state"] for s in statuses] == ["success", "success", "failure"]
    assert {s["context"] for s in statuses} == {"mlci/gate"}
    assert statuses[0]["description"] == "Gate passed: promote fraud"
    assert statuses[-1]["description"] == "Gate refused: accuracy fell by 0.021 (needs >= 0)"
    assert statuses[-1]["target_url"].startswith("https://reports.example.com/manual__")
    writes = [r.method for r in github.requests if r.method != "GET"]
    assert writes == ["POST", "POST", "PATCH", "POST", "PATCH", "POST"]  # comment, status; edit, status; ...
    assert token not in out
    assert all(token not in json.dumps(r) for r in results)


def test_a_long_report_is_cut_with_a_link_and_a_bad_token_fails_without_retries(
    run_dag, github, tmp_path, token, capfd, monkeypatch
):
    dag_id = "mlci_pr_comment_long"
    folder = tmp_path / "long"
    folder.mkdir()
    rows = "\n".join(f"| case {i} | {'x' * 90} |" for i in range(1200))
    (folder / "report.md").write_text(f"# Failure cases\n\n| case | detail |\n|---|---|\n{rows}\n")
    source = DAG_SOURCE.format(dag_id=dag_id, repo=REPO)
    record = run_dag(dag_id, source=source, conf={"pr": "12", "promote": True, "report": f"file://{folder}/report.md"})
    assert record.state == "success", record.task_states
    assert record.xcom["comment"]["truncated"] is True
    (comment,) = github.comments(REPO, pr_number=12)
    assert len(comment["body"]) <= MAX_BODY_CHARS
    # The report has 1204 lines: 4 of head (the body's first 88 characters with the marker line),
    # then rows of 104 (cases 0-9), 105 (10-99) and 106 characters (100-) with their newlines.
    # Through case 615 that is 88 + 1,040 + 9,450 + 54,696 = 65,274 characters; case 616 and the
    # note of about 200 would pass 65,536, so 4 + 616 = 620 lines are shown.
    lines = comment["body"].splitlines()
    head = ["<!-- mlci-report: mlci_pr_comment_long -->", "# Failure cases", "", "| case | detail |", "|---|---|"]
    assert lines[:5] == head
    assert lines[-4:] == [
        f"| case 615 | {'x' * 90} |",
        "",
        "---",
        "> :warning: **Report truncated**: 620 of 1204 lines shown (GitHub takes at most 65,536 characters). "
        f"[Read the full report](https://reports.example.com/{record.run_id}/report.html).",
    ]
    assert lines[5:-3] == [f"| case {i} | {'x' * 90} |" for i in range(616)]

    github.requests.clear()
    wrong = {"conn_type": "github", "host": github.url, "password": "ghp_not_the_right_one_4242"}
    monkeypatch.setenv("AIRFLOW_CONN_GITHUB_DEFAULT", json.dumps(wrong))
    capfd.readouterr()
    record = run_dag(dag_id, source=source, conf={"pr": 12, "promote": True, "report": f"file://{folder}"})
    out = capfd.readouterr().out
    assert record.task_states["comment"] == "failed"  # not up_for_retry, though retries=2
    refused = (
        f"ForgeAuthError: GitHub at {github.url} refused the token of connection 'github_default' for pull "
        "request #12 of acme/fraud-model (HTTP 401: Bad credentials): it is missing, invalid or expired."
    )
    assert f"airflow_provider_mlci.exceptions.{refused}" in out.splitlines()
    assert f"airflow.sdk.exceptions.AirflowFailException: {refused}" in out.splitlines()
    assert "ghp_not_the_right_one_4242" not in out
    assert token not in out
    assert len(github.requests) == 1  # one refused GET, no retry


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"repo": "fraud-model", "pr_number": 12}, "repo='fraud-model' is not a GitHub repository"),
        ({"repo": REPO, "pr_number": "twelve"}, "pr_number='twelve' is not a pull request number"),
        ({"repo": REPO}, "exactly one of pr_number and commit_sha"),
        ({"repo": REPO, "pr_number": 12, "commit_sha": HEAD}, "exactly one of pr_number and commit_sha"),
        ({"repo": REPO, "pr_number": 12, "status": "passed"}, "status='passed' is not a commit status"),
        (
            {"repo": REPO, "pr_number": 12, "status": "success", "status_from_task": "gate"},
            "status or status_from_task",
        ),
        ({"repo": REPO, "pr_number": 12, "body": None}, "exactly one of body .* and report_uri"),
        ({"repo": REPO, "pr_number": 12, "body": "x", "report_uri": "file:///r"}, "exactly one of body"),
        ({"repo": REPO, "pr_number": 12, "body": "  "}, "body is empty"),
        ({"repo": REPO, "pr_number": 12, "marker": "a-->b"}, "marker='a-->b'"),
        ({"repo": REPO, "pr_number": 12, "status": "error", "status_sha": "abc"}, "status_sha='abc'"),
    ],
)
def test_bad_arguments_fail_typed_before_any_request(github, arguments, message):
    from airflow.providers.common.compat.sdk import AirflowFailException

    arguments = {"body": "# report", **arguments}
    operator = PullRequestCommentOperator(task_id="comment", **arguments)
    with pytest.raises(AirflowFailException, match=f"MlciConfigError: .*{message}") as caught:
        operator.execute({})
    assert isinstance(caught.value.__cause__, MlciConfigError)
    assert github.requests == []


def test_a_missing_report_is_named(github, tmp_path):
    from airflow.providers.common.compat.sdk import AirflowFailException

    operator = PullRequestCommentOperator(task_id="comment", repo=REPO, pr_number=12, report_uri=f"file://{tmp_path}")
    with pytest.raises(AirflowFailException, match=f"No report at file://{tmp_path}/report.md"):
        operator.execute({})
    assert github.requests == []


class _TaskInstance:
    """What the operator reads from ``context["ti"]``: the gate's XCom."""

    def __init__(self, decision):
        self.decision = decision

    def xcom_pull(self, task_ids, key):
        assert (task_ids, key) == ("gate", "decision")
        return self.decision


def test_a_commit_gets_the_body_and_the_status_given(github):
    github.add_commit(REPO, "c0ffee00" * 5)
    operator = PullRequestCommentOperator(
        task_id="comment", repo=REPO, commit_sha="C0FFEE00" * 5, body="# Nightly\n\nall good", status="pending"
    )
    result = operator.execute({})
    (comment,) = github.comments(REPO, commit_sha="c0ffee00" * 5)
    assert comment["body"].endswith("\n# Nightly\n\nall good\n")
    assert comment["body"].splitlines()[1:] == ["# Nightly", "", "all good"]
    assert result["created"] is True
    assert result["status"] == "pending"
    assert [s["state"] for s in github.statuses(REPO, "c0ffee00" * 5)] == ["pending"]
    assert not any(r.path.endswith("/pulls/12") for r in github.requests)


def test_a_gate_that_left_no_decision_sets_the_status_to_error(github):
    operator = PullRequestCommentOperator(
        task_id="comment", repo=REPO, pr_number=12, body="# report", status_from_task="gate", marker="gate report"
    )
    result = operator.execute({"ti": _TaskInstance(None)})
    assert result["status"] == "error"
    (status,) = github.statuses(REPO, HEAD)
    assert status["description"] == "Task gate left no gate decision"
    assert [c["body"] for c in github.comments(REPO, pr_number=12)] == ["<!-- mlci-report: gate report -->\n# report\n"]

    from airflow.providers.common.compat.sdk import AirflowFailException

    bad = PullRequestCommentOperator(task_id="comment", repo=REPO, pr_number=12, body="x", status_from_task="gate")
    with pytest.raises(AirflowFailException, match="has no boolean 'promote'"):
        bad.execute({"ti": _TaskInstance({"promote": "yes"})})
