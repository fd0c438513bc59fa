"""The subprocess side of :mod:`airflow_provider_mlci.core.dvc.ops`: DVC itself.

Run as ``python -m airflow_provider_mlci.core.dvc.child`` in the workspace, with a JSON request
on standard input (``op``, ``args``, ``root``, ``config``, ``remote``, ``remote_config``,
``result_path``). It writes ``{"result": ...}`` or ``{"error": {"type", "message"}}`` to
``result_path`` and exits 0 or 3. DVC's exceptions become ours here (:func:`translate`).

DVC 3.x, through ``dvc.repo.Repo``; the few internals used (log messages that say a stage was
restored, ``dvc.stage.run.cmd_run`` to plan without running) are pinned by the tests.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import logging
import os
import posixpath
import re
import shutil
import subprocess
import sys
import tarfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci import exceptions as errors
from airflow_provider_mlci.core.dvc.ops import (
    RAN,
    RESTORED,
    SKIPPED,
    json_safe,
)
from airflow_provider_mlci.core.runtime.process import private_tempdir

if TYPE_CHECKING:
    from dvc.repo import Repo
    from dvc.stage import Stage

log = logging.getLogger("airflow_provider_mlci.core.dvc.child")

_RESTORED_MESSAGE = "Stage '%s' is cached - skipping run, checking out outputs"

#: Whether this child serves an untrusted run: its run-cache entries never leave its private cache.
TRUST = {"untrusted": False}


def share_run_cache(wanted: bool = True) -> bool:
    """Whether run-cache entries may be pushed to the shared remote (never for an untrusted run).

    :param wanted: whether the caller wants them pushed
    """
    return wanted and not TRUST["untrusted"]


def push_results(repo: Repo, targets: list[str] | None, *, run_cache: bool) -> int:
    """Push outputs, then (if shared) the run-cache; return how many files went.

    ``dvc push --run-cache`` sends the run-cache entries first: a push cut short between the two
    leaves entries on the remote whose outputs are not there, and every later run restoring
    from them fails. Outputs first, entries after, so an entry on the remote always finds its
    objects there.

    :param repo: the repository
    :param targets: what to push (``None``: everything the workspace uses)
    :param run_cache: whether to push the run-cache entries too (never for an untrusted run)
    """
    from dvc.stage.cache import RunCacheNotSupported

    pushed = repo.push(targets=targets or None, run_cache=False)
    if share_run_cache(run_cache):
        try:
            pushed += len(repo.stage_cache.push(None))
        except RunCacheNotSupported as exc:
            log.debug("The remote keeps no run-cache: %s", exc)
    return pushed


class _WarningRecorder(logging.Handler):
    """Keep DVC's last warnings: they name the objects behind a failed checkout."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages = [*self.messages[-4:], record.getMessage()]


_WARNINGS = _WarningRecorder()


