"""GitHub: one report comment per pull request or commit, kept up to date, and commit statuses.

Uses the GitHub provider's ``github`` connection, read as its ``GithubHook`` reads it:

- ``password``: a token (a fine-grained or classic personal access token, or an app's token); it
  needs "Pull requests: write" (classic: ``repo``/``public_repo``) for pull-request comments,
  "Contents: write" for commit comments and "Commit statuses: write" for statuses;
- ``host``: the API's base URL for GitHub Enterprise Server (``https://ghe.example.com/api/v3``);
  default ``https://api.github.com``;
- or, without a token, extra ``app_id``, ``installation_id`` and ``private_key`` (or ``key_path``):
  a GitHub App, whose installation token is fetched for the task.

The REST API is spoken through PyGithub (imported on first use), set for a task: no pause between
requests; a failed connection, or a 502/503/504 on a read, is tried again twice within a second (a
``Retry-After`` over 10 s ends the call instead: the task retries later). Credentials travel only to
the connection's own scheme, host and port (pagination links elsewhere are refused); the token is
masked in the task log and taken out of every error message.

A report comment carries a hidden marker line, ``<!-- mlci-report: <key> -->``; a later run
finds the comment with the same marker (through every page of comments) and edits it, so a pull
request holds one report however often the DAG runs. GitHub takes at most 65,536 characters in
a comment; a longer report is cut at a line boundary with a note that links the full report.
"""

from __future__ import annotations

import contextlib
import functools
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from airflow.sdk import BaseHook

from airflow_provider_mlci.exceptions import (
    ConnectionNotFoundError,
    ForgeAuthError,
    ForgeError,
    ForgeNotFoundError,
    ForgeUnavailableError,
    MlciConfigError,
)

if TYPE_CHECKING:
    from github import Github, GithubException
    from github.Auth import Auth
    from github.CommitComment import CommitComment
    from github.IssueComment import IssueComment
    from urllib3.util.retry import Retry

__all__ = [
    "DEFAULT_API_URL",
    "MAX_BODY_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "STATES",
    "CommentTarget",
    "ForgeHook",
    "check_state",
    "compose_body",
    "marker_for",
]

#: The API of github.com; a connection's ``host`` replaces it (GitHub Enterprise Server).
DEFAULT_API_URL = "https://api.github.com"
#: The longest comment body GitHub accepts, in characters.
MAX_BODY_CHARS = 65_536
#: The longest commit status description GitHub accepts, in characters.
MAX_DESCRIPTION_CHARS = 140
#: The states of a commit status.
STATES = ("success", "failure", "pending", "error")
#: How often a failed connection, or a 502/503/504 on a read, is tried again within one call.
RETRIES = 2
#: The longest ``Retry-After``, in seconds, waited out within one call; a longer one fails it.
LONGEST_RETRY_AFTER = 10

_OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_NAME = re.compile(r"[A-Za-z0-9._-]{1,100}")
_SHA = re.compile(r"[0-9a-fA-F]{7,64}")
_MARKER_KEY = re.compile(r"[A-Za-z0-9_.:/@#+= -]{1,200}")
_MARKER_LINE = "<!-- mlci-report: {key} -->"
_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_API_VERSION = "2022-11-28"


# ------------------------------------------------------------------------------------ what to comment on


@dataclass(frozen=True)
class CommentTarget:
    """A pull request or a commit of a repository, checked.

    Build it with :meth:`of`, which validates its arguments.

    :param owner: the repository's owner
    :param name: the repository's name
    :param pr_number: the pull request, or ``None`` for a commit
    :param commit_sha: the commit, or ``None`` for a pull request
    """

    owner: str
    name: str
    pr_number: int | None = None
    commit_sha: str | None = None

    @classmethod
    def of(cls, repo: Any, *, pr_number: Any = None, commit_sha: Any = None) -> CommentTarget:
        """Check ``repo`` and exactly one of ``pr_number`` and ``commit_sha``.

        :param repo: ``owner/name``
        :param pr_number: a pull request number (an int or a string of digits)
        :param commit_sha: a commit id (7 to 64 hex digits; the full id for statuses)
        :raises MlciConfigError: a malformed value, or both or neither of ``pr_number`` and ``commit_sha``
        """
        owner, name = _parse_repo(repo)
        has_pr = pr_number is not None and pr_number != ""
        has_sha = commit_sha is not None and commit_sha != ""
        if has_pr == has_sha:
            raise MlciConfigError(
                f"Give exactly one of pr_number and commit_sha (got pr_number={pr_number!r}, "
                f"commit_sha={commit_sha!r}): the report goes on that pull request or commit."
            )
        if has_pr:
            return cls(owner=owner, name=name, pr_number=_parse_pr_number(pr_number))
        return cls(owner=owner, name=name, commit_sha=_parse_sha(commit_sha, "commit_sha"))

    @property
    def repo(self) -> str:
        """``owner/name``."""
        return f"{self.owner}/{self.name}"

    def __str__(self) -> str:
        if self.pr_number is not None:
            return f"pull request #{self.pr_number} of {self.repo}"
        return f"commit {str(self.commit_sha)[:12]} of {self.repo}"

    @property
    def write_permission(self) -> str:
        """What a token needs to comment here."""
        if self.pr_number is not None:
            return "'Pull requests: write' (classic tokens: 'repo' or 'public_repo')"
        return "'Contents: write' (classic tokens: 'repo' or 'public_repo')"


