"""A task's own checkout of a repository at an exact commit, made cheaply from a worker cache.

Layout of the per-worker cache root (the provider setting ``[mlci] cache_dir``)::

    <root>/mirrors/<key>.git     a bare mirror per repository URL (fetched, never re-cloned)
    <root>/mirrors/<key>.lock    serialises fetches into that mirror; its mtime: last use
    <root>/mirrors/<key>.gc      when the mirror was last packed and pruned
    <root>/checkouts/<name>/     one private checkout per task, removed when the task ends
    <root>/checkouts/<name>.lock held by the task while the checkout lives
    <root>/checkouts/<name>.dvc-cache  the DVC cache of an untrusted (sandboxed) run, removed with it
    <root>/dvc/cache             the DVC cache shared by this worker's trusted tasks
    <root>/dvc/evict.lock        one eviction at a time
    <root>/dvc/site              DVC's site cache (indexes, hash state)

A checkout borrows the mirror's objects (``git clone --shared``), so a second checkout of the
same repository costs a few milliseconds plus the files themselves. Every checkout has its own
``.dvc/tmp``, so two tasks on one worker never wait on each other's DVC lock. What a killed
task left behind (its checkout, git's private folder with an SSH key, a half-made mirror clone)
is removed by the next :meth:`Workspace.open` on that worker once its owner is known to be
dead (see :meth:`WorkerCache.prune_checkouts`); so are mirrors no task used for 30 days.

The DVC cache is kept under a size cap: when a task ends, the least recently used objects go
until it is under 80 % of the cap (they can always be pulled again from the remote), even
while other tasks run; what their checkouts use is pinned (see :meth:`WorkerCache.evict`).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import secrets
import shutil
import stat
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.git import Git, check_rev
from airflow_provider_mlci.core.runtime.process import CommandRunner, lock_held, pid_alive, remove_abandoned_tempdirs
from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig, child_environment
from airflow_provider_mlci.exceptions import GitRemoteError, MlciConfigError, WorkspaceError

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
#: A git lock file or temporary pack younger than this may belong to a git that is finishing.
_GIT_LOCK_GRACE_SECONDS = 10.0
#: A mirror is packed, and its old unreachable objects pruned, at least this often...
_MIRROR_GC_EVERY_SECONDS = 24 * 3600.0
#: ... and sooner when it has about this many loose objects or this many packs.
_MIRROR_GC_LOOSE_OBJECTS = 2000
_MIRROR_GC_PACKS = 20
#: A mirror no task used for this long is removed.
_MIRROR_MAX_IDLE_SECONDS = 30 * 24 * 3600.0
#: A checkout's name: ``<time>-<pid>-<random>`` (its companions add ``.<suffix>``).
_CHECKOUT_NAME = re.compile(r"^[0-9]{8}T[0-9]{6}-(?P<pid>[0-9]+)-")
#: DVC object ids in dvc.lock and .dvc files: md5 sums, ``.dir`` for a folder's listing.
_OBJECT_ID = re.compile(r"\b[0-9a-f]{32}(?:\.dir)?\b")
_OBJECT_FOLDER = re.compile(r"^[0-9a-f]{2}$")
_OBJECT_FILE = re.compile(r"^[0-9a-f]{30}(?:\.dir)?$")
#: What a git that could not take a lock in the mirror says: the lock file's path.
_GIT_LOCK_MESSAGE = re.compile(
    r"Unable to create '(?P<quoted>[^']+\.lock)': File exists|could not lock config file (?P<config>\S+): File exists"
)


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

        Fetches and clones run under the mirror's lock, so no other git of ours writes the
        mirror meanwhile: what a killed fetch left there (lock files, which would make every
        later fetch fail, and temporary packs) is removed first, and a fetch that still finds a
        lock in its way removes it and tries once more. Under the same lock the mirror is packed
        and its old unreachable objects pruned now and then (daily, or sooner when it has many
        loose objects or packs).

        :param git: git for the repository
        :param rev: a branch, tag, commit id or expression such as ``main~1``
        :raises GitUnavailableError: the repository could not be reached (retryable)
        :raises GitRemoteError: the repository refused us or does not exist
        :raises GitRevisionNotFoundError: the repository has no such revision
        """
        check_rev(rev)
        mirror = self.mirror_path(git.access.url)
        lock = mirror.with_suffix(".lock")
        _touch(lock)  # when the mirror was last used: idle mirrors go (see prune_checkouts)
        if _FULL_SHA.match(rev) and (mirror / "HEAD").exists():
            sha = git.rev_parse(mirror, rev)
            if sha:
                return mirror, sha
        with _locked(lock):
            if (mirror / "HEAD").exists():
                _clear_abandoned_git_files(mirror)
                self._fetch_mirror(git, mirror)
            else:
                self._clone_mirror(git, mirror)
            sha = git.rev_parse(mirror, rev)
            if sha is None and (_SHORT_SHA.match(rev) or _FULL_SHA.match(rev)):
                # A commit that no ref advertises: servers that allow it send it on request.
                git.run(["fetch", "--quiet", "origin", rev], cwd=mirror)
                sha = git.rev_parse(mirror, rev)
            _upkeep_mirror(git, mirror)
        if sha is None:
            raise git.not_found(rev)
        return mirror, sha

    def _fetch_mirror(self, git: Git, mirror: Path) -> None:
        """Fetch into the mirror (its lock held); a lock file in the way is removed once."""
        args = ["fetch", "--prune", "--quiet", "origin"]
        try:
            git.check(args, cwd=mirror, remote=True)
        except GitRemoteError as exc:
            leftover = _lock_in_the_way(str(exc), mirror)
            if leftover is None:
                raise
            with contextlib.suppress(FileNotFoundError):
                age = time.time() - leftover.stat().st_mtime
                if age < _GIT_LOCK_GRACE_SECONDS:  # a git of a task killed a moment ago may still finish
                    git.runner.sleep(_GIT_LOCK_GRACE_SECONDS - age)
                leftover.unlink()
                log.warning("Removed %s, left in the mirror by a git that did not finish; fetching again", leftover)
            git.check(args, cwd=mirror, remote=True)

    def _clone_mirror(self, git: Git, mirror: Path) -> None:
        # The pid in the name says whose it is; the mirror's lock, held meanwhile, that it is in use.
        tmp = mirror.with_name(f"{mirror.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
        try:
            git.check(["clone", "--mirror", "--quiet", "--", git.access.url, str(tmp)], remote=True)
            git.check(["config", "gc.auto", "0"], cwd=tmp)
            os.replace(tmp, mirror)
            _touch(mirror.with_suffix(".gc"))  # one fresh pack: no packing due
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

    def evict(self, max_bytes: int) -> int:
        """Shrink the DVC cache to 80 % of ``max_bytes`` if it is over, least recently used first,
        sparing what the tasks still running on this worker use.

        Runs while other tasks use the cache. Pinned, so never evicted: every object that a live
        checkout names (in its ``dvc.lock`` and ``.dvc`` files, those of the experiments DVC runs
        inside it, and the listings of the folders among them), and everything added to the cache
        since a DVC command still running in a live checkout began. Run-cache entries
        (``runs/``) count towards the cap and go the same way. One eviction at a time: while
        another task evicts, this does nothing. Also removes site-cache entries of long-gone
        checkouts. Returns the bytes freed.

        :param max_bytes: the cap; 0 or less means no cap
        """
        with _try_locked(self.root / "dvc" / "evict.lock") as held:
            if not held:
                return 0  # another task is evicting right now
            self._prune_site_cache()
            if max_bytes <= 0:
                return 0
            entries = self._cache_entries()
            total = sum(entry.size for entry in entries)
            if total <= max_bytes:
                return 0
            pins = self._pins()
            freed, target = 0, total - int(max_bytes * _EVICT_TO)
            for entry in sorted(entries, key=lambda e: e.used):
                if freed >= target:
                    break
                if not pins.hold(entry) and _unlink(entry.path):
                    freed += entry.size
            log.info(
                "Evicted %.1f MB from the DVC cache at %s (cap %.1f MB)", freed / 1e6, self.dvc_cache, max_bytes / 1e6
            )
            if freed < target:
                log.warning(
                    "The DVC cache at %s stays at %.1f MB, over 80 %% of its cap of %.1f MB: the rest is in use by "
                    "running tasks",
                    self.dvc_cache,
                    (total - freed) / 1e6,
                    max_bytes / 1e6,
                )
            return freed

    def _cache_entries(self) -> list[_CacheEntry]:
        """The DVC cache's objects and run-cache entries (files being written are left out)."""
        entries: list[_CacheEntry] = []
        now = time.time()
        for dirpath, _dirnames, filenames in os.walk(self.dvc_cache):
            folder = Path(dirpath)
            in_runs = folder.relative_to(self.dvc_cache).parts[:1] == ("runs",)
            for name in filenames:
                path = folder / name
                try:
                    info = path.lstat()
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(info.st_mode):
                    continue
                is_object = not in_runs and _OBJECT_FOLDER.match(folder.name) and _OBJECT_FILE.match(name)
                if not (is_object or in_runs) and now - info.st_mtime < _SITE_ENTRY_MAX_AGE:
                    continue  # a file DVC is writing (``*.tmp``), or unknown: not ours to judge yet
                entries.append(
                    _CacheEntry(
                        path=path,
                        size=info.st_size,
                        used=max(info.st_atime, info.st_mtime),
                        added=info.st_ctime,
                        oid=folder.name + name if is_object else None,
                    )
                )
        return entries

    def _pins(self) -> _Pins:
        """What the live checkouts of this worker use, read from their DVC files now."""
        oids: set[str] = set()
        since: float | None = None
        for checkout in self._live_checkouts():
            for dvc_file in _dvc_files(checkout):
                with contextlib.suppress(OSError, UnicodeDecodeError):
                    oids.update(_OBJECT_ID.findall(dvc_file.read_text()))
            started = _dvc_running_since(checkout)
            if started is not None:
                since = started if since is None else min(since, started)
        for oid in [oid for oid in oids if oid.endswith(".dir")]:
            oids.update(self._listed_in(oid))
        return _Pins(oids=frozenset(oids), since=since)

    def _listed_in(self, dir_oid: str) -> set[str]:
        """The objects of the files a folder's listing (a ``.dir`` object) names."""
        for path in (
            self.dvc_cache / "files" / "md5" / dir_oid[:2] / dir_oid[2:],
            self.dvc_cache / dir_oid[:2] / dir_oid[2:],
        ):
            try:
                listing = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(listing, list):
                return {
                    item["md5"]
                    for item in listing
                    if isinstance(item, dict) and isinstance(item.get("md5"), str) and _OBJECT_ID.fullmatch(item["md5"])
                }
        return set()

    def _live_checkouts(self) -> list[Path]:
        """The checkouts whose task still runs (their lock is held, or too young to tell)."""
        live: list[Path] = []
        now = time.time()
        for lock_path in self.checkouts.glob("*.lock"):
            path = lock_path.with_name(lock_path.name.removesuffix(".lock"))
            try:
                young = now - lock_path.stat().st_mtime < _LOCK_GRACE_SECONDS
            except FileNotFoundError:
                continue
            if path.is_dir() and (young or lock_held(lock_path)):
                live.append(path)
        return live

    def _prune_site_cache(self) -> None:
        now = time.time()
        for entry in (self.dvc_site / "repo").glob("*"):
            with contextlib.suppress(FileNotFoundError):
                if now - entry.stat().st_mtime > _SITE_ENTRY_MAX_AGE:
                    _rmtree(entry)

    def prune_checkouts(self) -> list[Path]:
        """Remove what killed tasks left on this worker; return the checkouts removed.

        Called when a task starts. What goes:

        - a checkout, with its companions (``<name>.*``, such as a private DVC cache), whose task
          is gone: its lock is free, and the pid in its name is dead or the lock older than a
          minute (younger, it may be being taken);
        - private temporary folders ``mlci-<kind>-<pid>-*`` (git's helpers and SSH key folders)
          of dead processes whose lock is free
          (:func:`~airflow_provider_mlci.core.runtime.process.remove_abandoned_tempdirs`);
        - half-made mirror clones (``*.git.tmp-*``) that no clone writes (the mirror's lock is free);
        - mirrors that no task used for 30 days.
        """
        removed: list[Path] = []
        now = time.time()
        for lock_path in self.checkouts.glob("*.lock"):
            name = lock_path.name.removesuffix(".lock")
            try:
                young = now - lock_path.stat().st_mtime < _LOCK_GRACE_SECONDS
            except FileNotFoundError:
                continue
            if young and _owner_may_live(name):
                continue
            with _try_locked(lock_path, create=False) as free:
                if not free:
                    continue
                for path in self._companions(name):
                    _remove(path)
                    removed.append(path)
                lock_path.unlink(missing_ok=True)
        for path in self.checkouts.iterdir():
            owner = path.name.split(".", 1)[0]
            if path.name.endswith(".lock") or (self.checkouts / f"{owner}.lock").exists():
                continue
            with contextlib.suppress(FileNotFoundError):
                if not _owner_may_live(owner) or now - path.lstat().st_mtime >= _LOCK_GRACE_SECONDS:
                    _remove(path)
                    removed.append(path)
        for path in removed:
            log.info("Removed an abandoned checkout: %s", path)
        for path in remove_abandoned_tempdirs():
            log.info("Removed the private folder of a task that is gone: %s", path)
        self._prune_mirrors(now)
        return removed

    def _companions(self, name: str) -> list[Path]:
        """The checkout ``name`` and what goes with it (``<name>.*``), its lock file aside."""
        return [
            path
            for path in self.checkouts.iterdir()
            if path.name == name or (path.name.startswith(f"{name}.") and path.name != f"{name}.lock")
        ]

    def _prune_mirrors(self, now: float) -> None:
        """Remove half-made mirror clones that nothing writes, and mirrors idle for 30 days."""
        for tmp in self.mirrors.glob("*.git.tmp-*"):
            with _try_locked(self.mirrors / f"{tmp.name.split('.git.tmp-', 1)[0]}.lock") as free:
                if free:
                    _rmtree(tmp)
                    log.info("Removed a mirror clone that a killed task left unfinished: %s", tmp)
        for lock_path in self.mirrors.glob("*.lock"):
            if not _idle(lock_path, now):
                continue
            with _try_locked(lock_path, create=False) as free:
                if free and _idle(lock_path, now):  # again under the lock: a task may have come meanwhile
                    mirror = lock_path.with_suffix(".git")
                    _rmtree(mirror)
                    mirror.with_suffix(".gc").unlink(missing_ok=True)
                    lock_path.unlink(missing_ok=True)
                    log.info(
                        "Removed the mirror %s: no task used it for %d days", mirror, _MIRROR_MAX_IDLE_SECONDS // 86400
                    )


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
    :param sandbox: how the revision's own code runs (see :mod:`~airflow_provider_mlci.core.runtime.sandbox`)
    :param private_cache: the DVC cache of an untrusted run, beside the checkout (``None``: the
        worker's shared cache)
    """

    path: Path
    rev: str
    sha: str
    access: RepoAccess
    cache: WorkerCache
    git: Git
    python: str | None = None
    sandbox: SandboxConfig = field(default_factory=SandboxConfig)
    private_cache: Path | None = None

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
        sandbox: SandboxConfig | None = None,
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
        :param sandbox: how the revision's own code runs; an untrusted (sandboxed) run gets a
            DVC cache of its own, removed with the checkout
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
            with Git(access.git, runner) as git:
                mirror, sha = cache.resolve(git, rev)
                with cache.checkout_dir() as path:
                    git.check(["clone", "--shared", "--no-checkout", "--quiet", "--", str(mirror), str(path)])
                    git.check(["remote", "set-url", "origin", access.git.url], cwd=path)
                    git.check(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--detach", sha], cwd=path)
                    log.info("Checked out %s (%s) of %s into %s", rev, sha[:12], access.git.display_url, path)
                    sandbox = sandbox or SandboxConfig()
                    private = path.with_name(f"{path.name}.dvc-cache") if sandbox.untrusted else None
                    try:
                        yield cls(
                            path=path, rev=rev, sha=sha, access=access, cache=cache, git=git,
                            python=interpreter, sandbox=sandbox, private_cache=private,
                        )  # fmt: skip
                    finally:
                        if private is not None:
                            _rmtree(private)
        finally:
            cache.evict(max_cache_bytes)

    def resolve(self, rev: str) -> str:
        """The commit id of another revision of the same repository (its objects become readable here).

        :param rev: a branch, tag, commit id or expression
        :raises GitRevisionNotFoundError: the repository has no such revision
        """
        return self.cache.resolve(self.git, rev)[1]

    def environment(self) -> dict[str, str]:
        """The environment of a DVC child: the worker's without Airflow's settings and secrets.

        It holds no credential of the DVC remote (those go to the child on its standard input,
        see :func:`~airflow_provider_mlci.core.dvc.ops.repro`), and stage commands get only its
        allow-listed part (:mod:`~airflow_provider_mlci.core.runtime.sandbox`). The chosen
        interpreter's folder comes first on ``PATH``, then this worker's.
        """
        env = child_environment(os.environ)
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

        An untrusted run uses its private cache instead (and a private site cache in it), so
        nothing it writes is reused by a trusted run.

        :param runs_user_code: whether stage commands will run in the checkout
        """
        cache, site = self.cache.dvc_cache, self.cache.dvc_site
        if self.private_cache is not None:
            cache, site = self.private_cache, self.private_cache / "site"
        return {
            "cache": {"dir": str(cache), "type": "reflink,copy" if runs_user_code else "reflink,hardlink,copy"},
            "core": {"site_cache_dir": str(site)},
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


@contextlib.contextmanager
def _try_locked(path: Path, *, create: bool = True) -> Iterator[bool]:
    """Hold ``path``'s lock for the ``with`` block if nobody else holds it; yield whether we do."""
    try:
        fd = os.open(path, (os.O_CREAT if create else 0) | os.O_RDWR, 0o644)
    except FileNotFoundError:
        yield False
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            yield False
            return
        yield True
    finally:
        os.close(fd)


def _touch(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.touch()


def _idle(lock_path: Path, now: float) -> bool:
    try:
        return now - lock_path.stat().st_mtime > _MIRROR_MAX_IDLE_SECONDS
    except FileNotFoundError:
        return False


def _owner_may_live(name: str) -> bool:
    """Whether the task that made the checkout ``name`` may still run (its pid, from the name, does)."""
    match = _CHECKOUT_NAME.match(name)
    return match is None or pid_alive(int(match["pid"]))


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        _rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _unlink(path: Path) -> bool:
    """Remove a cache file (DVC makes them read-only); whether it was there to remove."""
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    except PermissionError:
        with contextlib.suppress(OSError):
            path.parent.chmod(path.parent.stat().st_mode | stat.S_IWUSR)
        try:
            path.unlink()
        except FileNotFoundError:
            return False
    return True


@dataclass(frozen=True, kw_only=True)
class _CacheEntry:
    """A file of the DVC cache: an object or a run-cache entry.

    :param path: the file
    :param size: its size in bytes
    :param used: when it was last read or written (the later of atime and mtime)
    :param added: when it came into the cache (ctime: DVC makes objects read-only on arrival)
    :param oid: the object's id (``md5`` or ``md5.dir``); ``None`` for other files
    """

    path: Path
    size: int
    used: float
    added: float
    oid: str | None


@dataclass(frozen=True, kw_only=True)
class _Pins:
    """What eviction must keep.

    :param oids: object ids that live checkouts name
    :param since: entries added at or after this time are kept too (a DVC command runs in a live
        checkout and may not have written its lock file yet); ``None``: no such command
    """

    oids: frozenset[str]
    since: float | None

    def hold(self, entry: _CacheEntry) -> bool:
        """Whether ``entry`` must stay.

        :param entry: a cache file
        """
        if entry.oid is not None and entry.oid in self.oids:
            return True
        return self.since is not None and entry.added >= self.since


def _dvc_files(checkout: Path) -> Iterator[Path]:
    """The ``dvc.lock`` and ``.dvc`` files of a checkout and of the experiments DVC runs inside it."""
    for top in (checkout, checkout / ".dvc" / "tmp" / "exps"):
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames[:] = [d for d in dirnames if d not in (".git", ".dvc")]
            for name in filenames:
                if name == "dvc.lock" or name.endswith(".dvc"):
                    yield Path(dirpath) / name


def _dvc_running_since(checkout: Path) -> float | None:
    """When the DVC command running in ``checkout`` took its lock (a second early), or ``None``."""
    locks = [checkout / ".dvc" / "tmp" / "lock", *(checkout / ".dvc" / "tmp" / "exps").glob("*/.dvc/tmp/lock")]
    started: list[float] = []
    for lock_path in locks:
        with contextlib.suppress(OSError):
            if lock_held(lock_path):
                started.append(lock_path.stat().st_mtime - 1.0)
    return min(started) if started else None


def _clear_abandoned_git_files(mirror: Path) -> None:
    """Remove what a killed git left in ``mirror``: lock files, temporary packs and objects,
    quarantine folders of an unfinished fetch.

    Called under the mirror's lock, so no git of ours writes there; what is younger than
    :data:`_GIT_LOCK_GRACE_SECONDS` stays all the same (a git of a task killed a moment ago may
    still be finishing; the fetch then recovers, see :meth:`WorkerCache._fetch_mirror`).
    """
    objects = mirror / "objects"
    leftovers: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(mirror):
        here = Path(dirpath)
        if here == objects:
            leftovers += [here / d for d in dirnames if d.startswith("incoming-")]
            dirnames[:] = [d for d in dirnames if not _OBJECT_FOLDER.match(d) and not d.startswith("incoming-")]
        in_objects = here in (objects, objects / "pack")
        leftovers += [here / n for n in filenames if n.endswith(".lock") or (in_objects and n.startswith("tmp_"))]
    cutoff = time.time() - _GIT_LOCK_GRACE_SECONDS
    for path in leftovers:
        with contextlib.suppress(FileNotFoundError):
            if path.lstat().st_mtime < cutoff:
                _remove(path)
                log.warning("Removed %s, left in the mirror by a git that did not finish", path)


def _lock_in_the_way(message: str, mirror: Path) -> Path | None:
    """The lock file in ``mirror`` that a git's error ``message`` says it could not create."""
    match = _GIT_LOCK_MESSAGE.search(message)
    if match is None:
        return None
    path = Path(match["quoted"] or match["config"])
    path = (path if path.is_absolute() else mirror / path).resolve()
    return path if path.is_relative_to(mirror.resolve()) and path.name.endswith(".lock") else None


def _object_counts(mirror: Path) -> tuple[int, int]:
    """About how many loose objects (estimated as git does, from one of 256 folders) and packs."""
    try:
        loose = sum(1 for _ in (mirror / "objects" / "17").iterdir()) * 256
    except FileNotFoundError:
        loose = 0
    return loose, sum(1 for _ in (mirror / "objects" / "pack").glob("*.pack"))


def _upkeep_mirror(git: Git, mirror: Path) -> None:
    """Pack ``mirror`` and prune its old unreachable objects when due (its lock held).

    Pruning keeps git's two weeks of grace for unreachable objects, which checkouts made from
    the mirror (``git clone --shared``) may still borrow.
    """
    stamp = mirror.with_suffix(".gc")
    try:
        since = time.time() - stamp.stat().st_mtime
    except FileNotFoundError:
        since = float("inf")
    loose, packs = _object_counts(mirror)
    if since < _MIRROR_GC_EVERY_SECONDS and loose < _MIRROR_GC_LOOSE_OBJECTS and packs < _MIRROR_GC_PACKS:
        return
    result = git.run(["-c", "gc.autoDetach=false", "gc", "--quiet"], cwd=mirror)
    if result.returncode != 0:
        log.warning("Packing the mirror %s failed (it stays usable): %s", mirror, result.tail_text.strip())
        return
    _touch(stamp)
