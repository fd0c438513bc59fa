"""A stand-in for GitHub's REST API on 127.0.0.1, for tests: no GitHub is reachable from them.

This is **not GitHub**. It answers exactly the endpoints the provider uses, with the request and
response shapes of GitHub's published REST description (``github/rest-api-description``):

- ``GET /repos/{owner}/{repo}/pulls/{pull_number}`` (a pull request with its ``head.sha``);
- ``GET|POST /repos/{owner}/{repo}/issues/{issue_number}/comments`` and
  ``PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}`` (issue comments);
- ``GET|POST /repos/{owner}/{repo}/commits/{commit_sha}/comments`` and
  ``PATCH /repos/{owner}/{repo}/comments/{comment_id}`` (commit comments);
- ``POST /repos/{owner}/{repo}/statuses/{sha}`` (commit statuses);
- ``GET /rate_limit``; ``POST /app/installations/{installation_id}/access_tokens`` (GitHub App
  installation tokens, when the server is given an app's public key).

Comments carry ``id``, ``node_id``, ``url``, ``html_url``, ``body``, ``user{login,...}``,
``created_at``, ``updated_at`` (and ``issue_url`` or ``commit_id``/``path``/``position``/``line``);
statuses carry ``state``, ``context``, ``description``, ``target_url``, ``creator``. Lists are
paginated with ``per_page`` (default 30, at most 100) and ``page``, and a ``Link`` header with
``rel="next"``, ``"prev"``, ``"first"``, ``"last"`` as GitHub sends it. Every response has the
``X-RateLimit-*`` headers. Errors are GitHub's JSON (``message``, ``documentation_url``,
``status``); validation errors are 422 with ``errors``: an empty or over-65,536-character body, an
unknown status state, a status description over 140 characters, a commit it does not know.

Requests must carry ``Authorization: Bearer <token>`` or ``token <token>`` (401 "Bad credentials"
otherwise); tokens in ``read_only_tokens`` get 403 "Resource not accessible by personal access
token" on writes. The API is served at the root (as ``api.github.com``) and under ``/api/v3`` (as
GitHub Enterprise Server). Every request is recorded (:attr:`GitHubServer.requests`), and
:meth:`GitHubServer.fail_next` makes chosen requests fail (5xx, rate limits) to test error paths.
"""

from __future__ import annotations

import base64
import itertools
import json
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

__all__ = ["GitHubServer", "RecordedRequest"]

_DOCS = "https://docs.github.com/rest"
_ENTERPRISE_PREFIX = "/api/v3"
_MAX_BODY = 65_536
_MAX_DESCRIPTION = 140
_STATES = ("error", "failure", "pending", "success")
_RATE_LIMIT = 5000


@dataclass(frozen=True)
class RecordedRequest:
    """One request the stand-in received.

    :param method: the HTTP method
    :param path: the path without the query (and without an ``/api/v3`` prefix)
    :param query: the query parameters
    :param headers: the request headers, names lower-cased
    :param body: the decoded JSON body, or ``None``
    :param raw_target: the request target exactly as sent (path and query)
    """

    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: Any
    raw_target: str


@dataclass
class _Failure:
    method: str
    pattern: re.Pattern[str]
    status: int
    message: str
    headers: dict[str, str]
    times: int


@dataclass
class _Repo:
    owner: str
    name: str
    id: int
    pulls: dict[int, dict[str, Any]] = field(default_factory=dict)
    commits: set[str] = field(default_factory=set)
    issue_comments: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    commit_comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)


@dataclass
class _Reply:
    """An HTTP answer: status, JSON payload, extra headers."""

    status: int
    payload: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _HttpError(Exception):
    """Raised to answer a request with an error at once."""

    def __init__(self, reply: _Reply) -> None:
        super().__init__(reply.status)
        self.reply = reply


def _error(status: int, message: str, errors: list[dict[str, Any]] | None = None) -> _HttpError:
    payload: dict[str, Any] = {"message": message, "documentation_url": _DOCS, "status": str(status)}
    if errors is not None:
        payload["errors"] = errors
    return _HttpError(_Reply(status, payload))


def _node_id(prefix: str, number: int) -> str:
    return f"{prefix}_kwDO" + base64.b64encode(number.to_bytes(8, "big")).decode().rstrip("=")


