"""Start a refinement: point the project's base model at the deployed model, on a branch.

A project that can fine-tune keeps a DVC-tracked *base model* (``models/base.pkl`` in the demo
project) that its training stage depends on and starts from when it holds a model. To refine
the deployed model, :func:`start_refinement` reads the registry (GTO tags) for the model on the
stage, finds that model's file in the deployed commit (its ``dvc.lock`` entry, or its ``.dvc``
file), and rewrites the base model's ``.dvc`` file to name the same content: no data moves,
because the DVC remote already holds the deployed model. That one-file change is committed to
the refinement branch (built on the branch's tip, or on ``rev`` when the branch is new; never a
force-push), so reproducing that commit fine-tunes the deployed model on the data at ``rev``,
on any worker or GPU instance, and the lock file records which model it started from.

With no model on the stage, nothing is written: the pipeline runs at ``rev`` as it is (the demo
project's base model is empty there, so it trains from scratch), and the result says so.
"""

from __future__ import annotations

import logging
import posixpath
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import yaml

from airflow_provider_mlci.core.model.registry import GitRegistry, artifact_path, check_model_name
from airflow_provider_mlci.core.repo.commit import CommitSpec, commit_files
from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.exceptions import DvcFileError, MlciConfigError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.model.registry import Champion
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["RefinementSpec", "model_entry", "start_refinement", "yaml_at"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RefinementSpec:
    """What to refine, from where, and where the change goes.

    :param model: the model's name in the registry and in ``dvc.yaml``'s ``artifacts:``
    :param stage: the stage whose model is refined
    :param base_model: the DVC-tracked file the training stage starts from
    :param commit: the branch, message and author of the commit that points ``base_model`` at
        the deployed model
    """

    model: str
    stage: str
    base_model: str
    commit: CommitSpec

    def __post_init__(self) -> None:
        check_model_name(self.model)
        if not self.base_model or self.base_model.startswith("/") or ".." in self.base_model.split("/"):
            raise MlciConfigError(f"base_model={self.base_model!r} is not a path inside the repository.")


def yaml_at(workspace: Workspace, sha: str, path: str) -> Any:
    """The YAML file ``path`` as it is at commit ``sha`` (``None`` if it is not there or does not parse).

    :param workspace: a checkout holding ``sha``
    :param sha: the commit
    :param path: the file, relative to the repository root
    """
    result = workspace.git.run(["show", f"{sha}:{path}"], cwd=workspace.path, capture=True)
    if result.returncode != 0:
        return None
    try:
        return yaml.safe_load(result.stdout)
    except yaml.YAMLError:
        return None


def model_entry(workspace: Workspace, sha: str, path: str) -> dict[str, Any] | None:
    """The DVC entry (``md5``, ``size``, ``hash``, ...) of the file ``path`` at commit ``sha``.

    Looks in the outputs ``dvc.lock`` records, then in ``<path>.dvc``.

    :param workspace: a checkout holding ``sha``
    :param sha: the commit
    :param path: the file, relative to the repository root
    """
    lock = yaml_at(workspace, sha, "dvc.lock")
    stages = lock.get("stages") if isinstance(lock, dict) else None
    for stage in (stages or {}).values():
        for out in (stage or {}).get("outs") or []:
            if isinstance(out, dict) and posixpath.normpath(str(out.get("path", ""))) == posixpath.normpath(path):
                return dict(out)
    tracked = yaml_at(workspace, sha, f"{path}.dvc")
    outs = tracked.get("outs") if isinstance(tracked, dict) else None
    if outs and isinstance(outs[0], dict):
        return dict(outs[0])
    return None


def start_refinement(workspace: Workspace, spec: RefinementSpec) -> dict[str, Any]:
    """Point ``spec.base_model`` at the model on ``spec.stage`` and commit that to the refinement branch.

    Returns ``{"model", "stage", "deployed", "from_scratch", "base_model", "refine_sha",
    "commit"}``: ``refine_sha`` is the commit to reproduce (the refinement commit, or the
    checkout's own commit when no model is deployed), ``deployed`` the model on the stage or
    ``None``, ``commit`` the branch commit (``None`` when nothing was written).

    :param workspace: a checkout of the revision holding the new data
    :param spec: the model, stage, base model file and commit
    :raises MlciConfigError: the stage is not allowed by ``.gto``, the base model is not tracked
        by DVC, or ``dvc.yaml`` declares no such artifact
    :raises DvcFileError: the deployed commit records no entry for the model's file
    :raises UnsafePathError: the base model's ``.dvc`` file is a link that leads out of the repository
    """
    registry = GitRegistry(workspace=workspace)
    registry.check_stage(spec.stage)
    dvc_file = f"{spec.base_model}.dvc"
    dvc_path = inside(workspace.path, dvc_file, what="base model's .dvc file")  # written below: no link out
    if not dvc_path.is_file():
        raise MlciConfigError(
            f"{dvc_file} is not in the repository at {workspace.sha[:12]}: the base model must be tracked by DVC "
            f"(dvc add {spec.base_model}) and be a dependency of the training stage."
        )
    champion = registry.refresh().champion(spec.model, spec.stage)
    result: dict[str, Any] = {
        "model": spec.model,
        "stage": spec.stage,
        "deployed": champion.to_json() if champion else None,
        "from_scratch": champion is None,
        "base_model": spec.base_model,
        "refine_sha": workspace.sha,
        "commit": None,
    }
    if champion is None:
        log.info(
            "No %s model is on stage %r yet: nothing to refine, so the pipeline runs at %s as it is "
            "(%s as the repository has it; empty means training from scratch).",
            spec.model,
            spec.stage,
            workspace.sha[:12],
            spec.base_model,
        )
        return result
    entry = _deployed_entry(workspace, spec.model, champion)
    name = posixpath.basename(spec.base_model)
    out = {key: entry[key] for key in ("md5", "size", "hash", "nfiles") if key in entry}
    dvc_path.write_text(yaml.safe_dump({"outs": [{**out, "path": name}]}, sort_keys=False))
    label = f"{spec.model} {champion.version or champion.sha[:12]}"
    commit_spec = CommitSpec(
        branch=spec.commit.branch,
        message=spec.commit.message.format(model=spec.model, version=champion.version or "", sha=champion.sha),
        author=spec.commit.author,
        max_attempts=spec.commit.max_attempts,
    )
    committed = commit_files(workspace, [dvc_file], commit_spec)
    log.info(
        "Refining %s (on %s, commit %s): %s now names its model (md5 %s); %s %s at %s",
        label,
        spec.stage,
        champion.sha[:12],
        spec.base_model,
        out.get("md5"),
        "committed to" if committed.created else "already on",
        committed.branch,
        committed.commit[:12],
    )
    result.update(
        refine_sha=committed.commit,
        commit={"branch": committed.branch, "commit": committed.commit, "created": committed.created},
    )
    return result


def _deployed_entry(workspace: Workspace, model: str, champion: Champion) -> dict[str, Any]:
    path = artifact_path(workspace.path, model)
    if path is None:
        raise MlciConfigError(f"dvc.yaml at {workspace.sha[:12]} declares no artifact {model!r} (artifacts: {model}:).")
    entry = model_entry(workspace, champion.sha, path)
    if entry is None or not entry.get("md5"):
        raise DvcFileError(
            f"The deployed {model} ({champion.version or 'unversioned'}, commit {champion.sha[:12]}) records no DVC "
            f"entry for {path} in dvc.lock or {path}.dvc: cannot refine it."
        )
    return entry
