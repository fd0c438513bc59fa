"""A task's own checkout of a repository at an exact commit, made cheaply from a worker cache.

Layout of the per-worker cache root (the provider setting ``[mlci] cache_dir``)::

    <root>/mirrors/<key>.git     a bare mirror per repository URL (fetched, never re-cloned)
    <root>/mirrors/<key>.lock    serialises fetches into that mirror
    <root>/checkouts/<name>/     one private checkout per task, removed when the task ends
    <root>/checkouts/<name>.lock held by the task while the checkout lives
    <root>/dvc/cache             the DVC cache shared by this worker's tasks
    <root>/dvc/cache.lock        held shared by every live checkout, exclusively by eviction
    <root>/dvc/site              DVC's site cache (indexes, hash state)

A checkout borrows the mirror's objects (``git clone --shared``), so a second checkout of the
same repository costs a few milliseconds plus the files themselves. Every checkout has its own
``.dvc/tmp``, so two tasks on one worker never wait on each other's DVC lock. Checkouts left
behind by a killed task are removed by the next :meth:`Workspace.open` on that worker.

The DVC cache is kept under a size cap: when a task ends and no other task on the worker is
using the cache, the least recently used objects go until it is under 80 % of the cap (they
can always be pulled again from the remote).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_mlci.core.access import RepoAccess
from airflow_provider_mlci.core.git import Git, check_rev
from airflow_provider_mlci.core.process import CommandRunner
from airflow_provider_mlci.exceptions import MlciConfigError, WorkspaceError

__all__ = ["WorkerCache", "Workspace", "default_cache_dir", "resolve_python"]

log = logging.getLogger(__name__)

#: A lock file younger than this is never treated as abandoned (it may be being created).
_LOCK_GRACE_SECONDS = 60.0
#: Eviction brings the cache down to this share of its cap.
_EVICT_TO = 0.8
#: Site-cache entries (one per checkout path, which never comes back) older than this go.
_SITE_ENTRY_MAX_AGE = 24 * 3600.0
_FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_SHORT_SHA = re.compile(r"^[0-9a-f]{7,39}$")


def default_cache_dir() -> str:
    """The cache root used when the provider setting is empty: ``~/.cache/airflow-provider-mlci``."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "airflow-provider-mlci")


