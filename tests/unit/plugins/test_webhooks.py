"""The pull-request webhook: signatures, payload to conf, the app's answers, and the in-process trigger.

The app is tested with stand-ins for the connection and the trigger (what they were called with is
recorded); :func:`trigger_dag_run` against the session's real metadata database (SQLite) with a Dag
parsed into it as the dag-processor does; the whole api-server over HTTP in
tests/integration/test_pr_webhook.py.
"""

from __future__ import annotations

import json
import textwrap
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from fastapi.testclient import TestClient

from airflow_provider_mlci.plugins.webhooks import (
    MAX_BODY_BYTES,
    TriggerRefusedError,
    WebhookSettings,
    create_app,
    pull_request_conf,
    run_id_for,
    sign,
    signature_valid,
    trigger_dag_run,
    webhook_settings,
)
from tests.helpers.imports import modules_loaded_by

SECRET = "It's a Secret to Everybody"
HEAD = "6dcb09b5b57875f334f61aebed695e2e4193db5e"
FORK_HEAD = "c0ffee" + "0" * 34


def pull_request_payload(
    action: str = "opened", *, number: int = 42, head: str = HEAD, fork: str | None = None
) -> dict[str, Any]:
    """A ``pull_request`` event's payload, shaped as GitHub sends it (only the fields that matter here)."""
    base_repo = {"full_name": "acme/fraud-model", "clone_url": "https://github.com/acme/fraud-model.git"}
    head_repo = {"full_name": fork, "clone_url": f"https://github.com/{fork}.git"} if fork else base_repo
    return {
        "action": action,
        "number": number,
        "pull_request": {
            "number": number,
            "state": "open",
            "head": {"ref": "feature", "sha": head, "repo": head_repo},
            "base": {"ref": "main", "sha": "9" * 40, "repo": base_repo},
        },
        "repository": base_repo,
        "sender": {"login": "octocat"},
    }


# ------------------------------------------------------------------------------------ signatures


def test_the_signature_is_githubs():
    # The example in GitHub's documentation on validating webhook deliveries.
    expected = "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"
    assert sign(SECRET, b"Hello, World!") == expected
    assert signature_valid(SECRET, b"Hello, World!", expected)
    assert signature_valid(SECRET, b"Hello, World!", f" {expected}\n")


@pytest.mark.parametrize(
    ("secret", "body", "header"),
    [
        pytest.param(SECRET, b"Hello, World?", sign(SECRET, b"Hello, World!"), id="another-body"),
        pytest.param("another secret", b"Hello, World!", sign(SECRET, b"Hello, World!"), id="another-secret"),
        pytest.param(SECRET, b"Hello, World!", None, id="missing"),
        pytest.param(SECRET, b"Hello, World!", "", id="empty"),
        pytest.param(SECRET, b"Hello, World!", sign(SECRET, b"Hello, World!")[7:], id="no-prefix"),
        pytest.param(SECRET, b"Hello, World!", "sha1=" + sign(SECRET, b"Hello, World!")[7:], id="sha1-prefix"),
        pytest.param(SECRET, b"Hello, World!", "sha256=\u00e9\u00e9", id="not-ascii"),
        pytest.param("", b"Hello, World!", sign("", b"Hello, World!"), id="no-secret"),
    ],
)
def test_a_wrong_or_missing_signature_is_refused(secret, body, header):
    assert not signature_valid(secret, body, header)


# ------------------------------------------------------------------------------------ payload -> conf


def test_a_pull_request_becomes_the_dags_conf():
    conf = pull_request_conf(pull_request_payload("synchronize"))
    assert conf == {"repo": "acme/fraud-model", "pr_number": 42, "head_rev": HEAD, "base_rev": "main"}


def test_a_forks_pull_request_names_the_base_repository_and_the_head_commit():
    """The fork's commit is fetched from the base repository (refs/pull/<n>/head): its sha is enough."""
    conf = pull_request_conf(pull_request_payload(head=FORK_HEAD, fork="mallory/fraud-model"))
    assert conf == {"repo": "acme/fraud-model", "pr_number": 42, "head_rev": FORK_HEAD, "base_rev": "main"}


