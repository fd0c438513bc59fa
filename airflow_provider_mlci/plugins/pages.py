"""What the plugin's pages share: the security headers, the templates, links, and who may read what.

Imported by :mod:`~airflow_provider_mlci.plugins.reports` and :mod:`~airflow_provider_mlci.plugins.history`
when the api-server builds the app (the standard library only at import).
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

if TYPE_CHECKING:
    from starlette.responses import Response

__all__ = [
    "SECURITY_HEADERS",
    "URL_PREFIX",
    "DagAccess",
    "href",
    "html",
    "not_found",
    "render",
    "require",
    "url",
    "when_stored",
]

#: Where the plugin mounts the app in the api-server.
URL_PREFIX = "/mlci"
#: Report pages are documents from storage shown on the Airflow UI's origin: no script may run there.
_CSP = (
    "default-src 'none'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; font-src 'self' data:; "
    "frame-ancestors 'self'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": _CSP,
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "private, no-cache",
}
#: The pages' templates.
_TEMPLATES = Path(__file__).resolve().parent / "templates"


class DagAccess(Protocol):
    """What one request may read: the reports of some Dags."""

    def allows(self, dag_id: str) -> bool:
        """Return whether the reports of ``dag_id`` may be read.

        :param dag_id: the Dag
        """


def require(access: DagAccess, dag_id: str) -> None:
    from fastapi import HTTPException

    if not access.allows(dag_id):
        raise HTTPException(status_code=403, detail=f"You may not read the task instances of the Dag {dag_id!r}")


def href(prefix: str, *names: str) -> str:
    return "/".join([f"{prefix}/reports", *(url(name) for name in names)]) + ("/" if names else "")


def url(path: str) -> str:
    # Characters a name may hold that need no quoting in a URL path stay as they are.
    return quote(path, safe="/+=@,~")


def when_stored(seconds: float) -> str | None:
    if not seconds:
        return None
    return datetime.fromtimestamp(seconds, tz=UTC).strftime("%Y-%m-%d %H:%M UTC")


def render(name: str, title: str, crumbs: list[tuple[str, str | None]], **values: Any) -> str:
    """A page from its template (``[mlci] report_templates`` first, then the packaged ones).

    :param name: the template, e.g. ``index.html.j2`` (it extends ``base.html.j2``)
    :param title: the page's title and heading
    :param crumbs: the breadcrumbs, ``(label, href)`` (``href`` ``None`` for the page itself)
    :param values: what the page's template reads
    """
    from airflow_provider_mlci import settings
    from airflow_provider_mlci.core.reports.templating import render

    templates_dir = settings.report_templates() or None
    return render(name, packaged=_TEMPLATES, templates_dir=templates_dir, title=title, crumbs=crumbs, **values)


def html(page: str, status: int = 200) -> Response:
    from starlette.responses import HTMLResponse

    return HTMLResponse(page, status_code=status, headers=SECURITY_HEADERS)


def not_found(prefix: str, message: str = "No such report or file.") -> Response:
    crumbs = [("Reports", href(prefix)), ("not found", None)]
    return html(render("message.html.j2", "Not found", crumbs, message=message), 404)
