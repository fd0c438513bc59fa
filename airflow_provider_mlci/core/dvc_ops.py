"""DVC operations on a :class:`~airflow_provider_mlci.core.workspace.Workspace`.

Each operation runs in a subprocess of its own (``python -m airflow_provider_mlci.core.dvc_ops``):
DVC resolves paths against the process's working directory, which a worker's threads share,
and a subprocess streams its output into the task log and can be stopped when the task is
killed. The parent sends a JSON request on standard input; the child answers with a JSON file
holding either the result or an error, which the parent re-raises as the matching class from
:mod:`airflow_provider_mlci.exceptions`.

This module imports no DVC at module level: the parent side needs none, and the child imports
it inside the functions that run there.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import sys
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.exceptions import DvcError, DvcFileError, MlciConfigError, error_class

if TYPE_CHECKING:
    from dvc.repo import Repo

    from airflow_provider_mlci.core.workspace import Workspace

__all__ = ["ReproOutcome", "ReproRequest", "check_targets", "json_safe", "repro"]

log = logging.getLogger("airflow_provider_mlci.core.dvc_ops")

RAN = "ran"
RESTORED = "restored"
SKIPPED = "skipped"


@dataclass(frozen=True, kw_only=True)
class ReproRequest:
    """What to reproduce and how.

    :param targets: stages (or ``dvc.yaml:stage`` addresses) to reproduce; empty = every stage
    :param force: run the stages even if nothing changed
    :param single_stage: run only the targets, not their upstream stages
    :param pull: pull the data sources first (failing if any is missing), then let each stage
        fetch what it needs: the run-cache, and the outputs of unchanged or restored stages
    :param push: afterwards push the outputs and the run-cache to the DVC remote
    """

    targets: tuple[str, ...] = ()
    force: bool = False
    single_stage: bool = False
    pull: bool = True
    push: bool = True


@dataclass(frozen=True, kw_only=True)
class ReproOutcome:
    """What a reproduction did.

    :param stages: each stage's outcome: ``ran``, ``restored`` (from the run-cache) or ``skipped``
        (nothing changed), in pipeline order
    :param metrics: the metrics files after the run, nested as ``dvc metrics show`` nests them
    :param pushed: whether outputs and run-cache were pushed
    """

    stages: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    pushed: bool = False


def repro(workspace: Workspace, request: ReproRequest) -> ReproOutcome:
    """Pull inputs, reproduce the pipeline, push outputs and run-cache, read the metrics.

    Never uses ``--allow-missing`` for the reproduction itself: a stage whose inputs are
    missing fails loudly instead of being skipped.

    :param workspace: the checkout to work in
    :param request: what to reproduce
    :raises DvcError: or one of its subclasses, naming the stage or file at fault
    """
    result = _call(workspace, "repro", asdict(request))
    return ReproOutcome(**result)


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


# --------------------------------------------------------------------------- parent side


def _call(workspace: Workspace, op: str, args: dict[str, Any]) -> dict[str, Any]:
    where = f"{workspace.access.git.display_url} at {workspace.rev} ({workspace.sha[:12]})"
    if not (workspace.path / ".dvc").is_dir():
        raise DvcFileError(f"Not a DVC project: the revision has no .dvc folder at its root [in {where}]")
    runner = workspace.git.runner
    with tempfile.TemporaryDirectory(prefix="mlci-dvc-") as tmp:
        result_path = Path(tmp) / "result.json"
        request = {
            "op": op,
            "args": args,
            "root": str(workspace.path),
            "config": workspace.dvc_config(),
            "result_path": str(result_path),
            **workspace.access.dvc.dvc_overrides(),
        }
        env = dict(os.environ)
        env.update(workspace.access.dvc.environment())
        # Stage commands run with this worker's interpreter and its tools first on PATH.
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        env["DVC_NO_ANALYTICS"] = "1"
        env["PYTHONUNBUFFERED"] = "1"
        completed = runner.run(
            [sys.executable, "-m", "airflow_provider_mlci.core.dvc_ops"],
            cwd=workspace.path,
            env=env,
            input_text=json.dumps(request),
        )
        if not result_path.exists():
            raise DvcError(
                f"DVC {op} in {workspace.access.git.display_url}@{workspace.sha[:12]} ended with exit status "
                f"{completed.returncode} and no result:\n{completed.tail_text}"
            )
        payload = json.loads(result_path.read_text())
    if "error" in payload:
        error = payload["error"]
        raise error_class(error["type"])(f"{error['message']} [in {where}]")
    return payload["result"]


# ---------------------------------------------------------------------------- child side


class _OutcomeRecorder(logging.Handler):
    """Learn from DVC's log which stages were restored from the run-cache."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.restored: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        if record.msg == "Stage '%s' is cached - skipping run, checking out outputs" and record.args:
            self.restored.add(str(record.args[0]))


def _stages_in_scope(repo: Repo, targets: Iterable[str], single_stage: bool) -> list[Any]:
    """The stages a reproduction of ``targets`` covers, upstream first."""
    import networkx as nx

    graph = repo.index.graph
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
    order = {stage: index for index, stage in enumerate(reversed(list(nx.topological_sort(graph))))}
    return sorted(set(chosen), key=lambda stage: order.get(stage, 0))


