"""Run external commands one at a time, each in its own process group, streaming their output.

Git and DVC run in subprocesses: DVC resolves paths against the process's working directory,
which the threads of a worker share, and a subprocess can be stopped when Airflow kills the
task. Commands are always argv lists (never a shell); secrets reach them through the
environment only, and any secret that a command echoes is masked in the streamed output.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import IO

__all__ = ["CommandResult", "CommandRunner", "CommandStoppedError"]

_TAIL_LINES = 40


class CommandStoppedError(Exception):
    """The command was stopped by :meth:`CommandRunner.stop` (the task is being killed)."""


@dataclass(frozen=True, kw_only=True)
class CommandResult:
    """What a finished command left behind.

    :param argv: the command line, as run
    :param returncode: its exit status
    :param stdout: its standard output when captured, else ``""``
    :param tail: the last lines it wrote to the log (secrets masked)
    """

    argv: tuple[str, ...]
    returncode: int
    stdout: str
    tail: tuple[str, ...]

    @property
    def tail_text(self) -> str:
        """The last lines of output as one string."""
        return "\n".join(self.tail)


class CommandRunner:
    """Run commands one at a time and stream what they print into a logger.

    :param log: where output lines go (at INFO level)
    :param secrets: strings to mask wherever they appear in the output
    :param grace_seconds: how long :meth:`stop` waits after SIGTERM before SIGKILL
    """

    def __init__(
        self,
        *,
        log: logging.Logger | logging.LoggerAdapter | None = None,
        secrets: Iterable[str] = (),
        grace_seconds: float = 3.0,
    ) -> None:
        self.log = log or logging.getLogger(__name__)
        self.grace_seconds = grace_seconds
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._lock = threading.Lock()
        self._proc: subprocess.Popen[str] | None = None
        self._stopped = False

    def add_secrets(self, secrets: Iterable[str]) -> None:
        """Mask these strings too from now on.

        :param secrets: the values to mask
        """
        self._secrets = sorted(set(self._secrets) | {s for s in secrets if s}, key=len, reverse=True)

    def mask(self, text: str) -> str:
        """Return ``text`` with every known secret replaced by ``***``.

        :param text: any text that may have come from a command
        """
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def run(
        self,
        argv: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        env: Mapping[str, str] | None = None,
        input_text: str | None = None,
        capture: bool = False,
        quiet: bool = False,
    ) -> CommandResult:
        """Run one command to its end.

        :param argv: the program and its arguments
        :param cwd: the working directory
        :param env: the whole environment of the command (default: this process's)
        :param input_text: text written to the command's standard input
        :param capture: keep standard output and return it instead of logging it (standard
            error is still logged)
        :param quiet: log output at DEBUG instead of INFO
        :raises CommandStoppedError: when :meth:`stop` ended the command
        """
        with self._lock:
            if self._stopped:
                raise CommandStoppedError(f"not started, the task is being stopped: {argv[0]}")
            proc = subprocess.Popen(
                list(argv),
                cwd=cwd,
                env=dict(env) if env is not None else None,
                stdin=subprocess.PIPE if input_text is not None else subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE if capture else subprocess.STDOUT,
                text=True,
                errors="replace",
                start_new_session=True,
            )
            self._proc = proc
        tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
        level = logging.DEBUG if quiet else logging.INFO
        stdout = ""
        try:
            if input_text is not None:
                assert proc.stdin is not None
                try:
                    proc.stdin.write(input_text)
                    proc.stdin.close()
                except BrokenPipeError:
                    pass
            if capture:
                assert proc.stderr is not None
                assert proc.stdout is not None
                reader = threading.Thread(target=self._pump, args=(proc.stderr, tail, level), daemon=True)
                reader.start()
                stdout = proc.stdout.read()
                reader.join()
            else:
                assert proc.stdout is not None
                self._pump(proc.stdout, tail, level)
            returncode = proc.wait()
        finally:
            with self._lock:
                self._proc = None
            if proc.poll() is None:
                _kill_group(proc, signal.SIGKILL)
                proc.wait()
        if self._stopped:
            raise CommandStoppedError(f"stopped: {argv[0]}")
        return CommandResult(argv=tuple(argv), returncode=returncode, stdout=stdout, tail=tuple(tail))

    def _pump(self, stream: IO[str], tail: collections.deque[str], level: int) -> None:
        for raw in stream:
            line = self.mask(raw.rstrip("\n"))
            tail.append(line)
            self.log.log(level, "%s", line)

    def stop(self) -> None:
        """Stop the running command and refuse new ones: SIGTERM to its process group, then
        SIGKILL after the grace period. Safe to call from another thread or a signal handler."""
        self._stopped = True
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)


def _kill_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
