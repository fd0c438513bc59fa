"""Pull-request webhooks: a code host's signed delivery starts the PR-validation Dag, once.

The UI plugin (:mod:`.reports`) mounts this app at ``/mlci/webhooks`` in the api-server:

- ``POST /mlci/webhooks/github``: GitHub's webhook (content type ``application/json``, or
  ``application/x-www-form-urlencoded``), event "Pull requests".

A delivery is checked in this order, and nothing is triggered unless every check passes:

1. The connection ``mlci_github_webhook`` (:data:`CONN_ID`) holds the webhook's secret in its
   ``password``; without it the endpoint answers 404 (the webhook is off).
2. ``X-Hub-Signature-256: sha256=<hex>`` must be the HMAC-SHA256 of the raw body under that secret,
   compared in constant time: a missing or wrong signature gets 401. This signature is the only
   authentication: GitHub cannot send an Airflow token, so the route asks for none, and the
   api-server lets it through (its auth middleware only refreshes a UI session cookie; the
   login checks are dependencies of Airflow's own routes).
3. ``ping`` is answered 200 "pong"; another event, or a ``pull_request`` whose action is not
   ``opened``, ``synchronize`` or ``reopened``, is answered 200 "ignored".
4. The Dag comes from the connection's extra: ``{"dag_id": "my_pr_dag"}`` (default
   ``example_pr_validation``), or a mapping from repository to Dag,
   ``{"dag_id": {"acme/fraud-model": "pr_fraud", "*": "pr_default"}}`` (a repository it does not
   name is ignored, 200).
5. The run is created in the api-server's own process, as ``POST /api/v2/dags/{dag_id}/dagRuns``
   creates it (a queued manual run of the Dag's latest serialized version, even when the Dag is
   paused), with the run id ``gh-<X-GitHub-Delivery>`` and the conf::

       {"repo": "<owner/name of the base repository>", "pr_number": <n>,
        "head_rev": "<the head commit sha>", "base_rev": "<the base branch>"}

   201 "triggered". A delivery already seen (GitHub's "Redeliver", a replay) finds its run id taken
   and is answered 200 "already triggered": nothing new is created. A Dag that is not parsed yet
   answers 404, one with import errors 409, so GitHub shows the delivery as failed and it can be
   redelivered.

The head commit is named by its sha, also for a pull request from a fork: the fork's commit is not
on any branch of the base repository, but GitHub keeps it at ``refs/pull/<n>/head`` there, and the
worker's mirror of the repository (a ``git clone --mirror``, see
:class:`~airflow_provider_mlci.core.repo.workspace.WorkerCache`) fetches every ref, ``refs/pull/*``
included. The base is the branch's name, so the report compares with the base as it is when the run
starts.

Answers are JSON (``{"status": ..., ...}`` or ``{"detail": ...}``) and come within a second or two:
the run is only a row in the database. Bodies over 25 MiB (GitHub's own cap) get 413. Nothing of the
secret or the signature is logged.

Importing this module is cheap (the standard library only): FastAPI and Airflow's models are imported
when the api-server builds the app or a delivery comes.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "CONN_ID",
    "DEFAULT_DAG_ID",
    "GITHUB_PATH",
    "TRIGGERING_ACTIONS",
    "URL_PREFIX",
    "TriggerRefusedError",
    "WebhookSettings",
    "create_app",
    "pull_request_conf",
    "run_id_for",
    "sign",
    "signature_valid",
    "trigger_dag_run",
    "webhook_settings",
]

log = logging.getLogger(__name__)

#: Where the reports app mounts this one (under the plugin's ``/mlci``).
URL_PREFIX = "/webhooks"
#: GitHub's endpoint, under :data:`URL_PREFIX`.
GITHUB_PATH = "/github"
#: The connection that holds the webhook's secret (``password``) and, in its extra, the Dag to trigger.
CONN_ID = "mlci_github_webhook"
#: The Dag triggered when the connection names none.
DEFAULT_DAG_ID = "example_pr_validation"
#: The ``pull_request`` actions that start a run: a new head commit to validate.
TRIGGERING_ACTIONS = frozenset({"opened", "synchronize", "reopened"})
#: GitHub caps a delivery at 25 MB; a larger body is refused unread.
MAX_BODY_BYTES = 25 * 1024 * 1024

_SIGNATURE_PREFIX = "sha256="
_DELIVERY_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_REPO = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
_SHA = re.compile(r"^(?:[0-9a-f]{40}|[0-9a-f]{64})$")
_BRANCH = re.compile(r"^[^\s\x00-\x1f\x7f~^:?*\[\\]+$")
_USER = "github-webhook"


# ------------------------------------------------------------------------------------ the pieces


def sign(secret: str, body: bytes) -> str:
    """Return the ``X-Hub-Signature-256`` value GitHub sends for ``body``: ``sha256=<hex>``.

    :param secret: the webhook's secret
    :param body: the raw request body
    """
    return _SIGNATURE_PREFIX + hmac.new(secret.encode("utf-8"), body, hashlib.sha256).hexdigest()


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    """Return whether ``header`` is the HMAC-SHA256 signature of ``body`` under ``secret``.

    The comparison takes the same time wherever the values differ; an empty secret verifies nothing.

    :param secret: the webhook's secret
    :param body: the raw request body, as received
    :param header: the ``X-Hub-Signature-256`` header (``sha256=<hex>``), or ``None`` if absent
    """
    if not secret or not header:
        return False
    return hmac.compare_digest(sign(secret, body).encode("ascii"), header.strip().encode("utf-8", "replace"))


def run_id_for(delivery: str | None) -> str:
    """Return the run id of a delivery, ``gh-<delivery id>``: a replay of it finds its run taken.

    :param delivery: the ``X-GitHub-Delivery`` header (a GUID)
    :raises ValueError: no delivery id, or one that is no GUID-like name
    """
    if not delivery or not _DELIVERY_ID.match(delivery):
        raise ValueError("X-GitHub-Delivery is missing or is not a delivery id")
    return f"gh-{delivery}"


def pull_request_conf(payload: Mapping[str, Any]) -> dict[str, Any]:
    """Return the PR-validation Dag's conf for a ``pull_request`` event's payload.

    ``repo`` is the base repository (where the pull request lives, and where a fork's head commit is
    kept at ``refs/pull/<n>/head``), ``head_rev`` the head commit's sha, ``base_rev`` the base branch.

    :param payload: the event's JSON payload
    :raises ValueError: a payload without these, or with values that are not what GitHub sends
    """
    pull = payload.get("pull_request")
    if not isinstance(pull, Mapping):
        raise ValueError("the payload has no pull_request")
    number = payload.get("number", pull.get("number"))
    repo = _dig(payload, "repository", "full_name") or _dig(pull, "base", "repo", "full_name")
    head = _dig(pull, "head", "sha")
    base = _dig(pull, "base", "ref")
    if not isinstance(number, int) or isinstance(number, bool) or number < 1:
        raise ValueError(f"pull request number {number!r} is not a positive integer")
    if not isinstance(repo, str) or not _REPO.match(repo):
        raise ValueError(f"repository {repo!r} is not owner/name")
    if not isinstance(head, str) or not _SHA.match(head):
        raise ValueError(f"head sha {head!r} is not a commit id")
    if not isinstance(base, str) or not _BRANCH.match(base) or base.startswith("-"):
        raise ValueError(f"base ref {base!r} is not a branch name")
    return {"repo": repo, "pr_number": number, "head_rev": head, "base_rev": base}


def _dig(value: Any, *keys: str) -> Any:
    for key in keys:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


@dataclass(frozen=True)
class WebhookSettings:
    """What the webhook's connection says.

    :param secret: the webhook's secret (empty: the webhook is off)
    :param dag_id: the Dag to trigger, or a mapping from ``owner/name`` (``"*"``: any other) to a Dag
    """

    secret: str
    dag_id: str | Mapping[str, str] = DEFAULT_DAG_ID
    _repos: dict[str, str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        repos = {} if isinstance(self.dag_id, str) else {str(k).lower(): str(v) for k, v in self.dag_id.items()}
        object.__setattr__(self, "_repos", repos)

    def dag_for(self, repo: str) -> str | None:
        """Return the Dag to trigger for a pull request of ``repo``, or ``None`` for none.

        :param repo: ``owner/name`` (compared without case, as GitHub compares names)
        """
        if isinstance(self.dag_id, str):
            return self.dag_id
        return self._repos.get(repo.lower(), self._repos.get("*"))


def webhook_settings(conn_id: str = CONN_ID) -> WebhookSettings | None:
    """Read the webhook's connection; ``None`` when it does not exist or has no password.

    :param conn_id: the connection (secrets backends, environment and metadata database, as for any
        connection the api-server reads)
    :raises ValueError: an extra whose ``dag_id`` is neither a Dag id nor a mapping of them
    """
    from airflow.exceptions import AirflowNotFoundException
    from airflow.models.connection import Connection

    try:
        conn = Connection.get_connection_from_secrets(conn_id)
    except AirflowNotFoundException:
        return None
    if not conn.password:
        return None
    dag_id = (conn.extra_dejson or {}).get("dag_id") or DEFAULT_DAG_ID
    valid = isinstance(dag_id, str) or (
        isinstance(dag_id, Mapping) and all(isinstance(v, str) and v for v in dag_id.values())
    )
    if not valid:
        raise ValueError(
            f"connection {conn_id!r}: extra 'dag_id' must be a Dag id or a mapping of repository to Dag id"
        )
    return WebhookSettings(secret=conn.password, dag_id=dag_id)


# ------------------------------------------------------------------------------------ triggering


class TriggerRefusedError(Exception):
    """The Dag cannot be triggered now; ``status_code`` is the HTTP answer.

    :param status_code: 404 (no such Dag, or not parsed yet), 409 (import errors), 400 (a run the
        Dag refuses: its params, its allowed run types)
    :param detail: what to tell the code host
    """

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


#: Creates the run; returns ``False`` when ``run_id`` already exists (nothing created).
Trigger = Callable[..., bool]


def trigger_dag_run(dag_id: str, *, run_id: str, conf: dict[str, Any], note: str | None = None) -> bool:
    """Queue a manual run of ``dag_id`` in this process, as the REST API's ``POST .../dagRuns`` does.

    The Dag's latest serialized version runs, with no logical date; a paused Dag gets the run queued.

    :param dag_id: the Dag
    :param run_id: the run's id; when a run with it exists, nothing is created
    :param conf: the run's conf
    :param note: the run's note, shown in the UI (where this Airflow keeps notes on triggered runs)
    :return: whether a run was created (``False``: it existed already)
    :raises TriggerRefusedError: no such Dag, one with import errors, or a run it refuses
    """
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.exceptions import DagNotFound, DagRunAlreadyExists
    from airflow.models.dag import DagModel
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.types import DagRunTriggeredByType
    from sqlalchemy.exc import IntegrityError

    with create_session() as session:
        model = DagModel.get_current(dag_id, session=session)
        if model is None or getattr(model, "is_stale", False):
            raise TriggerRefusedError(404, f"Dag {dag_id!r} not found (not parsed yet, or removed)")
        if model.has_import_errors:
            raise TriggerRefusedError(409, f"Dag {dag_id!r} has import errors and cannot be triggered")
    options: dict[str, Any] = {"triggering_user_name": _USER, "note": note}
    accepted = inspect.signature(trigger_dag).parameters
    try:
        trigger_dag(
            dag_id,
            triggered_by=DagRunTriggeredByType.REST_API,
            run_id=run_id,
            conf=conf,
            **{k: v for k, v in options.items() if k in accepted and v is not None},
        )
    except DagRunAlreadyExists:
        return False
    except DagNotFound as exc:
        raise TriggerRefusedError(404, f"Dag {dag_id!r} not found (not parsed yet, or removed)") from exc
    except IntegrityError:
        # Two deliveries of the same id at once: the other one inserted the run first.
        if DagRun.find_duplicate(dag_id=dag_id, run_id=run_id) is not None:
            return False
        raise
    except ValueError as exc:  # the Dag's params refused the conf, or it allows no manual runs
        raise TriggerRefusedError(400, str(exc)) from exc
    return True


# ------------------------------------------------------------------------------------ the app


class _RefusedError(Exception):
    """Stop reading the delivery and answer ``status`` with ``detail``."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def create_app(
    *,
    settings: Callable[[], WebhookSettings | None] | None = None,
    trigger: Trigger | None = None,
) -> FastAPI:
    """Build the web app that receives the webhooks (the reports app mounts it at :data:`URL_PREFIX`).

    :param settings: reads the secret and the Dag; default :func:`webhook_settings`
    :param trigger: creates the run, called as :func:`trigger_dag_run` is; default :func:`trigger_dag_run`
    """
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import JSONResponse

    read_settings = settings or webhook_settings
    create_run = trigger or trigger_dag_run
    app = FastAPI(title="MLCI webhooks", docs_url=None, redoc_url=None, openapi_url=None)

    async def github(request: Request) -> Response:
        try:
            status, body = await _github(request)
        except _RefusedError as refused:
            status, body = refused.status, {"detail": refused.detail}
        return JSONResponse(body, status_code=status)

    async def _github(request: Request) -> tuple[int, dict[str, Any]]:
        delivery = request.headers.get("x-github-delivery")
        event = request.headers.get("x-github-event", "")
        try:
            config = await run_in_threadpool(read_settings)
        except ValueError as exc:
            log.error("The GitHub webhook is misconfigured: %s", exc)
            return 500, {"detail": f"the webhook is misconfigured: {exc}"}
        except Exception as exc:  # a secrets backend or the database: GitHub shows a failed delivery
            log.exception("GitHub delivery %s: cannot read the connection %r", delivery, CONN_ID)
            return 503, {"detail": f"cannot read the webhook's connection ({type(exc).__name__}); redeliver later"}
        if config is None:
            log.warning("GitHub delivery %s refused: no connection %r with a password", delivery, CONN_ID)
            return 404, {"detail": f"the webhook is off: no connection {CONN_ID!r} with the secret as its password"}
        body = await _read_body(request)
        if not signature_valid(config.secret, body, request.headers.get("x-hub-signature-256")):
            log.warning("GitHub delivery %s (%s) refused: missing or wrong X-Hub-Signature-256", delivery, event)
            return 401, {"detail": "missing or wrong X-Hub-Signature-256"}
        if event == "ping":
            return 200, {"status": "pong"}
        if event != "pull_request":
            return 200, {"status": "ignored", "reason": f"event {event!r} starts nothing"}
        payload = _payload(body, request.headers.get("content-type", ""))
        action = payload.get("action")
        if action not in TRIGGERING_ACTIONS:
            return 200, {"status": "ignored", "reason": f"action {action!r} starts nothing"}
        try:
            conf = pull_request_conf(payload)
            run_id = run_id_for(delivery)
        except ValueError as exc:
            return 400, {"detail": str(exc)}
        dag_id = config.dag_for(conf["repo"])
        if dag_id is None:
            return 200, {"status": "ignored", "reason": f"no Dag is configured for {conf['repo']}"}
        note = f"{conf['repo']}#{conf['pr_number']} {action} at {conf['head_rev'][:12]} (GitHub delivery {delivery})"
        try:
            created = await run_in_threadpool(create_run, dag_id, run_id=run_id, conf=conf, note=note)
        except TriggerRefusedError as exc:
            log.warning("GitHub delivery %s: cannot trigger %s: %s", delivery, dag_id, exc.detail)
            return exc.status_code, {"detail": exc.detail}
        except Exception as exc:  # the database: answered so that GitHub shows a failed delivery to redeliver
            log.exception("GitHub delivery %s: triggering %s failed", delivery, dag_id)
            return 503, {"detail": f"triggering {dag_id} failed ({type(exc).__name__}); redeliver later"}
        answer = {"dag_id": dag_id, "dag_run_id": run_id, "conf": conf}
        if not created:
            log.info("GitHub delivery %s: run %s of %s exists already", delivery, run_id, dag_id)
            return 200, {"status": "already triggered", **answer}
        log.info("GitHub delivery %s: triggered %s run %s (%s)", delivery, dag_id, run_id, note)
        return 201, {"status": "triggered", **answer}

    app.add_route(GITHUB_PATH, github, methods=["POST"])
    return app


async def _read_body(request: Request) -> bytes:
    length = request.headers.get("content-length", "")
    if length.isdigit() and int(length) > MAX_BODY_BYTES:
        raise _RefusedError(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_BODY_BYTES:
            raise _RefusedError(413, f"the body exceeds {MAX_BODY_BYTES} bytes")
    return bytes(body)


def _payload(body: bytes, content_type: str) -> dict[str, Any]:
    """The event's JSON payload: the body, or its ``payload`` field when form-encoded."""
    try:
        text = body.decode("utf-8")
        if content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            text = parse_qs(text, strict_parsing=True)["payload"][0]
        payload = json.loads(text)
    except (UnicodeDecodeError, ValueError, KeyError) as exc:
        raise _RefusedError(400, "the body is not a JSON payload") from exc
    if not isinstance(payload, dict):
        raise _RefusedError(400, "the payload is not a JSON object")
    return payload
