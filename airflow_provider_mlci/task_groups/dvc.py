"""A DVC pipeline rendered as Airflow tasks, one per stage, wired by the stage graph.

Rendering reads ``dvc.yaml`` from a local copy of the project that ships with the DAGs (as
astronomer-cosmos reads a dbt project); it never touches the network or imports DVC. Execution
works on the repository named by the ``mlci_dvc`` connection, at ``rev``:

- ``<group>.resolve`` pins ``rev`` to a commit and checks the pipeline there is the rendered one;
- ``<group>.<stage>``, one per stage: its own checkout of that commit (on whichever worker),
  the lock entries and small uncached outputs of the stages above it (from XCom), then pull,
  repro of that stage alone (or a run-cache restore), push of outputs and run-cache;
- ``<group>.commit`` (optional): the new ``dvc.lock`` and metrics committed to a branch.

In ``mode="single"`` the whole pipeline runs in one ``DvcReproOperator`` task instead.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.sdk import TaskGroup

from airflow_provider_mlci.config import Compute, Ec2Compute, resolve_compute
from airflow_provider_mlci.core.dvc.pipeline import PipelineSpec, load_pipeline
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.dvc import DvcCommitOperator, DvcPipelineResolveOperator, DvcReproOperator

if TYPE_CHECKING:
    from airflow.sdk import Asset

__all__ = ["DvcPipelineTaskGroup", "RenderMode"]


class RenderMode(enum.Enum):
    """How a pipeline becomes tasks."""

    #: one task per stage, wired by the stage graph
    PER_STAGE = "per_stage"
    #: one task that reproduces the whole (selected) pipeline
    SINGLE = "single"


_TASK_ID_CHARS = re.compile(r"[^A-Za-z0-9_.-]+")


class DvcPipelineTaskGroup(TaskGroup):
    """Render the stages of a ``dvc.yaml`` as Airflow tasks.

    :param group_id: the group's id
    :param project_dir: a local copy of the repository, for rendering only; relative paths are
        resolved against the folder of the DAG file
    :param rev: the revision to run (templated); ``HEAD`` is the default branch
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository to run
    :param mode: ``"per_stage"`` (one task per stage) or ``"single"`` (one task)
    :param dvc_file: the ``dvc.yaml`` to render, relative to ``project_dir`` (a subfolder's works)
    :param select: glob patterns of stage names to render (default: all)
    :param exclude: glob patterns of stage names to leave out; their outputs come from the remote
    :param emit_assets: give each stage task an Airflow Asset per output, ``x-dvc://<namespace>/<path>``
        in normal form (see :mod:`airflow_provider_mlci.assets`)
    :param asset_namespace: the ``<namespace>`` of those Assets (default: the project folder's name;
        letters, digits, ``.``, ``_``, ``-``; case-insensitive)
    :param commit_to: a branch to commit the new ``dvc.lock`` and metrics to at the end
    :param commit_message: that commit's message
    :param commit_author: that commit's ``"Name <email>"``
    :param python: the interpreter (or virtualenv folder) stage commands run with
    :param sandbox: run stage commands as untrusted code (see ``DvcReproOperator``); ``None``:
        the provider setting ``[mlci] sandbox``
    :param compute: where the stages run: ``"local"`` (the worker) or an
        :class:`~airflow_provider_mlci.config.Ec2Compute` naming the task that launched the
        instance (``instance_task_id``; see :class:`~airflow_provider_mlci.task_groups.gpu.GpuRunTaskGroup`);
        the old ``compute="ec2", instance_task_id=..., aws_conn_id=...`` still work, deprecated
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    :param operator_args: more keyword arguments for every task (``retries``, ``pool``, ...)
    :param kwargs: passed to ``TaskGroup`` (``tooltip``, ``default_args``, ...)
    """

    def __init__(
        self,
        *,
        group_id: str,
        project_dir: str | Path,
        rev: str = "HEAD",
        dvc_conn_id: str = "mlci_dvc_default",
        mode: str | RenderMode = RenderMode.PER_STAGE,
        dvc_file: str = "dvc.yaml",
        select: Sequence[str] | None = None,
        exclude: Sequence[str] | None = None,
        emit_assets: bool = True,
        asset_namespace: str | None = None,
        commit_to: str | None = None,
        commit_message: str = "Reproduce the pipeline [mlci]",
        commit_author: str = "Airflow MLCI <mlci@airflow.invalid>",
        python: str | None = None,
        sandbox: bool | Mapping[str, Any] | None = None,
        compute: str | Compute | Ec2Compute = Compute.LOCAL,
        cache_dir: str | None = None,
        operator_args: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        try:
            render_mode = RenderMode(mode)
        except ValueError:
            choices = ", ".join(repr(m.value) for m in RenderMode)
            raise MlciConfigError(f"mode={mode!r} is not one of {choices}") from None
        backend, ec2 = resolve_compute(compute, kwargs, owner=f"DvcPipelineTaskGroup {group_id!r}")
        super().__init__(group_id=group_id, **kwargs)
        root = self._project_root(project_dir)
        full = load_pipeline(root, dvc_file, render_cache=_render_cache())
        self.pipeline: PipelineSpec = full.select(select, exclude)
        self.mode = render_mode
        #: the task id (within the group) of each stage's task, by stage name
        self.stage_task_ids: dict[str, str] = (
            _task_ids(self.pipeline.stages) if render_mode is RenderMode.PER_STAGE else {}
        )
        namespace = asset_namespace or root.resolve().name
        common = {"dvc_conn_id": dvc_conn_id, "cache_dir": cache_dir, **(operator_args or {})}
        where = {"compute": ec2 or backend}
        with self:
            if render_mode is RenderMode.SINGLE:
                targets = list(self.pipeline.stages) if (select or exclude) else None
                DvcReproOperator(
                    task_id="repro",
                    rev=rev,
                    targets=targets,
                    python=python,
                    sandbox=sandbox,
                    commit_to=commit_to,
                    commit_message=commit_message,
                    commit_author=commit_author,
                    outlets=self._assets(namespace, list(self.pipeline.stages)) if emit_assets else [],
                    **where,
                    **common,
                )
                return
            resolve = DvcPipelineResolveOperator(
                task_id="resolve", rev=rev, expected_stages=full.graph(), dvc_file=dvc_file, **common
            )
            sha = f"{{{{ ti.xcom_pull(task_ids='{resolve.task_id}')['sha'] }}}}"
            task_ids = self.stage_task_ids
            tasks = {}
            for name in self.pipeline.stages:
                ancestors = [self.child_id(task_ids[up]) for up in self.pipeline.ancestors(name)]
                tasks[name] = DvcReproOperator(
                    task_id=task_ids[name],
                    task_display_name=name,
                    rev=sha,
                    targets=[name],
                    single_stage=True,
                    handoff_from=ancestors,
                    hand_off=True,
                    python=python,
                    sandbox=sandbox,
                    doc_md=self.pipeline.stages[name].desc,
                    outlets=self._assets(namespace, [name]) if emit_assets else [],
                    **where,
                    **common,
                )
            for name, task in tasks.items():
                upstream = self.pipeline.stages[name].upstream
                if upstream:
                    for up in upstream:
                        tasks[up] >> task
                else:
                    resolve >> task
            if commit_to:
                commit = DvcCommitOperator(
                    task_id="commit",
                    rev=sha,
                    handoff_from=[task.task_id for task in tasks.values()],
                    branch=commit_to,
                    message=commit_message,
                    author=commit_author,
                    **common,
                )
                leaves = [task for name, task in tasks.items() if not _has_downstream(self.pipeline, name)]
                leaves >> commit

    def _project_root(self, project_dir: str | Path) -> Path:
        path = Path(project_dir)
        if not path.is_absolute() and self.dag is not None and getattr(self.dag, "fileloc", None):
            path = Path(self.dag.fileloc).parent / path
        return path

    def _assets(self, namespace: str, names: Sequence[str]) -> list[Asset]:
        from airflow_provider_mlci.assets import create_asset

        try:
            return [
                create_asset(namespace=namespace, path=out.path)
                for name in names
                for out in self.pipeline.stages[name].outs
            ]
        except ValueError as exc:
            raise MlciConfigError(
                f"Task group {self.group_id!r}: no Asset URI for its outputs ({exc}); give asset_namespace= a name of "
                "letters, digits, '.', '_' and '-', or emit_assets=False."
            ) from exc


def _has_downstream(pipeline: PipelineSpec, name: str) -> bool:
    return any(name in stage.upstream for stage in pipeline.stages.values())


def _task_ids(stages: Sequence[str] | dict[str, Any]) -> dict[str, str]:
    """A valid, unique task id per stage name (``sub/dvc.yaml:build@us`` -> ``build_us``)."""
    ids: dict[str, str] = {}
    used: set[str] = set()
    for name in stages:
        base = _TASK_ID_CHARS.sub("_", name.rsplit(":", 1)[-1]).strip("_") or "stage"
        if base in ("resolve", "commit", "repro"):
            base = f"stage_{base}"
        candidate, index = base, 2
        while candidate in used:
            candidate, index = f"{base}_{index}", index + 1
        used.add(candidate)
        ids[name] = candidate
    return ids


def _render_cache() -> str:
    """Where DVC's expansions of templated ``dvc.yaml`` files are kept (per parsing machine)."""
    from airflow_provider_mlci import settings

    return str(Path(settings.cache_dir()) / "render")