class _OutcomeRecorder(logging.Handler):
    """Learn from DVC's log which stages were restored from the run-cache."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.restored: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == _RESTORED_MESSAGE and record.args:
            self.restored.add(str(record.args[0]))


@contextlib.contextmanager
def _recording() -> Iterator[_OutcomeRecorder]:
    recorder = _OutcomeRecorder()
    dvc_logger = logging.getLogger("dvc")
    dvc_logger.addHandler(recorder)
    try:
        yield recorder
    finally:
        dvc_logger.removeHandler(recorder)


# ------------------------------------------------------------------------------ stage helpers


def _upstream_first(repo: Repo) -> dict[Stage, int]:
    import networkx as nx

    return {stage: index for index, stage in enumerate(reversed(list(nx.topological_sort(repo.index.graph))))}


def stages_in_scope(repo: Repo, targets: Iterable[str], single_stage: bool) -> list[Stage]:
    """The stages a reproduction of ``targets`` covers, upstream first."""
    import networkx as nx

    graph = repo.index.graph
    targets = list(targets)
    if targets:
        chosen = []
        for target in targets:
            chosen.extend(repo.stage.collect(target))
        if not single_stage:
            scope = set(chosen)
            for stage in chosen:
                scope |= nx.descendants(graph, stage)  # edges point from a stage to its upstream
            chosen = list(scope)
    else:
        chosen = list(graph.nodes)
    order = _upstream_first(repo)
    return sorted(set(chosen), key=lambda stage: order.get(stage, 0))


def _pipeline(stages: Iterable[Stage]) -> list[Stage]:
    return [stage for stage in stages if stage.cmd]


def require_remote(repo: Repo) -> None:
    """Fail, naming what to set, when no DVC remote is configured."""
    name = repo.config["core"].get("remote")
    if not name:
        raise errors.MlciConfigError(
            "The repository has no default DVC remote: set 'dvc_remote' or 'dvc_remote_url' on the connection, "
            "or a default remote in the repository's .dvc/config."
        )
    if name not in repo.config.get("remote", {}):
        raise errors.MlciConfigError(f"The DVC remote {name!r} is not defined in the repository's .dvc/config.")


def pull_inputs(repo: Repo, stages: list[Stage]) -> None:
    """Pull what ``stages`` need from outside themselves, failing on anything missing.

    That is every data source (``.dvc`` file) among or directly upstream of them, and the
    outputs of upstream pipeline stages left out of the run.
    """
    graph = repo.index.graph
    scope = set(stages)
    upstream = {dep for stage in stages for dep in graph.successors(stage)} - scope
    needed = [stage for stage in stages if not stage.cmd] + sorted(upstream, key=lambda stage: stage.addressing)
    if needed:
        names = [stage.addressing for stage in needed]
        stats = repo.pull(targets=names)
        log.info("Pulled %s: %s file(s) fetched", ", ".join(names), stats.get("stats", {}).get("fetched", 0))


def _lock_path(stage: Stage) -> str:
    return os.path.relpath(os.path.splitext(stage.dvcfile.path)[0] + ".lock", stage.repo.root_dir)


def _lock_order(repo: Repo, lockfile: str) -> list[str]:
    """The order in which ``dvc repro <its dvc.yaml>`` would run the stages of ``lockfile``
    (and so write their lock entries)."""
    from dvc.repo.reproduce import get_active_graph, plan_repro

    dvcfile = os.path.splitext(lockfile)[0] + ".yaml"
    own = [stage for stage in repo.index.stages if stage.cmd and _lock_path(stage) == lockfile]
    with contextlib.suppress(Exception):  # best effort: the order only makes the file read as DVC's
        own = plan_repro(get_active_graph(repo.index.graph), own) or own
    return [stage.name for stage in own if os.path.relpath(stage.dvcfile.path, repo.root_dir) == dvcfile]


def _apply_handoff(repo: Repo, handoff: dict[str, Any] | None) -> None:
    """Write upstream tasks' lock entries and bundled files into the checkout."""
    if not handoff:
        return
    from dvc.utils.serialize import dump_yaml, load_yaml

    root = Path(repo.root_dir)
    for lockfile, entries in (handoff.get("lock") or {}).items():
        path = _inside(root, lockfile)
        data = load_yaml(str(path)) if path.exists() else {"schema": "2.0", "stages": {}}
        stages = data.setdefault("stages", {})
        # Entries the revision's lock holds keep their place; new ones follow in DVC's order.
        order = {name: index for index, name in enumerate(_lock_order(repo, lockfile))}
        for name in sorted(entries, key=lambda name: order.get(name, len(order))):
            stages[name] = entries[name]
        dump_yaml(str(path), data)
        log.info("Applied lock entries of %s from upstream tasks", ", ".join(sorted(entries)))
    written: dict[str, tuple[str, bytes | None]] = {}
    for bundle in handoff.get("bundles") or ():
        _unpack(repo, bundle, written)
    # The index read the old lock when the repo opened; read it again.
    repo._reset()


def _inside(root: Path, name: str) -> Path:
    """``root / name``, refusing a name that leads outside ``root``; the last part is not
    followed (a link in the checkout is replaced, not written through)."""
    from airflow_provider_mlci.core.repo.paths import inside

    return inside(root, name, what="handed-on file", follow_last=False)


# ------------------------------------------------------------------------------ bundles

#: The member of a bundle that lists what the stage deleted.
_MANIFEST = ".mlci-handoff.json"


def _git(root: str | Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=root, env=env, capture_output=True, text=True, check=True).stdout


def _worktree_tree(root: str | Path) -> str:
    """The tree ``git add -A`` would commit now, built in a throwaway index (nothing is staged)."""
    index = Path(root) / _git(root, "rev-parse", "--git-path", "index").strip()
    with private_tempdir("index") as tmp:
        scratch = os.path.join(tmp, "index")
        if index.exists():
            shutil.copyfile(index, scratch)  # its stat data spares hashing unchanged files
        env = {**os.environ, "GIT_INDEX_FILE": scratch}
        _git(root, "add", "--all", "--", ".", env=env)
        return _git(root, "write-tree", env=env).strip()


def _tree_changes(root: str | Path, before: str, after: str) -> list[tuple[str, str]]:
    """``(status, path)`` of each file that differs between two trees (``A``, ``M``, ``D``, ``T``)."""
    out = _git(root, "diff-tree", "-r", "-z", "--no-renames", "--name-status", before, after)
    items = out.split("\0")
    return [(items[i], items[i + 1]) for i in range(0, len(items) - 1, 2)]


def _changed_git_files(repo: Repo) -> list[str]:
    """What ``git add -A`` would commit after the run, relative to the checked-out revision."""
    root = repo.root_dir
    head = _git(root, "rev-parse", "HEAD^{tree}").strip()
    return sorted(path for _, path in _tree_changes(root, head, _worktree_tree(root)))


