"""Validate a tabular file of any size against a pandera schema, and say exactly what is wrong.

The file is read in chunks (:mod:`airflow_provider_mlci.core.data.tabular`). Each chunk is checked
lazily (every failure collected) against the schema with its dataset-wide parts taken out:
uniqueness, which is checked across all chunks here by row hashes (then confirmed on the values),
and row-count bounds, checked on the total. Column presence and dtypes are checked per chunk and
reported once. Whole-file validation is the one-chunk case of the same path, so the two agree.

pandera builds a message out of every failure case, which makes a column that fails on every
row cost many times the all-pass time. Here pandera only says *which* checks fail (each check
capped at a few cases), and the rows that fail each check are then found again with the check's
own vectorised output, so the cost of failing stays close to the cost of passing.

Validation always runs fully: pandera's switches (``PANDERA_VALIDATION_ENABLED``,
``PANDERA_VALIDATION_DEPTH``) are overridden for the call, and a known failure is checked to be
caught before anything is reported as valid (:func:`full_validation`).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import json
import math
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.exceptions import DataValidationError, MlciConfigError, SchemaLoadError

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

    from airflow_provider_mlci.core.data.tabular import TableReader

__all__ = [
    "FAILURE_COLUMNS",
    "FailureTable",
    "ValidationOptions",
    "ValidationReport",
    "full_validation",
    "load_schema",
    "schema_column_types",
    "schema_file_in_repo",
    "validate_table",
]

#: The columns of the full failure-case table.
FAILURE_COLUMNS = ("schema_context", "column", "check", "check_number", "failure_case", "index")

_IMPORT_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_SCHEMA_SUFFIXES = (".yaml", ".yml", ".json")
_DATASET = "(dataset)"


@dataclass(frozen=True, kw_only=True)
class ValidationOptions:
    """How to validate.

    :param max_failure_cases: how many failure cases the summary carries (all go to the table)
    :param sample: a fraction of each chunk's rows (``0 < sample < 1``) or a number of leading
        rows (``>= 1``) to check, for a quick pass; ``None`` checks every row
    :param seed: the random seed of fractional sampling
    :param min_rows: fail if the dataset has fewer rows
    :param max_rows: fail if the dataset has more rows
    """

    max_failure_cases: int = 100
    sample: float | int | None = None
    seed: int = 0
    min_rows: int | None = None
    max_rows: int | None = None

    def __post_init__(self) -> None:
        if self.max_failure_cases < 0:
            raise MlciConfigError(f"max_failure_cases must be >= 0, not {self.max_failure_cases}.")
        if self.sample is not None and not (self.sample > 0 and (self.sample < 1 or float(self.sample).is_integer())):
            raise MlciConfigError(
                f"sample must be a fraction between 0 and 1, or a whole number of rows, not {self.sample!r}."
            )
        for name in ("min_rows", "max_rows"):
            value = getattr(self, name)
            if value is not None and value < 0:
                raise MlciConfigError(f"{name} must be >= 0, not {value}.")


@dataclass(kw_only=True)
class ValidationReport:
    """What a validation found.

    :param dataset: the dataset's path or URL
    :param schema: the schema's name (import path or file)
    :param rows_checked: rows validated (after sampling)
    :param rows_total: rows in the dataset (what ``min_rows`` / ``max_rows`` are judged on)
    :param chunks: how many chunks the file was read in
    :param sampled: how the rows were sampled, or ``None``
    :param error_counts: ``{column: {check: number of failures}}``; ``(dataset)`` for
        failures of the whole dataset (missing columns, row counts, dataset-wide checks)
    :param failure_cases: the first failure cases, as ``{schema_context, column, check,
        check_number, failure_case, index}`` (``index`` is the file's row number)
    :param failure_cases_total: how many failure cases there are in all
    :param warnings: what the caller should know (e.g. dataset-wide custom checks run per chunk)
    :param empty: what the dataset has instead of rows (``"a header but 0 rows"``) when it has none
        and ``min_rows`` does not allow that; ``None`` otherwise
    """

    dataset: str
    schema: str
    rows_checked: int = 0
    rows_total: int | None = None
    chunks: int = 0
    sampled: str | None = None
    error_counts: dict[str, dict[str, int]] = field(default_factory=dict)
    failure_cases: list[dict[str, Any]] = field(default_factory=list)
    failure_cases_total: int = 0
    warnings: list[str] = field(default_factory=list)
    empty: str | None = None

    @property
    def valid(self) -> bool:
        """Whether nothing failed."""
        return self.failure_cases_total == 0

    def to_json(self) -> dict[str, Any]:
        """The summary as small JSON (what goes into XCom)."""
        return {
            "dataset": self.dataset,
            "schema": self.schema,
            "valid": self.valid,
            "rows_checked": self.rows_checked,
            "rows_total": self.rows_total,
            "chunks": self.chunks,
            "sampled": self.sampled,
            "error_counts": self.error_counts,
            "failure_cases_total": self.failure_cases_total,
            "failure_cases": self.failure_cases,
            "warnings": self.warnings,
        }

    def describe(self) -> str:
        """One paragraph for the task log and the error: what failed, where, how often."""
        if self.valid:
            return f"{self.dataset}: {self.rows_checked} rows valid against {self.schema}."
        lines = [
            f"{self.dataset}: {self.failure_cases_total} failure case(s) in {self.rows_checked} rows "
            f"checked against {self.schema}:"
        ]
        if self.empty:
            lines.insert(0, f"{self.dataset} has {self.empty}: an empty dataset fails (min_rows=0 allows one).")
        for column, checks in self.error_counts.items():
            for check, count in checks.items():
                lines.append(f"  column {column!r}, check {check}: {count} failure(s)")
        for case in self.failure_cases[:5]:
            where = f"row {case['index']}" if case["index"] is not None else "the whole column"
            lines.append(f"  e.g. {case['column']!r} {case['check']} at {where}: {case['failure_case']!r}")
        return "\n".join(lines)

    def quality(self) -> dict[str, Any]:
        """The verdict as data-quality figures: rows, validity, schema and each failing check's count."""
        return {
            "rows": self.rows_checked,
            "valid": self.valid,
            "schema": self.schema,
            "failures": [
                {"column": column, "check": check, "count": count}
                for column, checks in self.error_counts.items()
                for check, count in checks.items()
            ],
        }


class FailureTable:
    """Every failure case, chunk by chunk, into one local Parquet file (``failure_cases.parquet``).

    Pass it as :func:`validate_table`'s ``failure_sink``; :meth:`close` it before reading the file.

    :param folder: where the file goes
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
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
        """Finish the file (nothing is written when no case came)."""
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


# -- schemas --------------------------------------------------------------------------------


def is_schema_file(spec: str) -> bool:
    """Whether ``spec`` names a schema file (rather than an import path).

    :param spec: what the user passed as ``schema``
    """
    return spec.lower().endswith(_SCHEMA_SUFFIXES)


def check_schema_spec(spec: Any) -> None:
    """Refuse, before any work, a schema argument that can name nothing.

    :param spec: an import path ``package.module:attr``, a schema file, or a pandera schema
    :raises SchemaLoadError: naming the argument
    """
    if not isinstance(spec, str):
        return
    if is_schema_file(spec):
        if not os.path.isabs(spec):
            schema_file_in_repo(spec)
        return
    if not _IMPORT_PATH.match(spec):
        raise SchemaLoadError(
            f"schema={spec!r} is neither an import path ('package.module:attr') nor a .yaml/.yml/.json file."
        )


def schema_file_in_repo(spec: str) -> str:
    """Return ``spec`` if it is a relative path that stays inside a repository.

    :param spec: a schema file's path relative to the repository root
    :raises SchemaLoadError: naming a path that climbs out or could be read as an option
    """
    parts = Path(spec).parts
    if spec.startswith("-") or ".." in parts or not parts:
        raise SchemaLoadError(f"Schema file {spec!r} is not a path inside the repository.")
    return spec


def load_schema(spec: Any, *, base_dir: str | os.PathLike[str] | None = None) -> pa.DataFrameSchema:
    """Return the pandera schema that ``spec`` names.

    :param spec: a ``DataFrameSchema``, a ``DataFrameModel`` class, an import path
        ``"package.module:attr"`` to either, or a pandera YAML/JSON schema file (relative to
        ``base_dir``, or absolute)
    :param base_dir: where relative schema files are (the repository checkout)
    :raises SchemaLoadError: naming the import path or file that does not import or parse
    """
    if isinstance(spec, str):
        check_schema_spec(spec)
        return _schema_from_file(spec, base_dir) if is_schema_file(spec) else _schema_from_import(spec)
    return _as_schema(spec, repr(spec))


def schema_name(spec: Any) -> str:
    """How to name the schema in reports.

    :param spec: what the user passed as ``schema``
    """
    if isinstance(spec, str):
        return spec
    return getattr(spec, "name", None) or getattr(spec, "__name__", None) or type(spec).__name__


def _schema_from_import(spec: str) -> pa.DataFrameSchema:
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import runs user code: any error means "does not import"
        raise SchemaLoadError(f"Schema {spec!r}: module {module_name!r} does not import: {exc}") from exc
    target: Any = module
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise SchemaLoadError(f"Schema {spec!r}: {module_name!r} has no attribute {attr!r}.") from exc
    return _as_schema(target, spec)


def _schema_from_file(spec: str, base_dir: str | os.PathLike[str] | None) -> pa.DataFrameSchema:
    import pandera.pandas as pa

    if base_dir is not None and not os.path.isabs(spec):
        path = inside(base_dir, spec, what="schema file")  # a file of the repository: no link out of it
    else:
        path = Path(spec)
    if not path.is_file():
        raise SchemaLoadError(f"Schema file {spec} does not exist" + (" in the repository." if base_dir else "."))
    loader = pa.DataFrameSchema.from_json if spec.lower().endswith(".json") else pa.DataFrameSchema.from_yaml
    try:
        schema = loader(path)
    except Exception as exc:  # YAML/JSON syntax, or pandera refusing its content
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise SchemaLoadError(f"Schema file {spec} does not parse as a pandera schema: {first}") from exc
    return _as_schema(schema, spec)


def _as_schema(target: Any, name: str) -> pa.DataFrameSchema:
    import pandera.pandas as pa

    if isinstance(target, pa.DataFrameSchema):
        return target
    if isinstance(target, type) and issubclass(target, pa.DataFrameModel):
        try:
            return target.to_schema()
        except Exception as exc:
            raise SchemaLoadError(f"Schema {name!r}: the DataFrameModel does not build: {exc}") from exc
    raise SchemaLoadError(
        f"Schema {name!r} is a {type(target).__name__}, not a pandera DataFrameSchema or DataFrameModel "
        "(pandas API: import pandera.pandas)."
    )


def schema_column_types(schema: pa.DataFrameSchema) -> dict[str, str]:
    """The plain dtypes the schema's named columns ask for (to read CSV columns as them).

    :param schema: the schema
    """
    types: dict[str, str] = {}
    for name, column in schema.columns.items():
        if column.regex or column.dtype is None or column.coerce or schema.coerce:
            continue
        dtype = str(column.dtype)
        if dtype in ("int64", "int32", "float64", "float32", "bool"):
            types[str(name)] = dtype
        elif dtype in ("str", "string", "string[python]", "string[pyarrow]"):
            types[str(name)] = "str"
    return types


# -- the no-silent-pass guard -----------------------------------------------------------------


@contextlib.contextmanager
def full_validation() -> Iterator[None]:
    """Run the block with pandera validating schema and data, whatever the worker's settings.

    :raises DataValidationError: when pandera still does not report a known failure (saying
        which ``PANDERA_*`` settings the worker has)
    """
    import pandas as pd
    import pandera.pandas as pa
    from pandera.config import ValidationDepth, config_context, get_config_context

    with config_context(validation_enabled=True, validation_depth=ValidationDepth.SCHEMA_AND_DATA):
        config = get_config_context()
        canary = pa.DataFrameSchema({"x": pa.Column("int64", pa.Check.ge(1))})
        caught = False
        try:
            canary.validate(pd.DataFrame({"x": [0]}), lazy=True)
        except pa.errors.SchemaErrors:
            caught = True
        if not (config.validation_enabled and config.validation_depth == ValidationDepth.SCHEMA_AND_DATA and caught):
            settings = {k: v for k, v in os.environ.items() if k.startswith("PANDERA_")}
            raise DataValidationError(
                "pandera does not validate data on this worker, and it could not be switched on "
                f"(settings: {settings or 'none'}; effective: {config}); refusing to report the data as valid."
            )
        yield


# -- validation -----------------------------------------------------------------------------


def validate_table(
    reader: TableReader,
    schema: pa.DataFrameSchema,
    *,
    options: ValidationOptions | None = None,
    schema_label: str = "schema",
    failure_sink: Callable[[pd.DataFrame], None] | None = None,
) -> ValidationReport:
    """Validate every chunk of a file against ``schema`` and combine the findings.

    A dataset with no rows fails (one failure ``row_count >= 1`` of the whole dataset, and
    :attr:`ValidationReport.empty` says so) unless ``options.min_rows`` is 0; its columns are then
    not checked, since a CSV file's header alone says nothing of their types.

    :param reader: the file
    :param schema: the pandera schema
    :param options: sampling, row bounds, how many failure cases the summary keeps
    :param schema_label: how the report names the schema
    :param failure_sink: called with each chunk's failure cases (all of them), to store them
    :raises DatasetFormatError: the file is unreadable or truncated
    :raises DataValidationError: pandera cannot be made to validate data on this worker
    """
    options = options or ValidationOptions()
    report = ValidationReport(dataset=reader.path, schema=schema_label)
    run = _Run(schema, options, report, failure_sink)
    try:
        with full_validation():
            for chunk in _sampled(reader.chunks(), options, report):
                if not len(chunk) and not report.rows_total and options.min_rows != 0:
                    continue  # no rows so far: an empty file is reported as such in finish()
                run.chunk(chunk, reader.text_columns)
            run.finish(reader)
    finally:
        run.close()
    return report


class _Run:
    """The state of one validation across chunks."""

    def __init__(
        self,
        schema: pa.DataFrameSchema,
        options: ValidationOptions,
        report: ValidationReport,
        sink: Callable[[pd.DataFrame], None] | None,
    ) -> None:
        self.schema = schema
        self.options = options
        self.report = report
        self.sink = sink
        self.chunk_schema, self.unique_sets, self.not_null = _split_schema(schema, options.max_failure_cases)
        self.seen_dataset_failures: set[tuple[Any, ...]] = set()
        self.hashes: dict[tuple[str, ...], _HashSpill] = {cols: _HashSpill() for cols, _ in self.unique_sets}
        self.last_chunk: pd.DataFrame | None = None
        self.text_schema_cache: dict[tuple[str, ...], pa.DataFrameSchema] = {}

    def chunk(self, frame: pd.DataFrame, text_columns: dict[str, str]) -> None:
        import pandera.pandas as pa

        self.report.chunks += 1
        self.report.rows_checked += len(frame)
        parts: list[pd.DataFrame] = []
        frame, parsed_failures = _parse_text_columns(frame, text_columns)
        parts.extend(parsed_failures)
        schema = self._schema_for(tuple(sorted(text_columns)))
        try:
            schema.validate(frame, lazy=True)
        except pa.errors.SchemaErrors as exc:
            parts.extend(self._full_cases(exc.failure_cases, frame, schema))
        for column in self.not_null:
            if column in frame.columns:
                nulls = frame[column].isna()
                if text_columns.get(column):
                    nulls &= ~frame.index.isin(_failed_index(parsed_failures, column))
                if nulls.any():
                    parts.append(_cases("Column", column, "not_nullable", None, frame[column][nulls]))
        for cols in self.hashes:
            if all(c in frame.columns for c in cols):
                self.hashes[cols].add(_row_hashes(frame, cols))
        self.last_chunk = frame
        for part in parts:
            self._record(part)

    def _schema_for(self, text_columns: tuple[str, ...]) -> pa.DataFrameSchema:
        if not text_columns:
            return self.chunk_schema
        if text_columns not in self.text_schema_cache:
            schema = self.chunk_schema
            for name in text_columns:
                if name in schema.columns:
                    schema = schema.update_column(name, dtype=None)
            self.text_schema_cache[text_columns] = schema
        return self.text_schema_cache[text_columns]

    def _full_cases(self, cases: pd.DataFrame, frame: pd.DataFrame, schema: pa.DataFrameSchema) -> list[pd.DataFrame]:
        """pandera's (capped) failure cases, with each failing check's rows found in full."""
        per_check = (
            cases["check_number"].notna()
            & cases["index"].notna()
            & cases["schema_context"].isin(["Column", "DataFrameSchema"])
        )
        out = [cases[~per_check]]
        keys = cases[per_check][["schema_context", "column", "check", "check_number"]].drop_duplicates()
        for context, column, check_name, number in keys.itertuples(index=False):
            out.append(_check_cases(schema, frame, context, column, check_name, int(number)))
        return out

    def _record(self, cases: pd.DataFrame) -> None:
        if not len(cases):
            return
        key = cases.attrs.pop("mlci_key", None)
        cases = cases.reindex(columns=list(FAILURE_COLUMNS))
        whole = cases["index"].isna()
        if whole.any():
            keep = []
            for row in cases[whole].itertuples(index=False):
                seen = (row.schema_context, row.column, row.check, _plain(row.failure_case))
                keep.append(seen not in self.seen_dataset_failures)
                self.seen_dataset_failures.add(seen)
            dataset_cases = cases[whole][keep]
            cases = cases[~whole] if not dataset_cases.shape[0] else _concat(dataset_cases, cases[~whole])
        if not len(cases):
            return
        if key is not None:  # one column and check throughout: no need to group
            counts = {(_DATASET if key[0] is None else key[0], key[1]): len(cases)}.items()
        else:
            counts = cases.groupby([cases["column"].fillna(_DATASET), "check"], sort=False, dropna=False).size().items()
        for (column, check), count in counts:
            checks = self.report.error_counts.setdefault(str(column), {})
            checks[str(check)] = checks.get(str(check), 0) + int(count)
        self.report.failure_cases_total += len(cases)
        room = self.options.max_failure_cases - len(self.report.failure_cases)
        if room > 0:
            self.report.failure_cases.extend(_case_dicts(cases.head(room)))
        if self.sink is not None:
            self.sink(_as_strings(cases))

    def finish(self, reader: TableReader) -> None:
        rows = self.report.rows_total if self.report.rows_total is not None else self.report.rows_checked
        bounds = []
        min_rows = 1 if self.options.min_rows is None else self.options.min_rows  # no rows at all fails
        if rows < min_rows:
            bounds.append(f"row_count >= {min_rows}")
        if rows == 0 and min_rows > 0:
            self.report.empty = "a header but 0 rows" if reader.format == "csv" else "0 rows"
        if self.options.max_rows is not None and rows > self.options.max_rows:
            bounds.append(f"row_count <= {self.options.max_rows}")
        for check in bounds:
            self._record(_frame([("DataFrameSchema", None, check, None, rows, None)]))
        for (cols, label), hashes in zip(self.unique_sets, self.hashes.values(), strict=True):
            self._record(self._duplicates(cols, label, hashes.repeated(), reader))
        if self.report.chunks > 1 and self.schema.checks:
            names = ", ".join(str(getattr(c, "name", c)) for c in self.schema.checks)
            self.report.warnings.append(
                f"The dataset-wide checks ({names}) ran on each chunk of the file on its own: a check "
                "that aggregates over rows saw one chunk at a time. Raise chunk_bytes to check in one piece."
            )

    def close(self) -> None:
        for spill in self.hashes.values():
            spill.close()

    def _duplicates(self, cols: tuple[str, ...], label: tuple[str, str, Any], candidates: Any, reader: TableReader):
        """Rows whose values in ``cols`` repeat, found by hash then confirmed on the values."""
        import pandas as pd

        if not len(candidates):
            return _frame([])
        wanted = pd.Index(candidates)
        if self.report.chunks == 1 and self.last_chunk is not None:
            values = self.last_chunk.loc[wanted, list(cols)]
        else:  # a second pass over the file, for the few rows that may repeat
            pieces = [chunk.loc[chunk.index.intersection(wanted), list(cols)] for chunk in reader.chunks()]
            values = pd.concat(pieces)
        context, check, keep = label
        dup = values.duplicated(subset=list(cols), keep=keep)
        values = values[dup]
        return pd.concat([_cases(context, col, check, None, values[col]) for col in cols], ignore_index=True)


class _HashSpill:
    """Row keys of one uniqueness set. The first chunk's stay in memory; from the second chunk
    on, all are spilled to disk in buckets by a mix of their bits, so that checking uniqueness
    over a file larger than memory needs memory for one bucket at a time."""

    BUCKETS = 16
    _RECORD = [("hash", "<u8"), ("row", "<i8")]

    def __init__(self) -> None:
        self.first: pd.Series | None = None
        self.folder: str | None = None
        self.files: list[Any] = []

    def add(self, hashes: pd.Series) -> None:
        if self.first is None and self.folder is None:
            self.first = hashes
            return
        if self.folder is None:
            self.folder = tempfile.mkdtemp(prefix="mlci-unique-")
            self.files = [open(os.path.join(self.folder, f"{n}.bin"), "wb") for n in range(self.BUCKETS)]  # noqa: SIM115
            first, self.first = self.first, None
            self._spill(first)
        self._spill(hashes)

    def _spill(self, hashes: pd.Series) -> None:
        import numpy as np

        records = np.empty(len(hashes), dtype=self._RECORD)
        records["hash"] = hashes.to_numpy(dtype=np.uint64)
        records["row"] = hashes.index.to_numpy(dtype=np.int64)
        # Bucket by a mix of all the key's bits: keys that are the values themselves (small
        # integers) would otherwise all share their top bits and land in one bucket.
        with np.errstate(over="ignore"):
            bucket = (records["hash"] * np.uint64(0x9E3779B97F4A7C15)) >> np.uint64(60)
        for number in range(self.BUCKETS):
            records[bucket == number].tofile(self.files[number])

    def repeated(self) -> Any:
        """The rows whose key occurs more than once (candidates, to confirm on the values)."""
        import numpy as np

        if self.folder is None:
            if self.first is None:
                return np.empty(0, dtype=np.int64)
            return self.first.index[self.first.duplicated(keep=False)].to_numpy(dtype=np.int64)
        rows = []
        for number, fh in enumerate(self.files):
            fh.close()
            records = np.fromfile(os.path.join(self.folder, f"{number}.bin"), dtype=self._RECORD)
            hashes = np.sort(records["hash"])
            repeated = np.unique(hashes[1:][hashes[1:] == hashes[:-1]])
            if len(repeated):
                rows.append(records["row"][np.isin(records["hash"], repeated)])
        return np.sort(np.concatenate(rows)) if rows else np.empty(0, dtype=np.int64)

    def close(self) -> None:
        for fh in self.files:
            fh.close()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        self.first = None


def _split_schema(
    schema: pa.DataFrameSchema, cap: int
) -> tuple[pa.DataFrameSchema, list[tuple[tuple[str, ...], tuple[str, str, Any]]], list[str]]:
    """The schema to run per chunk (dataset-wide parts out, failure cases capped), the
    uniqueness sets to track across chunks, and the columns that must not be null."""
    per_chunk = copy.deepcopy(schema)
    unique_sets: list[tuple[tuple[str, ...], tuple[str, str, Any]]] = []
    not_null: list[str] = []
    updates: dict[Any, dict[str, Any]] = {}
    for name, column in per_chunk.columns.items():
        if column.regex:
            continue
        if column.unique:
            unique_sets.append(((str(name),), ("Column", "field_uniqueness", _keep(column.report_duplicates))))
            updates.setdefault(name, {})["unique"] = False
        if not column.nullable:
            not_null.append(str(name))
            updates.setdefault(name, {})["nullable"] = True
    if updates:
        per_chunk = per_chunk.update_columns(updates)
    for column in per_chunk.columns.values():
        for check in column.checks:
            check.n_failure_cases = max(cap, 1)
    for check in per_chunk.checks:
        check.n_failure_cases = max(cap, 1)
    if schema.unique:
        cols = tuple(str(c) for c in ([schema.unique] if isinstance(schema.unique, str) else schema.unique))
        unique_sets.append((cols, ("DataFrameSchema", "multiple_fields_uniqueness", _keep(schema.report_duplicates))))
        per_chunk.unique = None
    return per_chunk, unique_sets, not_null


def _keep(report_duplicates: str) -> Any:
    return {"exclude_first": "first", "exclude_last": "last"}.get(report_duplicates, False)


def _check_cases(
    schema: pa.DataFrameSchema, frame: pd.DataFrame, context: str, column: Any, check_name: str, number: int
) -> pd.DataFrame:
    """Every row of ``frame`` that one check fails, from the check's own vectorised output."""
    import pandas as pd

    if context == "DataFrameSchema":
        output = schema.checks[number](frame).check_output
        if isinstance(output, pd.DataFrame):
            output = output[column] if column in output.columns else output.all(axis=1)
        values = frame[column] if column in frame.columns else None
    else:
        values = frame[column]
        output = _component(schema, column).checks[number](values).check_output
    if not isinstance(output, pd.Series):  # one verdict for the whole frame
        return _frame([(context, column, check_name, number, bool(output), None)])
    failed = output.index[~output.astype(bool)]
    failing = values.loc[failed] if values is not None else pd.Series(failed, index=failed)
    return _cases(context, column, check_name, number, failing)


def _component(schema: pa.DataFrameSchema, column: Any) -> Any:
    if column in schema.columns:
        return schema.columns[column]
    for name, component in schema.columns.items():
        if component.regex and re.fullmatch(str(name), str(column)):
            return component
    raise DataValidationError(f"No schema column matches the failing column {column!r}.")


def _parse_text_columns(frame: pd.DataFrame, text_columns: dict[str, str]) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Columns read as text because some value is not of their type: parse each, report the
    values that do not parse as dtype failures, and go on with the parsed column."""
    import numpy as np
    import pandas as pd

    failures = []
    if not text_columns:
        return frame, failures
    frame = frame.copy()
    for name, dtype in text_columns.items():
        if name not in frame.columns:
            continue
        raw = frame[name]
        if dtype == "bool":
            lowered = raw.str.strip().str.lower()
            parsed = lowered.map({"true": True, "false": False, "1": True, "0": False})
        else:
            parsed = pd.to_numeric(raw.str.strip(), errors="coerce")
        bad = parsed.isna() & raw.notna() & (raw.str.strip() != "")
        if dtype.startswith("int"):  # a number, but no whole number of the type (1.5, 1e30): no int
            number = parsed.astype(np.float64)
            low = float(np.iinfo(dtype).min)
            whole = np.isfinite(number) & (number == np.trunc(number)) & (number >= low) & (number < -low)
            bad |= parsed.notna() & ~whole
            parsed = parsed.where(~bad)
        if bad.any():
            failures.append(_cases("Column", name, f"dtype('{dtype}')", None, raw[bad]))
        if dtype.startswith("int") and not parsed.isna().any():
            parsed = parsed.astype(dtype)
        elif dtype.startswith("float"):
            parsed = parsed.astype(np.float64)
        frame[name] = parsed
    return frame, failures


def _failed_index(parts: list[pd.DataFrame], column: str) -> list[Any]:
    index: list[Any] = []
    for part in parts:
        index.extend(part.loc[part["column"] == column, "index"].tolist())
    return index


def _row_hashes(frame: pd.DataFrame, cols: tuple[str, ...]) -> pd.Series:
    """A 64-bit key per row, the same for equal values whatever dtype their chunk read them as (an
    integer column reads as float in a chunk where it has a null): for one numeric column the whole
    number itself (exact), else a hash; numbers are hashed as float64."""
    import numpy as np
    import pandas as pd

    def numeric(series: pd.Series) -> bool:
        return pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(series.dtype)

    values = frame[list(cols)]
    if len(cols) == 1 and numeric(values[cols[0]]):
        column = values[cols[0]]
        whole = column.notna().to_numpy(copy=True)
        if pd.api.types.is_integer_dtype(column.dtype):
            ints = column.to_numpy(dtype=np.int64, na_value=0)
        else:
            floats = column.to_numpy(dtype=np.float64, na_value=np.nan)
            whole &= np.isfinite(floats) & (np.trunc(floats) == floats) & (np.abs(floats) < 2.0**63)
            ints = np.where(whole, floats, 0).astype(np.int64)
        keys = ints.view(np.uint64).copy()
        if not whole.all():
            rest = pd.Series(column.to_numpy(dtype=np.float64, na_value=np.nan)[~whole])
            keys[~whole] = pd.util.hash_pandas_object(rest, index=False).to_numpy()
        return pd.Series(keys, index=column.index)
    numbers = {c: np.float64 for c in cols if numeric(values[c])}
    return pd.util.hash_pandas_object(values.astype(numbers) if numbers else values, index=False)


def _sampled(chunks: Iterator[pd.DataFrame], options: ValidationOptions, report: ValidationReport):
    """The chunks as sampled; ``report.rows_total`` counts every row of the dataset."""
    sample = options.sample
    report.rows_total = 0
    if sample is None:
        for chunk in chunks:
            report.rows_total += len(chunk)
            yield chunk
        return
    if sample < 1:
        report.sampled = f"{sample:.0%} of the rows of each chunk (seed {options.seed})"
        for number, chunk in enumerate(chunks):
            report.rows_total += len(chunk)
            yield chunk.sample(frac=sample, random_state=options.seed + number).sort_index()
        return
    left = int(sample)
    report.sampled = f"the first {left} rows"
    counting = options.min_rows is not None or options.max_rows is not None
    for chunk in chunks:
        report.rows_total += len(chunk)
        if left > 0:
            yield chunk.iloc[:left]
            left -= len(chunk)
        if left <= 0 and not counting:  # the rest is only read to count rows for the bounds
            return


def _cases(context: str, column: Any, check: str, number: int | None, values: pd.Series) -> pd.DataFrame:
    import pandas as pd

    frame = pd.DataFrame(
        {
            "schema_context": context,
            "column": column,
            "check": check,
            "check_number": number,
            "failure_case": values.to_numpy(),
            "index": values.index.to_numpy(),
        },
        columns=list(FAILURE_COLUMNS),
    )
    frame.attrs["mlci_key"] = (column, check)
    return frame


def _frame(rows: Iterable[tuple[Any, ...]]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame(list(rows), columns=list(FAILURE_COLUMNS), dtype=object)


def _concat(*frames: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return pd.concat([f.astype(object) for f in frames], ignore_index=True)


def _plain(value: Any) -> Any:
    """A JSON-safe scalar for a failure case value (numpy scalars unwrapped, NaN as None)."""
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            value = value.item()
        except (ValueError, AttributeError):
            value = str(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    try:
        json.dumps(value)
    except TypeError:
        return str(value)
    return value


def _case_dicts(cases: pd.DataFrame) -> list[dict[str, Any]]:
    out = []
    for row in cases.itertuples(index=False):
        number = _plain(row.check_number)
        index = _plain(row.index)
        out.append(
            {
                "schema_context": _plain(row.schema_context),
                "column": _plain(row.column),
                "check": _plain(row.check),
                "check_number": int(number) if isinstance(number, float | int) else None,
                "failure_case": _plain(row.failure_case),
                "index": int(index) if isinstance(index, float | int) else None,
            }
        )
    return out


def _strings(values: pd.Series) -> Any:
    """``values`` as text (nulls stay null), through pyarrow where the values have one type."""
    import pyarrow as pa

    try:
        return pa.array(values.to_numpy(), from_pandas=True).cast(pa.string()).to_pandas(types_mapper=None)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, TypeError):
        return values.astype(str).where(values.notna(), None)


def _as_strings(cases: pd.DataFrame) -> pd.DataFrame:
    """The failure cases with one type per column, to store as a table."""
    import pandas as pd

    cases = cases.reset_index(drop=True)  # _strings' values come back on a fresh index: align them
    out = pd.DataFrame(
        {
            "schema_context": cases["schema_context"].astype(object).where(cases["schema_context"].notna(), None),
            "column": cases["column"].astype(object).where(cases["column"].notna(), None),
            "check": cases["check"].astype(str),
            "check_number": pd.to_numeric(cases["check_number"], errors="coerce").astype("Int64"),
            "failure_case": _strings(cases["failure_case"]),
            "index": pd.to_numeric(cases["index"], errors="coerce").astype("Int64"),
        }
    )
    return out
