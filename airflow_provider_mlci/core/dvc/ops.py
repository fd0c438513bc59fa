"""DVC operations on a :class:`~airflow_provider_mlci.core.repo.workspace.Workspace`.

Each operation runs in a subprocess of its own (``python -m airflow_provider_mlci.core.dvc.child``):
DVC resolves paths against the process's working directory, which a worker's threads share,
and a subprocess streams its output into the task log and can be stopped when the task is
killed. The parent sends a JSON request on standard input; the child answers with a JSON file
holding either the result or an error, which the parent re-raises as the matching class from
:mod:`airflow_provider_mlci.exceptions`, naming the repository and revision.

This module imports no DVC: the parent side needs none.

Stages that run in separate tasks (on separate workers) hand their results on as a
:class:`StageHandoff`: the new ``dvc.lock`` entries of the stages that ran (small JSON), and a
*bundle* per stage task: every file under git that the stage created, changed or deleted, as
``git add -A`` sees it (metrics, plots, uncached outputs of any size or type, directories, files
DVCLive rewrites such as ``dvc.yaml``, the ``.gitignore`` files DVC writes), packed as one
content-addressed object pushed to the DVC remote with the stage's outputs. XCom carries only
its md5. The next stage task, on any worker, pulls the bundles of the stages above it and
unpacks them into its checkout of the revision, so it starts from what ``dvc repro`` by hand
would have left on disk; the commit task does the same for every stage, then commits what
``git add -A`` would.
"""

from __future__ import annotations

import json
import math
import re
import sys
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.runtime.process import private_tempdir
from airflow_provider_mlci.core.runtime.sandbox import StageShell
from airflow_provider_mlci.exceptions import DvcError, DvcFileError, DvcOutOfSyncError, MlciConfigError, error_class

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "RAN",
    "RESTORED",
    "SKIPPED",
    "MetricsReport",
    "PlanOutcome",
    "ReproOutcome",
    "ReproRequest",
    "StageHandoff",
    "SyncStatus",
    "apply_handoff",
    "call_child",
    "check_targets",
    "fetch",
    "json_safe",
    "metrics",
    "plan",
    "pull",
    "push",
    "repro",
    "stage_graph",
    "sync_status",
]

#: Stage outcomes of a reproduction.
RAN, RESTORED, SKIPPED = "ran", "restored", "skipped"


@dataclass(frozen=True, kw_only=True)
class StageHandoff:
    """What stages that ran in other tasks hand on to the next ones (small JSON).

    :param lock: new ``dvc.lock`` entries: ``{lock file path: {stage name: entry}}``
    :param bundles: one entry per stage task that changed files under git, in pipeline order:
        ``{"stages": [names], "md5": object id in the DVC remote, "seen": [stages whose results
        that task started from]}``
    """

    lock: dict[str, dict[str, Any]] = field(default_factory=dict)
    bundles: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def merged(cls, parts: Iterable[Mapping[str, Any] | StageHandoff | None]) -> StageHandoff:
        """Merge handoffs (or their JSON forms); later parts win for the same stage.

        :param parts: handoffs from upstream tasks, in pipeline order
        """
        lock: dict[str, dict[str, Any]] = {}
        bundles: list[dict[str, Any]] = []
        for part in parts:
            if part is None:
                continue
            data = asdict(part) if isinstance(part, StageHandoff) else part
            for lockfile, entries in (data.get("lock") or {}).items():
                lock.setdefault(lockfile, {}).update(entries)
            for bundle in data.get("bundles") or ():
                if bundle not in bundles:
                    bundles.append(dict(bundle))
        return cls(lock=lock, bundles=bundles)

    def __bool__(self) -> bool:
        return bool(self.lock or self.bundles)

    def to_json(self) -> dict[str, Any]:
        """The JSON form, for XCom."""
        return {"lock": self.lock, "bundles": self.bundles}