def _pack(repo: Repo, before: str, stages: list[Stage], seen: list[str], push: bool) -> dict[str, Any] | None:
    """Pack what the stages changed under git since the tree ``before`` into a bundle.

    Lock files travel as entries (they are merged stage by stage); everything else, as files.
    The bundle goes into the worker's DVC cache and, with ``push``, to the remote.
    """
    from dvc_data.hashfile.hash_info import HashInfo

    root = repo.root_dir
    changes = [
        (status, path)
        for status, path in _tree_changes(root, before, _worktree_tree(root))
        if posixpath.basename(path) != "dvc.lock"
    ]
    if not changes:
        return None
    deleted = sorted(path for status, path in changes if status == "D")
    raw = io.BytesIO()
    with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as packed, tarfile.open(fileobj=packed, mode="w") as tar:
        manifest = json.dumps({"deleted": deleted}).encode()
        info = tarfile.TarInfo(_MANIFEST)
        info.size = len(manifest)
        tar.addfile(info, io.BytesIO(manifest))
        for path in sorted(path for status, path in changes if status != "D"):
            info = tar.gettarinfo(os.path.join(root, path), arcname=path)
            info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
            if info.isreg():
                with open(os.path.join(root, path), "rb") as handle:
                    tar.addfile(info, handle)
            else:
                tar.addfile(info)
    data = raw.getvalue()
    md5 = hashlib.md5(data).hexdigest()  # noqa: S324 (DVC's content address, not security)
    repo.cache.local.add_bytes(md5, data)
    if push:
        failed = repo.cloud.push([HashInfo("md5", md5)]).failed
        if failed:
            raise errors.DvcTransferError(f"Could not push the hand-off bundle {md5} to the DVC remote")
    names = [stage.addressing for stage in _pipeline(stages)]
    log.info("Handed on %d changed file(s) under git as bundle %s", len(changes), md5)
    return {"stages": names, "md5": md5, "seen": sorted(seen)}


def _bundle_bytes(repo: Repo, bundle: dict[str, Any]) -> bytes:
    from dvc_data.hashfile.hash_info import HashInfo

    md5 = str(bundle["md5"])
    if not re.fullmatch(r"[0-9a-f]{32}", md5):
        raise errors.MlciConfigError(f"{md5!r} is not a hand-off bundle id")
    odb = repo.cache.local
    if not odb.exists(md5):
        require_remote(repo)
        repo.cloud.pull([HashInfo("md5", md5)])
    path = odb.oid_to_path(md5)
    if not os.path.exists(path):
        raise errors.DvcMissingObjectError(
            f"The files stage {', '.join(bundle.get('stages') or ['?'])} handed on (bundle {md5}) are in neither "
            "this worker's DVC cache nor the DVC remote"
        )
    with open(path, "rb") as handle:
        data = handle.read()
    if hashlib.md5(data).hexdigest() != md5:  # noqa: S324
        raise errors.DvcMissingObjectError(f"The hand-off bundle {md5} is corrupted")
    return data


def _unpack(repo: Repo, bundle: dict[str, Any], written: dict[str, tuple[str, bytes | None]]) -> None:
    """Write one bundle's files into the checkout, refusing to silently drop a parallel change.

    ``written`` maps each path written so far to (the stage that wrote it, its bytes); a later
    bundle whose stage did not start from that stage's result and wrote other bytes conflicts,
    except for ``.gitignore`` files, whose lines are joined.
    """
    root = Path(repo.root_dir)
    stage = ", ".join(bundle.get("stages") or ["?"])
    seen = set(bundle.get("seen") or ())
    with tarfile.open(fileobj=io.BytesIO(_bundle_bytes(repo, bundle)), mode="r:gz") as tar:
        members = tar.getmembers()
        manifest = json.loads(tar.extractfile(_MANIFEST).read()) if _MANIFEST in tar.getnames() else {}  # type: ignore[union-attr]
        for member in members:
            if member.name == _MANIFEST:
                continue
            path = _inside(root, member.name)
            # A link is compared by its target (None stands for a deletion).
            link = b"\0link\0" + member.linkname.encode()
            data = tar.extractfile(member).read() if member.isreg() else link  # type: ignore[union-attr]
            data = _reconcile(member.name, data, stage, seen, written)
            written[member.name] = (stage, data)
            _place(root, path, member, data)
        for name in manifest.get("deleted") or ():
            path = _inside(root, name)
            _reconcile(name, None, stage, seen, written)
            written[name] = (stage, None)
            if path.is_file() or path.is_symlink():
                path.unlink()


def _place(root: Path, path: Path, member: tarfile.TarInfo, data: bytes | None) -> None:
    """Write one bundle member at ``path`` (inside ``root``): a file with its bytes and
    executable bit, or a link whose target stays inside ``root``. Written by hand rather than
    with ``TarFile.extract(filter="data")``, which Python 3.11 before 3.11.4 does not have."""
    if not (member.isreg() or member.issym()):
        raise errors.MlciConfigError(f"{member.name!r} in a hand-off bundle is neither a file nor a link")
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.is_file() or path.is_symlink():
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    if member.issym():
        target = (path.parent / member.linkname).resolve()
        if os.path.isabs(member.linkname) or not target.is_relative_to(root.resolve()):
            raise errors.MlciConfigError(f"The link {member.name!r} in a hand-off bundle leads out of the repository")
        os.symlink(member.linkname, path)
        return
    path.write_bytes(data or b"")  # a joined .gitignore, or the member's own bytes
    path.chmod(0o755 if member.mode & 0o100 else 0o644)


def _reconcile(
    name: str, data: bytes | None, stage: str, seen: set[str], written: dict[str, tuple[str, bytes | None]]
) -> bytes | None:
    """What to write for ``name`` (``None``: delete it) given what an earlier bundle wrote there."""
    if name not in written:
        return data
    other, theirs = written[name]
    if theirs == data or any(part in seen for part in other.split(", ")):
        return data
    if posixpath.basename(name) == ".gitignore" and theirs is not None and data is not None:
        lines = theirs.decode().splitlines()
        return "\n".join([*lines, *(line for line in data.decode().splitlines() if line not in lines)]).encode() + b"\n"
    raise errors.DvcFileError(
        f"{name} was changed both by stage {other} and by stage {stage}, which ran in parallel: neither saw the "
        "other's version. Make one depend on the other in dvc.yaml, or run the pipeline as one task (mode='single')."
    )