class GitHubServer:
    """Serve a stand-in for GitHub's REST API at ``http://127.0.0.1:<random port>``.

    Use as a context manager, or call :meth:`start` and :meth:`stop`.

    :param token: the token the stand-in accepts
    :param login: the user that token belongs to (the author of comments made with it)
    :param read_only_tokens: further tokens that may read but not write (403 on writes)
    :param app: ``(app_id, installation_id, public_key_pem)`` of a GitHub App whose installation
        tokens the stand-in issues for a JWT signed with the app's private key
    """

    def __init__(
        self,
        *,
        token: str,
        login: str = "mlci-bot",
        read_only_tokens: tuple[str, ...] = (),
        app: tuple[int, int, str] | None = None,
    ) -> None:
        self.login = login
        self.requests: list[RecordedRequest] = []
        self._tokens: dict[str, tuple[str, bool]] = {token: (login, True)}
        for readonly in read_only_tokens:
            self._tokens[readonly] = (f"{login}-reader", False)
        self._app = app
        self._repos: dict[str, _Repo] = {}
        self._failures: list[_Failure] = []
        self._ids = itertools.count(1001)
        self._clock = datetime(2026, 1, 1, tzinfo=UTC)
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """The API's base URL, as ``https://api.github.com`` would be."""
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    @property
    def enterprise_url(self) -> str:
        """The API's base URL as GitHub Enterprise Server spells it (``.../api/v3``)."""
        return self.url + _ENTERPRISE_PREFIX

    def start(self) -> GitHubServer:
        """Listen on a free port of 127.0.0.1 and serve in a daemon thread."""
        handler = _handler_for(self)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, name="github-stand-in", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> GitHubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test set-up and inspection

    def add_repo(self, full_name: str) -> None:
        """Create the repository ``owner/name`` (empty).

        :param full_name: ``owner/name``
        """
        owner, name = full_name.split("/")
        with self._lock:
            self._repos.setdefault(full_name.lower(), _Repo(owner=owner, name=name, id=next(self._ids)))

    def add_pull(self, full_name: str, number: int, head_sha: str, *, base_sha: str | None = None) -> None:
        """Open pull request ``number`` whose head is commit ``head_sha`` (the repository is created if needed).

        :param full_name: ``owner/name``
        :param number: the pull request's number
        :param head_sha: the full commit id of its head
        :param base_sha: the full commit id of its base
        """
        self.add_repo(full_name)
        repo = self._repos[full_name.lower()]
        base = base_sha or "0" * 40
        with self._lock:
            repo.commits.update({head_sha, base})
            repo.pulls[number] = {"number": number, "head_sha": head_sha, "base_sha": base}

    def add_commit(self, full_name: str, sha: str) -> None:
        """Make commit ``sha`` known in the repository (created if needed).

        :param full_name: ``owner/name``
        :param sha: a full commit id
        """
        self.add_repo(full_name)
        with self._lock:
            self._repos[full_name.lower()].commits.add(sha)

    def add_comment(
        self,
        full_name: str,
        body: str,
        *,
        pr_number: int | None = None,
        commit_sha: str | None = None,
        login: str = "octocat",
    ) -> dict[str, Any]:
        """Seed a comment by someone else on a pull request or a commit; return it.

        :param full_name: ``owner/name``
        :param body: the comment's Markdown
        :param pr_number: the pull request (or ``commit_sha``)
        :param commit_sha: the commit
        :param login: its author
        """
        repo = self._repos[full_name.lower()]
        with self._lock:
            if pr_number is not None:
                return self._new_issue_comment(repo, pr_number, body, login)
            assert commit_sha is not None
            return self._new_commit_comment(repo, commit_sha, body, login)

    def comments(self, full_name: str, *, pr_number: int | None = None, commit_sha: str | None = None) -> list[dict]:
        """The comments on a pull request or a commit, oldest first.

        :param full_name: ``owner/name``
        :param pr_number: the pull request (or ``commit_sha``)
        :param commit_sha: the commit
        """
        repo = self._repos[full_name.lower()]
        with self._lock:
            if pr_number is not None:
                return [dict(c) for c in repo.issue_comments.get(pr_number, [])]
            return [dict(c) for c in repo.commit_comments.get(str(commit_sha), [])]

    def statuses(self, full_name: str, sha: str) -> list[dict]:
        """The statuses set on commit ``sha``, oldest first.

        :param full_name: ``owner/name``
        :param sha: the commit
        """
        with self._lock:
            return [dict(s) for s in self._repos[full_name.lower()].statuses.get(sha, [])]

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        *,
        message: str = "Server Error",
        headers: dict[str, str] | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests matching ``method`` and ``path_regex`` with an error.

        :param method: the HTTP method, e.g. ``GET``
        :param path_regex: a regular expression searched in the path (without ``/api/v3``)
        :param status: the status to answer, e.g. 502 or 403
        :param message: the error's ``message``
        :param headers: headers to add (``Retry-After``, ``X-RateLimit-Remaining``)
        :param times: how many requests fail
        """
        with self._lock:
            self._failures.append(
                _Failure(method.upper(), re.compile(path_regex), status, message, dict(headers or {}), times)
            )

    # ------------------------------------------------------------------ the API

    def handle(self, method: str, target: str, headers: dict[str, str], raw: bytes) -> _Reply:
        """Answer one request (called by the HTTP handler's thread)."""
        path, _, query_text = target.partition("?")
        prefix = ""
        if path.startswith(_ENTERPRISE_PREFIX + "/"):
            prefix, path = _ENTERPRISE_PREFIX, path[len(_ENTERPRISE_PREFIX) :]
        query = dict(parse_qsl(query_text, keep_blank_values=True))
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self.requests.append(RecordedRequest(method, path, query, headers, body, target))
            try:
                if raw and body is None:
                    raise _error(400, "Problems parsing JSON")
                self._inject_failure(method, path)
                if method == "POST" and (match := re.fullmatch(r"/app/installations/(\d+)/access_tokens", path)):
                    return self._installation_token(int(match.group(1)), headers)
                login, can_write = self._authenticate(headers)
                if method != "GET" and not can_write:
                    raise _error(403, "Resource not accessible by personal access token")
                return self._route(method, path, query, body, login, headers.get("host", ""), prefix)
            except _HttpError as exc:
                return exc.reply

    def _inject_failure(self, method: str, path: str) -> None:
        for failure in self._failures:
            if failure.times > 0 and failure.method == method and failure.pattern.search(path):
                failure.times -= 1
                error = _error(failure.status, failure.message)
                error.reply.headers.update(failure.headers)
                raise error

    def _authenticate(self, headers: dict[str, str]) -> tuple[str, bool]:
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token") or credential.strip() not in self._tokens:
            raise _error(401, "Bad credentials")
        return self._tokens[credential.strip()]

    def _installation_token(self, installation_id: int, headers: dict[str, str]) -> _Reply:
        import jwt

        if self._app is None or installation_id != self._app[1]:
            raise _error(404, "Not Found")
        scheme, _, credential = headers.get("authorization", "").partition(" ")
        try:
            claims = jwt.decode(credential, self._app[2], algorithms=["RS256"])
        except jwt.PyJWTError as exc:
            raise _error(401, f"A JSON web token could not be decoded: {type(exc).__name__}") from exc
        if scheme.lower() != "bearer" or str(claims.get("iss")) != str(self._app[0]):
            raise _error(401, "'Issuer' claim ('iss') must be an Integer")
        token = f"ghs_{next(self._ids)}installation{installation_id}"
        self._tokens[token] = (f"app-{self._app[0]}[bot]", True)
        expires = (self._now() + timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
        return _Reply(201, {"token": token, "expires_at": expires, "permissions": {}, "repository_selection": "all"})

    def _route(
        self, method: str, path: str, query: dict[str, str], body: Any, login: str, host: str, prefix: str
    ) -> _Reply:
        if method == "GET" and path == "/rate_limit":
            core = {"limit": _RATE_LIMIT, "remaining": _RATE_LIMIT - 1, "reset": 1767229200, "used": 1}
            return _Reply(200, {"resources": {"core": core}, "rate": core})
        match = re.fullmatch(r"/repos/([^/]+)/([^/]+)(/.*)", path)
        if not match:
            raise _error(404, "Not Found")
        repo = self._repos.get(f"{match.group(1)}/{match.group(2)}".lower())
        if repo is None:
            raise _error(404, "Not Found")
        rest = match.group(3)
        api = f"http://{host}{prefix}"
        if method == "GET" and (m := re.fullmatch(r"/pulls/(\d+)", rest)):
            return _Reply(200, self._pull(repo, int(m.group(1)), api))
        if m := re.fullmatch(r"/issues/(\d+)/comments", rest):
            number = int(m.group(1))
            if number not in repo.pulls:
                raise _error(404, "Not Found")
            if method == "GET":
                return self._page(repo.issue_comments.get(number, []), query, f"{api}{path}")
            if method == "POST":
                comment = self._new_issue_comment(repo, number, self._checked_body(body, "IssueComment"), login)
                return _Reply(201, comment, {"Location": comment["url"]})
        if method == "PATCH" and (m := re.fullmatch(r"/issues/comments/(\d+)", rest)):
            comments = [c for cs in repo.issue_comments.values() for c in cs]
            return _Reply(200, self._edit(comments, int(m.group(1)), self._checked_body(body, "IssueComment")))
        if m := re.fullmatch(r"/commits/([0-9a-fA-F]+)/comments", rest):
            sha = m.group(1).lower()
            if sha not in repo.commits:
                raise _error(404, f"No commit found for SHA: {sha}")
            if method == "GET":
                return self._page(repo.commit_comments.get(sha, []), query, f"{api}{path}")
            if method == "POST":
                comment = self._new_commit_comment(repo, sha, self._checked_body(body, "CommitComment"), login)
                return _Reply(201, comment, {"Location": comment["url"]})
        if method == "PATCH" and (m := re.fullmatch(r"/comments/(\d+)", rest)):
            comments = [c for cs in repo.commit_comments.values() for c in cs]
            return _Reply(200, self._edit(comments, int(m.group(1)), self._checked_body(body, "CommitComment")))
        if method == "POST" and (m := re.fullmatch(r"/statuses/([^/]+)", rest)):
            status = self._new_status(repo, m.group(1), body, login, api)
            return _Reply(201, status, {"Location": status["url"]})
        raise _error(404, "Not Found")

    # ------------------------------------------------------------------ resources

    def _now(self) -> datetime:
        self._clock += timedelta(seconds=1)
        return self._clock

    def _stamp(self) -> str:
        return self._now().strftime("%Y-%m-%dT%H:%M:%SZ")

    def _user(self, login: str) -> dict[str, Any]:
        return {
            "login": login,
            "id": abs(hash(login)) % 10**7,
            "node_id": _node_id("U", abs(hash(login)) % 10**7),
            "type": "Bot" if login.endswith("[bot]") else "User",
            "site_admin": False,
        }

    def _web(self, repo: _Repo) -> str:
        return f"{self.url}/{repo.owner}/{repo.name}"

    def _api(self, repo: _Repo) -> str:
        return f"{self.url}/repos/{repo.owner}/{repo.name}"

    def _pull(self, repo: _Repo, number: int, api: str) -> dict[str, Any]:
        pull = repo.pulls.get(number)
        if pull is None:
            raise _error(404, "Not Found")
        return {
            "url": f"{api}/repos/{repo.owner}/{repo.name}/pulls/{number}",
            "id": number + repo.id,
            "node_id": _node_id("PR", number + repo.id),
            "html_url": f"{self._web(repo)}/pull/{number}",
            "number": number,
            "state": "open",
            "head": {"label": f"{repo.owner}:feature", "ref": "feature", "sha": pull["head_sha"]},
            "base": {"label": f"{repo.owner}:main", "ref": "main", "sha": pull["base_sha"]},
        }

    def _new_issue_comment(self, repo: _Repo, number: int, body: str, login: str) -> dict[str, Any]:
        comment_id = next(self._ids)
        stamp = self._stamp()
        comment = {
            "id": comment_id,
            "node_id": _node_id("IC", comment_id),
            "url": f"{self._api(repo)}/issues/comments/{comment_id}",
            "html_url": f"{self._web(repo)}/pull/{number}#issuecomment-{comment_id}",
            "issue_url": f"{self._api(repo)}/issues/{number}",
            "body": body,
            "user": self._user(login),
            "created_at": stamp,
            "updated_at": stamp,
            "author_association": "CONTRIBUTOR",
        }
        repo.issue_comments.setdefault(number, []).append(comment)
        return dict(comment)

    def _new_commit_comment(self, repo: _Repo, sha: str, body: str, login: str) -> dict[str, Any]:
        comment_id = next(self._ids)
        stamp = self._stamp()
        comment = {
            "id": comment_id,
            "node_id": _node_id("CC", comment_id),
            "url": f"{self._api(repo)}/comments/{comment_id}",
            "html_url": f"{self._web(repo)}/commit/{sha}#commitcomment-{comment_id}",
            "body": body,
            "path": None,
            "position": None,
            "line": None,
            "commit_id": sha,
            "user": self._user(login),
            "created_at": stamp,
            "updated_at": stamp,
            "author_association": "CONTRIBUTOR",
        }
        repo.commit_comments.setdefault(sha, []).append(comment)
        return dict(comment)

    def _edit(self, comments: list[dict[str, Any]], comment_id: int, body: str) -> dict[str, Any]:
        for comment in comments:
            if comment["id"] == comment_id:
                comment["body"] = body
                comment["updated_at"] = self._stamp()
                return dict(comment)
        raise _error(404, "Not Found")

    def _new_status(self, repo: _Repo, sha: str, body: Any, login: str, api: str) -> dict[str, Any]:
        if not isinstance(body, dict) or body.get("state") not in _STATES:
            raise _error(
                422,
                "Validation Failed",
                [
                    {
                        "resource": "Status",
                        "field": "state",
                        "code": "custom",
                        "message": "state is not included in the list",
                    }
                ],
            )
        description = body.get("description")
        if isinstance(description, str) and len(description) > _MAX_DESCRIPTION:
            raise _error(
                422,
                "Validation Failed",
                [
                    {
                        "resource": "Status",
                        "field": "description",
                        "code": "custom",
                        "message": "description is too long (maximum is 140 characters)",
                    }
                ],
            )
        if sha.lower() not in repo.commits:
            raise _error(422, f"No commit found for SHA: {sha}")
        status_id = next(self._ids)
        stamp = self._stamp()
        status = {
            "url": f"{api}/repos/{repo.owner}/{repo.name}/statuses/{sha}",
            "avatar_url": None,
            "id": status_id,
            "node_id": _node_id("SC", status_id),
            "state": body["state"],
            "description": description,
            "target_url": body.get("target_url"),
            "context": body.get("context") or "default",
            "created_at": stamp,
            "updated_at": stamp,
            "creator": self._user(login),
        }
        repo.statuses.setdefault(sha.lower(), []).append(status)
        return dict(status)

    @staticmethod
    def _checked_body(body: Any, resource: str) -> str:
        text = body.get("body") if isinstance(body, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise _error(422, "Validation Failed", [{"resource": resource, "code": "missing_field", "field": "body"}])
        if len(text) > _MAX_BODY:
            raise _error(
                422,
                "Validation Failed",
                [
                    {
                        "resource": resource,
                        "code": "custom",
                        "field": "body",
                        "message": f"body is too long (maximum is {_MAX_BODY} characters)",
                    }
                ],
            )
        return text

    @staticmethod
    def _page(items: list[dict[str, Any]], query: dict[str, str], base: str) -> _Reply:
        try:
            per_page = min(max(int(query.get("per_page", 30)), 1), 100)
            page = max(int(query.get("page", 1)), 1)
        except ValueError as exc:
            raise _error(422, "Validation Failed") from exc
        last = max((len(items) + per_page - 1) // per_page, 1)
        chunk = [dict(c) for c in items[(page - 1) * per_page : page * per_page]]
        links = []

        def link(number: int, rel: str) -> str:
            return f'<{base}?{urlencode({**query, "per_page": per_page, "page": number})}>; rel="{rel}"'

        if page > 1:
            links += [link(page - 1, "prev")]
        if page < last:
            links += [link(page + 1, "next"), link(last, "last")]
        if page > 1:
            links += [link(1, "first")]
        return _Reply(200, chunk, {"Link": ", ".join(links)} if links else {})


def _handler_for(server: GitHubServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            self._serve()

        def do_POST(self) -> None:
            self._serve()

        def do_PATCH(self) -> None:
            self._serve()

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            reply = server.handle(self.command, self.path, headers, raw)
            data = b"" if reply.payload is None else json.dumps(reply.payload).encode()
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/json; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("X-GitHub-Media-Type", "github.v3; format=json")
            self.send_header("X-RateLimit-Limit", str(_RATE_LIMIT))
            if not any(name.lower() == "x-ratelimit-remaining" for name in reply.headers):
                self.send_header("X-RateLimit-Remaining", str(_RATE_LIMIT - len(server.requests)))
            self.send_header("X-RateLimit-Reset", "1767229200")
            self.send_header("X-RateLimit-Resource", "core")
            for name, value in reply.headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(data)

    return Handler