@dataclass(frozen=True, kw_only=True)
class ReproRequest:
    """What to reproduce and how.

    :param targets: stages (or ``dvc.yaml:stage`` addresses) to reproduce; empty = every stage
    :param force: run the stages even if nothing changed
    :param single_stage: run only the targets, not their upstream stages
    :param pull: pull what the stages need from outside themselves first (failing if any is
        missing), then let each stage fetch the run-cache and its unchanged outputs
    :param push: afterwards push the outputs and the run-cache to the DVC remote
    :param handoff: results of upstream stages that ran in other tasks, applied first
    """

    targets: tuple[str, ...] = ()
    force: bool = False
    single_stage: bool = False
    pull: bool = True
    push: bool = True
    handoff: StageHandoff | None = None


@dataclass(frozen=True, kw_only=True)
class ReproOutcome:
    """What a reproduction did.

    :param stages: each stage's outcome: ``ran``, ``restored`` (from the run-cache) or ``skipped``
        (nothing changed), in pipeline order
    :param metrics: the metrics files after the run, nested as ``dvc metrics show`` nests them
    :param pushed: whether outputs and run-cache were pushed
    :param handoff: the new lock entries of the stages in scope and the bundle of the files under
        git they changed (pushed to the DVC remote with the outputs)
    :param changed_files: what ``git add -A`` would commit after the run, relative to the revision
        (``dvc.lock``, metrics, plots, uncached outputs, ``.gitignore`` files, ...)
    """

    stages: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    pushed: bool = False
    handoff: StageHandoff = field(default_factory=StageHandoff)
    changed_files: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class PlanOutcome:
    """What a reproduction would do, found without running any stage command.

    :param stages: each stage's fate: ``run``, ``restore`` (from the run-cache) or ``skip``
    """

    stages: dict[str, str] = field(default_factory=dict)

    @property
    def will_run(self) -> list[str]:
        """The stages whose command would really execute."""
        return [name for name, fate in self.stages.items() if fate == "run"]


@dataclass(frozen=True, kw_only=True)
class SyncStatus:
    """Whether ``dvc.lock`` matches the code, params and data of its revision.

    :param changed: per stage, what differs from its lock entry (``"changed deps: src/train.py"``,
        ``"changed params: train.epochs"``, ``"changed command"``, ...)
    :param not_in_remote: data the lock and ``.dvc`` files name that the remote lacks
    """

    changed: dict[str, list[str]] = field(default_factory=dict)
    not_in_remote: list[str] = field(default_factory=list)

    @property
    def in_sync(self) -> bool:
        """True when nothing changed and the remote holds everything."""
        return not self.changed and not self.not_in_remote

    def check(self, where: str) -> None:
        """Fail, listing every difference, unless in sync.

        :param where: the revision and commit, for the message
        :raises DvcOutOfSyncError: each changed stage with what changed, and what the remote lacks
        """
        if self.in_sync:
            return
        lines = [f"dvc.lock at {where} is out of sync:"]
        for stage, items in self.changed.items():
            lines.append(f"  stage {stage}:")
            lines += [f"    {item}" for item in items]
        if self.not_in_remote:
            lines.append("  not in the DVC remote: " + ", ".join(self.not_in_remote))
        raise DvcOutOfSyncError("\n".join(lines))


@dataclass(frozen=True, kw_only=True)
class MetricsReport:
    """Metrics and params at a revision, and their diff against a baseline revision.

    :param metrics: ``{file: values}`` at the revision
    :param params: ``{file: values}`` at the revision
    :param metrics_diff: ``{file: {key: {"old", "new", "diff"}}}`` as ``dvc metrics diff --json``
    :param params_diff: the same for params, as ``dvc params diff --json``
    :param baseline_metrics: ``{file: values}`` at the baseline revision (empty without one)
    """

    metrics: dict[str, Any] = field(default_factory=dict)
    params: dict[str, Any] = field(default_factory=dict)
    metrics_diff: dict[str, Any] = field(default_factory=dict)
    params_diff: dict[str, Any] = field(default_factory=dict)
    baseline_metrics: dict[str, Any] = field(default_factory=dict)


def repro(workspace: Workspace, request: ReproRequest) -> ReproOutcome:
    """Pull inputs, reproduce the pipeline, push outputs and run-cache, read the metrics.

    Never uses ``--allow-missing`` for the reproduction itself: a stage whose inputs are
    missing fails loudly instead of being skipped.

    :param workspace: the checkout to work in
    :param request: what to reproduce
    :raises DvcError: or one of its subclasses, naming the stage or file at fault
    """
    args = asdict(request)
    args["handoff"] = request.handoff.to_json() if request.handoff else None
    result = call_child(workspace, "repro", args)
    result["handoff"] = StageHandoff(**result["handoff"])
    result["changed_files"] = tuple(result["changed_files"])
    return ReproOutcome(**result)