def test_a_payload_without_repository_falls_back_to_the_base_repo():
    payload = pull_request_payload()
    del payload["repository"]
    assert pull_request_conf(payload)["repo"] == "acme/fraud-model"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        pytest.param(lambda p: p.pop("pull_request"), "no pull_request", id="no-pull-request"),
        pytest.param(lambda p: p.update(number=True), "not a positive integer", id="bool-number"),
        pytest.param(lambda p: p.update(number="42"), "not a positive integer", id="string-number"),
        pytest.param(lambda p: p["pull_request"]["head"].update(sha="main"), "not a commit id", id="head-not-sha"),
        pytest.param(lambda p: p["pull_request"]["head"].pop("sha"), "not a commit id", id="no-head"),
        pytest.param(lambda p: p["pull_request"]["base"].update(ref="-x"), "not a branch", id="base-option"),
        pytest.param(lambda p: p["pull_request"]["base"].update(ref="a b"), "not a branch", id="base-space"),
        pytest.param(lambda p: p["repository"].update(full_name="acme"), "not owner/name", id="repo-no-owner"),
    ],
)
def test_a_malformed_pull_request_is_refused_naming_the_field(change, message):
    payload = pull_request_payload()
    change(payload)
    with pytest.raises(ValueError, match=message):
        pull_request_conf(payload)


def test_the_run_id_is_the_delivery_id():
    delivery = "72d3162e-cc78-11e3-81ab-4c9367dc0958"
    assert run_id_for(delivery) == f"gh-{delivery}"
    for bad in (None, "", "../x", "a b", "x" * 101):
        with pytest.raises(ValueError, match="X-GitHub-Delivery"):
            run_id_for(bad)


def test_the_dag_may_depend_on_the_repository():
    assert WebhookSettings(secret="s").dag_for("acme/x") == "example_pr_validation"
    assert WebhookSettings(secret="s", dag_id="pr_dag").dag_for("acme/x") == "pr_dag"
    mapped = WebhookSettings(secret="s", dag_id={"Acme/Fraud-Model": "pr_fraud"})
    assert mapped.dag_for("acme/fraud-model") == "pr_fraud"
    assert mapped.dag_for("acme/other") is None
    assert WebhookSettings(secret="s", dag_id={"acme/a": "pr_a", "*": "pr_any"}).dag_for("acme/b") == "pr_any"


# ------------------------------------------------------------------------------------ the connection


def define_webhook_connection(monkeypatch: pytest.MonkeyPatch, **fields: Any) -> None:
    value = {"conn_type": "generic", **fields}
    monkeypatch.setenv("AIRFLOW_CONN_MLCI_GITHUB_WEBHOOK", json.dumps(value))


def test_the_connection_gives_the_secret_and_the_dag(monkeypatch):
    define_webhook_connection(monkeypatch, password=SECRET, extra={"dag_id": "pr_dag"})
    assert webhook_settings() == WebhookSettings(secret=SECRET, dag_id="pr_dag")
    define_webhook_connection(monkeypatch, password=SECRET)
    assert webhook_settings() == WebhookSettings(secret=SECRET, dag_id="example_pr_validation")


def test_without_a_connection_or_its_password_the_webhook_is_off(monkeypatch, airflow_db):
    monkeypatch.delenv("AIRFLOW_CONN_MLCI_GITHUB_WEBHOOK", raising=False)
    assert webhook_settings() is None
    define_webhook_connection(monkeypatch, extra={"dag_id": "pr_dag"})
    assert webhook_settings() is None


def test_a_dag_id_that_is_no_name_is_a_configuration_error(monkeypatch):
    define_webhook_connection(monkeypatch, password=SECRET, extra={"dag_id": ["a", "b"]})
    with pytest.raises(ValueError, match="'dag_id' must be"):
        webhook_settings()


# ------------------------------------------------------------------------------------ the app


