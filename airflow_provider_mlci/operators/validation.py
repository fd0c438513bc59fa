"""Operators that validate a dataset before anything trains on it.

A dataset is either a path inside the DVC repository of an ``mlci_dvc`` connection, read at a
revision (only that path is pulled, into the worker's DVC cache), or an object storage URL
(``s3://...``, ``file://...``) read through Airflow's ``ObjectStoragePath`` with ``conn_id``.
Files larger than memory are read in chunks. The summary goes to XCom; the full failure-case
table goes to ``[mlci] reports_dir`` and the task's "Report" link points at it.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.lineage import OpenLineageMixin, storage_dataset
from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import airflow_failures

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.data.tabular import TableReader
    from airflow_provider_mlci.hooks.dvc import DvcHook

__all__ = ["DataDriftCheckOperator", "DataValidationOperator"]

_PANDERA_GREEN = "#2e7d32"
_MODES = ("fail", "warn")
_VERDICT = ("schema", "valid", "rows_checked", "failure_cases_total")


class _DatasetMixin(OpenLineageMixin):
    """Reading a dataset from a DVC repository at a revision, or from object storage."""

    dvc_conn_id: str
    conn_id: str | None
    cache_dir: str | None
    format: str | None
    chunk_bytes: int | None
    log: Any
    #: what :meth:`open_dataset` opened, for lineage: ``{"repo", "sha", "path"}`` or ``{"namespace", "name"}``
    _sources: list[dict[str, Any]] | None = None

    @cached_property
    def hook(self) -> DvcHook:
        """The hook for the repository's connection."""
        from airflow_provider_mlci.hooks.dvc import DvcHook

        return DvcHook(self.dvc_conn_id, cache_dir=self.cache_dir)

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
            yield self._note_repo_source(workspace, _repo_reader(workspace, dataset, options))
        else:
            with self._maybe_workspace(rev or "HEAD") as opened:
                yield self._note_repo_source(opened, _repo_reader(opened, dataset, options))

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


def is_url(dataset: str) -> bool:
    """Whether ``dataset`` is an object storage URL rather than a path in the repository.

    :param dataset: the operator's ``dataset`` argument
    """
    return "://" in dataset


def _repo_reader(workspace: Any, dataset: str, options: dict[str, Any]) -> tuple[TableReader, str]:
    """A reader of a file the repository tracks (in git or DVC), pulling only that file."""
    from airflow_provider_mlci.core.data.tabular import TableReader
    from airflow_provider_mlci.core.dvc import ops as dvc_ops
    from airflow_provider_mlci.core.repo.paths import inside
    from airflow_provider_mlci.exceptions import DatasetNotFoundError, DvcFileError, DvcStageNotFoundError

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


def _mode(mode: str) -> str:
    from airflow_provider_mlci.exceptions import MlciConfigError

    value = str(mode).lower()
    if value not in _MODES:
        raise MlciConfigError(f"mode={mode!r}: use 'fail' (raise on failures) or 'warn' (log and succeed).")
    return value


class _FailureTable:
    """Failure cases, chunk by chunk, into one local Parquet file."""

    def __init__(self, folder: str) -> None:
        self.path = os.path.join(folder, "failure_cases.parquet")
        self.rows = 0
        self._writer: Any = None

    def __call__(self, cases: Any) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(cases, preserve_index=False, schema=_failure_schema())
        if self._writer is None:
            self._writer = pq.ParquetWriter(self.path, table.schema)
        self._writer.write_table(table)
        self.rows += len(cases)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def _failure_schema() -> Any:
    import pyarrow as pa

    return pa.schema(
        [
            ("schema_context", pa.string()),
            ("column", pa.string()),
            ("check", pa.string()),
            ("check_number", pa.int64()),
            ("failure_case", pa.string()),
            ("index", pa.int64()),
        ]
    )


class DataValidationOperator(_DatasetMixin, BaseOperator):
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
    ui_color = _PANDERA_GREEN
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
            mode = _mode(self.mode)
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
                table = _FailureTable(tmp)
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
                self.rev,
                {"validation": {key: summary.get(key) for key in _VERDICT}, "report": uri},
                {
                    "rows": summary.get("rows_checked"),
                    "valid": report.valid,
                    "schema": summary.get("schema"),
                    "failures": [
                        {"column": column, "check": check, "count": count}
                        for column, checks in report.error_counts.items()
                        for check, count in checks.items()
                    ],
                },
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


