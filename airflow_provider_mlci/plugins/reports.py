"""The UI plugin: the reports tasks stored, served by the api-server and linked from the Airflow UI.

Tasks store reports in the report store (:mod:`airflow_provider_mlci.report_store`, which documents
its layout), one folder per task instance; this module reads it only through that module, and shows
a folder only once its ``outcome.json`` says the report is complete.

:class:`MlciReportsPlugin` mounts a web app at ``/mlci`` in the api-server:

- ``GET /mlci/reports``: the reports the user may read, a page of Dags at a time (``?page=N``), each
  with its newest runs and what each run came to
- ``GET /mlci/reports/{dag_id}/``: the runs of one Dag, a page at a time (``?offset=N``)
- ``GET /mlci/reports/{dag_id}/{run_id}/``: one run: its outcome and its reports (also
  ``GET /mlci/run-outcome/{dag_id}/{run_id}``, the Dag run's "Outcome" tab)
- ``GET /mlci/models/``, ``GET /mlci/models/{model}``: the models runs recorded, and one model's page
  (stages, versions, promotions and rollbacks, the trend of its gate metrics, each run's outcome)
- ``GET /mlci/api/reports?page=N``, ``/mlci/api/runs/{dag_id}/{run_id}``, ``/mlci/api/models``,
  ``/mlci/api/models/{model}``: what those pages show, as JSON
  (:mod:`airflow_provider_mlci.plugins.history` builds them)
- ``GET /mlci/reports/{dag_id}/{run_id}/{task}/``: one task's folder: its ``report.html`` as stored, else
  its Markdown files rendered and its list of files (``?view=files`` always shows the latter)
- ``GET /mlci/reports/{dag_id}/{run_id}/{task}/{path}``: one file of that folder
- ``GET /mlci/task-report/{dag_id}/{run_id}/{task_id}?map_index=N``: the folder of one task instance
  (what its "Report" tab in the UI opens; the run id may be given as Airflow spells it); a task that
  stored no report gets a page saying so, with the run's reports
- ``POST /mlci/webhooks/github``: GitHub's pull-request webhook, which triggers the PR-validation Dag
  (:mod:`airflow_provider_mlci.plugins.webhooks`; authenticated by its signature, not by a login)

and adds "MLCI reports" and "Models" to the UI's Browse menu, an "Outcome" tab to every Dag run and a
"Report" tab to every task instance (Airflow shows a plugin's tab on every task: it cannot be limited
to the tasks that write reports).

Who reads what is the api-server's business: a request brings the UI's session cookie or an API token
(``Authorization: Bearer``), its user is resolved as Airflow's own API resolves it, and the auth manager
decides which Dags' task instances that user may read; a browser without a login is sent to the login
page. Only what lies under ``reports_dir`` is ever read, through ``ObjectStoragePath``: a name that is
empty, ``.``/``..``, hidden, absolute, or holds a character outside ``[\\w.+=@,~ -]`` (decoded or not)
gets 404, and so does a symlink leading out of a local ``reports_dir``. Pages and files go out with a
Content-Security-Policy that lets no script run, as the reports share the Airflow UI's origin.

The pages are Jinja2 templates in ``templates/`` (autoescaped; ``base.html.j2`` holds the layout and the
breadcrumbs, and each page extends it); a template of the same name in the ``[mlci] report_templates``
folder replaces the packaged one.

Importing this module is cheap (the standard library and ``AirflowPlugin``): every task
process loads the installed plugins, so FastAPI, Airflow's API modules, the Markdown renderer and the
storage backends are imported only when the api-server reads ``fastapi_apps`` or a request comes.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from airflow.providers.common.compat.sdk import AirflowPlugin

from airflow_provider_mlci.plugins.pages import (
    SECURITY_HEADERS,
    URL_PREFIX,
    DagAccess,
    href,
    html,
    not_found,
    render,
    require,
    url,
)
from airflow_provider_mlci.report_store import ReportStore, safe_run, valid_name

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.responses import Response

__all__ = [
    "URL_PREFIX",
    "Authenticate",
    "DagAccess",
    "MlciReportsPlugin",
    "airflow_access",
    "create_app",
    "render_markdown",
]

log = logging.getLogger(__name__)

#: Runs per page on a Dag's page.
_RUNS_PER_PAGE = 50
#: Files up to this size are sent in one piece, larger ones streamed.
_WHOLE_FILE = 8 * 1024 * 1024
#: Markdown files larger than this are listed, not rendered.
_MARKDOWN_LIMIT = 2 * 1024 * 1024
_SHOWN_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".htm": "text/html; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".gif": "image/gif",
    ".webp": "image/webp",
    ".md": "text/plain; charset=utf-8",
    ".txt": "text/plain; charset=utf-8",
    ".log": "text/plain; charset=utf-8",
    ".csv": "text/plain; charset=utf-8",
    ".json": "application/json",
}
_DOWNLOADED_TYPES = {".parquet": "application/vnd.apache.parquet"}
_ICON = (
    "<svg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 24 24' fill='none' stroke='#51504f' "
    "stroke-width='2' stroke-linecap='round' stroke-linejoin='round'><path d='M14 2H6a2 2 0 0 0-2 2v16a2 2 "
    "0 0 0 2 2h12a2 2 0 0 0 2-2V8z'/><path d='M14 2v6h6'/><path d='M8 18v-3M12 18v-6M16 18v-4'/></svg>"
)
#: Resolves a request to what it may read, or raises (``HTTPException`` 401/403, or a redirect to log in).
Authenticate = Callable[["Request"], Awaitable[DagAccess]]


class _NotLoggedInError(Exception):
    """A browser came without a login: send it to the login page."""


@dataclass(frozen=True)
class _AuthManagerAccess:
    """The auth manager's answer for one user: may they read the Dag's task instances."""

    user: Any

    def allows(self, dag_id: str) -> bool:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

        return get_auth_manager().is_authorized_dag(
            method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=DagDetails(id=dag_id), user=self.user
        )


async def airflow_access(request: Request) -> DagAccess:
    """Resolve the request's user as Airflow's API does: an API token first, else the UI's session cookie.

    :param request: the request
    :raises HTTPException: 401 without a valid login (a browser's page request is sent to log in instead),
        403 for a token that is not Airflow's
    """
    from airflow.api_fastapi.core_api.security import get_user
    from fastapi import HTTPException
    from fastapi.security import HTTPBearer

    credentials = await HTTPBearer(auto_error=False)(request)
    try:
        user = await get_user(request, None, credentials)
    except HTTPException as exc:
        wants_page = "text/html" in request.headers.get("accept", "")
        if exc.status_code == 401 and credentials is None and wants_page and request.method == "GET":
            raise _NotLoggedInError from exc
        raise
    return _AuthManagerAccess(user)


# ------------------------------------------------------------------------------------ the app


def create_app(*, authenticate: Authenticate | None = None) -> FastAPI:
    """Build the web app that serves the reports (the plugin mounts it at :data:`URL_PREFIX`).

    :param authenticate: resolves a request to what it may read; default :func:`airflow_access`, the
        api-server's own login and auth manager
    """
    from fastapi import FastAPI
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import RedirectResponse, Response

    check = authenticate or airflow_access
    app = FastAPI(title="MLCI reports", docs_url=None, redoc_url=None, openapi_url=None)

    def page(handler: Callable[..., Response]) -> Callable[[Request], Awaitable[Response]]:
        # Authenticate on the event loop, then read storage in a worker thread.
        async def endpoint(request: Request) -> Response:
            access = await check(request)
            prefix = request.scope.get("root_path", "")
            return await run_in_threadpool(handler, access, prefix, request.query_params, **request.path_params)

        endpoint.__name__ = handler.__name__.lstrip("_")
        return endpoint

    async def icon(request: Request) -> Response:
        return Response(_ICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})

    async def to_login(request: Request, exc: Exception) -> Response:
        from airflow.api_fastapi.app import get_auth_manager

        return RedirectResponse(get_auth_manager().get_url_login(next_url=str(request.url)), status_code=302)

    async def storage_failed(request: Request, exc: Exception) -> Response:
        log.warning("Cannot read the reports for %s: %s", request.url.path, exc)
        message = f"Cannot read the reports storage: {exc}"
        page = render("message.html.j2", "Reports storage unavailable", [("Reports", None)], message=message)
        return html(page, status=503)

    from airflow_provider_mlci.plugins import history

    methods = ["GET", "HEAD"]
    app.add_route("/icon.svg", icon, methods=methods)
    app.add_route("/reports", page(history.index_page), methods=methods)
    app.add_route("/reports/", page(history.index_page), methods=methods)
    app.add_route("/reports/{dag_id}/", page(_dag_page), methods=methods)
    app.add_route("/reports/{dag_id}/{run_id}/", page(history.run_page), methods=methods)
    app.add_route("/run-outcome/{dag_id}/{run_id}", page(history.run_page), methods=methods)
    app.add_route("/models", page(history.models_page), methods=methods)
    app.add_route("/models/", page(history.models_page), methods=methods)
    app.add_route("/models/{model}", page(history.model_page), methods=methods)
    app.add_route("/api/reports", page(history.index_json), methods=methods)
    app.add_route("/api/runs/{dag_id}/{run_id}", page(history.run_json), methods=methods)
    app.add_route("/api/models", page(history.models_json), methods=methods)
    app.add_route("/api/models/{model}", page(history.model_json), methods=methods)
    app.add_route("/reports/{dag_id}/{run_id}/{task}/", page(_folder_page), methods=methods)
    app.add_route("/reports/{dag_id}/{run_id}/{task}/{path:path}", page(_file), methods=methods)
    app.add_route("/task-report/{dag_id}/{run_id}/{task_id}", page(_task_instance), methods=methods)
    app.add_exception_handler(_NotLoggedInError, to_login)
    app.add_exception_handler(OSError, storage_failed)
    return app


@functools.cache
def _the_app() -> FastAPI:
    from airflow_provider_mlci.plugins import webhooks

    app = create_app()
    app.mount(webhooks.URL_PREFIX, webhooks.create_app())
    return app


class _FastAPIApps:
    """``MlciReportsPlugin.fastapi_apps``: the app is built when the api-server first reads it.

    Every task process loads the installed plugins (to add their macros); building the app at import
    would cost each task start the import of FastAPI.
    """

    def __get__(self, instance: object, owner: type | None = None) -> list[dict[str, Any]]:
        return [{"app": _the_app(), "url_prefix": URL_PREFIX, "name": "MLCI reports"}]


class MlciReportsPlugin(AirflowPlugin):
    """Serve the stored reports in the api-server; link them from the menu and from each task instance."""

    name = "mlci_reports"
    fastapi_apps = _FastAPIApps()
    external_views = [
        {
            "name": "MLCI reports",
            "href": f"{URL_PREFIX}/reports",
            "destination": "nav",
            "category": "browse",
            "url_route": "mlci-reports",
            "icon": f"{URL_PREFIX}/icon.svg",
        },
        {
            "name": "Outcome",
            "href": f"{URL_PREFIX}/run-outcome/{{DAG_ID}}/{{RUN_ID}}",
            "destination": "dag_run",
            "url_route": "mlci-run-outcome",
            "icon": f"{URL_PREFIX}/icon.svg",
        },
        {
            "name": "Models",
            "href": f"{URL_PREFIX}/models/",
            "destination": "nav",
            "category": "browse",
            "url_route": "mlci-models",
            "icon": f"{URL_PREFIX}/icon.svg",
        },
        {
            "name": "Report",
            "href": f"{URL_PREFIX}/task-report/{{DAG_ID}}/{{RUN_ID}}/{{TASK_ID}}?map_index={{MAP_INDEX}}",
            "destination": "task_instance",
            "url_route": "mlci-task-report",
            "icon": f"{URL_PREFIX}/icon.svg",
        },
    ]


# ------------------------------------------------------------------------------------ pages


def _dag_page(access: DagAccess, prefix: str, query: Any, dag_id: str) -> Response:
    if not valid_name(dag_id):
        return not_found(prefix)
    require(access, dag_id)
    offset = int(query.get("offset", "0")) if str(query.get("offset", "0")).isdigit() else 0
    page = ReportStore.open().runs(dag_id, limit=_RUNS_PER_PAGE, offset=offset)
    if not page.runs:
        return not_found(prefix, f"No reports stored for the Dag {dag_id}.")
    crumbs = [("Reports", href(prefix)), (dag_id, None)]
    older = None
    if offset + _RUNS_PER_PAGE < page.total:
        older = f"{href(prefix, dag_id)}?offset={offset + _RUNS_PER_PAGE}"
    from airflow_provider_mlci.plugins.history import runs_rows

    runs = runs_rows(ReportStore.open(), prefix, dag_id, page.runs)
    return html(render("dag.html.j2", f"Reports of {dag_id}", crumbs, runs=runs, older=older))


def _folder_page(access: DagAccess, prefix: str, query: Any, dag_id: str, run_id: str, task: str) -> Response:
    run = safe_run(run_id)
    if not valid_name(dag_id, run, task):
        return not_found(prefix)
    require(access, dag_id)
    store = ReportStore.open()
    found = store.folders(dag_id, run, task)
    if not found:
        return not_found(prefix, f"No report stored for {dag_id} / {run} / {task}.")
    (folder,) = found
    if "report.html" in folder.files and query.get("view") != "files":
        response = _file_response(store.path(dag_id, run, task, "report.html"), "report.html")
        if response is not None:  # else it went since the listing: show the folder
            return response
    documents = []
    markdown = sorted((p for p in folder.files if p.endswith(".md") and "/" not in p), key=_markdown_order)
    for name in markdown:
        if folder.files[name] > _MARKDOWN_LIMIT:
            documents.append({"name": name, "html": None})
            continue
        text = store.path(dag_id, run, task, name).read_text(encoding="utf-8", errors="replace")
        documents.append({"name": name, "html": render_markdown(text)})
    files = [{"name": path, "href": url(path), "size": _size(size)} for path, size in sorted(folder.files.items())]
    crumbs = [
        ("Reports", href(prefix)),
        (dag_id, href(prefix, dag_id)),
        (run, href(prefix, dag_id, run)),
        (task, None),
    ]
    title = f"{dag_id} / {run} / {task}"
    return html(render("folder.html.j2", title, crumbs, documents=documents, files=files))


def _file(access: DagAccess, prefix: str, query: Any, dag_id: str, run_id: str, task: str, path: str) -> Response:
    run = safe_run(run_id)
    parts = path.split("/")
    if not valid_name(dag_id, run, task, *parts):
        return not_found(prefix)
    require(access, dag_id)
    store = ReportStore.open()
    target = store.path(dag_id, run, task, *parts)
    if not _inside(store.root, target):
        return not_found(prefix)
    response = _file_response(target, parts[-1])
    return not_found(prefix) if response is None else response


def _task_instance(access: DagAccess, prefix: str, query: Any, dag_id: str, run_id: str, task_id: str) -> Response:
    from starlette.responses import RedirectResponse

    map_index = str(query.get("map_index", "")).strip()
    task = f"{task_id}.{map_index}" if map_index.isdigit() else task_id
    run = safe_run(run_id)
    if not valid_name(dag_id, run, task):
        return not_found(prefix)
    require(access, dag_id)
    if not ReportStore.open().folders(dag_id, run, task):
        return _no_report(prefix, dag_id, run, task)
    return RedirectResponse(href(prefix, dag_id, run, task), status_code=302, headers=SECURITY_HEADERS)


def _no_report(prefix: str, dag_id: str, run: str, task: str) -> Response:
    """The "Report" tab of a task that stored none: say so, and where the run's reports are."""
    store = ReportStore.open()
    others = sorted(f.task for f in store.folders(dag_id, run))
    crumbs = [("Reports", href(prefix)), (dag_id, href(prefix, dag_id)), (run, href(prefix, dag_id, run)), (task, None)]
    page = render(
        "no_report.html.j2",
        f"No report for {task}",
        crumbs,
        task=task,
        run_href=href(prefix, dag_id, run),
        others=[{"name": name, "href": href(prefix, dag_id, run, name)} for name in others],
    )
    return html(page)


# ------------------------------------------------------------------------------------ storage


def _inside(root: Any, target: Any) -> bool:
    """Whether ``target`` lies under ``root`` (for a local folder: after following symlinks)."""
    base = root.path.rstrip("/")
    if not target.path.startswith(f"{base}/"):
        return False
    if root.protocol in ("file", "local"):
        real_base = os.path.realpath(base)
        return os.path.realpath(target.path).startswith(real_base.rstrip(os.sep) + os.sep)
    return True


def _file_response(target: Any, name: str) -> Response | None:
    """The file at ``target`` with its content type, or ``None`` if there is no such file."""
    from starlette.responses import Response, StreamingResponse

    try:
        info = target.fs.info(target.path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    if info.get("type") != "file":
        return None
    suffix = os.path.splitext(name)[1].lower()
    headers = dict(SECURITY_HEADERS)
    media_type = _SHOWN_TYPES.get(suffix)
    if media_type is None:
        media_type = _DOWNLOADED_TYPES.get(suffix, "application/octet-stream")
        headers["Content-Disposition"] = f"attachment; filename*=UTF-8''{quote(name)}"
    if int(info.get("size") or 0) <= _WHOLE_FILE:
        return Response(target.read_bytes(), media_type=media_type, headers=headers)
    return StreamingResponse(_chunks(target), media_type=media_type, headers=headers)


def _chunks(target: Any) -> Iterator[bytes]:
    with target.open("rb") as handle:
        while chunk := handle.read(1024 * 1024):
            yield chunk


# ------------------------------------------------------------------------------------ helpers


def render_markdown(text: str) -> str:
    """Render Markdown (CommonMark with tables and strikethrough) to HTML; raw HTML in it is escaped.

    Links and images with a ``javascript:``, ``vbscript:``, ``file:`` or non-image ``data:`` URL are not
    made into links.

    :param text: the Markdown
    """
    return _markdown().render(text)


@functools.cache
def _markdown() -> Any:
    # markdown-it-py comes with Airflow (through rich); html=False escapes any HTML in the text.
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def _markdown_order(name: str) -> tuple[int, str]:
    return (0 if name == "report.md" else 1, name)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{size} B"
