"""Operators that validate a dataset before anything trains on it.

A dataset is either a path inside the DVC repository of an ``mlci_dvc`` connection, read at a
revision (only that path is pulled, into the worker's DVC cache), or an object storage URL
(``s3://...``, ``file://...``) read through Airflow's ``ObjectStoragePath`` with ``conn_id``.
Files larger than memory are read in chunks. The summary goes to XCom; the full failure-case
table goes to ``[mlci] reports_dir`` and the task's "Report" link points at it.
:class:`DataDriftCheckOperator` lives in :mod:`~airflow_provider_mlci.operators.drift` and is
importable from here.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import airflow_failures
from airflow_provider_mlci.operators.dataset import PANDERA_GREEN, DatasetMixin, check_mode
from airflow_provider_mlci.operators.drift import DataDriftCheckOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.data.tabular import TableReader

__all__ = ["DataDriftCheckOperator", "DataValidationOperator"]

_VERDICT = ("schema", "valid", "rows_checked", "failure_cases_total")


class DataValidationOperator(DatasetMixin, BaseOperator):
    """Validate a dataset against a pandera schema, lazily, in chunks if it is large.

    Returns ``{"dataset", "schema", "valid", "rows_checked", "chunks", "sampled", "error_counts",
    "failure_cases_total", "failure_cases", "warnings", "report_uri"}`` with at most
    ``max_failure_cases`` cases; all of them are in ``<report_uri>/failure_cases.parquet``. With
    Airflow's OpenLineage provider, the dataset is the task's input with the verdict as
    data-quality facets (rows checked, the schema and each failing check), even when it fails.

    :param dataset: a path inside the repository (read at ``rev``), or an object storage URL
        such as ``s3://bucket/key.parquet`` (templated)
    :param schema: ``"package.module:attr"`` naming a pandera ``DataFrameSchema`` or
        ``DataFrameModel``, a pandera YAML/JSON schema file in the repository (read at ``rev``),
        or the schema object itself (templated when a string)
    :param rev: the repository's revision (templated); default: its default branch
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param mode: ``"fail"`` raises :class:`~airflow_provider_mlci.exceptions.DataValidationError`
        (not retried) when anything fails; ``"warn"`` logs the failures and succeeds
    :param format: ``csv``, ``parquet`` or ``jsonl``; default: from the file name
    :param conn_id: the connection for a URL dataset (for example ``aws_default``)
    :param sample: check a fraction of the rows (``0 < sample < 1``) or the first N rows
    :param min_rows: fail if the dataset has fewer rows
    :param max_rows: fail if it has more
    :param max_failure_cases: failure cases in the summary (default 100)
    :param chunk_bytes: read at most this many bytes of the file at once (default 64 MiB)
    :param memory_budget_mb: the memory the validation may use; sets ``chunk_bytes`` to fit it
    :param report_dir: where the failure-case table goes; default ``[mlci] reports_dir``
    :param report_conn_id: the connection for ``report_dir``
    :param cache_dir: the worker cache root; default ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("dataset", "schema", "rev", "report_dir")
    operator_extra_links = (MlciReportLink(),)
    ui_color = PANDERA_GREEN
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        dataset: str,
        schema: Any,
        rev: str | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        mode: str = "fail",
        format: str | None = None,
        conn_id: str | None = None,
        sample: float | int | None = None,
        min_rows: int | None = None,
        max_rows: int | None = None,
        max_failure_cases: int = 100,
        chunk_bytes: int | None = None,
        memory_budget_mb: int | None = None,
        report_dir: str | None = None,
        report_conn_id: str | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.schema = schema
        self.rev = rev
        self.dvc_conn_id = dvc_conn_id
        self.mode = mode
        self.format = format
        self.conn_id = conn_id
        self.sample = sample
        self.min_rows = min_rows
        self.max_rows = max_rows
        self.max_failure_cases = max_failure_cases
        self.chunk_bytes = chunk_bytes
        self.memory_budget_mb = memory_budget_mb
        self.report_dir = report_dir
        self.report_conn_id = report_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.data import validation
        from airflow_provider_mlci.core.data.tabular import TableFormat
        from airflow_provider_mlci.exceptions import DataValidationError
        from airflow_provider_mlci.report_store import store_task_report

        with airflow_failures():
            mode = check_mode(self.mode)
            if self.memory_budget_mb is not None:
                from airflow_provider_mlci.core.data.tabular import chunk_bytes_for_budget
                from airflow_provider_mlci.exceptions import MlciConfigError

                if self.chunk_bytes is not None:
                    raise MlciConfigError("Give chunk_bytes or memory_budget_mb, not both.")
                self.chunk_bytes = chunk_bytes_for_budget(self.memory_budget_mb * 2**20)
            options = validation.ValidationOptions(
                max_failure_cases=self.max_failure_cases,
                sample=self.sample,
                min_rows=self.min_rows,
                max_rows=self.max_rows,
            )
            TableFormat.of(self.dataset, self.format)
            validation.check_schema_spec(self.schema)
            in_repo = isinstance(self.schema, str) and validation.is_schema_file(self.schema)
            schema = None if in_repo else validation.load_schema(self.schema)
            need_repo = in_repo and not os.path.isabs(self.schema)
            from airflow_provider_mlci.core.runtime.process import private_tempdir

            with private_tempdir("validation") as tmp:
                table = validation.FailureTable(tmp)
                with self._open(schema, need_repo) as (reader, schema, where):
                    self.log.info("Validating %s against %s", reader.path, validation.schema_name(self.schema))
                    try:
                        report = validation.validate_table(
                            reader,
                            schema,
                            options=options,
                            schema_label=validation.schema_name(self.schema),
                            failure_sink=table,
                        )
                    finally:
                        table.close()
                report.dataset = where
                summary = report.to_json()
                files = {"validation.json": os.path.join(tmp, "validation.json")}
                if table.rows:
                    files["failure_cases.parquet"] = table.path
                with open(files["validation.json"], "w") as fh:
                    json.dump(summary, fh, indent=2)
                outcome = {key: summary.get(key) for key in ("dataset", "schema", "valid", "rows_checked")}
                outcome["failure_cases_total"] = summary.get("failure_cases_total")
                uri = store_task_report(context, files, outcome, base=self.report_dir, conn_id=self.report_conn_id)
            summary["report_uri"] = uri
            self.record_dataset_lineage(
                self.rev, {"validation": {key: summary.get(key) for key in _VERDICT}, "report": uri}, report.quality()
            )
            for warning in report.warnings:
                self.log.warning("%s", warning)
            if report.valid:
                self.log.info("%s", report.describe())
                return summary
            self.log.warning("%s\nAll failure cases: %s", report.describe(), uri)
            if mode == "fail":
                raise DataValidationError(report.describe() + f"\nAll failure cases: {uri}")
            return summary

    @contextlib.contextmanager
    def _open(self, schema: Any, need_repo: bool) -> Iterator[tuple[TableReader, Any, str]]:
        """Load the schema (from the repository if it is a file there), then open the dataset."""
        from airflow_provider_mlci.core.data import validation

        if not need_repo:
            schema = schema if schema is not None else validation.load_schema(self.schema)
            types = validation.schema_column_types(schema)
            with self.open_dataset(self.dataset, self.rev, column_types=types) as (reader, where):
                yield reader, schema, where
            return
        with self._maybe_workspace(self.rev or "HEAD") as workspace:
            schema = validation.load_schema(self.schema, base_dir=workspace.path)
            types = validation.schema_column_types(schema)
            with self.open_dataset(self.dataset, self.rev, column_types=types, workspace=workspace) as (reader, where):
                yield reader, schema, where