def _handoff(repo: Repo, stages: list[Stage], before: str, seen: list[str], push: bool) -> dict[str, Any]:
    """The lock entries of ``stages`` as they are now, and the bundle of what they changed under git."""
    from dvc.utils.serialize import load_yaml

    lock: dict[str, dict[str, Any]] = {}
    root = Path(repo.root_dir)
    for stage in _pipeline(stages):
        lockfile = _lock_path(stage)
        path = root / lockfile
        entries = (load_yaml(str(path)) or {}).get("stages", {}) if path.exists() else {}
        if stage.name in entries:
            lock.setdefault(lockfile, {})[stage.name] = entries[stage.name]
    bundle = _pack(repo, before, stages, seen, push)
    return {"lock": lock, "bundles": [bundle] if bundle else []}


def _seen(handoff: dict[str, Any] | None) -> list[str]:
    """The stages whose results a handoff carries."""
    if not handoff:
        return []
    names = {name for entries in (handoff.get("lock") or {}).values() for name in entries}
    names |= {name for bundle in handoff.get("bundles") or () for name in bundle.get("stages") or ()}
    return sorted(names)


def metrics_of(repo: Repo) -> dict[str, Any]:
    from airflow_provider_mlci.core.repo.paths import inside

    shown = repo.metrics.show()
    workspace = shown.get("workspace") or shown.get("") or {}
    metrics: dict[str, Any] = {}
    for path, entry in workspace.get("data", {}).items():
        inside(repo.root_dir, path, what="metrics file")  # DVC followed its links: none may lead out
        error = entry.get("error")
        if error is None:
            metrics[path] = entry.get("data", {})
        elif not os.path.exists(os.path.join(repo.root_dir, path)):
            # Not written yet: a later stage (perhaps in another task) writes it, maybe into a
            # folder that does not exist before (DVC then says "failed to load directory").
            log.info("No metrics file %s (the stage that writes it did not run in this task)", path)
        else:
            raise errors.DvcFileError(f"Cannot read the metrics file {path}: {error}")
    return json_safe(metrics)


# ------------------------------------------------------------------------------------- ops


def op_repro(
    repo: Repo,
    *,
    targets: list[str],
    force: bool,
    single_stage: bool,
    pull: bool,
    push: bool,
    handoff: dict[str, Any] | None,
) -> dict[str, Any]:
    _apply_handoff(repo, handoff)
    before = _worktree_tree(repo.root_dir)
    stages = stages_in_scope(repo, targets, single_stage)
    if pull or push:
        require_remote(repo)
    if pull:
        pull_inputs(repo, stages)
    with _recording() as recorder:
        # pull=True: fetch the run-cache, pull what unchanged stages and restored runs need.
        # Never allow_missing: that would skip stages whose data is missing.
        reproduced = repo.reproduce(targets or None, single_item=single_stage, force=force, pull=pull)
    ran = {stage.addressing for stage in reproduced}
    outcomes: dict[str, str] = {}
    for stage in _pipeline(stages):
        name = stage.addressing
        outcomes[name] = RESTORED if name in recorder.restored else RAN if name in ran else SKIPPED
    if push:
        push_results(repo, [stage.addressing for stage in stages], run_cache=True)
    return {
        "stages": outcomes,
        "metrics": metrics_of(repo),
        "pushed": push,
        "handoff": _handoff(repo, stages, before, _seen(handoff), push),
        "changed_files": _changed_git_files(repo),
    }


class _WouldRun(Exception):  # noqa: N818 (a signal, not an error)
    """Raised instead of running a stage's command when planning."""


def op_plan(repo: Repo, *, targets: list[str], single_stage: bool, handoff: dict[str, Any] | None) -> dict[str, Any]:
    import networkx as nx
    from dvc.exceptions import ReproductionError
    from dvc.stage import run as stage_run

    _apply_handoff(repo, handoff)
    stages = stages_in_scope(repo, targets, single_stage)
    require_remote(repo)
    pull_inputs(repo, stages)
    would_run: list[str] = []

    def refuse(stage: Stage, *args: Any, **kwargs: Any) -> None:
        would_run.append(stage.addressing)
        raise _WouldRun(f"planning only: stage '{stage.addressing}' would run its command")

    original = stage_run.cmd_run
    stage_run.cmd_run = refuse
    try:
        # keep-going: a stage that would run stops only the stages below it.
        with _recording() as recorder, contextlib.suppress(ReproductionError):
            repo.reproduce(targets or None, single_item=single_stage, pull=True, on_error="keep-going")
    finally:
        stage_run.cmd_run = original
    graph = repo.index.graph
    blocked = set(would_run)
    by_name = {stage.addressing: stage for stage in stages}
    for name in would_run:
        blocked |= {s.addressing for s in nx.ancestors(graph, by_name[name])} if name in by_name else set()
    fates: dict[str, str] = {}
    for stage in _pipeline(stages):
        name = stage.addressing
        fates[name] = "run" if name in blocked else "restore" if name in recorder.restored else "skip"
    return {"stages": fates}


