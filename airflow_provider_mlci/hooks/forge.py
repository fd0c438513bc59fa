"""GitHub: one report comment per pull request or commit, kept up to date, and commit statuses.

Uses the GitHub provider's ``github`` connection, read as its ``GithubHook`` reads it:

- ``password``: a token (a fine-grained or classic personal access token, or an app's token); it
  needs "Pull requests: write" (classic: ``repo``/``public_repo``) for pull-request comments,
  "Contents: write" for commit comments and "Commit statuses: write" for statuses;
- ``host``: the API's base URL for GitHub Enterprise Server (``https://ghe.example.com/api/v3``);
  default ``https://api.github.com``;
- or, without a token, extra ``app_id``, ``installation_id`` and ``private_key`` (or ``key_path``):
  a GitHub App, whose installation token is fetched for the task.

The REST API is spoken with ``httpx`` (imported on first use, like PyGithub for apps). The token
travels only in the ``Authorization`` header to the connection's own host; it is masked in the task
log and taken out of every error message, and pagination links to another host are refused.

A report comment carries a hidden marker line, ``<!-- mlci-report: <key> -->``; a later run
finds the comment with the same marker (through every page of comments) and edits it, so a pull
request holds one report however often the DAG runs. GitHub takes at most 65,536 characters in
a comment; a longer report is cut at a line boundary with a note that links the full report.
"""

from __future__ import annotations

import contextlib
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
    import httpx

