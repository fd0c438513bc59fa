"""Post a report on a GitHub pull request or commit, one comment kept up to date, and a commit status."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import airflow_failures

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.hooks.forge import CommentTarget, ForgeHook

__all__ = ["PullRequestCommentOperator"]


class PullRequestCommentOperator(BaseOperator):
    """Post a Markdown report on a pull request or a commit, editing the same comment on every run.

    The comment starts with a hidden marker, ``<!-- mlci-report: <marker> -->``; a later run
    finds the comment holding it (through every page of comments) and edits it instead of adding
    another, so the pull request shows one current report. The Markdown is posted as it is
    (images stay links to the stored report); over GitHub's 65,536 characters it is cut at a line
    boundary with a note linking the full report. Optionally a commit status is set from
    ``status`` or from a gate's decision, linking the report.

    Arguments are checked before any request: a malformed ``repo``, a ``pr_number`` that is no
    number, both or neither of ``pr_number`` and ``commit_sha``, an unknown ``status`` fail with
    :class:`~airflow_provider_mlci.exceptions.MlciConfigError`. GitHub refusing the token (401,
    403) or not knowing the target (404) fails the task without retries; a GitHub outage or a rate
    limit (5xx, 429) is retried as the task's ``retries`` say.

    Returns ``{"comment_id", "url", "created", "status", "status_sha", "truncated"}``: ``url`` is
    the comment's page, ``created`` whether it is new, ``status`` the state set (or ``None``).

    :param repo: the repository, ``owner/name`` (templated)
    :param pr_number: the pull request to comment on (templated)
    :param commit_sha: or the commit to comment on (templated); exactly one of the two
    :param body: the Markdown to post (templated)
    :param report_uri: or a stored report: its folder (as ``MetricsReportOperator`` returns it in
        ``report_uri``) or its ``report.md``, read through ``ObjectStoragePath`` (templated)
    :param report_conn_id: the connection to read ``report_uri`` with (default: ``[mlci] reports_conn_id``)
    :param report_url: the report's page on the web, linked from the status and the truncation
        note (templated); default: ``report_uri``'s ``report.html`` when it is ``http(s)://`` or ``s3://``
    :param marker: the key of the hidden marker (templated); default: the DAG id. Give tasks of one
        DAG different markers to keep separate comments
    :param status: set this commit status: ``success``, ``failure``, ``pending`` or ``error`` (templated)
    :param status_from_task: or a gate task whose XCom ``decision`` (``{"promote": bool}``) gives
        ``success`` or ``failure``; a task that left no decision gives ``error``. ``ModelGateOperator``
        fails when it refuses a candidate, so give this task ``trigger_rule="all_done"``
    :param status_context: the status's name
    :param status_description: its text, at most 140 characters (templated); default: the verdict
    :param status_sha: the full commit id the status is for (templated); default: ``commit_sha``, or
        the pull request's head at the time this task runs
    :param github_conn_id: the GitHub provider's connection (token as password, API URL as host)
    """

    template_fields: Sequence[str] = (
        "repo",
        "pr_number",
        "commit_sha",
        "body",
        "report_uri",
        "report_url",
        "marker",
        "status",
        "status_description",
        "status_sha",
    )
    template_fields_renderers = {"body": "md"}
    ui_color = "#24292f"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        repo: str,
        pr_number: int | str | None = None,
        commit_sha: str | None = None,
        body: str | None = None,
        report_uri: str | None = None,
        report_conn_id: str | None = None,
        report_url: str | None = None,
        marker: str | None = None,
        status: str | None = None,
        status_from_task: str | None = None,
        status_context: str = "mlci/gate",
        status_description: str | None = None,
        status_sha: str | None = None,
        github_conn_id: str = "github_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.repo = repo
        self.pr_number = pr_number
        self.commit_sha = commit_sha
        self.body = body
        self.report_uri = report_uri
        self.report_conn_id = report_conn_id
        self.report_url = report_url
        self.marker = marker
        self.status = status
        self.status_from_task = status_from_task
        self.status_context = status_context
        self.status_description = status_description
        self.status_sha = status_sha
        self.github_conn_id = github_conn_id

    @cached_property
    def hook(self) -> ForgeHook:
        """The hook for the GitHub connection."""
        from airflow_provider_mlci.hooks.forge import ForgeHook

        return ForgeHook(self.github_conn_id)

    def execute(self, context: Context) -> dict[str, Any]:
        with airflow_failures():
            return self._post(context)

    def _post(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import redact_url
        from airflow_provider_mlci.hooks.forge import compose_body, marker_for

        target, state_wanted = self.check_arguments()
        marker = marker_for(self.marker if self.marker not in (None, "") else self.dag_id)
        state, description = self._verdict(context) if state_wanted else (None, None)
        link = self.report_url or _public_link(self.report_uri)
        markdown = self.body if self.body is not None else self._read_report()
        shown_report = link or (redact_url(self.report_uri) if self.report_uri else None)
        body, truncated = compose_body(markdown, marker, full_report=shown_report)
        if truncated:
            self.log.warning("The report is longer than GitHub takes: posting it cut, with a link to the full report")
        comment = self.hook.upsert_comment(target, body, marker=marker)
        result: dict[str, Any] = {
            "comment_id": comment["comment_id"],
            "url": comment["url"],
            "created": comment["created"],
            "status": None,
            "status_sha": None,
            "truncated": truncated,
        }
        if state is not None:
            status = self.hook.set_status(
                target,
                state,
                context=self.status_context,
                sha=self._status_sha(),
                description=self.status_description or description,
                target_url=link if link and link.startswith(("https://", "http://")) else None,
            )
            result.update(status=status["state"], status_sha=status["sha"])
        return result

    def check_arguments(self) -> tuple[CommentTarget, bool]:
        """Check the rendered arguments; return the target and whether a status is wanted.

        :raises MlciConfigError: a malformed or contradictory argument, naming it
        """
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.hooks.forge import CommentTarget, check_state

        target = CommentTarget.of(self.repo, pr_number=self.pr_number, commit_sha=self.commit_sha)
        has_body = self.body is not None
        has_report = bool(self.report_uri)
        if has_body == has_report:
            raise MlciConfigError(
                "Give exactly one of body (the Markdown) and report_uri (a stored report's folder or report.md)."
            )
        if has_body and not str(self.body).strip():
            raise MlciConfigError("body is empty: there is nothing to post.")
        if self.status and self.status_from_task:
            raise MlciConfigError(
                "Give status or status_from_task, not both: the commit status comes from one of them."
            )
        if self.status:
            check_state(self.status)
        if not isinstance(self.status_context, str) or not self.status_context.strip():
            raise MlciConfigError(f"status_context={self.status_context!r}: give the status's name, e.g. 'mlci/gate'.")
        self._status_sha()
        return target, bool(self.status or self.status_from_task)

    def _status_sha(self) -> str | None:
        from airflow_provider_mlci.exceptions import MlciConfigError

        if not self.status_sha:
            return None
        sha = str(self.status_sha).strip().lower()
        if len(sha) not in (40, 64) or any(c not in "0123456789abcdef" for c in sha):
            raise MlciConfigError(f"status_sha={self.status_sha!r} is not a full commit id (40 hexadecimal digits).")
        return sha

    def _verdict(self, context: Context) -> tuple[str, str | None]:
        """The status state and its default description, from ``status`` or the gate's decision."""
        from airflow_provider_mlci.exceptions import MlciConfigError
        from airflow_provider_mlci.hooks.forge import check_state
        from airflow_provider_mlci.operators.model import DECISION_KEY

        if self.status:
            return check_state(self.status), None
        decision = context["ti"].xcom_pull(task_ids=self.status_from_task, key=DECISION_KEY)
        if not isinstance(decision, Mapping):
            self.log.warning("Task %s left no gate decision: setting status 'error'", self.status_from_task)
            return "error", f"Task {self.status_from_task} left no gate decision"
        promote = decision.get("promote")
        if not isinstance(promote, bool):
            raise MlciConfigError(
                f"The decision of task {self.status_from_task!r} has no boolean 'promote' (got {promote!r})."
            )
        model = decision.get("model")
        if promote:
            return "success", f"Gate passed: promote {model}" if model else "Gate passed"
        reasons = [str(r) for r in decision.get("reasons") or []]
        return "failure", "Gate refused" + (f": {'; '.join(reasons)}" if reasons else "")

    def _read_report(self) -> str:
        """The Markdown of the stored report ``report_uri``."""
        from airflow_provider_mlci.report_store import read_markdown

        return read_markdown(str(self.report_uri), self.report_conn_id)


def _public_link(report_uri: str | None) -> str | None:
    """The web page of a stored report: ``report.html`` beside ``report.md``, where a browser can open it."""
    if not report_uri or "@" in urlsplit(report_uri).netloc:  # never publish a URL's credentials
        return None
    uri = report_uri.rstrip("/")
    folder = uri.rsplit("/", 1)[0] if uri.endswith(".md") else uri
    page = f"{folder}/report.html"
    if page.startswith(("https://", "http://")):
        return page
    if page.startswith("s3://"):
        bucket, _, key = page[len("s3://") :].partition("/")
        return f"https://s3.console.aws.amazon.com/s3/object/{bucket}?prefix={key}"
    return None