def op_status(repo: Repo, *, targets: list[str], check_remote: bool) -> dict[str, Any]:
    stages = stages_in_scope(repo, targets, single_stage=False)
    names = [stage.addressing for stage in stages] or None
    require_remote(repo)
    repo.pull(targets=names, allow_missing=True)
    items = {name: list(_status_items(entries)) for name, entries in repo.status(targets=names).items()}
    # Data named by the lock that neither the cache nor the remote holds.
    absent = {path for entries in items.values() for kind, path, state in entries if state == "not in cache"}
    if check_remote:
        cloud = repo.status(targets=names, cloud=True)
        absent |= {path for path, state in cloud.items() if state in ("new", "missing")}

    def caused_by_absent_data(path: str | None) -> bool:
        return path is not None and any(path == gone or path.startswith(gone.rstrip("/") + "/") for gone in absent)

    changed: dict[str, list[str]] = {}
    for name, entries in items.items():
        described = [
            f"{kind}: {path} ({state})" if path else f"{kind}"
            for kind, path, state in entries
            if not caused_by_absent_data(path)
        ]
        if described:
            changed[name] = described
    return {"changed": changed, "not_in_remote": sorted(absent) if check_remote else []}


def _status_items(entries: list[Any]) -> Iterator[tuple[str, str | None, str | None]]:
    """(kind, path, state) for each difference ``repo.status()`` reports for a stage."""
    for entry in entries:
        if isinstance(entry, str):
            if entry != "always changed":
                yield entry, None, None
            continue
        for kind, detail in entry.items():
            if not isinstance(detail, dict):
                yield f"{kind}: {detail}", None, None
                continue
            for path, state in detail.items():
                if isinstance(state, dict):  # params: {file: {param: state}}
                    for param, param_state in state.items():
                        yield kind, f"{path}:{param}", str(param_state)
                else:
                    yield kind, path, str(state)


def op_pull(repo: Repo, *, targets: list[str]) -> dict[str, Any]:
    require_remote(repo)
    stats = repo.pull(targets=targets or None)
    return {"fetched": stats.get("stats", {}).get("fetched", 0), "added": sorted(stats.get("added", []))}


def op_fetch(repo: Repo, *, targets: list[str]) -> dict[str, Any]:
    require_remote(repo)
    _WARNINGS.messages = []
    fetched = repo.fetch(targets=targets or None)
    if any("do not exist neither locally nor on remote" in text for text in _WARNINGS.messages):
        status = repo.status(targets=targets or None, cloud=True)
        missing = sorted(path for path, state in status.items() if state == "missing")
        raise errors.DvcMissingObjectError(
            f"Neither this worker's cache nor the remote holds: {', '.join(missing) or 'some objects'}. "
            + " ".join(_WARNINGS.messages)
        )
    return {"fetched": fetched}


def op_push(repo: Repo, *, targets: list[str], run_cache: bool) -> dict[str, Any]:
    require_remote(repo)
    status = repo.status(targets=targets or None, cloud=True)
    missing = sorted(path for path, state in status.items() if state == "missing")
    pushed = push_results(repo, targets, run_cache=run_cache)
    return {"pushed": pushed, "missing": missing}


def op_metrics(repo: Repo, *, baseline: str | None) -> dict[str, Any]:
    sha = repo.scm.get_rev()
    revs = [sha] + ([baseline] if baseline else [])
    _fetch_cached_metrics(repo, revs)
    shown_metrics = repo.metrics.show(revs=revs, hide_workspace=True)
    shown_params = repo.params.show(revs=revs, hide_workspace=True)
    result: dict[str, Any] = {
        "metrics": files_at(repo, shown_metrics, sha, "metrics"),
        "params": files_at(repo, shown_params, sha, "params"),
        "baseline_metrics": files_at(repo, shown_metrics, baseline, "metrics") if baseline else {},
        "metrics_diff": {},
        "params_diff": {},
    }
    if baseline:
        for key, diff in (("metrics_diff", repo.metrics.diff), ("params_diff", repo.params.diff)):
            answer = diff(a_rev=baseline, b_rev=sha)
            for rev, problems in (answer.get("errors") or {}).items():
                log.warning("Could not read every %s file at %s: %s", key.split("_")[0], rev, problems)
            result[key] = answer.get("diff", {})
    return json_safe(result)


def files_at(repo: Repo, shown: dict[str, Any], rev: str, what: str) -> dict[str, Any]:
    entry = shown.get(rev) or {}
    if "error" in entry:
        raise errors.DvcFileError(f"Cannot read the {what} at {rev[:12]}: {entry['error']}")
    out: dict[str, Any] = {}
    for path, value in entry.get("data", {}).items():
        if "error" in value:
            if _absent_at(repo, rev, path, value["error"]):
                log.info("No %s file %s at %s (not written at that revision)", what, path, rev[:12])
                continue
            raise errors.DvcFileError(f"Cannot read the {what} file {path} at {rev[:12]}: {value['error']}")
        out[path] = value.get("data", {})
    return out