class WorkerCache:
    """The cache folder of one worker: repository mirrors, checkouts, the DVC cache.

    :param root: the folder; created if missing
    """

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).expanduser().absolute()
        self.mirrors = self.root / "mirrors"
        self.checkouts = self.root / "checkouts"
        self.dvc_cache = self.root / "dvc" / "cache"
        self.dvc_site = self.root / "dvc" / "site"
        try:
            for folder in (self.mirrors, self.checkouts, self.dvc_cache, self.dvc_site):
                folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise WorkspaceError(f"Cannot create the worker cache at {self.root}: {exc}") from exc

    def mirror_path(self, url: str) -> Path:
        """Where the mirror of ``url`` lives.

        :param url: the repository URL
        """
        key = hashlib.sha256(url.encode()).hexdigest()[:16]
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "-", url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git"))[:40]
        return self.mirrors / f"{stem or 'repo'}-{key}.git"

    def resolve(self, git: Git, rev: str) -> tuple[Path, str]:
        """Bring the mirror of ``git``'s repository up to date as needed and resolve ``rev``.

        A full commit id already in the mirror needs no fetch; anything else (a branch can
        move) fetches first. Returns the mirror path and the commit id.

        :param git: git for the repository
        :param rev: a branch, tag, commit id or expression such as ``main~1``
        :raises GitRemoteError: the repository cannot be reached
        :raises GitRevisionNotFoundError: the repository has no such revision
        """
        check_rev(rev)
        mirror = self.mirror_path(git.access.url)
        if _FULL_SHA.match(rev) and (mirror / "HEAD").exists():
            sha = git.rev_parse(mirror, rev)
            if sha:
                return mirror, sha
        with _locked(mirror.with_suffix(".lock")):
            if (mirror / "HEAD").exists():
                git.check(["fetch", "--prune", "--quiet", "origin"], cwd=mirror, remote=True)
            else:
                self._clone_mirror(git, mirror)
            sha = git.rev_parse(mirror, rev)
            if sha is None and (_SHORT_SHA.match(rev) or _FULL_SHA.match(rev)):
                # A commit that no ref advertises: servers that allow it send it on request.
                git.run(["fetch", "--quiet", "origin", rev], cwd=mirror)
                sha = git.rev_parse(mirror, rev)
        if sha is None:
            raise git.not_found(rev)
        return mirror, sha

    def _clone_mirror(self, git: Git, mirror: Path) -> None:
        tmp = mirror.with_name(f"{mirror.name}.tmp-{secrets.token_hex(4)}")
        try:
            git.check(["clone", "--mirror", "--quiet", "--", git.access.url, str(tmp)], remote=True)
            git.check(["config", "gc.auto", "0"], cwd=tmp)
            os.replace(tmp, mirror)
        finally:
            _rmtree(tmp)

    @contextlib.contextmanager
    def checkout_dir(self) -> Iterator[Path]:
        """Reserve a new, empty checkout folder for the life of the ``with`` block, then remove it."""
        name = f"{time.strftime('%Y%m%dT%H%M%S')}-{os.getpid()}-{secrets.token_hex(4)}"
        path = self.checkouts / name
        lock_path = self.checkouts / f"{name}.lock"
        fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            yield path
        finally:
            _rmtree(path)
            with contextlib.suppress(FileNotFoundError):
                lock_path.unlink()
            os.close(fd)

    @contextlib.contextmanager
    def in_use(self) -> Iterator[None]:
        """Hold the DVC cache against eviction for the life of the ``with`` block (shared lock)."""
        fd = os.open(self.root / "dvc" / "cache.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)

    def evict(self, max_bytes: int) -> int:
        """Shrink the DVC cache to 80 % of ``max_bytes`` if it is over, least recently used first.

        Does nothing while any task on this worker uses the cache. Also removes site-cache
        entries of long-gone checkouts. Returns the bytes freed.

        :param max_bytes: the cap; 0 or less means no cap
        """
        fd = os.open(self.root / "dvc" / "cache.lock", os.O_CREAT | os.O_RDWR, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    return 0  # a task is using the cache: next time
                raise
            self._prune_site_cache()
            if max_bytes <= 0:
                return 0
            entries = []
            total = 0
            for path in self.dvc_cache.rglob("*"):
                with contextlib.suppress(FileNotFoundError):
                    info = path.lstat()
                    if stat.S_ISREG(info.st_mode):
                        entries.append((max(info.st_atime, info.st_mtime), info.st_size, path))
                        total += info.st_size
            if total <= max_bytes:
                return 0
            freed, target = 0, total - int(max_bytes * _EVICT_TO)
            for _, size, path in sorted(entries):
                if freed >= target:
                    break
                with contextlib.suppress(FileNotFoundError):
                    path.chmod(stat.S_IWUSR | stat.S_IRUSR)
                    path.unlink()
                    freed += size
            log.info(
                "Evicted %.1f MB from the DVC cache at %s (cap %.1f MB)", freed / 1e6, self.dvc_cache, max_bytes / 1e6
            )
            return freed
        finally:
            os.close(fd)

    def _prune_site_cache(self) -> None:
        now = time.time()
        for entry in (self.dvc_site / "repo").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > _SITE_ENTRY_MAX_AGE:
                    _rmtree(entry)

    def prune_checkouts(self) -> list[Path]:
        """Remove checkouts whose task is gone (their lock is free); return what was removed."""
        removed: list[Path] = []
        now = time.time()
        for lock_path in self.checkouts.glob("*.lock"):
            try:
                if now - lock_path.stat().st_mtime < _LOCK_GRACE_SECONDS:
                    continue
                fd = os.open(lock_path, os.O_RDWR)
            except FileNotFoundError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError as exc:
                if exc.errno in (errno.EAGAIN, errno.EACCES):
                    os.close(fd)
                    continue
                raise
            try:
                path = lock_path.with_suffix("")
                _rmtree(path)
                lock_path.unlink(missing_ok=True)
                removed.append(path)
            finally:
                os.close(fd)
        for path in self.checkouts.iterdir():
            orphan = path.is_dir() and not path.with_name(f"{path.name}.lock").exists()
            if orphan and now - path.stat().st_mtime >= _LOCK_GRACE_SECONDS:
                _rmtree(path)
                removed.append(path)
        for path in removed:
            log.info("Removed an abandoned checkout: %s", path)
        return removed


@dataclass(frozen=True, kw_only=True)
class Workspace:
    """A private checkout of a repository at one commit, with DVC set up for this worker.

    Open one with :meth:`Workspace.open`; it is removed when the ``with`` block ends.

    :param path: the checkout's folder
    :param rev: the revision as asked for
    :param sha: the commit checked out
    :param access: the repository and DVC remote
    :param cache: the worker cache it was made from
    :param git: git for the repository (holds the credentials)
    :param python: the interpreter stage commands run with (its folder goes first on ``PATH``);
        ``None``: this worker's interpreter
    """

    path: Path
    rev: str
    sha: str
    access: RepoAccess
    cache: WorkerCache
    git: Git
    python: str | None = None

    @classmethod
    @contextlib.contextmanager
    def open(
        cls,
        access: RepoAccess,
        rev: str = "HEAD",
        *,
        cache_dir: str | os.PathLike[str],
        runner: CommandRunner | None = None,
        python: str | None = None,
        max_cache_bytes: int = 0,
    ) -> Iterator[Workspace]:
        """Check out ``rev`` of the repository into a private folder.

        :param access: the repository and DVC remote
        :param rev: a branch, tag, commit id or expression such as ``main~1``; ``HEAD`` is the
            repository's default branch
        :param cache_dir: the worker cache root
        :param runner: runs git (and later DVC); give one to be able to stop it from another thread
        :param python: an interpreter, or a virtualenv folder, for stage commands (default: this
            worker's interpreter)
        :param max_cache_bytes: the worker's DVC cache cap, enforced when the checkout goes;
            0 = no cap
        :raises MlciConfigError: ``rev`` or ``python`` is not valid
        :raises GitRemoteError: the repository cannot be reached
        :raises GitRevisionNotFoundError: the repository has no such revision
        """
        interpreter = resolve_python(python)
        runner = runner or CommandRunner(log=log)
        runner.add_secrets(access.secrets)
        cache = WorkerCache(cache_dir)
        cache.prune_checkouts()
        try:
            with Git(access.git, runner) as git, cache.in_use():
                mirror, sha = cache.resolve(git, rev)
                with cache.checkout_dir() as path:
                    git.check(["clone", "--shared", "--no-checkout", "--quiet", "--", str(mirror), str(path)])
                    git.check(["remote", "set-url", "origin", access.git.url], cwd=path)
                    git.check(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha], cwd=path)
                    log.info("Checked out %s (%s) of %s into %s", rev, sha[:12], access.git.display_url, path)
                    yield cls(path=path, rev=rev, sha=sha, access=access, cache=cache, git=git, python=interpreter)
        finally:
            cache.evict(max_cache_bytes)

    def resolve(self, rev: str) -> str:
        """The commit id of another revision of the same repository (its objects become readable here).

        :param rev: a branch, tag, commit id or expression
        :raises GitRevisionNotFoundError: the repository has no such revision
        """
        return self.cache.resolve(self.git, rev)[1]

    def environment(self) -> dict[str, str]:
        """The environment of DVC and of the stage commands it runs (holds the remote's credentials).

        The chosen interpreter's folder comes first on ``PATH``, then this worker's.
        """
        env = dict(os.environ)
        env.update(self.access.dvc.environment())
        folders = [os.path.dirname(self.python)] if self.python else []
        folders.append(os.path.dirname(sys.executable))
        env["PATH"] = os.pathsep.join([*folders, env.get("PATH", "")])
        env["DVC_NO_ANALYTICS"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def dvc_config(self, *, runs_user_code: bool = True) -> dict[str, Any]:
        """DVC settings for this checkout: the worker's shared cache and site cache.

        Data goes from the cache into the checkout as copies (or copy-on-write reflinks) when
        stage commands will run there, so no command can alter the shared cache (read-only
        bits do not stop root); otherwise as hard links, which cost nothing.

        :param runs_user_code: whether stage commands will run in the checkout
        """
        return {
            "cache": {
                "dir": str(self.cache.dvc_cache),
                "type": "reflink,copy" if runs_user_code else "reflink,hardlink,copy",
            },
            "core": {"site_cache_dir": str(self.cache.dvc_site)},
        }


def resolve_python(python: str | None) -> str | None:
    """Return the interpreter ``python`` names (a path, or a virtualenv folder), checked.

    :param python: an interpreter path, a virtualenv folder, or ``None`` for this worker's
    :raises MlciConfigError: naming a path that is no executable interpreter
    """
    if not python:
        return None
    path = Path(python).expanduser()
    if path.is_dir():
        path = path / "bin" / "python"
    if not (path.is_file() and os.access(path, os.X_OK)):
        raise MlciConfigError(f"python={python!r} is not an executable interpreter or a virtualenv folder.")
    return str(path.absolute())


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    fd = os.open(path, os.O_CREAT | os.O_RDWR, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _rmtree(path: Path) -> None:
    def _retry_writable(func: Any, target: str, _exc: Any) -> None:
        parent = os.path.dirname(target)
        with contextlib.suppress(OSError):
            os.chmod(parent, os.stat(parent).st_mode | stat.S_IWUSR)
            os.chmod(target, os.stat(target).st_mode | stat.S_IWUSR)
        func(target)

    if path.exists():
        shutil.rmtree(path, onerror=_retry_writable)
