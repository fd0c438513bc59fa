"""A real git HTTP remote on 127.0.0.1 that demands a user and token (Basic auth).

Requests are served by git's own ``git http-backend`` (the CGI program behind most git HTTP
servers); this module only checks the credentials and relays the CGI exchange. It records
every Authorization header it saw and the request lines, so tests can check what reached the
server and that secrets never travelled in a URL. :meth:`GitHttpServer.fail_next` makes it
answer the next requests with an error status (a 503 outage, say), to test retries.
"""

from __future__ import annotations

import base64
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class GitHttpServer:
    """Serve the bare repositories under ``root`` at ``http://127.0.0.1:<port>/<name>.git``.

    :param root: folder holding bare repositories
    :param username: the user to accept; ``None``: any user name, as hosts that read only the
        token do (GitHub, GitLab)
    :param token: the token to accept
    """

    def __init__(self, root: Path, *, username: str | None, token: str) -> None:
        self.root = root
        self.username = username
        self.token = token
        self.seen_authorizations: list[str] = []
        self.request_lines: list[str] = []
        self.denied = 0
        self._failures: list[int] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self._serve()

            def do_POST(self) -> None:
                self._serve()

            def _serve(self) -> None:
                with server._lock:
                    server.request_lines.append(self.requestline)
                    failure = server._failures.pop(0) if server._failures else None
                if failure is not None:
                    self.send_response(failure)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                auth = self.headers.get("Authorization")
                if auth:
                    server.seen_authorizations.append(auth)
                if not server.accepts(auth):
                    server.denied += 1
                    self.send_response(401)
                    self.send_header("WWW-Authenticate", 'Basic realm="git"')
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                path, _, query = self.path.partition("?")
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                env = {
                    "PATH": os.environ["PATH"],
                    "GIT_PROJECT_ROOT": str(server.root),
                    "GIT_HTTP_EXPORT_ALL": "1",
                    "REQUEST_METHOD": self.command,
                    "PATH_INFO": path,
                    "QUERY_STRING": query,
                    "CONTENT_TYPE": self.headers.get("Content-Type", ""),
                    "CONTENT_LENGTH": str(len(body)),
                    "REMOTE_USER": "tester",
                    "REMOTE_ADDR": "127.0.0.1",
                    "GIT_CONFIG_NOSYSTEM": "1",
                }
                if self.headers.get("Content-Encoding"):
                    env["HTTP_CONTENT_ENCODING"] = self.headers["Content-Encoding"]
                if self.headers.get("Git-Protocol"):
                    env["GIT_PROTOCOL"] = self.headers["Git-Protocol"]
                proc = subprocess.run(["git", "http-backend"], input=body, env=env, capture_output=True, check=False)
                head, _, payload = proc.stdout.partition(b"\r\n\r\n")
                status = 200
                headers: list[tuple[str, str]] = []
                for line in head.decode("latin-1").split("\r\n"):
                    if not line:
                        continue
                    key, _, value = line.partition(":")
                    if key.lower() == "status":
                        status = int(value.strip().split()[0])
                    else:
                        headers.append((key, value.strip()))
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._httpd.serve_forever, daemon=True)

    def accepts(self, authorization: str | None) -> bool:
        """Whether an ``Authorization`` header carries the user (if one is required) and the token.

        :param authorization: the header's value, or ``None``
        """
        scheme, _, encoded = (authorization or "").partition(" ")
        if scheme != "Basic":
            return False
        try:
            user, _, token = base64.b64decode(encoded).decode().partition(":")
        except ValueError:
            return False
        return token == self.token and (self.username is None or user == self.username)

    def fail_next(self, count: int, status: int = 503) -> None:
        """Answer the next ``count`` requests with ``status`` and an empty body.

        :param count: how many requests fail
        :param status: the HTTP status they get
        """
        with self._lock:
            self._failures.extend([status] * count)

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>``."""
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def url(self, name: str) -> str:
        """The URL of the repository ``name`` (a folder under ``root``)."""
        return f"{self.base_url}/{name}"

    def __enter__(self) -> GitHttpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join(5)