class Recorder:
    """Stands in for :func:`trigger_dag_run`: records each call; a run id is taken once."""

    def __init__(self, error: Exception | None = None) -> None:
        self.calls: list[dict[str, Any]] = []
        self.runs: set[str] = set()
        self.error = error

    def __call__(self, dag_id: str, *, run_id: str, conf: dict[str, Any], note: str | None = None) -> bool:
        self.calls.append({"dag_id": dag_id, "run_id": run_id, "conf": conf, "note": note})
        if self.error is not None:
            raise self.error
        if run_id in self.runs:
            return False
        self.runs.add(run_id)
        return True


SETTINGS = WebhookSettings(secret=SECRET)


def client(recorder: Recorder, settings: WebhookSettings | None = SETTINGS) -> TestClient:
    return TestClient(create_app(settings=lambda: settings, trigger=recorder))


def deliver(
    app: TestClient,
    payload: Any,
    *,
    event: str = "pull_request",
    delivery: str | None = None,
    secret: str = SECRET,
    signature: str | None = None,
    form: bool = False,
) -> Any:
    """POST a delivery as GitHub does: the raw body signed with the secret."""
    body = json.dumps(payload).encode()
    content_type = "application/json"
    if form:
        body, content_type = urlencode({"payload": body.decode()}).encode(), "application/x-www-form-urlencoded"
    headers = {
        "Content-Type": content_type,
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature if signature is not None else sign(secret, body),
        "User-Agent": "GitHub-Hookshot/test",
    }
    return app.post("/github", content=body, headers=headers)


def test_a_signed_pull_request_triggers_the_dag_once():
    recorder = Recorder()
    app = client(recorder)
    delivery = str(uuid.uuid4())
    answer = deliver(app, pull_request_payload("opened"), delivery=delivery)
    assert answer.status_code == 201, answer.text
    conf = {"repo": "acme/fraud-model", "pr_number": 42, "head_rev": HEAD, "base_rev": "main"}
    assert answer.json() == {
        "status": "triggered",
        "dag_id": "example_pr_validation",
        "dag_run_id": f"gh-{delivery}",
        "conf": conf,
    }
    (call,) = recorder.calls
    assert call["run_id"] == f"gh-{delivery}"
    assert call["conf"] == conf
    assert "acme/fraud-model#42 opened" in call["note"]
    replay = deliver(app, pull_request_payload("opened"), delivery=delivery)
    assert replay.status_code == 200
    assert replay.json()["status"] == "already triggered"
    assert len(recorder.runs) == 1


@pytest.mark.parametrize("action", ["opened", "synchronize", "reopened"])
def test_each_new_head_triggers(action):
    recorder = Recorder()
    assert deliver(client(recorder), pull_request_payload(action)).status_code == 201
    assert len(recorder.calls) == 1


def test_a_form_encoded_delivery_is_read_too():
    recorder = Recorder()
    answer = deliver(client(recorder), pull_request_payload(), form=True)
    assert answer.status_code == 201, answer.text
    assert recorder.calls[0]["conf"]["head_rev"] == HEAD


@pytest.mark.parametrize("signature", [pytest.param("", id="missing"), pytest.param(sign("guess", b"{}"), id="wrong")])
def test_an_unsigned_or_wrongly_signed_delivery_is_refused_and_triggers_nothing(signature):
    recorder = Recorder()
    app = client(recorder)
    answer = deliver(app, pull_request_payload(), signature=signature)
    assert answer.status_code == 401
    assert deliver(app, pull_request_payload(), secret="not the secret").status_code == 401
    assert deliver(app, {"zen": "Keep it simple."}, event="ping", signature=signature).status_code == 401
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("event", "payload", "status"),
    [
        pytest.param("ping", {"zen": "Design for failure.", "hook_id": 1}, "pong", id="ping"),
        pytest.param("push", {"ref": "refs/heads/main"}, "ignored", id="push"),
        pytest.param("pull_request", pull_request_payload("closed"), "ignored", id="closed"),
        pytest.param("pull_request", pull_request_payload("labeled"), "ignored", id="labeled"),
        pytest.param("pull_request_review", pull_request_payload("submitted"), "ignored", id="review"),
    ],
)
def test_other_events_and_actions_are_answered_and_ignored(event, payload, status):
    recorder = Recorder()
    answer = deliver(client(recorder), payload, event=event)
    assert answer.status_code == 200
    assert answer.json()["status"] == status
    assert recorder.calls == []