def plan(
    workspace: Workspace,
    targets: Iterable[str] = (),
    *,
    single_stage: bool = False,
    handoff: StageHandoff | None = None,
) -> PlanOutcome:
    """Say which stages a reproduction would run, restore or skip, running no stage command.

    Stages restorable from the run-cache are restored in the (private) workspace, so stages
    below them are judged on their real inputs; a stage below one that would run would run too.

    :param workspace: the checkout to work in
    :param targets: stages to consider; empty = every stage
    :param single_stage: consider only the targets
    :param handoff: results of upstream stages that ran in other tasks
    """
    args = {"targets": list(targets), "single_stage": single_stage, "handoff": handoff.to_json() if handoff else None}
    return PlanOutcome(**call_child(workspace, "plan", args))


def sync_status(workspace: Workspace, targets: Iterable[str] = (), *, check_remote: bool = True) -> SyncStatus:
    """Compare ``dvc.lock`` with the code, params and data of the checked-out revision.

    :param workspace: the checkout to check
    :param targets: stages to check; empty = every stage
    :param check_remote: also list data the remote lacks
    """
    return SyncStatus(**call_child(workspace, "status", {"targets": list(targets), "check_remote": check_remote}))


def pull(workspace: Workspace, targets: Iterable[str] = ()) -> dict[str, Any]:
    """Pull the data of ``targets`` (default: everything the revision tracks) into the workspace.

    :param workspace: the checkout
    :param targets: stages, ``.dvc`` files or tracked paths
    :raises DvcMissingObjectError: naming what neither the cache nor the remote holds
    """
    return call_child(workspace, "pull", {"targets": list(targets)})


def fetch(workspace: Workspace, targets: Iterable[str] = ()) -> dict[str, Any]:
    """Bring the data of ``targets`` (default: everything the revision tracks) into this
    worker's DVC cache, without writing it into the workspace.

    :param workspace: the checkout
    :param targets: stages, ``.dvc`` files or tracked paths
    :raises DvcMissingObjectError: naming what neither the cache nor the remote holds
    """
    return call_child(workspace, "fetch", {"targets": list(targets)})


def push(workspace: Workspace, targets: Iterable[str] = (), *, run_cache: bool = True) -> dict[str, Any]:
    """Push what this worker's cache holds of ``targets`` to the remote; list what it lacks.

    :param workspace: the checkout
    :param targets: stages, ``.dvc`` files or tracked paths; default: everything
    :param run_cache: push the run-cache too
    """
    return call_child(workspace, "push", {"targets": list(targets), "run_cache": run_cache})


def metrics(workspace: Workspace, baseline_sha: str | None = None) -> MetricsReport:
    """Metrics and params at the workspace's revision, and their diff against ``baseline_sha``.

    :param workspace: the checkout (its revision is the "new" side)
    :param baseline_sha: a commit of the same repository (the "old" side), or ``None``
    """
    return MetricsReport(**call_child(workspace, "metrics", {"baseline": baseline_sha}))


def report_inputs(workspace: Workspace, revs: Iterable[str], out: str | Path, *, plots: bool = True) -> dict[str, Any]:
    """Metrics, params and rendered plot specs at each of ``revs``, tolerating unreadable files.

    Returns ``{"metrics": {rev: {file: values}}, "params": {...}, "plots": [{"name", "type",
    "revisions", "content", "path"}], "problems": [...], "absent": {rev: [path]}}``: what a revision
    does not have yet is ``absent``, not a problem; image plots are copied into ``out``.

    :param workspace: the checkout
    :param revs: commit ids of the same repository (readable in the checkout)
    :param out: a folder for image plots
    :param plots: read and render the plots too
    """
    return call_child(workspace, "report", {"revs": list(revs), "out": str(out), "plots": plots})