def _pull_inputs(repo: Repo, stages: list[Any]) -> None:
    """Pull what ``stages`` need from outside themselves, failing on anything missing.

    That is every data source (``.dvc`` file) among or directly upstream of them, and the
    outputs of upstream pipeline stages left out of the run (``single_stage``).
    """
    graph = repo.index.graph
    scope = set(stages)
    upstream = {dep for stage in stages for dep in graph.successors(stage)} - scope
    needed = [stage for stage in stages if not stage.cmd] + sorted(upstream, key=lambda stage: stage.addressing)
    if needed:
        names = [stage.addressing for stage in needed]
        stats = repo.pull(targets=names)
        log.info("Pulled %s: %s file(s) fetched", ", ".join(names), stats.get("stats", {}).get("fetched", 0))


def _require_remote(repo: Repo) -> None:
    """Fail, naming what to set, when no DVC remote is configured."""
    name = repo.config["core"].get("remote")
    if not name:
        raise MlciConfigError(
            "The repository has no default DVC remote: set 'dvc_remote' or 'dvc_remote_url' on the connection, "
            "or a default remote in the repository's .dvc/config."
        )
    if name not in repo.config.get("remote", {}):
        raise MlciConfigError(f"The DVC remote {name!r} is not defined in the repository's .dvc/config.")


def _metrics(repo: Repo) -> dict[str, Any]:
    shown = repo.metrics.show()
    workspace = shown.get("workspace") or shown.get("") or {}
    files = workspace.get("data", {})
    metrics: dict[str, Any] = {}
    for path, entry in files.items():
        error = entry.get("error")
        if error is None:
            metrics[path] = entry.get("data", {})
        elif isinstance(error, FileNotFoundError) or "No such file" in str(error):
            log.info("No metrics file %s (its stage did not run in this task)", path)
        else:
            raise DvcFileError(f"Cannot read the metrics file {path}: {error}")
    return json_safe(metrics)


def _op_repro(
    repo: Repo,
    *,
    targets: list[str],
    force: bool,
    single_stage: bool,
    pull: bool,
    push: bool,
) -> dict[str, Any]:
    stages = _stages_in_scope(repo, targets, single_stage)
    if pull or push:
        _require_remote(repo)
    if pull:
        _pull_inputs(repo, stages)
    recorder = _OutcomeRecorder()
    dvc_logger = logging.getLogger("dvc")
    dvc_logger.addHandler(recorder)
    try:
        # pull=True: fetch the run-cache, pull what unchanged stages and restored runs need.
        # Never allow_missing: that would skip stages whose data is missing.
        reproduced = repo.reproduce(targets or None, single_item=single_stage, force=force, pull=pull)
    finally:
        dvc_logger.removeHandler(recorder)
    ran = {stage.addressing for stage in reproduced}
    outcomes: dict[str, str] = {}
    for stage in stages:
        if not stage.cmd:
            continue
        name = stage.addressing
        if name in recorder.restored:
            outcomes[name] = RESTORED
        elif name in ran:
            outcomes[name] = RAN
        else:
            outcomes[name] = SKIPPED
    if push:
        repo.push(targets=[stage.addressing for stage in stages] or None, run_cache=True)
    return {"stages": outcomes, "metrics": _metrics(repo), "pushed": push}


_OPS: dict[str, Callable[..., dict[str, Any]]] = {"repro": _op_repro}


def _translate(exc: BaseException) -> BaseException:
    """Map a DVC exception to ours (child side, DVC imported)."""
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

    from airflow_provider_mlci import exceptions as errors

    if isinstance(exc, errors.MlciError):
        return exc
    message = _describe(exc)
    if isinstance(exc, ReproductionError) and exc.__cause__ is not None:
        cause = exc.__cause__
        if isinstance(cause, StageCmdFailedError):
            return errors.DvcStageFailedError(f"{message}: {_describe(cause)}")
        translated = _translate(cause)
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
        return errors.DvcMissingObjectError(message)
    if isinstance(exc, FileTransferError):
        return errors.DvcTransferError(message)
    if isinstance(exc, StageCmdFailedError):
        return errors.DvcStageFailedError(message)
    if isinstance(exc, DvcException):
        return errors.DvcError(message)
    return errors.DvcError(f"{type(exc).__name__}: {exc}")


_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def _describe(exc: BaseException) -> str:
    text = _ANSI.sub("", str(exc)).strip()
    return text or type(exc).__name__


def main() -> int:
    """Child entry point: read a request on stdin, run it, write the result file."""
    # DVC logs to stdout/stderr through handlers of its own; ours go the same way.
    own = logging.getLogger("airflow_provider_mlci")
    own.addHandler(logging.StreamHandler(sys.stdout))
    own.setLevel(logging.INFO)
    request = json.loads(sys.stdin.read())
    result_path = Path(request["result_path"])
    try:
        from dvc.repo import Repo

        repo_kwargs = {key: request[key] for key in ("remote", "remote_config") if key in request}
        with Repo(request["root"], config=request["config"], **repo_kwargs) as repo:
            payload: dict[str, Any] = {"result": _OPS[request["op"]](repo, **request["args"])}
        status = 0
    except Exception as exc:  # every failure goes back to the parent, typed
        translated = _translate(exc)
        payload = {"error": {"type": type(translated).__name__, "message": str(translated)}}
        logging.getLogger(__name__).debug("DVC operation failed", exc_info=True)
        status = 3
    tmp = result_path.with_suffix(".tmp")
    tmp.write_text(json.dumps(payload))
    os.replace(tmp, result_path)
    return status


if __name__ == "__main__":
    sys.exit(main())
