"""Programs from the system that some tests need (Chromium, docker-compose, Redis).

Outside CI a missing program skips the test, saying how to install it; in CI (``CI`` set),
where ``.ci/run`` installs them, a missing program fails the test, so a claim is never
silently left unchecked.
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Callable
from typing import Any

import pytest

__all__ = ["require_tool", "wait_for"]


def require_tool(*names: str, install: str) -> str:
    """The path of the first of ``names`` on ``PATH``; else skip (fail in CI) naming ``install``.

    :param names: program names to look for, in order
    :param install: how to install it, for the message (``apt-get install -y chromium``)
    """
    for name in names:
        path = shutil.which(name)
        if path:
            return path
    message = f"{names[0]} is not installed ({install})"
    if os.environ.get("CI"):
        pytest.fail(f"{message}: .ci/run installs it, so CI must have it", pytrace=False)
    pytest.skip(message)


def wait_for(check: Callable[[], Any], *, timeout: float = 60, what: str = "the page") -> Any:
    """Call ``check`` until it returns something true; return it, or fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            found = check()
        except Exception:
            found = None
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.3)