def _absent_at(repo: Repo, rev: str, path: str, error: Any) -> bool:
    """Whether a file DVC could not read at ``rev`` simply is not there (not written at that
    revision), rather than broken."""
    if (
        subprocess.run(["git", "cat-file", "-e", f"{rev}:{path}"], cwd=repo.root_dir, capture_output=True).returncode
        == 0
    ):
        return False
    text = str(error)
    if isinstance(error, FileNotFoundError) or "No such file" in text or "failed to load directory" in text:
        return True
    # A plot folder that is not there reads as a file of no known type ("file type error"): ask
    # DVC whether the revision has the path at all (in git or as an output its lock records).
    from dvc.fs import DVCFileSystem

    try:
        return not DVCFileSystem(url=repo.root_dir, rev=rev).exists(path)
    except Exception:  # cannot tell: say it is broken, not absent
        return False


def op_graph(repo: Repo) -> dict[str, list[str]]:
    graph = repo.index.graph
    order = _upstream_first(repo)
    stages = sorted(_pipeline(graph.nodes), key=lambda stage: order.get(stage, 0))
    return {stage.addressing: sorted(dep.addressing for dep in graph.successors(stage) if dep.cmd) for stage in stages}


def op_apply(repo: Repo, *, handoff: dict[str, Any]) -> dict[str, Any]:
    _apply_handoff(repo, handoff)
    return {"changed_files": _changed_git_files(repo)}


def op_report(repo: Repo, *, revs: list[str], out: str, plots: bool = True) -> dict[str, Any]:
    """Metrics, params and plots at each of ``revs``, never failing on one bad file.

    Plots come back as DVC renders them: a Vega-Lite spec holding every revision's data (one
    per plot definition), or image files copied into ``out``. Whatever could not be read goes
    to ``problems``, naming the file and the revision; a metrics, params or plots file that a
    revision other than the first (the one reported on) simply does not have (a baseline from
    before the pipeline wrote it) goes to ``absent`` (``{rev: [path]}``).
    """
    from dvc.render.convert import to_json
    from dvc.render.match import match_defs_renderers

    problems: list[str] = []
    absent: dict[str, set[str]] = {}
    values: dict[str, dict[str, Any]] = {}
    for kind, show in (("metrics", repo.metrics.show), ("params", repo.params.show)):
        shown = show(revs=revs, hide_workspace=True)
        for rev in revs:
            entry = shown.get(rev) or {}
            files: dict[str, Any] = {}
            if "error" in entry:
                problems.append(f"Cannot read the {kind} at {rev[:12]}: {_describe(entry['error'])}")
            for path, value in (entry.get("data") or {}).items():
                if "error" not in value:
                    files[path] = value.get("data", {})
                elif rev != revs[0] and _absent_at(repo, rev, path, value["error"]):
                    absent.setdefault(rev, set()).add(path)
                else:
                    problems.append(f"Cannot read the {kind} file {path} at {rev[:12]}: {_describe(value['error'])}")
            values.setdefault(kind, {})[rev] = files
    data = repo.plots.show(revs=revs) if plots else {}
    for rev, entry in data.items():
        error = ((entry.get("definitions") or {}).get("error")) if isinstance(entry, dict) else None
        if error:
            problems.append(f"Cannot read the plot definitions at {rev[:12]}: {_describe(error)}")
    rendered: list[dict[str, Any]] = []
    for renderer, source_errors, definition_errors in match_defs_renderers(
        data=data, out=out, templates_dir=repo.plots.templates_dir
    ):
        for rev, by_source in (source_errors or {}).items():
            for source, exc in by_source.items():
                if rev != revs[0] and _absent_at(repo, rev, source, exc):
                    absent.setdefault(rev, set()).add(source)
                else:
                    problems.append(f"Plot {renderer.name}: cannot read {source} at {rev[:12]}: {_describe(exc)}")
        for rev, exc in (definition_errors or {}).items():
            problems.append(f"Plot {renderer.name}: bad definition at {rev[:12]}: {_describe(exc)}")
        if renderer.TYPE == "image":
            renderer.datapoints = _images_inside(repo, renderer, problems)
        for item in to_json(renderer):
            rendered.append(
                {
                    "name": renderer.name,
                    "type": item["type"],
                    "revisions": item.get("revisions") or [],
                    "content": item.get("content"),
                    "path": item.get("url"),
                }
            )
    return json_safe(
        {
            "metrics": values.get("metrics", {}),
            "params": values.get("params", {}),
            "plots": rendered,
            "problems": problems,
            "absent": {rev: sorted(paths) for rev, paths in absent.items()},
        }
    )


def _images_inside(repo: Repo, renderer: Any, problems: list[str]) -> list[dict[str, Any]]:
    """The image plot's images whose file, at its revision, lies inside the repository; an image
    that is a link out of it (or lies in a linked folder that is) goes to ``problems`` instead,
    and the copy DVC wrote of it is removed."""
    from airflow_provider_mlci.core.repo.paths import git_link_reader, inside_commit

    kept = []
    for point in renderer.datapoints:
        rev = str(point.get("rev"))
        try:
            inside_commit(str(point.get("filename")), git_link_reader(repo.root_dir, rev), what="plot image")
        except errors.UnsafePathError as exc:
            problems.append(f"Plot {renderer.name}: {exc} [at {rev[:12]}]")
            with contextlib.suppress(OSError, TypeError):
                os.remove(point.get("src"))
            continue
        kept.append(point)
    return kept