class DataDriftCheckOperator(_DatasetMixin, BaseOperator):
    """Compare a dataset at ``rev`` with the same dataset at ``baseline_rev``.

    Fails (``mode="fail"``) or warns (``mode="warn"``) when columns were added, removed or
    retyped, when the row count changed beyond its bounds, or when a column's distribution
    shifted (PSI over baseline deciles or categories, and the Kolmogorov-Smirnov statistic on
    numeric columns) beyond the thresholds. Returns the comparison as JSON (see
    :class:`~airflow_provider_mlci.core.data.drift.DriftReport`).

    :param dataset: a path inside the repository, or a URL (templated)
    :param baseline_rev: the revision to compare with (templated)
    :param rev: the revision to check (templated); default: the default branch
    :param baseline_dataset: the baseline's path or URL if it is not ``dataset`` (templated)
    :param columns: compare only these columns
    :param psi: PSI above which a column has drifted (default 0.2)
    :param ks: KS statistic above which a numeric column has drifted (default 0.1)
    :param min_row_ratio: the new row count must be at least this fraction of the old (0.5)
    :param max_row_ratio: and at most this multiple of it (2.0)
    :param mode: ``"fail"`` or ``"warn"``
    :param skip_without_baseline: skip the task (instead of failing) when ``baseline_rev`` renders
        empty, e.g. a baseline read from the registry before any model was deployed
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param format: ``csv``, ``parquet`` or ``jsonl``; default: from the file name
    :param conn_id: the connection for URL datasets
    :param chunk_bytes: read at most this many bytes of a file at once
    :param cache_dir: the worker cache root; default ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("dataset", "baseline_rev", "rev", "baseline_dataset")
    ui_color = _PANDERA_GREEN
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        dataset: str,
        baseline_rev: str | None = None,
        rev: str | None = None,
        baseline_dataset: str | None = None,
        columns: Sequence[str] | None = None,
        psi: float = 0.2,
        ks: float = 0.1,
        min_row_ratio: float = 0.5,
        max_row_ratio: float = 2.0,
        mode: str = "fail",
        skip_without_baseline: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        format: str | None = None,
        conn_id: str | None = None,
        chunk_bytes: int | None = None,
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.dataset = dataset
        self.skip_without_baseline = skip_without_baseline
        self.baseline_rev = baseline_rev
        self.rev = rev
        self.baseline_dataset = baseline_dataset
        self.columns = columns
        self.psi = psi
        self.ks = ks
        self.min_row_ratio = min_row_ratio
        self.max_row_ratio = max_row_ratio
        self.mode = mode
        self.dvc_conn_id = dvc_conn_id
        self.format = format
        self.conn_id = conn_id
        self.chunk_bytes = chunk_bytes
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.data import drift
        from airflow_provider_mlci.core.data.tabular import TableFormat
        from airflow_provider_mlci.exceptions import DataValidationError, MlciConfigError

        if self.skip_without_baseline and not self.baseline_rev and not self.baseline_dataset:
            from airflow.providers.common.compat.sdk import AirflowSkipException

            raise AirflowSkipException(f"No baseline revision to compare {self.dataset} with: no drift check.")
        with airflow_failures():
            mode = _mode(self.mode)
            thresholds = drift.DriftThresholds(
                psi=self.psi, ks=self.ks, min_row_ratio=self.min_row_ratio, max_row_ratio=self.max_row_ratio
            )
            baseline_dataset = self.baseline_dataset or self.dataset
            if baseline_dataset == self.dataset and is_url(self.dataset):
                raise MlciConfigError(
                    f"DataDriftCheckOperator on {self.dataset}: a URL has no revisions; give baseline_dataset."
                )
            if baseline_dataset == self.dataset and not self.baseline_rev:
                raise MlciConfigError(
                    f"DataDriftCheckOperator on {self.dataset}: give baseline_rev or baseline_dataset."
                )
            for name in (self.dataset, baseline_dataset):
                TableFormat.of(name, self.format)
            profiles = {}
            for side, name, rev in (
                ("baseline", baseline_dataset, self.baseline_rev),
                ("current", self.dataset, self.rev),
            ):
                with self.open_dataset(name, rev) as (reader, label):
                    self.log.info("Profiling the %s version: %s", side, label)
                    profiles[side] = (
                        label,
                        drift.profile_chunks(reader.chunks(), columns=self.columns, sample_size=thresholds.sample_size),
                    )
            report = drift.compare_profiles(profiles["baseline"][1], profiles["current"][1], thresholds)
            summary = {"dataset": profiles["current"][0], "baseline": profiles["baseline"][0], **report.to_json()}
            self.record_dataset_lineage(self.rev, {}, None)
            for name, stats in report.columns.items():
                self.log.info("  %s: %s", name, stats)
            if not report.drifted:
                self.log.info("%s: no drift against %s", summary["dataset"], summary["baseline"])
                return summary
            message = f"{summary['dataset']} drifted from {summary['baseline']}: " + "; ".join(report.failures)
            self.log.warning("%s", message)
            if mode == "fail":
                raise DataValidationError(message)
            return summary
