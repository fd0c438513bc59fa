"""Programs from the system that some tests need (Chromium, docker-compose, Redis).

Outside CI a missing program skips the test, saying how to install it; in CI (``CI`` set),
where ``.ci/run`` installs them, a missing program fails the test, so a claim is never
silently left unchecked.
"""

from __future__ import annotations

import os
import shutil

import pytest

__all__ = ["require_tool"]


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
