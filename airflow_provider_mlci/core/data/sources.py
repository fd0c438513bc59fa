"""A dataset the repository tracks, opened in a checkout: :func:`repo_table`.

The file is read where git put it; a file DVC tracks is pulled first, that file alone, into the
worker's DVC cache. A URL dataset (object storage) is opened by the operator, through Airflow.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.data.tabular import TableReader
from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.exceptions import DatasetNotFoundError, DvcFileError, DvcStageNotFoundError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["is_url", "repo_table"]


def is_url(dataset: str) -> bool:
    """Whether ``dataset`` is an object storage URL rather than a path in the repository.

    :param dataset: a dataset as a DAG names it
    """
    return "://" in dataset


def repo_table(workspace: Workspace, dataset: str, **options: Any) -> tuple[TableReader, str]:
    """A reader of a file the repository tracks (in git or DVC), and its label ``<path>@<short commit>``.

    :param workspace: a checkout at the revision to read
    :param dataset: the file's path, relative to the repository root
    :param options: :class:`~airflow_provider_mlci.core.data.tabular.TableReader` options
        (``format``, ``chunk_bytes``, ``column_types``)
    :raises DatasetNotFoundError: neither git nor DVC tracks a file there (naming the path,
        repository, revision and commit)
    :raises UnsafePathError: the path, or what the pull wrote, leads out of the checkout
    """
    target = dvc_ops.check_targets(dataset)[0]
    local = inside(workspace.path, target, what="dataset")
    where = f"{target} in {workspace.access.git.display_url} at {workspace.rev} ({workspace.sha[:12]})"
    if not local.is_file():
        try:
            dvc_ops.pull(workspace, [target])
        except (DvcStageNotFoundError, DvcFileError) as exc:
            raise DatasetNotFoundError(f"No dataset {where}: {exc}") from exc
        local = inside(workspace.path, target, what="dataset")  # what the pull wrote, checked again
    if not local.is_file():
        raise DatasetNotFoundError(f"No dataset {where}: neither git nor DVC tracks a file there.")
    return TableReader(path=str(local), **options), f"{target}@{workspace.sha[:12]}"