def _parse_repo(repo: Any) -> tuple[str, str]:
    text = repo.strip() if isinstance(repo, str) else ""
    owner, _, name = text.partition("/")
    if not (_OWNER.fullmatch(owner) and _NAME.fullmatch(name)) or name in (".", ".."):
        hint = " (give 'owner/name', not a URL)" if "://" in text or text.startswith("git@") else ""
        raise MlciConfigError(f"repo={repo!r} is not a GitHub repository 'owner/name', e.g. 'acme/fraud-model'{hint}.")
    return owner, name


def _parse_pr_number(value: Any) -> int:
    if isinstance(value, bool):
        number = None
    elif isinstance(value, int):
        number = value
    elif isinstance(value, str) and re.fullmatch(r"\s*[0-9]{1,10}\s*", value):
        number = int(value)
    else:
        number = None
    if number is None or number < 1:
        raise MlciConfigError(f"pr_number={value!r} is not a pull request number (a positive whole number).")
    return number


def _parse_sha(value: Any, name: str) -> str:
    text = value.strip() if isinstance(value, str) else ""
    if not _SHA.fullmatch(text):
        raise MlciConfigError(
            f"{name}={value!r} is not a commit id (7 to 64 hexadecimal digits; statuses need all 40)."
        )
    return text.lower()


def check_state(state: Any) -> str:
    """Return ``state`` as a commit status state, lower-cased.

    :param state: one of ``success``, ``failure``, ``pending``, ``error``
    :raises MlciConfigError: any other value
    """
    text = state.strip().lower() if isinstance(state, str) else ""
    if text not in STATES:
        raise MlciConfigError(f"status={state!r} is not a commit status: use one of {', '.join(STATES)}.")
    return text


def marker_for(key: Any) -> str:
    """Return the hidden marker line that identifies the report comment ``key``.

    :param key: letters, digits, spaces and ``_ . : / @ # + = -`` (a DAG id fits), at most 200
    :raises MlciConfigError: an empty key or one that could end the HTML comment early
    """
    text = key.strip() if isinstance(key, str) else ""
    if not _MARKER_KEY.fullmatch(text):
        raise MlciConfigError(
            f"marker={key!r}: use 1 to 200 letters, digits, spaces or '_.:/@#+=-' (it goes into an HTML comment)."
        )
    return _MARKER_LINE.format(key=text)


# ------------------------------------------------------------------------------------ the comment's body


def compose_body(
    markdown: str, marker: str, *, full_report: str | None = None, limit: int = MAX_BODY_CHARS
) -> tuple[str, bool]:
    """Return the comment body (the marker line, then ``markdown``) and whether it was cut.

    Lines equal to the marker are dropped from ``markdown``. A body over ``limit`` characters is
    cut at a line boundary; a code fence or ``<details>`` block left open is closed, and a note
    says how much was left out and where the full report is.

    :param markdown: the report
    :param marker: the line from :func:`marker_for`
    :param full_report: where the whole report is: an ``http(s)`` URL becomes a link, anything else
        is named as text
    :param limit: the longest body, in characters
    """
    lines = [line for line in markdown.splitlines() if line.strip() != marker]
    head = f"{marker}\n"
    whole = head + "\n".join(lines) + "\n"
    if len(whole) <= limit:
        return whole, False
    if full_report and full_report.startswith(("https://", "http://")):
        where = f"[Read the full report]({full_report})."
    elif full_report:
        where = f"The full report is at `{full_report}`."
    else:
        where = "The full report is in the task's stored report."
    total = len(lines)

    def note(shown: int) -> str:
        return (
            f"\n---\n> :warning: **Report truncated**: {shown} of {total} lines shown "
            f"(GitHub takes at most {limit:,} characters). {where}\n"
        )

    reserve = len(note(total))
    kept: list[str] = []
    used = len(head)
    fence: str | None = None
    details = 0
    for line in lines:
        new_fence, new_details = _block_state(line, fence, details)
        closing = (len(new_fence) + 1 if new_fence else 0) + len("</details>\n") * new_details
        if used + len(line) + 1 + closing + reserve > limit:
            break
        kept.append(line)
        used += len(line) + 1
        fence, details = new_fence, new_details
    closers = ([fence] if fence else []) + ["</details>"] * details
    body = head + "".join(f"{line}\n" for line in [*kept, *closers])
    return body + note(len(kept)), True