__all__ = [
    "DEFAULT_API_URL",
    "MAX_BODY_CHARS",
    "MAX_DESCRIPTION_CHARS",
    "STATES",
    "CommentTarget",
    "ForgeHook",
    "GitHubClient",
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
    def comments_path(self) -> str:
        """The API path listing (GET) and creating (POST) the target's comments."""
        if self.pr_number is not None:
            return f"/repos/{self.repo}/issues/{self.pr_number}/comments"
        return f"/repos/{self.repo}/commits/{self.commit_sha}/comments"

    def comment_path(self, comment_id: int) -> str:
        """The API path of one of the target's comments (PATCH edits it).

        :param comment_id: the comment's ``id``
        """
        kind = "issues/comments" if self.pr_number is not None else "comments"
        return f"/repos/{self.repo}/{kind}/{int(comment_id)}"

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


# ------------------------------------------------------------------------------------ the REST client


class GitHubClient:
    """A small client of GitHub's REST API for report comments and commit statuses.

    It imports no Airflow; :class:`ForgeHook` builds it from a connection. Errors are raised as
    :class:`ForgeError` subclasses naming the repository and target, never the token.

    :param base_url: the API's base URL (``https://api.github.com`` or ``https://<host>/api/v3``)
    :param token: the token sent as ``Authorization: Bearer <token>``
    :param conn_id: the connection's id, named in errors
    :param timeout: seconds to wait for GitHub per request
    :param per_page: comments per page when listing (GitHub allows at most 100)
    :param transport: an ``httpx`` transport (tests)
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        conn_id: str = "github_default",
        timeout: float = 30.0,
        per_page: int = 100,
        transport: Any = None,
    ) -> None:
        import httpx

        from airflow_provider_mlci import __version__

        self.base_url = base_url.rstrip("/")
        self.conn_id = conn_id
        self.per_page = per_page
        self._token = token
        self._origin = _origin(self.base_url)
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={
                "Accept": "application/vnd.github+json",
                "Authorization": f"Bearer {token}",
                "User-Agent": f"airflow-provider-mlci/{__version__}",
                "X-GitHub-Api-Version": _API_VERSION,
            },
            timeout=timeout,
            follow_redirects=True,
            transport=transport,
        )

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    def __enter__(self) -> GitHubClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GitHubClient(base_url={self.base_url!r}, conn_id={self.conn_id!r})"

    # -------------------------------------------------------------- comments

    def iter_comments(self, target: CommentTarget) -> Iterator[dict[str, Any]]:
        """Yield the comments of ``target``, oldest first, following every ``rel="next"`` page.

        :param target: the pull request or commit
        """
        url: str | None = target.comments_path
        params: dict[str, Any] | None = {"per_page": self.per_page}
        while url is not None:
            response = self._request("GET", url, what=str(target), params=params)
            page = response.json()
            if not isinstance(page, list):
                raise ForgeError(f"GitHub answered the comments of {target} with {type(page).__name__}, not a list.")
            yield from page
            url = response.links.get("next", {}).get("url")
            params = None  # the next link carries them
            if url is not None and _origin(url) != self._origin:
                raise ForgeError(
                    f"GitHub's next page of comments of {target} is on another host ({_origin(url)}); not following "
                    "it with the connection's token."
                )

    def find_comment(self, target: CommentTarget, marker: str) -> dict[str, Any] | None:
        """Return the first (oldest) comment of ``target`` that has the line ``marker``, or ``None``.

        :param target: the pull request or commit
        :param marker: the line from :func:`marker_for`
        """
        for comment in self.iter_comments(target):
            body = comment.get("body") or ""
            if any(line.strip() == marker for line in body.splitlines()):
                return comment
        return None

    def create_comment(self, target: CommentTarget, body: str) -> dict[str, Any]:
        """Add a comment to ``target`` and return it.

        :param target: the pull request or commit
        :param body: the Markdown
        """
        return self._request(
            "POST", target.comments_path, what=str(target), json={"body": body}, permission=target.write_permission
        ).json()

    def update_comment(self, target: CommentTarget, comment_id: int, body: str) -> dict[str, Any]:
        """Replace the body of comment ``comment_id`` of ``target`` and return the comment.

        :param target: the pull request or commit
        :param comment_id: the comment's ``id``
        :param body: the Markdown
        """
        return self._request(
            "PATCH",
            target.comment_path(comment_id),
            what=f"comment {comment_id} on {target}",
            json={"body": body},
            permission=target.write_permission,
        ).json()

    def upsert_comment(self, target: CommentTarget, body: str, *, marker: str) -> dict[str, Any]:
        """Edit the comment of ``target`` that has ``marker``, or add one; return what happened.

        Returns ``{"comment_id", "url", "created", "changed"}``: ``url`` is the comment's page,
        ``created`` whether it is new, ``changed`` whether its body changed.

        :param target: the pull request or commit
        :param body: the Markdown, holding the line ``marker``
        :param marker: the line from :func:`marker_for`
        """
        existing = self.find_comment(target, marker)
        if existing is None:
            comment, created, changed = self.create_comment(target, body), True, True
        elif existing.get("body") == body:
            comment, created, changed = existing, False, False
        else:
            comment, created, changed = self.update_comment(target, int(existing["id"]), body), False, True
        return {"comment_id": comment["id"], "url": comment.get("html_url"), "created": created, "changed": changed}

    # -------------------------------------------------------------- statuses

    def head_sha(self, target: CommentTarget) -> str:
        """Return the commit at the head of the pull request ``target`` now.

        :param target: a pull request
        """
        pull = self._request("GET", f"/repos/{target.repo}/pulls/{target.pr_number}", what=str(target)).json()
        try:
            return str(pull["head"]["sha"])
        except (KeyError, TypeError) as exc:
            raise ForgeError(f"GitHub's answer for {target} has no head commit.") from exc

    def set_status(
        self,
        repo: str,
        sha: str,
        state: str,
        *,
        context: str,
        description: str | None = None,
        target_url: str | None = None,
    ) -> dict[str, Any]:
        """Set the commit status ``context`` of ``sha`` and return it.

        :param repo: ``owner/name``
        :param sha: the full commit id
        :param state: ``success``, ``failure``, ``pending`` or ``error``
        :param context: the status's name, e.g. ``mlci/gate``
        :param description: a short text (cut to 140 characters)
        :param target_url: the page the status links to
        """
        payload: dict[str, Any] = {"state": check_state(state), "context": context}
        if description:
            payload["description"] = clip(description, MAX_DESCRIPTION_CHARS)
        if target_url:
            payload["target_url"] = target_url
        return self._request(
            "POST",
            f"/repos/{repo}/statuses/{sha}",
            what=f"commit {sha[:12]} of {repo}",
            json=payload,
            permission="'Commit statuses: write' (classic tokens: 'repo:status')",
        ).json()

    def rate_limit(self) -> dict[str, Any]:
        """Return ``GET /rate_limit`` (reading it costs no quota)."""
        return self._request("GET", "/rate_limit", what="the rate limit").json()

    # -------------------------------------------------------------- transport

    def _request(
        self,
        method: str,
        url: str,
        *,
        what: str,
        params: dict[str, Any] | None = None,
        json: Any = None,
        permission: str | None = None,
    ) -> httpx.Response:
        import httpx

        try:
            response = self._http.request(method, url, params=params, json=json)
        except httpx.TimeoutException as exc:
            raise ForgeUnavailableError(
                f"GitHub at {self.base_url} did not answer in time ({method} for {what}): {self._scrub(exc)}"
            ) from exc
        except httpx.HTTPError as exc:
            raise ForgeUnavailableError(
                f"Cannot reach GitHub at {self.base_url} ({method} for {what}): {self._scrub(exc)}"
            ) from exc
        if response.status_code >= 400:
            raise self._error(response, method=method, what=what, permission=permission)
        return response

    def _error(self, response: httpx.Response, *, method: str, what: str, permission: str | None) -> ForgeError:
        status = response.status_code
        detail = self._scrub(_github_message(response))
        said = f"HTTP {status}: {detail}" if detail else f"HTTP {status}"
        if status == 401:
            return ForgeAuthError(
                f"GitHub at {self.base_url} refused the token of connection {self.conn_id!r} for {what} ({said}): "
                "it is missing, invalid or expired."
            )
        if status in (403, 429) and _rate_limited(response, detail):
            wait = _retry_after(response)
            return ForgeUnavailableError(
                f"GitHub limited our request rate for {what} ({said})"
                + (f"; it asks to wait {wait} s." if wait is not None else ".")
            )
        if status == 403:
            needs = f" The token needs {permission}." if permission else ""
            return ForgeAuthError(
                f"GitHub at {self.base_url} refused {method} for {what} with the token of connection "
                f"{self.conn_id!r} ({said}).{needs}"
            )
        if status == 404:
            return ForgeNotFoundError(
                f"GitHub at {self.base_url} has no {what} ({said}), or the token of connection {self.conn_id!r} "
                "cannot see the repository."
            )
        if status == 429 or status >= 500:
            return ForgeUnavailableError(f"GitHub at {self.base_url} failed {method} for {what} ({said}).")
        return ForgeError(f"GitHub at {self.base_url} refused {method} for {what} ({said}).")

    def _scrub(self, text: Any) -> str:
        shown = str(text)
        return shown.replace(self._token, "***") if self._token else shown


def clip(text: str, limit: int) -> str:
    """Return ``text`` on one line, cut to ``limit`` characters with an ellipsis.

    :param text: any text
    :param limit: the most characters
    """
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"


def _origin(url: str) -> tuple[str, str]:
    parts = urlsplit(url)
    return parts.scheme.lower(), parts.netloc.lower()


def _github_message(response: httpx.Response) -> str:
    """GitHub's ``message`` and the messages of its ``errors``, on one short line."""
    try:
        data = response.json()
    except ValueError:
        return clip(response.text, 300)
    if not isinstance(data, dict):
        return ""
    parts = [str(data.get("message") or "")]
    for error in data.get("errors") or []:
        if isinstance(error, dict):
            parts.append(str(error.get("message") or " ".join(str(error.get(k, "")) for k in ("field", "code"))))
        else:
            parts.append(str(error))
    return clip("; ".join(p for p in parts if p.strip()), 300)


def _rate_limited(response: httpx.Response, detail: str) -> bool:
    return (
        response.status_code == 429
        or response.headers.get("x-ratelimit-remaining") == "0"
        or "retry-after" in response.headers
        or "rate limit" in detail.lower()
    )


def _retry_after(response: httpx.Response) -> int | None:
    value = response.headers.get("retry-after")
    if value and value.strip().isdigit():
        return int(value)
    reset = response.headers.get("x-ratelimit-reset")
    if response.headers.get("x-ratelimit-remaining") == "0" and reset and reset.isdigit():
        import time

        return max(int(reset) - int(time.time()), 0)
    return None


# ------------------------------------------------------------------------------------ the hook


class ForgeHook(BaseHook):
    """Post report comments and commit statuses on GitHub through a ``github`` connection.

    :param github_conn_id: the GitHub provider's connection (token in ``password``, API URL in ``host``)
    :param timeout: seconds to wait for GitHub per request
    """

    conn_name_attr = "github_conn_id"
    default_conn_name = "github_default"
    conn_type = "github"
    hook_name = "GitHub (report comments)"

    def __init__(self, github_conn_id: str = default_conn_name, *, timeout: float = 30.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.github_conn_id = github_conn_id
        self.timeout = timeout

    def get_credentials(self) -> tuple[str, str]:
        """Return the API's base URL and a token from the connection (the token is masked in logs).

        :raises ConnectionNotFoundError: the connection does not exist
        :raises MlciConfigError: it holds neither a token nor a GitHub App
        """
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
            token = self._installation_token(base_url, extra)
            mask_secret(token)
            return base_url, token
        raise MlciConfigError(
            f"The connection {self.github_conn_id!r} has no token: put one in its password, or give a GitHub App's "
            "app_id, installation_id and private_key (or key_path) in its extra."
        )

    def _installation_token(self, base_url: str, extra: dict[str, Any]) -> str:
        """A GitHub App installation token, as the GitHub provider's hook makes one (PyGithub)."""
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

        try:
            import requests
            from github import Auth, GithubException, GithubIntegration
        except ImportError as exc:
            raise MlciConfigError(
                f"Connection {self.github_conn_id!r} authenticates as a GitHub App, which needs PyGithub: "
                "install airflow-provider-mlci[github] (a token in the connection's password needs no extra)."
            ) from exc

        app = GithubIntegration(auth=Auth.AppAuth(extra["app_id"], private_key), base_url=base_url, retry=0)
        where = f"installation {installation_id} of app {extra['app_id']}"
        try:
            return app.get_access_token(installation_id).token
        except GithubException as exc:
            message = f"GitHub at {base_url} refused a token for {where} (HTTP {exc.status})."
            if exc.status in (401, 403):
                raise ForgeAuthError(message + " Check app_id and the private key.") from exc
            if exc.status == 404:
                raise ForgeNotFoundError(message + " Is the app installed there?") from exc
            raise ForgeUnavailableError(message) from exc
        except requests.RequestException as exc:
            raise ForgeUnavailableError(f"Cannot reach GitHub at {base_url} for {where}: {type(exc).__name__}") from exc
        finally:
            app.close()

    @contextlib.contextmanager
    def client(self) -> Iterator[GitHubClient]:
        """Yield a :class:`GitHubClient` on the connection, closed on exit."""
        base_url, token = self.get_credentials()
        with GitHubClient(base_url, token, conn_id=self.github_conn_id, timeout=self.timeout) as client:
            yield client

    def upsert_comment(self, target: CommentTarget, body: str, *, marker: str) -> dict[str, Any]:
        """Edit the comment of ``target`` that has ``marker``, or add one.

        Returns ``{"comment_id", "url", "created", "changed"}``.

        :param target: the pull request or commit
        :param body: the Markdown, holding the line ``marker``
        :param marker: the line from :func:`marker_for`
        """
        with self.client() as client:
            result = client.upsert_comment(target, body, marker=marker)
        verb = "Added" if result["created"] else ("Updated" if result["changed"] else "Kept (unchanged)")
        self.log.info("%s the report comment on %s: %s", verb, target, result["url"])
        return result

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
        state = check_state(state)
        with self.client() as client:
            if sha is None:
                sha = target.commit_sha if target.commit_sha is not None else client.head_sha(target)
            status = client.set_status(
                target.repo, sha, state, context=context, description=description, target_url=target_url
            )
        self.log.info("Set status %s=%s on commit %s of %s", context, state, sha[:12], target.repo)
        keys = ("state", "context", "description", "target_url")
        return {"sha": sha, **{key: status.get(key) for key in keys}}

    def test_connection(self) -> tuple[bool, str]:
        """Check that GitHub accepts the token (``GET /rate_limit``), for the UI's Test button."""
        from airflow_provider_mlci.exceptions import MlciError

        try:
            with self.client() as client:
                client.rate_limit()
                base_url = client.base_url
        except MlciError as exc:
            return False, str(exc)
        return True, f"GitHub at {base_url} accepted the token."
