"""Run external commands one at a time, each in its own process group, streaming their output.

Git and DVC run in subprocesses: DVC resolves paths against the process's working directory,
which the threads of a worker share, and a subprocess can be stopped when Airflow kills the
task. Commands are always argv lists (never a shell); secrets reach them through the
environment only, and any secret that a command echoes is masked in the streamed output.

Files a command needs for a moment (git's askpass helper, an SSH key) go to a private folder
named ``mlci-<kind>-<pid>-<random>`` (:func:`private_tempdir`), held through a lock file for as
long as it lives; :func:`remove_abandoned_tempdirs` removes those whose owner died without
removing them (a SIGKILLed task), at the next task start on the worker.
"""

from __future__ import annotations

import collections
import contextlib
import errno
import fcntl
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

__all__ = [
    "CommandResult",
    "CommandRunner",
    "CommandStoppedError",
    "lock_held",
    "pid_alive",
    "private_tempdir",
    "remove_abandoned_tempdirs",
]

_TAIL_LINES = 40
#: ``mlci-<kind>-<pid>-<random>``: a private folder of the process ``pid``.
_PRIVATE_DIR = re.compile(r"^mlci-[a-z]+-(?P<pid>[0-9]+)-[A-Za-z0-9_]+$")
#: The file in a private folder whose lock its owner holds while the folder lives.
_OWNER_LOCK = ".owner"


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
        self._stop_event = threading.Event()

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
        if self._stopped:  # stop() came while the command started, and found none to stop: stop it now
            self.interrupt()
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

    def sleep(self, seconds: float) -> None:
        """Wait ``seconds`` (between two tries of a command), ending early if :meth:`stop` is called.

        :param seconds: how long to wait
        :raises CommandStoppedError: when :meth:`stop` was called before or during the wait
        """
        if self._stopped or self._stop_event.wait(max(seconds, 0.0)):
            raise CommandStoppedError("stopped while waiting to try again")

    def stop(self) -> None:
        """Stop the running command and refuse new ones: SIGTERM to its process group, then
        SIGKILL after the grace period. Safe to call from another thread or a signal handler."""
        self._stopped = True
        self._stop_event.set()
        self.interrupt()

    def interrupt(self) -> bool:
        """Stop the running command only (SIGTERM to its process group, SIGKILL after the grace
        period); later commands still run. Return whether a command was running.

        Safe to call from another thread (a watcher that decided the command is not worth finishing).
        """
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return False
        _kill_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + self.grace_seconds
        while proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        if proc.poll() is None:
            _kill_group(proc, signal.SIGKILL)
        return True


def _kill_group(proc: subprocess.Popen[str], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def pid_alive(pid: int) -> bool:
    """Whether the process ``pid`` runs (a zombie, dead but not yet reaped, does not).

    :param pid: a process id
    """
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, IndexError):
        return not os.path.isdir("/proc/self")  # no /proc to ask: trust kill()
    except OSError:
        return True


@contextlib.contextmanager
def private_tempdir(kind: str, *, parent: str | os.PathLike[str] | None = None) -> Iterator[Path]:
    """A new folder only this user can enter, ``mlci-<kind>-<pid>-<random>``, for the ``with`` block.

    Its owner holds a lock on the file ``.owner`` in it until the block ends and the folder is
    removed; :func:`remove_abandoned_tempdirs` tells an abandoned folder by its dead pid and
    free lock.

    :param kind: a short lower-case word saying what the folder is for (``git``)
    :param parent: where to create it (default: the system's temporary folder)
    """
    if not re.fullmatch(r"[a-z]+", kind):
        raise ValueError(f"kind must be a lower-case word, not {kind!r}")
    path = Path(tempfile.mkdtemp(prefix=f"mlci-{kind}-{os.getpid()}-", dir=parent))
    fd = os.open(path / _OWNER_LOCK, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)
        os.close(fd)


def remove_abandoned_tempdirs(parent: str | os.PathLike[str] | None = None) -> list[Path]:
    """Remove the private folders (:func:`private_tempdir`) whose owner is gone; return them.

    A folder goes only when both say its owner is dead: no process with its pid runs, and
    nobody holds the lock of its ``.owner`` file (a process of another pid namespace would).
    Folders of other users, and any other name, are left alone.

    :param parent: the folder to look in (default: the system's temporary folder)
    """
    root = Path(parent) if parent is not None else Path(tempfile.gettempdir())
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    for entry in entries:
        match = _PRIVATE_DIR.match(entry.name)
        if match is None or pid_alive(int(match["pid"])):
            continue
        with contextlib.suppress(OSError):
            if not entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_uid != os.getuid():
                continue
            if lock_held(Path(entry.path) / _OWNER_LOCK):
                continue
            shutil.rmtree(entry.path)
            removed.append(Path(entry.path))
    return removed


def lock_held(path: str | os.PathLike[str]) -> bool:
    """Whether some open file holds a ``flock`` lock on ``path`` (``False`` when it does not exist).

    It takes the lock for an instant to find out: a process that tries to take it with
    ``LOCK_NB`` at that very moment fails once.

    :param path: the lock file
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES):
            return True
        raise
    finally:
        os.close(fd)
    return False