OPS: dict[str, Callable[..., Any]] = {
    "apply": op_apply,
    "repro": op_repro,
    "plan": op_plan,
    "status": op_status,
    "pull": op_pull,
    "fetch": op_fetch,
    "push": op_push,
    "metrics": op_metrics,
    "report": op_report,
    "graph": op_graph,
}


# --------------------------------------------------------------------------------- errors


def translate(exc: BaseException, repo: Repo | None = None) -> BaseException:
    """Map a DVC exception to ours; with the repository, name the objects behind missing data."""
    from dvc.config import ConfigError, NoRemoteError, RemoteNotFoundError
    from dvc.exceptions import (
        CheckoutError,
        CyclicGraphError,
        DvcException,
        FileMissingError,
        FileTransferError,
        NoOutputOrStageError,
        NotDvcRepoError,
        OutputDuplicationError,
        OverlappingOutputPathsError,
        ReproductionError,
        StageNotFoundError,
    )
    from dvc.lock import LockError
    from dvc.parsing import ResolveError
    from dvc.stage.exceptions import MissingDataSource, StageCmdFailedError, StageFileDoesNotExistError, StageNotFound
    from dvc.utils.serialize import ParseError
    from dvc.utils.strictyaml import YAMLSyntaxError, YAMLValidationError

    if isinstance(exc, errors.MlciError):
        return exc
    message = _describe(exc)
    if isinstance(exc, ReproductionError) and exc.__cause__ is not None:
        cause = exc.__cause__
        if isinstance(cause, StageCmdFailedError):
            return errors.DvcStageFailedError(f"{message}: {_describe(cause)}")
        translated = translate(cause, repo)
        return type(translated)(f"{message}: {translated}")
    if isinstance(exc, NotDvcRepoError):
        return errors.DvcFileError(f"Not a DVC project: the revision has no .dvc folder at its root ({message})")
    if isinstance(exc, LockError):
        return errors.DvcLockError(message)
    if isinstance(exc, NoRemoteError | RemoteNotFoundError):
        return errors.MlciConfigError(
            f"{message}. Name a remote on the connection (extra 'dvc_remote' or 'dvc_remote_url') "
            "or set a default remote in the repository's .dvc/config."
        )
    if isinstance(exc, YAMLSyntaxError | YAMLValidationError | ParseError | ResolveError | ConfigError):
        return errors.DvcFileError(message)
    if isinstance(exc, CyclicGraphError | OutputDuplicationError | OverlappingOutputPathsError):
        return errors.DvcFileError(message)
    if isinstance(exc, StageNotFound | StageNotFoundError | NoOutputOrStageError | StageFileDoesNotExistError):
        return errors.DvcStageNotFoundError(message)
    if isinstance(exc, CheckoutError | MissingDataSource | FileMissingError):
        if repo is not None and _verifies(repo):
            found = _unavailable(repo, _outs_of(repo, getattr(exc, "target_infos", [])))
            if isinstance(found, errors.DvcCorruptObjectError):
                return found
        said = [text for text in _WARNINGS.messages if any(w in text for w in ("cache files", "md5", "corrupt"))]
        objects = _objects_of(repo, getattr(exc, "target_infos", []))
        detail = f" Objects: {', '.join(objects)}." if objects else ""
        detail += f" DVC said: {' '.join(said)}" if said else ""
        return errors.DvcMissingObjectError(
            f"{message}\nThe data is missing from the cache and the remote, or the remote's copy is corrupted"
            f" (it failed verification).{detail}"
        )
    if isinstance(exc, FileTransferError):
        return errors.DvcTransferError(message)
    if isinstance(exc, StageCmdFailedError):
        return errors.DvcStageFailedError(message)
    if isinstance(exc, DvcException):
        return errors.DvcError(message)
    return errors.DvcError(f"{type(exc).__name__}: {exc}")


def _objects_of(repo: Repo | None, targets: Iterable[Any]) -> list[str]:
    """``path (md5 ...)`` for each target the index knows."""
    return sorted(f"{path} ({info.name} {info.value})" for path, info in _outs_of(repo, targets))


def _outs_of(repo: Repo | None, targets: Iterable[Any]) -> list[tuple[str, Any]]:
    """``(path, hash info)`` of each target the index knows."""
    if repo is None:
        return []
    wanted = {os.path.abspath(os.path.join(repo.root_dir, str(target))) for target in targets}
    found = []
    with contextlib.suppress(Exception):  # best effort: only to make a message more precise
        for out in repo.index.outs:
            if out.fs_path in wanted and out.hash_info and out.hash_info.value:
                found.append((os.path.relpath(out.fs_path, repo.root_dir), out.hash_info))
    return found


# --------------------------------------------------------------------------------- verification


def _repo_kwargs(request: dict[str, Any]) -> dict[str, Any]:
    """``remote`` and ``remote_config`` for ``Repo``, from the request.

    A ``remote_config`` that only turns verification on (see
    :meth:`~airflow_provider_mlci.core.repo.access.DvcRemoteAccess.verifying`) is dropped for a
    project that names no remote and has no default one: there is nothing to verify, and DVC
    would refuse a remote setting without a remote.
    """
    kwargs = {key: request[key] for key in ("remote", "remote_config") if key in request}
    settings = kwargs.get("remote_config") or {}
    if settings and set(settings) <= {"verify"} and not kwargs.get("remote"):
        from dvc.config import Config

        with contextlib.suppress(Exception):  # a broken config: let Repo say what is wrong
            config = Config(dvc_dir=os.path.join(request["root"], ".dvc"), config=request.get("config"))
            if not config["core"].get("remote"):
                kwargs.pop("remote_config")
    return kwargs