def apply_handoff(workspace: Workspace, handoff: StageHandoff) -> tuple[str, ...]:
    """Write upstream tasks' lock entries and bundled files into the workspace.

    Returns what ``git add -A`` would now commit, relative to the revision (to commit it).

    :param workspace: the checkout
    :param handoff: what the stage tasks handed on
    """
    return tuple(call_child(workspace, "apply", {"handoff": handoff.to_json()})["changed_files"])


def stage_graph(workspace: Workspace) -> dict[str, list[str]]:
    """The pipeline at the workspace's revision as DVC sees it: ``{stage: [upstream stages]}``.

    :param workspace: the checkout
    """
    return call_child(workspace, "graph", {})


_BAD_TARGET = re.compile(r"[\x00-\x1f\x7f]|^-|^/|(^|/)\.\.(/|:|$)")


def check_targets(targets: str | Iterable[str] | None) -> tuple[str, ...]:
    """Return ``targets`` as a tuple if each can be a stage address inside the repository.

    A target is a stage name, ``path/to/dvc.yaml:stage`` or a path inside the repository;
    refused: what could be read as an option, absolute paths and paths that climb out (``..``).

    :param targets: one target, several, or ``None`` for the whole pipeline
    :raises MlciConfigError: naming the first invalid target
    """
    if targets is None:
        return ()
    items = (targets,) if isinstance(targets, str) else tuple(targets)
    for target in items:
        if not isinstance(target, str) or not target.strip() or _BAD_TARGET.search(target):
            raise MlciConfigError(
                f"{target!r} is not a valid DVC target (a stage name or a path inside the repository)."
            )
    return items


def json_safe(value: Any) -> Any:
    """Return ``value`` with every non-finite float replaced by ``None`` (JSON has no NaN).

    :param value: nested dicts, lists and scalars
    """
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def call_child(
    workspace: Workspace,
    op: str,
    args: dict[str, Any],
    *,
    module: str = "airflow_provider_mlci.core.dvc.child",
    runs_user_code: bool | None = None,
) -> Any:
    """Run ``op`` in a DVC child process (``module``) in the workspace; return its result or raise its error.

    :param workspace: the checkout
    :param op: the child's operation
    :param args: its arguments (JSON)
    :param module: the child module speaking the protocol
    :param runs_user_code: whether stage commands run (default: only for ``repro``)
    """
    if runs_user_code is None:
        runs_user_code = op == "repro"
    where = f"{workspace.access.git.display_url} at {workspace.rev} ({workspace.sha[:12]})"
    if not (workspace.path / ".dvc").is_dir():
        raise DvcFileError(f"Not a DVC project: the revision has no .dvc folder at its root [in {where}]")
    runner = workspace.git.runner
    with private_tempdir("dvc") as tmp:
        result_path = Path(tmp) / "result.json"
        env = workspace.environment()
        # Stage commands run through $SHELL: ours keeps the allow-listed environment only, and
        # runs them in the sandbox when it is on.
        shell = StageShell.write(
            tmp,
            workspace.sandbox,
            checkout=workspace.path,
            python=workspace.python,
            path=env["PATH"],
            readable=[workspace.cache.mirror_path(workspace.access.git.url)],
        )
        env["SHELL"] = shell.path
        request = {
            "op": op,
            "args": args,
            "root": str(workspace.path),
            # Only a repro (or an experiment) runs stage commands; planning refuses to run any.
            "config": workspace.dvc_config(runs_user_code=runs_user_code),
            "result_path": str(result_path),
            # The remote's credentials stay in the child's memory: never in an environment that a
            # stage command inherits or that /proc shows.
            "credentials": workspace.access.dvc.environment(),
            "untrusted": workspace.sandbox.untrusted,
            **workspace.access.dvc.dvc_overrides(),
        }
        argv = [sys.executable, "-m", module]
        completed = runner.run(argv, cwd=workspace.path, env=env, input_text=json.dumps(request))
        if not result_path.exists():
            raise DvcError(
                f"DVC {op} ended with exit status {completed.returncode} and no result [in {where}]:\n"
                f"{completed.tail_text}"
            )
        payload = json.loads(result_path.read_text())
    if "error" in payload:
        error = payload["error"]
        raise error_class(error["type"])(f"{error['message']} [in {where}]")
    return payload["result"]