def test_a_repository_no_dag_is_configured_for_is_ignored():
    recorder = Recorder()
    settings = WebhookSettings(secret=SECRET, dag_id={"acme/other": "pr_other"})
    answer = deliver(client(recorder, settings), pull_request_payload())
    assert answer.status_code == 200
    assert "acme/fraud-model" in answer.json()["reason"]
    assert recorder.calls == []


def test_without_its_connection_the_webhook_is_off():
    recorder = Recorder()
    answer = deliver(client(recorder, None), pull_request_payload())
    assert answer.status_code == 404
    assert "mlci_github_webhook" in answer.json()["detail"]
    assert recorder.calls == []


def test_a_misconfigured_connection_is_said():
    def broken() -> WebhookSettings:
        raise ValueError("connection 'mlci_github_webhook': extra 'dag_id' must be ...")

    answer = deliver(TestClient(create_app(settings=broken, trigger=Recorder())), pull_request_payload())
    assert answer.status_code == 500
    assert "dag_id" in answer.json()["detail"]


@pytest.mark.parametrize(
    ("headers", "body", "status"),
    [
        pytest.param({"X-GitHub-Delivery": ""}, None, 400, id="no-delivery-id"),
        pytest.param({"X-GitHub-Delivery": "../../x"}, None, 400, id="odd-delivery-id"),
        pytest.param({}, b"{not json", 400, id="not-json"),
        pytest.param({}, b"[1, 2]", 400, id="not-an-object"),
    ],
)
def test_a_signed_but_malformed_delivery_gets_400(headers, body, status):
    recorder = Recorder()
    raw = body if body is not None else json.dumps(pull_request_payload()).encode()
    all_headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": "pull_request",
        "X-GitHub-Delivery": str(uuid.uuid4()),
        "X-Hub-Signature-256": sign(SECRET, raw),
        **headers,
    }
    answer = client(recorder).post("/github", content=raw, headers=all_headers)
    assert answer.status_code == status, answer.text
    assert recorder.calls == []


def test_a_body_over_githubs_cap_is_refused_unread():
    recorder = Recorder()
    answer = client(recorder).post(
        "/github", content=b"x" * (MAX_BODY_BYTES + 1), headers={"X-GitHub-Event": "pull_request"}
    )
    assert answer.status_code == 413
    assert recorder.calls == []


@pytest.mark.parametrize(
    ("error", "status"),
    [
        pytest.param(TriggerRefusedError(404, "Dag 'x' not found"), 404, id="not-parsed"),
        pytest.param(TriggerRefusedError(409, "Dag 'x' has import errors"), 409, id="import-errors"),
        pytest.param(RuntimeError("database is locked"), 503, id="database"),
    ],
)
def test_a_run_that_cannot_be_created_is_a_failed_delivery(error, status):
    answer = deliver(client(Recorder(error)), pull_request_payload())
    assert answer.status_code == status
    assert answer.json()["detail"]


def test_only_post_is_served():
    assert client(Recorder()).get("/github").status_code == 405


# ------------------------------------------------------------------------------------ in the plugin


def test_the_plugin_serves_the_webhook_under_mlci(monkeypatch):
    from airflow_provider_mlci.plugins.reports import MlciReportsPlugin

    define_webhook_connection(monkeypatch, password=SECRET)
    app = TestClient(MlciReportsPlugin.fastapi_apps[0]["app"])  # the api-server mounts it at /mlci
    answer = app.post("/webhooks/github", content=b"{}", headers={"X-GitHub-Event": "ping"})
    assert answer.status_code == 401
    body = b'{"zen": "Speak like a human."}'
    answer = app.post(
        "/webhooks/github", content=body, headers={"X-GitHub-Event": "ping", "X-Hub-Signature-256": sign(SECRET, body)}
    )
    assert answer.json() == {"status": "pong"}


