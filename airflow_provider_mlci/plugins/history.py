"""The plugin's pages about what runs decided: run outcomes, the paged index, and the model pages.

Mounted by :func:`airflow_provider_mlci.plugins.reports.create_app` (which documents the routes);
every page has a JSON twin under ``/mlci/api/`` that returns what the page shows.

- **Run outcome** (``/mlci/run-outcome/{dag_id}/{run_id}``, the Dag run's "Outcome" tab): the run
  record (:mod:`airflow_provider_mlci.core.model.history`) in one line with the metric deltas and the
  GPU cost, then the run's reports; a run without reports says so.
- **Index** (``/mlci/reports?page=N``): a page of Dags, each with its newest runs and their outcome;
  it lists the Dags once and reads only the Dags on the page.
- **Model page** (``/mlci/models/{model}``): what is on each stage now and since when, every version
  with its commit and the run that made it, promotions and rollbacks (read from the registry: the
  GTO tags on the git remote of the connection the newest run record names, fetched into a bare
  mirror on the api-server and cached for :data:`REGISTRY_TTL_S`), and the trend of the gate metrics
  over the last runs with each run's outcome (from the run records). A user sees a model when they may
  read a Dag that recorded a run of it, and only those Dags' runs.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow_provider_mlci.plugins.pages import DagAccess
from airflow_provider_mlci.report_store import ReportFolder, ReportStore, safe_run, valid_name

if TYPE_CHECKING:
    from starlette.responses import Response

    from airflow_provider_mlci.plugins.pages import DagAccess

__all__ = ["REGISTRY_TTL_S", "index_data", "model_data", "models_data", "outcome_href", "run_data"]

log = logging.getLogger(__name__)

#: How long the api-server keeps a repository's registry tags before fetching them again (seconds).
REGISTRY_TTL_S = 30.0
#: Dags per index page, and runs shown per Dag there.
DAGS_PER_PAGE = 20
RUNS_PER_DAG = 10
#: Runs a model page charts and lists.
NIGHTS = 30
_registry_lock = threading.Lock()
_registry_cache: dict[str, tuple[float, list[Any]]] = {}
_mirror_locks: dict[str, threading.Lock] = {}


class _Allowed:
    """The Dags one request may read, each asked of the auth manager once."""

    def __init__(self, access: DagAccess) -> None:
        self._access = access
        self._known: dict[str, bool] = {}

    def __call__(self, dag_id: str) -> bool:
        if dag_id not in self._known:
            self._known[dag_id] = bool(self._access.allows(dag_id))
        return self._known[dag_id]


# ------------------------------------------------------------------------------------ data


def index_data(access: DagAccess, prefix: str, page: int = 1) -> dict[str, Any]:
    """One page of the index: the Dags (that the user may read) on it, each with its newest runs and outcomes.

    :param access: what the request may read
    :param prefix: where the app is mounted
    :param page: the page, from 1
    """
    store = ReportStore.open()
    allowed = _Allowed(access)
    names = [dag for dag in store.dags() if allowed(dag)]
    pages = max(1, -(-len(names) // DAGS_PER_PAGE))
    page = min(max(page, 1), pages)
    dags = []
    for dag_id in names[(page - 1) * DAGS_PER_PAGE : page * DAGS_PER_PAGE]:
        listed = store.runs(dag_id, limit=RUNS_PER_DAG)
        if not listed.runs:
            continue
        dags.append(
            {
                "name": dag_id,
                "href": _href(prefix, dag_id),
                "runs": runs_rows(store, prefix, dag_id, listed.runs),
                "total": listed.total,
                "more": listed.total > RUNS_PER_DAG,
            }
        )
    return {"page": page, "pages": pages, "dags_total": len(names), "dags": dags}


def runs_rows(store: ReportStore, prefix: str, dag_id: str, runs: list[tuple[str, list[ReportFolder]]]) -> list[dict]:
    """What a table of runs shows of each: its reports and its outcome (one small read per run that has one).

    :param store: the report store
    :param prefix: where the app is mounted
    :param dag_id: the Dag
    :param runs: ``(run, its folders)``
    """
    from airflow_provider_mlci.plugins.pages import when_stored

    rows = []
    for run, tasks in runs:
        record = store.run_outcome(tasks)
        rows.append(
            {
                "name": run,
                "href": _href(prefix, dag_id, run),
                "stored": when_stored(max(f.newest for f in tasks)),
                "tasks": [{"name": f.task, "href": _href(prefix, dag_id, run, f.task)} for f in tasks],
                "outcome": _outcome(prefix, record),
            }
        )
    return rows


def run_data(access: DagAccess, prefix: str, dag_id: str, run_id: str) -> dict[str, Any] | None:
    """A run's outcome and reports (``None``: not a valid Dag or run name).

    :param access: what the request may read
    :param prefix: where the app is mounted
    :param dag_id: the Dag
    :param run_id: the run, as Airflow spells it or as its folder is named
    """
    from airflow_provider_mlci.plugins.pages import require, when_stored

    run = safe_run(run_id)
    if not valid_name(dag_id, run):
        return None
    require(access, dag_id)
    store = ReportStore.open()
    folders = store.folders(dag_id, run)
    record = store.run_outcome(folders)
    return {
        "dag_id": dag_id,
        "run": run,
        "run_id": (record or {}).get("run_id") or run_id,
        "airflow_run": _airflow(prefix, "dags", dag_id, "runs", (record or {}).get("run_id") or run_id),
        "outcome": _outcome(prefix, record),
        "record": record,
        "folders": [
            {
                "task": f.task,
                "href": _href(prefix, dag_id, run, f.task),
                "stored": when_stored(f.newest),
                "files": sorted(f.files),
            }
            for f in sorted(folders, key=lambda f: f.task)
        ],
    }


def models_data(access: DagAccess, prefix: str) -> dict[str, Any]:
    """The models with run records that the user may see, with their newest run's outcome.

    :param access: what the request may read
    :param prefix: where the app is mounted
    """
    store = ReportStore.open()
    allowed = _Allowed(access)
    models = []
    for name in store.models():
        newest = store.records(name, limit=1, dag_filter=allowed)
        if newest:
            models.append({"name": name, "href": _model_href(prefix, name), "newest": _outcome(prefix, newest[-1])})
    return {"models": models}


def model_data(access: DagAccess, prefix: str, model: str) -> dict[str, Any] | None:
    """Everything the model page shows (``None``: no run of the model in a Dag the user may read).

    :param access: what the request may read
    :param prefix: where the app is mounted
    :param model: the model (``=`` or ``:`` in a name as GTO writes it)
    """
    from airflow_provider_mlci.core.model.history import model_story, trend_spec

    name = model.replace(":", "=")
    if not valid_name(name):
        return None
    store = ReportStore.open()
    allowed = _Allowed(access)
    records = store.records(name, limit=NIGHTS, dag_filter=allowed)
    if not records:
        return None
    model = str(records[-1].get("model") or model)
    registry: dict[str, Any] = {"stages": [], "versions": [], "events": []}
    problem = None
    conn_id = next((r.get("dvc_conn_id") for r in reversed(records) if r.get("dvc_conn_id")), None)
    if conn_id:
        try:
            registry = model_story(registry_tags(str(conn_id)), model)
        except Exception as exc:  # the records still tell most of the story
            log.warning("Model page of %s: cannot read the registry through %s: %s", model, conn_id, exc)
            problem = f"Cannot read the registry through the connection {conn_id!r}: {exc}"
    else:
        problem = "No run record names the repository's connection: the registry is not shown."
    for entry in [*registry["stages"], *registry["versions"], *registry["events"]]:
        entry["run"] = _run_link(prefix, entry.get("run"), allowed)
    nights = [
        {
            **_outcome(prefix, record),
            "night": str(record.get("night") or "")[:16].replace("T", " "),
            "dag_id": record.get("dag_id"),
            "run_id": record.get("run_id"),
            "airflow_run": _airflow(prefix, "dags", str(record.get("dag_id")), "runs", str(record.get("run_id"))),
            "cost": (record.get("cost") or {}).get("total_usd"),
        }
        for record in reversed(records)
    ]
    return {
        "model": model,
        "registry_problem": problem,
        "stages": registry["stages"],
        "versions": registry["versions"],
        "events": registry["events"],
        "nights": nights,
        "trend": trend_spec(model, records),
    }


# ------------------------------------------------------------------------------------ the registry


def registry_tags(conn_id: str) -> list[Any]:
    """The registry tags of the connection's repository, fetched at most every :data:`REGISTRY_TTL_S`.

    :param conn_id: an ``mlci_dvc`` connection
    """
    from airflow_provider_mlci import settings
    from airflow_provider_mlci.core.model.history import fetch_tags
    from airflow_provider_mlci.core.runtime.process import CommandRunner
    from airflow_provider_mlci.hooks.dvc import DvcHook

    now = time.monotonic()
    with _registry_lock:
        cached = _registry_cache.get(conn_id)
        if cached is not None and now - cached[0] < REGISTRY_TTL_S:
            return cached[1]
        lock = _mirror_locks.setdefault(conn_id, threading.Lock())
    with lock:
        with _registry_lock:  # another request may have fetched while this one waited
            cached = _registry_cache.get(conn_id)
            if cached is not None and time.monotonic() - cached[0] < REGISTRY_TTL_S:
                return cached[1]
        access = DvcHook(dvc_conn_id=conn_id).get_access()
        key = hashlib.sha256(access.git.url.encode()).hexdigest()[:20]
        mirror = Path(settings.cache_dir()) / "registry" / f"{key}.git"
        tags = fetch_tags(access.git, mirror, CommandRunner(log=log, secrets=access.secrets))
        with _registry_lock:
            _registry_cache[conn_id] = (time.monotonic(), tags)
    return tags


# ------------------------------------------------------------------------------------ pages


def index_page(access: DagAccess, prefix: str, query: Any) -> Response:
    from airflow_provider_mlci.plugins.pages import html, render

    data = index_data(access, prefix, _page_number(query))
    base = _href(prefix)
    pager = {
        "newer": f"{base}?page={data['page'] - 1}" if data["page"] > 1 else None,
        "older": f"{base}?page={data['page'] + 1}" if data["page"] < data["pages"] else None,
    }
    crumbs = [("Reports", None)]
    return html(render("index.html.j2", "MLCI reports", crumbs, **data, pager=pager, models=f"{prefix}/models/"))


def index_json(access: DagAccess, prefix: str, query: Any) -> Response:
    return _json(index_data(access, prefix, _page_number(query)))


def run_page(access: DagAccess, prefix: str, query: Any, dag_id: str, run_id: str) -> Response:
    from airflow_provider_mlci.plugins.pages import html, not_found, render

    data = run_data(access, prefix, dag_id, run_id)
    if data is None:
        return not_found(prefix)
    crumbs = [("Reports", _href(prefix)), (dag_id, _href(prefix, dag_id)), (data["run"], None)]
    model = (data["record"] or {}).get("model")
    model_href = _model_href(prefix, str(model)) if model else None
    return html(render("run.html.j2", f"{dag_id} / {data['run']}", crumbs, **data, model_href=model_href))


def run_json(access: DagAccess, prefix: str, query: Any, dag_id: str, run_id: str) -> Response:
    data = run_data(access, prefix, dag_id, run_id)
    return _json(data) if data is not None else _json({"detail": "no such run"}, 404)


def models_page(access: DagAccess, prefix: str, query: Any) -> Response:
    from airflow_provider_mlci.plugins.pages import html, render

    crumbs = [("Reports", _href(prefix)), ("Models", None)]
    return html(render("models.html.j2", "Models", crumbs, **models_data(access, prefix)))


def models_json(access: DagAccess, prefix: str, query: Any) -> Response:
    return _json(models_data(access, prefix))


def model_page(access: DagAccess, prefix: str, query: Any, model: str) -> Response:
    import base64

    from airflow_provider_mlci.plugins.pages import html, not_found, render

    data = model_data(access, prefix, model)
    if data is None:
        return not_found(prefix, f"No run of a Dag you may read recorded the model {model}.")
    chart = None
    try:
        from airflow_provider_mlci.core.reports.html import svg_of

        chart = "data:image/svg+xml;base64," + base64.b64encode(svg_of(data["trend"]).encode()).decode()
    except Exception as exc:  # the page without its chart is still the page
        log.warning("Model page of %s: cannot draw the trend: %s", data["model"], exc)
    crumbs = [("Reports", _href(prefix)), ("Models", f"{prefix}/models/"), (data["model"], None)]
    return html(render("model.html.j2", f"Model {data['model']}", crumbs, **data, chart=chart))


def model_json(access: DagAccess, prefix: str, query: Any, model: str) -> Response:
    data = model_data(access, prefix, model)
    return _json(data) if data is not None else _json({"detail": f"no model {model!r} you may read"}, 404)


# ------------------------------------------------------------------------------------ helpers


def _outcome(prefix: str, record: Mapping[str, Any] | None) -> dict[str, Any]:
    if not record:
        return {}
    return {
        "decision": record.get("decision"),
        "summary": record.get("summary"),
        "version": record.get("version"),
        "href": outcome_href(prefix, str(record.get("dag_id")), str(record.get("run_id"))),
    }


def _run_link(prefix: str, run: Mapping[str, Any] | None, allowed: Callable[[str], bool]) -> dict[str, Any] | None:
    """A registry event's run, linked when the user may read its Dag (else only said to be another's)."""
    if not run:
        return None
    dag_id, run_id = str(run.get("dag_id")), str(run.get("run_id"))
    if not valid_name(dag_id) or not allowed(dag_id):
        return {"label": "a run of a Dag you may not read", "href": None, "outcome": None}
    return {
        "label": f"{dag_id} / {run_id}",
        "href": _airflow(prefix, "dags", dag_id, "runs", run_id),
        "outcome": outcome_href(prefix, dag_id, run_id),
    }


def outcome_href(prefix: str, dag_id: str, run_id: str) -> str:
    """The run-outcome view of a run (its run id as Airflow spells it, or as its folder is named).

    :param prefix: where the app is mounted (``/mlci`` in the api-server)
    :param dag_id: the Dag
    :param run_id: the run
    """
    from airflow_provider_mlci.plugins.pages import url

    return f"{prefix}/run-outcome/{url(dag_id)}/{url(safe_run(run_id))}"


def _airflow(prefix: str, *parts: str) -> str:
    """A page of the Airflow UI, from the plugin's mount point."""
    from airflow_provider_mlci.plugins.pages import URL_PREFIX

    root = prefix[: -len(URL_PREFIX)] if prefix.endswith(URL_PREFIX) else ""
    return root + "/" + "/".join(quote(part, safe="") for part in parts)


def _href(prefix: str, *names: str) -> str:
    from airflow_provider_mlci.plugins.pages import href

    return href(prefix, *names)


def _model_href(prefix: str, model: str) -> str:
    from airflow_provider_mlci.plugins.pages import url

    return f"{prefix}/models/{url(model)}"


def _page_number(query: Any) -> int:
    text = str(query.get("page", "1"))
    return int(text) if text.isdigit() else 1


def _json(data: Any, status: int = 200) -> Response:
    from starlette.responses import JSONResponse

    from airflow_provider_mlci.plugins.pages import SECURITY_HEADERS

    return JSONResponse(data, status_code=status, headers=SECURITY_HEADERS)