def _block_state(line: str, fence: str | None, details: int) -> tuple[str | None, int]:
    """The open code fence and ``<details>`` depth after ``line``."""
    match = _FENCE.match(line)
    if fence is not None:
        run = match.group(1) if match else ""
        closes = run[:1] == fence[0] and len(run) >= len(fence) and line.strip() == run
        return (None if closes else fence), details
    if match:
        return match.group(1), details
    lowered = line.lower()
    details += lowered.count("<details") - lowered.count("</details>")
    return None, max(details, 0)


# ------------------------------------------------------------------------------------ PyGithub, set for a task


#: The tokens this process sent, taken out of error messages (Airflow's masker covers the task log).
_TOKENS: set[str] = set()


def _scrub(text: object) -> str:
    shown = str(text)
    for token in _TOKENS:
        shown = shown.replace(token, "***")
    return shown


def _retry(total: int) -> Retry:
    """urllib3 retries for PyGithub: ``total`` more tries of a failed connection, or of a read answered 502-504.

    A write is not sent again once GitHub answered it (a comment would be posted twice); a
    ``Retry-After`` up to :data:`LONGEST_RETRY_AFTER` is waited out, a longer one ends the retries.
    """
    return _bounded_retry()(
        total=total,
        connect=total,
        read=0,
        status=total,
        other=0,
        allowed_methods=frozenset({"GET"}),
        status_forcelist=(502, 503, 504),
        backoff_factor=0.5,
        raise_on_status=False,
    )


@functools.cache
def _bounded_retry() -> type[Retry]:
    """urllib3's ``Retry``, made on first use (urllib3 is not imported with this module)."""
    from urllib3.exceptions import MaxRetryError, ResponseError
    from urllib3.util.retry import Retry

    class BoundedRetry(Retry):
        """A ``Retry`` that waits out a short ``Retry-After`` and gives up on a long one."""

        def increment(self, method=None, url=None, response=None, *args, **kwargs):
            wait = self.get_retry_after(response) if response is not None else None
            if wait is not None and wait > LONGEST_RETRY_AFTER:
                raise MaxRetryError(kwargs.get("_pool"), url, ResponseError(f"GitHub asks to wait {wait:g} s"))
            return super().increment(method, url, response, *args, **kwargs)

    return BoundedRetry


def clip(text: str, limit: int) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters with an ellipsis.

    :param text: any text
    :param limit: the most characters
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _github_message(data: Any) -> str:
    """GitHub's ``message`` and the messages of its ``errors``, on one short line."""
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or data.get("data") or "")]
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            parts.append(str(error.get("message") or " ".join(str(error.get(k, "")) for k in ("field", "code"))))
        else:
            parts.append(str(error))
    return clip("; ".join(p for p in parts if p.strip()), 300)


def _retry_after(headers: dict[str, str]) -> int | None:
    value = headers.get("retry-after")
    if value and value.strip().isdigit():
        return int(value)
    reset = headers.get("x-ratelimit-reset")
    if headers.get("x-ratelimit-remaining") == "0" and reset and reset.isdigit():
        import time

        return max(int(reset) - int(time.time()), 0)
    return None


# ------------------------------------------------------------------------------------ the hook