def _verifies(repo: Repo) -> bool:
    """Whether the remote in use re-hashes what it downloads (DVC's remote option ``verify``)."""
    with contextlib.suppress(Exception):
        name = repo.config["core"].get("remote")
        return bool(name and repo.config["remote"][name].get("verify"))
    return False


def _fetch_cached_metrics(repo: Repo, revs: list[str]) -> None:
    """With verification on, bring the metrics files DVC caches at ``revs`` into the cache through
    the remote's verifying download: ``metrics show`` would stream them from the remote unverified.

    :raises DvcCorruptObjectError: the remote's copy of one failed verification
    :raises DvcMissingObjectError: neither the cache nor the remote holds one
    """
    if not _verifies(repo):
        return
    wanted: list[tuple[str, Any, Any]] = []
    for rev in repo.brancher(revs=revs, workspace=False):
        for out in repo.index.outs:
            info = out.hash_info
            if out.metric and out.use_cache and info and info.value and not info.isdir:
                wanted.append((f"{out.def_path} at {rev[:12]}", info, out.cache))
    lacking = [(label, info, cache) for label, info, cache in wanted if not cache.exists(info.value)]
    if not lacking:
        return
    repo.fetch(revs=revs, workspace=False, types=["metrics"])
    still = [(label, info) for label, info, cache in lacking if not cache.exists(info.value)]
    if still:
        raise _unavailable(repo, still)


def _remote_copy(repo: Repo, info: Any) -> tuple[str, str | None]:
    """What the remote holds under the name ``info`` gives: ``("missing", None)``, ``("corrupt",
    md5 of its bytes)``, ``("intact", md5)``, or ``("unknown", None)`` where it cannot tell."""
    try:
        odb = repo.cloud.get_remote_odb(hash_name=info.name)
        path = odb.oid_to_path(info.value)
        if not odb.fs.exists(path):
            return "missing", None
        if info.name != "md5" or info.isdir:
            return "unknown", None
        digest = hashlib.md5(usedforsecurity=False)
        with odb.fs.open(path, mode="rb") as stream:
            while block := stream.read(1 << 20):
                digest.update(block)
    except Exception:  # only to tell a corrupted copy from a missing one: any failure is "cannot tell"
        return "unknown", None
    actual = digest.hexdigest()
    return ("intact" if actual == info.value else "corrupt"), actual


def _unavailable(repo: Repo, objects: Iterable[tuple[str, Any]]) -> errors.DvcMissingObjectError:
    """The error for objects that did not reach the cache: a corrupted copy on the remote (which
    verification refused), or none at all."""
    corrupt, other = [], []
    for label, info in objects:
        state, actual = _remote_copy(repo, info)
        if state == "corrupt":
            corrupt.append(f"{label} (md5 {info.value}; the remote's bytes hash to {actual})")
        else:
            other.append(f"{label} (md5 {info.value}{'' if state == 'unknown' else f': {state} on the remote'})")
    if corrupt:
        return errors.DvcCorruptObjectError(
            f"The DVC remote's copy of {'; '.join(corrupt)} failed verification: its bytes were changed or "
            "truncated after it was pushed, so it was not used. Push the right bytes again from a cache that "
            "holds them (dvc push), or restore the object on the remote."
        )
    return errors.DvcMissingObjectError(f"Neither this worker's cache nor the DVC remote holds {'; '.join(other)}.")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text or type(exc).__name__


def main() -> int:
    """Read a request on stdin, run it, write the result file."""
    # DVC logs to stdout/stderr through handlers of its own; ours go the same way.
    own = logging.getLogger("airflow_provider_mlci")
    own.addHandler(logging.StreamHandler(sys.stdout))
    own.setLevel(logging.INFO)
    logging.getLogger().addHandler(_WARNINGS)  # dvc, dvc_data, dvc_objects: every warning
    request = json.loads(sys.stdin.read())
    # In this process's memory only: /proc/<pid>/environ shows the environment it started with,
    # and stage commands get the allow-listed part of it (the stage shell drops these names).
    os.environ.update(request.get("credentials") or {})
    TRUST["untrusted"] = bool(request.get("untrusted"))
    result_path = Path(request["result_path"])
    repo = None
    try:
        from dvc.repo import Repo

        repo_kwargs = _repo_kwargs(request)
        with Repo(request["root"], config=request["config"], **repo_kwargs) as repo:
            payload: dict[str, Any] = {"result": OPS[request["op"]](repo, **request["args"])}
        status = 0
    except Exception as exc:  # every failure goes back to the parent, typed
        translated = translate(exc, repo)
        payload = {"error": {"type": type(translated).__name__, "message": str(translated)}}
        log.debug("DVC operation failed", exc_info=True)
        status = 3
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, result_path)
    return status


if __name__ == "__main__":
    sys.exit(main())