def test_importing_the_webhooks_is_cheap():
    loaded = modules_loaded_by("import airflow_provider_mlci.plugins.webhooks")
    heavy = ("fastapi", "starlette", "sqlalchemy", "pandas", "dvc", "boto3", "numpy")
    assert [m for m in loaded if m.split(".")[0] in heavy] == []


# ------------------------------------------------------------------------------------ the trigger, for real

DAG_ID = "mlci_webhook_target"
DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, Param, task

    with DAG(
        dag_id="mlci_webhook_target",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        params={"repo": Param("", type="string"), "pr_number": Param(0, type="integer")},
    ):

        @task
        def noop():
            return None

        noop()
    """
)


@pytest.fixture
def parsed_dag(airflow_db: Path, dags_folder: Path) -> str:
    """The target Dag in the metadata database, parsed and serialized as the dag-processor does, paused."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.models.dag import DagModel
    from airflow.utils.session import create_session

    path = dags_folder / f"{DAG_ID}.py"
    path.write_text(DAG_SOURCE)
    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=path, bundle_path=dags_folder, bundle_name="dags-folder")
    assert not bag.import_errors
    sync_bag_to_db(bag, "dags-folder", None)
    with create_session() as session:
        session.get(DagModel, DAG_ID).is_paused = True
    return DAG_ID


def test_the_trigger_queues_one_run_of_the_serialized_dag_even_when_paused(parsed_dag):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    run_id = f"gh-{uuid.uuid4()}"
    conf = {"repo": "acme/fraud-model", "pr_number": 42, "head_rev": HEAD, "base_rev": "main"}
    assert trigger_dag_run(parsed_dag, run_id=run_id, conf=conf, note="acme/fraud-model#42") is True
    assert trigger_dag_run(parsed_dag, run_id=run_id, conf={**conf, "pr_number": 43}) is False
    with create_session() as session:
        (run,) = session.scalars(select(DagRun).where(DagRun.dag_id == parsed_dag, DagRun.run_id == run_id))
        assert run.conf == conf
        assert str(run.state) == "queued"
        assert str(run.run_type) == "manual"
        assert run.logical_date is None


def test_the_trigger_refuses_an_unknown_dag_or_bad_params(parsed_dag):
    with pytest.raises(TriggerRefusedError) as refused:
        trigger_dag_run("mlci_no_such_dag", run_id="gh-x", conf={})
    assert refused.value.status_code == 404
    with pytest.raises(TriggerRefusedError) as refused:
        trigger_dag_run(parsed_dag, run_id=f"gh-{uuid.uuid4()}", conf={"pr_number": "forty-two"})
    assert refused.value.status_code == 400


def test_the_api_server_lets_a_delivery_in_without_a_login(monkeypatch, airflow_db):
    """Airflow's whole app, with logins required: its API refuses an anonymous call, the webhook takes it."""
    manager_class = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", manager_class)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "viewer:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "mlci-unit-test-secret-" + "0123456789abcdef" * 4)
    define_webhook_connection(monkeypatch, password=SECRET)
    from airflow.api_fastapi import app as api_app

    monkeypatch.setattr(api_app._AuthManagerState, "instance", None)  # put back afterwards
    server = TestClient(api_app.create_app())
    assert server.get("/api/v2/dags").status_code == 401
    body = b'{"zen": "Mind your words, they are important."}'
    headers = {"X-GitHub-Event": "ping", "X-GitHub-Delivery": str(uuid.uuid4())}
    assert server.post("/mlci/webhooks/github", content=body, headers=headers).status_code == 401
    headers["X-Hub-Signature-256"] = sign(SECRET, body)
    answer = server.post("/mlci/webhooks/github", content=body, headers=headers)
    assert (answer.status_code, answer.json()) == (200, {"status": "pong"})
