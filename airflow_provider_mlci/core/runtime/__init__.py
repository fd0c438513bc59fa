"""How a revision's own code runs.

Subprocesses that can be stopped (:mod:`.process`), the sandbox that keeps the worker's secrets
from it (:mod:`.sandbox`, :mod:`.sandbox_shell`).
"""
