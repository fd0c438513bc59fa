"""Process checks for tests and benchmarks that kill things (Linux: reads ``/proc``)."""

from __future__ import annotations

import os
import time

__all__ = ["alive", "wait_dead"]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs. A zombie (dead, not yet reaped: this container's init does not
    reap orphans) counts as dead."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def wait_dead(pid: int, timeout: float = 5.0) -> bool:
    """Wait up to ``timeout`` seconds for ``pid`` to die; return whether it did."""
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    return not alive(pid)