class ForgeHook(BaseHook):
    """Post report comments and commit statuses on GitHub through a ``github`` connection, with PyGithub.

    Errors are raised as :class:`ForgeError` subclasses naming the repository and target, never the token.

    :param github_conn_id: the GitHub provider's connection (token in ``password``, API URL in ``host``)
    :param timeout: seconds to wait for GitHub per request
    :param retries: how often a failed connection, or a 502/503/504 on a read, is tried again
    """

    conn_name_attr = "github_conn_id"
    default_conn_name = "github_default"
    conn_type = "github"
    hook_name = "GitHub (report comments)"

    def __init__(
        self, github_conn_id: str = default_conn_name, *, timeout: float = 30.0, retries: int = RETRIES, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.github_conn_id = github_conn_id
        self.timeout = timeout
        self.retries = retries
        self.base_url = DEFAULT_API_URL
        self._github: Github | None = None

    def get_conn(self) -> Github:
        """Return a PyGithub client on the connection, made once; a GitHub App's token is fetched here.

        :raises ConnectionNotFoundError: the connection does not exist
        :raises MlciConfigError: it holds neither a token nor a GitHub App
        """
        if self._github is not None:
            return self._github
        import github

        from airflow_provider_mlci import __version__

        self.base_url, auth = self._read_connection()
        client = github.Github(
            auth=github.Auth.Token(auth) if isinstance(auth, str) else auth,
            base_url=self.base_url,
            timeout=max(math.ceil(self.timeout), 1),
            user_agent=f"airflow-provider-mlci/{__version__}",
            retry=_retry(self.retries),
            seconds_between_requests=None,
            seconds_between_writes=None,
            lazy=True,  # objects are made from ids without a request
            api_version=_API_VERSION,
        )
        self._token(client)
        self._github = client
        return client

    def get_credentials(self) -> tuple[str, str]:
        """Return the API's base URL and the token (a GitHub App's installation token), masked in logs."""
        self.get_conn()
        return self.base_url, self._token()

    def _read_connection(self) -> tuple[str, str | Auth]:
        """The API's base URL, and the token or the GitHub App installation of the connection."""
        from airflow.providers.common.compat.sdk import AirflowNotFoundException
        from airflow.sdk.log import mask_secret

        try:
            conn = self.get_connection(self.github_conn_id)
        except AirflowNotFoundException as exc:
            raise ConnectionNotFoundError(
                f"The Airflow connection {self.github_conn_id!r} does not exist: create a 'github' connection with "
                "a token as its password (and the API URL as its host for GitHub Enterprise)."
            ) from exc
        host = (conn.host or "").strip().rstrip("/")
        if host and "://" not in host:
            host = f"https://{host}"
        base_url = host or DEFAULT_API_URL
        if conn.password:
            mask_secret(conn.password)
            return base_url, conn.password
        extra = conn.extra_dejson or {}
        if extra.get("app_id") and extra.get("installation_id"):
            return base_url, self._app_auth(extra)
        raise MlciConfigError(
            f"The connection {self.github_conn_id!r} has no token: put one in its password, or give a GitHub App's "
            "app_id, installation_id and private_key (or key_path) in its extra."
        )

    def _app_auth(self, extra: dict[str, Any]) -> Auth:
        """A GitHub App installation's authentication, from the connection's extra."""
        from airflow.sdk.log import mask_secret

        private_key = extra.get("private_key")
        key_path = extra.get("key_path")
        if not private_key and key_path:
            try:
                with open(key_path) as fh:
                    private_key = fh.read()
            except OSError as exc:
                raise MlciConfigError(
                    f"Connection {self.github_conn_id!r}: cannot read key_path {key_path!r}: {exc.strerror}."
                ) from exc
        if not private_key:
            raise MlciConfigError(
                f"Connection {self.github_conn_id!r}: a GitHub App needs private_key or key_path in the extra."
            )
        mask_secret(private_key)
        try:
            installation_id = int(extra["installation_id"])
        except (TypeError, ValueError) as exc:
            raise MlciConfigError(f"Connection {self.github_conn_id!r}: installation_id must be a number.") from exc
        from github import Auth

        return Auth.AppAuth(extra["app_id"], private_key).get_installation_auth(installation_id)

    def _token(self, client: Github | None = None) -> str:
        """The token sent: a GitHub App's installation token is fetched on first use and when it expires."""
        from airflow.sdk.log import mask_secret

        auth = (client or self.get_conn()).requester.auth
        app = f"installation {getattr(auth, 'installation_id', '')} of app {getattr(auth, 'app_id', '')}"
        with self._errors("POST", f"a token for {app}", app=True):  # an app's token is fetched here
            token = auth.token
        if token not in _TOKENS:
            _TOKENS.add(token)
            mask_secret(token)
        return token

    def find_comment(self, target: CommentTarget, marker: str) -> IssueComment | CommitComment | None:
        """Return the first (oldest) comment of ``target`` that has the line ``marker``, or ``None``.

        Follows every ``rel="next"`` page, on the API's own host only.

        :param target: the pull request or commit
        :param marker: the line from :func:`marker_for`
        """
        from github.CommitComment import CommitComment
        from github.IssueComment import IssueComment
        from requests.utils import parse_header_links

        kind = IssueComment if target.pr_number is not None else CommitComment
        requester = self.get_conn().requester
        url: str | None = f"{self._parent(target).url}/comments"
        params: dict[str, Any] | None = {"per_page": 100}
        while url is not None:
            self._check_origin(url, f"a page of comments of {target}")
            with self._errors("GET", str(target)):
                headers, page = requester.requestJsonAndCheck("GET", url, parameters=params)
            if not isinstance(page, list):
                raise ForgeError(f"GitHub answered the comments of {target} with {type(page).__name__}, not a list.")
            for item in page:
                if any(line.strip() == marker for line in str(item.get("body") or "").splitlines()):
                    return kind(requester, headers, item, completed=True)
            links = parse_header_links(str(headers.get("link") or ""))
            url, params = next((link["url"] for link in links if link.get("rel") == "next"), None), None
        return None

    def create_comment(self, target: CommentTarget, body: str) -> IssueComment | CommitComment:
        """Add a comment to ``target`` and return it.

        :param target: the pull request or commit
        :param body: the Markdown
        """
        with self._errors("POST", str(target), permission=target.write_permission):
            return self._parent(target).create_comment(body)

    def upsert_comment(self, target: CommentTarget, body: str, *, marker: str) -> dict[str, Any]:
        """Edit the comment of ``target`` that has ``marker``, or add one; return what happened.

        Returns ``{"comment_id", "url", "created", "changed"}``: ``url`` is the comment's page,
        ``created`` whether it is new, ``changed`` whether its body changed.

        :param target: the pull request or commit
        :param body: the Markdown, holding the line ``marker``
        :param marker: the line from :func:`marker_for`
        """
        comment = self.find_comment(target, marker)
        created = comment is None
        changed = created or comment.body != body
        if comment is None:
            comment = self.create_comment(target, body)
        elif changed:
            what = f"comment {comment.id} on {target}"
            self._check_origin(comment.url, what)
            with self._errors("PATCH", what, permission=target.write_permission):
                comment.edit(body)
        verb = "Added" if created else ("Updated" if changed else "Kept (unchanged)")
        self.log.info("%s the report comment on %s: %s", verb, target, comment.html_url)
        return {"comment_id": comment.id, "url": comment.html_url, "created": created, "changed": changed}

    def head_sha(self, target: CommentTarget) -> str:
        """Return the commit at the head of the pull request ``target`` now.

        :param target: a pull request
        """
        with self._errors("GET", str(target)):
            head = self.get_conn().get_repo(target.repo).get_pull(int(target.pr_number or 0)).head
        if head is None or not head.sha:
            raise ForgeError(f"GitHub's answer for {target} has no head commit.")
        return str(head.sha)

    def set_status(
        self,
        target: CommentTarget,
        state: str,
        *,
        context: str,
        sha: str | None = None,
        description: str | None = None,
        target_url: str | None = None,
    ) -> dict[str, Any]:
        """Set a commit status on ``sha``, else on the target's commit or its pull request's head.

        Returns ``{"state", "context", "sha", "description", "target_url"}``.

        :param target: the pull request or commit
        :param state: ``success``, ``failure``, ``pending`` or ``error``
        :param context: the status's name, e.g. ``mlci/gate``
        :param sha: the full commit id to mark (default: the commit, or the pull request's head now)
        :param description: a short text (cut to 140 characters)
        :param target_url: the page the status links to
        """
        from github.GithubObject import NotSet

        state = check_state(state)
        if sha is None:
            sha = target.commit_sha if target.commit_sha is not None else self.head_sha(target)
        needs = "'Commit statuses: write' (classic tokens: 'repo:status')"
        with self._errors("POST", f"commit {sha[:12]} of {target.repo}", permission=needs):
            status = (
                self.get_conn()
                .get_repo(target.repo)
                .get_commit(sha)
                .create_status(
                    state,
                    target_url=target_url or NotSet,
                    description=clip(description, MAX_DESCRIPTION_CHARS) if description else NotSet,
                    context=context,
                )
            )
        self.log.info("Set status %s=%s on commit %s of %s", context, state, sha[:12], target.repo)
        keys = ("state", "context", "description", "target_url")
        return {"sha": sha, **{key: getattr(status, key) for key in keys}}

    def test_connection(self) -> tuple[bool, str]:
        """Check that GitHub accepts the token (``GET /rate_limit``), for the UI's Test button."""
        from airflow_provider_mlci.exceptions import MlciError

        try:
            github = self.get_conn()
            with self._errors("GET", "the rate limit"):
                github.get_rate_limit()
        except MlciError as exc:
            return False, str(exc)
        return True, f"GitHub at {self.base_url} accepted the token."

    def _parent(self, target: CommentTarget) -> Any:
        """The pull request's issue or the commit, as a lazy PyGithub object (no request)."""
        repo = self.get_conn().get_repo(target.repo)
        return (
            repo.get_issue(target.pr_number)
            if target.pr_number is not None
            else repo.get_commit(str(target.commit_sha))
        )

    def _check_origin(self, url: str, what: str) -> None:
        """Refuse ``url`` for ``what`` unless it is a path or on the API's own scheme, host and port."""
        parts, ours = urlsplit(url.lower()), urlsplit(self.base_url.lower())
        if (parts.scheme or parts.netloc) and (parts.scheme, parts.netloc) != (ours.scheme, ours.netloc):
            raise ForgeError(
                f"GitHub sent {what} on another host ({parts.scheme}://{parts.netloc}); not following it with the "
                "connection's credentials."
            )

    @contextlib.contextmanager
    def _errors(self, method: str, what: str, *, permission: str | None = None, app: bool = False) -> Iterator[None]:
        """Raise PyGithub's and requests' errors in the block as ours, naming ``what``, without the token."""
        import requests
        from github import GithubException

        try:
            yield
        except GithubException as exc:
            # not chained: GitHub's answer, in ours scrubbed, may echo what was sent
            raise self._error(exc, method=method, what=what, permission=permission, app=app) from None
        except requests.Timeout as exc:
            raise ForgeUnavailableError(
                f"GitHub at {self.base_url} did not answer in time ({method} for {what}): {_scrub(exc)}"
            ) from exc
        except requests.RequestException as exc:
            raise ForgeUnavailableError(
                f"Cannot reach GitHub at {self.base_url} ({method} for {what}): {_scrub(exc)}"
            ) from exc

    def _error(self, exc: GithubException, *, method: str, what: str, permission: str | None, app: bool) -> ForgeError:
        from github import RateLimitExceededException

        status, headers = exc.status, {str(k).lower(): str(v) for k, v in (exc.headers or {}).items()}
        detail = _scrub(_github_message(exc.data))
        said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        if app:
            message = f"GitHub at {self.base_url} refused {what} ({said})."
            if status in (401, 403):
                return ForgeAuthError(message + " Check app_id and the private key.")
            if status == 404:
                return ForgeNotFoundError(message + " Is the app installed there?")
            return ForgeUnavailableError(message)
        if status == 401:
            return ForgeAuthError(
                f"GitHub at {self.base_url} refused the token of connection {self.github_conn_id!r} for {what} "
                f"({said}): it is missing, invalid or expired."
            )
        limited = headers.get("x-ratelimit-remaining") == "0" or "retry-after" in headers or "rate limit" in detail
        if isinstance(exc, RateLimitExceededException) or status == 429 or (status == 403 and limited):
            wait = _retry_after(headers)
            return ForgeUnavailableError(
                f"GitHub limited our request rate for {what} ({said})"
                + (f"; it asks to wait {wait} s." if wait is not None else ".")
            )
        if status == 403:
            needs = f" The token needs {permission}." if permission else ""
            return ForgeAuthError(
                f"GitHub at {self.base_url} refused {method} for {what} with the token of connection "
                f"{self.github_conn_id!r} ({said}).{needs}"
            )
        if status == 404:
            return ForgeNotFoundError(
                f"GitHub at {self.base_url} has no {what} ({said}), or the token of connection {self.github_conn_id!r} "
                "cannot see the repository."
            )
        if status >= 500:
            return ForgeUnavailableError(f"GitHub at {self.base_url} failed {method} for {what} ({said}).")
        return ForgeError(f"GitHub at {self.base_url} refused {method} for {what} ({said}).")
