"""A real ``airflow api-server`` for UI tests, on the session's Airflow home, and what browser tests share.

:func:`serve_api_server` starts one on a free port with the given settings (the SimpleAuthManager
with ``simple_auth_manager_all_admins``: no login needed) and stops it with all it started, keeping
its log in ``test-artifacts/``. :func:`browse` runs headless Chromium on a URL (``--dump-dom``,
``--screenshot``); :func:`png_pixels` reads a screenshot back.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_mlci.testing.cluster import free_port
from tests.conftest import ARTIFACTS

__all__ = ["ApiServer", "browse", "png_pixels", "serve_api_server"]


@dataclass
class ApiServer:
    """A running ``airflow api-server`` and where its things are."""

    url: str
    log: Path

    @functools.cached_property
    def token(self) -> str:
        """An admin's token, asked for once (``GET /auth/token``: all users are admins here; Airflow 3.3 needs none)."""
        with urllib.request.urlopen(f"{self.url}/auth/token", timeout=10) as response:
            return json.loads(response.read())["access_token"]

    def get(self, path: str, timeout: float = 10) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(f"{self.url}{path}", headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return response.status, dict(response.headers), response.read()
        except urllib.error.HTTPError as exc:
            return exc.code, dict(exc.headers), exc.read()

    def raw_get(self, path: str) -> tuple[int, bytes]:
        """GET ``path`` as given: no client-side clean-up of ``..``."""
        host, port = self.url.removeprefix("http://").split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=10)
        try:
            connection.request("GET", path, headers={"Authorization": f"Bearer {self.token}"})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


@contextlib.contextmanager
def serve_api_server(root: Path, settings: Mapping[str, str], *, name: str) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free port with ``settings`` (environment variables) on top of this
    process's environment; its log is ``<root>/api-server.log``, kept as ``test-artifacts/<name>-api-server.log``.

    :param root: a folder for its log
    :param settings: ``AIRFLOW__...`` variables and connections for it
    :param name: names the kept log
    """
    port = free_port()
    env = {
        **os.environ,
        **settings,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__API_AUTH__JWT_SECRET": "mlci-reports-ui-test-" + "0123456789abcdef" * 4,
        "AIRFLOW__API__SECRET_KEY": "mlci-reports-ui-test-key",
    }
    log = root / "api-server.log"
    airflow = str(Path(sys.executable).parent / "airflow")
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [airflow, "api-server", "--port", str(port)],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = ApiServer(url=f"http://127.0.0.1:{port}", log=log)
    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                pytest.fail(f"airflow api-server exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            with contextlib.suppress(OSError):
                if server.get("/api/v2/monitor/health", timeout=2)[0] == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"airflow api-server did not answer in 90 s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield server
    finally:
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
                break
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(log, ARTIFACTS / f"{name}-api-server.log")


def browse(chromium: str, url: str, *args: str, budget_ms: int = 3000) -> str:
    """Run headless Chromium on ``url`` with ``args``; return what it printed."""
    with tempfile.TemporaryDirectory(prefix="mlci-chromium-") as profile:
        proc = subprocess.run(
            [
                chromium,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--hide-scrollbars",
                "--no-first-run",
                f"--user-data-dir={profile}",
                f"--virtual-time-budget={budget_ms}",
                *args,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=90,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def png_pixels(data: bytes) -> tuple[int, int, list[tuple[int, int, int]]]:
    """Decode an 8-bit RGB(A), non-interlaced PNG (what Chromium writes) into RGB pixels."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, bytearray()
    width = height = depth = color = interlace = 0
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
    assert (depth, interlace) == (8, 0), "only 8-bit non-interlaced PNGs"
    assert color in (2, 6), "only RGB or RGBA PNGs"
    channels = 3 if color == 2 else 4
    stride = width * channels
    raw = zlib.decompress(bytes(idat))
    pixels: list[tuple[int, int, int]] = []
    previous = bytearray(stride)
    for row in range(height):
        start = row * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for x in range(stride):
            left = line[x - channels] if x >= channels else 0
            up = previous[x]
            if kind == 1:
                line[x] = (line[x] + left) & 0xFF
            elif kind == 2:
                line[x] = (line[x] + up) & 0xFF
            elif kind == 3:
                line[x] = (line[x] + ((left + up) >> 1)) & 0xFF
            elif kind == 4:
                corner = previous[x - channels] if x >= channels else 0
                estimate = left + up - corner
                da, db, dc = abs(estimate - left), abs(estimate - up), abs(estimate - corner)
                best = left if da <= db and da <= dc else up if db <= dc else corner
                line[x] = (line[x] + best) & 0xFF
        pixels += [tuple(line[i : i + 3]) for i in range(0, stride, channels)]
        previous = line
    return width, height, pixels
