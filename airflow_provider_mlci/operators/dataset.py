"""Reading a dataset for the data operators: from a DVC repository at a revision, or from object storage.

:class:`DatasetMixin` is what :class:`~airflow_provider_mlci.operators.validation.DataValidationOperator`
and :class:`~airflow_provider_mlci.operators.drift.DataDriftCheckOperator` share.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.data.sources import is_url
from airflow_provider_mlci.lineage import OpenLineageMixin, storage_dataset
from airflow_provider_mlci.operators.base import DvcHookMixin

if TYPE_CHECKING:
    from airflow_provider_mlci.core.data.tabular import TableReader

__all__ = ["PANDERA_GREEN", "DatasetMixin", "check_mode", "is_url"]

#: The colour of the data operators.
PANDERA_GREEN = "#2e7d32"
_MODES = ("fail", "warn")


class DatasetMixin(DvcHookMixin, OpenLineageMixin):
    """Reading a dataset from a DVC repository at a revision, or from object storage (for the
    validation and drift operators)."""

    conn_id: str | None
    format: str | None
    chunk_bytes: int | None
    log: Any
    #: what :meth:`open_dataset` opened, for lineage: ``{"repo", "sha", "path"}`` or ``{"namespace", "name"}``
    _sources: list[dict[str, Any]] | None = None

    @contextlib.contextmanager
    def open_dataset(
        self,
        dataset: str,
        rev: str | None,
        *,
        column_types: Mapping[str, str] | None = None,
        workspace: Any = None,
    ) -> Iterator[tuple[TableReader, str]]:
        """Yield a reader of ``dataset`` and the name reports give it.

        :param dataset: a path inside the repository, or a URL
        :param rev: the revision of the repository (``None``: its default branch)
        :param column_types: dtypes to read CSV columns as
        :param workspace: a checkout of the repository already open at ``rev``
        """
        from airflow_provider_mlci.core.data.sources import repo_table
        from airflow_provider_mlci.core.data.tabular import DEFAULT_CHUNK_BYTES, TableFormat

        options = {
            "format": TableFormat.of(dataset, self.format),
            "chunk_bytes": self.chunk_bytes or DEFAULT_CHUNK_BYTES,
            "column_types": column_types or {},
        }
        if is_url(dataset):
            reader = _url_reader(dataset, self.conn_id, options)
            self._note_source(storage_dataset(reader.path))
            yield reader, reader.path
        elif workspace is not None:
            yield self._note_repo_source(workspace, repo_table(workspace, dataset, **options))
        else:
            with self._maybe_workspace(rev or "HEAD") as opened:
                yield self._note_repo_source(opened, repo_table(opened, dataset, **options))

    def _note_source(self, source: dict[str, Any]) -> None:
        self._sources = [*(self._sources or []), source]

    def _note_repo_source(self, workspace: Any, opened: tuple[TableReader, str]) -> tuple[TableReader, str]:
        path = opened[1].rpartition("@")[0]  # the label is "<path>@<short commit id>"
        self._note_source({"repo": workspace.access.git.display_url, "sha": workspace.sha, "path": path})
        return opened

    def record_dataset_lineage(self, rev: str | None, run: dict[str, Any], quality: dict[str, Any] | None) -> None:
        """Keep the datasets this task opened (the last one with ``quality``) for OpenLineage.

        :param rev: the revision asked for
        :param run: what the task decided (the ``mlci`` run facet's fields)
        :param quality: the validation's figures for the dataset it validated
        """
        sources = self._sources or []
        in_repo = [source for source in sources if "repo" in source]
        named = {
            (source.get("path"), source.get("namespace"), source.get("name")): (
                {"path": source["path"]} if "repo" in source else dict(source)
            )
            for source in sources
        }
        inputs = list(named.values())
        if inputs and quality:
            inputs[-1]["quality"] = quality
        record = {"rev": rev, "inputs": inputs, "run": run}
        if in_repo:
            record |= {"repo": in_repo[-1]["repo"], "sha": in_repo[-1]["sha"]}
        self.record_lineage(record)

    @contextlib.contextmanager
    def _maybe_workspace(self, rev: str | None) -> Iterator[Any]:
        if rev is None:
            yield None
            return
        from airflow_provider_mlci.core.runtime.process import CommandRunner

        self._runner = CommandRunner(log=self.log)
        with self.hook.open_workspace(rev, runner=self._runner) as workspace:
            yield workspace

    def on_kill(self) -> None:
        """Stop the running git or DVC process."""
        runner = getattr(self, "_runner", None)
        if runner is not None:
            runner.stop()


def _url_reader(url: str, conn_id: str | None, options: dict[str, Any]) -> TableReader:
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_mlci.core.data.tabular import TableReader
    from airflow_provider_mlci.exceptions import DatasetFormatError, DatasetNotFoundError, redact_url

    shown = redact_url(url)
    path = ObjectStoragePath(url, conn_id=conn_id)
    try:
        if not path.is_file():
            raise DatasetNotFoundError(f"No dataset file at {shown}.")
        size = path.stat().st_size
    except DatasetNotFoundError:
        raise
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"No dataset file at {shown}.") from exc
    except Exception as exc:  # the storage refused us: credentials, bucket, endpoint
        raise DatasetFormatError(f"Cannot read {shown}: {exc}") from exc
    return TableReader(path=shown, opener=lambda: path.open("rb"), size=size, **options)


def check_mode(mode: str) -> str:
    """``fail`` or ``warn``, whatever the case it was written in.

    :param mode: the operator's ``mode``
    :raises MlciConfigError: anything else
    """
    from airflow_provider_mlci.exceptions import MlciConfigError

    value = str(mode).lower()
    if value not in _MODES:
        raise MlciConfigError(f"mode={mode!r}: use 'fail' (raise on failures) or 'warn' (log and succeed).")
    return value
