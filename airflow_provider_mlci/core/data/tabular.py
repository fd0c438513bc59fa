"""Read tabular files (CSV, Parquet, JSON lines) as pandas frames, whole or in chunks.

A file is read in chunks of about ``chunk_bytes`` of its own bytes, so one larger than memory
never lives in memory at once. Each chunk's index holds the global row numbers (0 = the first
data row of the file), so a failure found in a chunk names the row of the file.

CSV is read with pyarrow (multithreaded, and typed from the schema where the schema says how).
A value that does not parse as the type the schema asks for does not stop the read: the column
is read as text instead and the caller is told (:attr:`TableReader.text_columns`), so that each
such value can be reported as a dtype failure.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from airflow_provider_mlci.exceptions import DatasetFormatError, DatasetNotFoundError, MlciConfigError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

__all__ = ["DEFAULT_CHUNK_BYTES", "TableFormat", "TableReader", "chunk_bytes_for_budget"]

#: Read at most this many bytes of a file into one chunk unless told otherwise.
DEFAULT_CHUNK_BYTES = 64 * 1024 * 1024

#: What a worker process holds before reading any data (interpreter, pandas, pyarrow, pandera).
_BASE_BYTES = 160 * 1024 * 1024
#: Peak of validating one chunk, in chunk sizes (text, arrow table, frame, check outputs):
#: about 17 measured on a 3 GB CSV, with headroom for allocator and thread timing.
_PEAK_CHUNKS = 24


def chunk_bytes_for_budget(budget_bytes: int) -> int:
    """The chunk size that keeps a validation's peak memory within ``budget_bytes``.

    :param budget_bytes: the memory the task may use
    :raises MlciConfigError: for a budget too small to read anything in
    """
    chunk = (budget_bytes - _BASE_BYTES) // _PEAK_CHUNKS
    if chunk < 1024 * 1024:
        raise MlciConfigError(
            f"A memory budget of {budget_bytes // 2**20} MiB leaves no room to read data in: "
            f"allow at least {(_BASE_BYTES + _PEAK_CHUNKS * 2**20) // 2**20} MiB."
        )
    return chunk


class TableFormat(StrEnum):
    """The formats a dataset can have."""

    CSV = "csv"
    PARQUET = "parquet"
    JSONL = "jsonl"

    @classmethod
    def of(cls, path: str, given: str | TableFormat | None = None) -> TableFormat:
        """The format ``given``, or the one the file name's extension says.

        :param path: the file's path or URL (names it in errors)
        :param given: a format name, or ``None`` to go by the extension
        :raises DatasetFormatError: naming the path whose format is unknown
        """
        if given:
            try:
                return cls(str(given.value if isinstance(given, TableFormat) else given).lower().lstrip("."))
            except ValueError:
                pass
            raise DatasetFormatError(
                f"Unknown format {given!r} for {path}: use one of {', '.join(f.value for f in cls)}."
            )
        name = path.lower()
        for suffix in _COMPRESSED:
            name = name.removesuffix(suffix)
        for fmt, suffixes in _SUFFIXES.items():
            if name.endswith(suffixes):
                return fmt
        raise DatasetFormatError(
            f"Cannot tell the format of {path} from its name: pass format= (one of {', '.join(f.value for f in cls)})."
        )


_SUFFIXES = {
    TableFormat.CSV: (".csv", ".tsv", ".txt"),
    TableFormat.PARQUET: (".parquet", ".pq"),
    TableFormat.JSONL: (".jsonl", ".ndjson", ".json"),
}

#: Compressed files (CSV and JSON lines) are read through a decompressing stream, in blocks.
_COMPRESSED = (".gz", ".bz2")

_CSV_COLUMN = re.compile(r"In CSV column #(\d+)")
#: The most bytes a CSV header may take.
_HEADER_BYTES = 1024 * 1024


@dataclass(kw_only=True)
class TableReader:
    """Reads one tabular file, whole or in chunks.

    :param path: a local path, or a URL that only names the file in messages (see ``opener``)
    :param format: the file's format
    :param chunk_bytes: the most bytes of the file that go into one chunk
    :param column_types: numpy dtype names (``int64``, ``float64``, ``bool``, ``str``) the
        columns should have, where known (CSV only: Parquet carries its own types)
    :param opener: opens the file for binary reading (default: :func:`open` on ``path``)
    :param size: the file's size in bytes if known (used to decide whether to read it whole)
    """

    path: str
    format: TableFormat
    chunk_bytes: int = DEFAULT_CHUNK_BYTES
    column_types: Mapping[str, str] = field(default_factory=dict)
    opener: Any = None
    size: int | None = None
    #: columns read as text because a value did not parse as the type asked for
    text_columns: dict[str, str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.chunk_bytes < 1024:
            raise MlciConfigError(f"chunk_bytes must be at least 1024, not {self.chunk_bytes}.")
        if self.opener is None:
            local = Path(self.path)
            if not local.is_file():
                raise DatasetNotFoundError(f"No dataset file at {self.path}.")
            if local.name.lower().endswith(_COMPRESSED):
                self.opener = lambda: _decompressing(local)
                self.size = None  # unknown until read: read in blocks
            else:
                self.size = local.stat().st_size
                self.opener = lambda: local.open("rb")
        elif self.path.lower().endswith(_COMPRESSED):
            opener = self.opener
            self.opener = lambda: _decompressing(opener(), self.path)
            self.size = None

    @property
    def whole(self) -> bool:
        """Whether the file is small enough to be read as one chunk."""
        return self.size is not None and self.size <= self.chunk_bytes

    def chunks(self) -> Iterator[pd.DataFrame]:
        """Yield the file's rows as frames, in order, each indexed by global row number.

        :raises DatasetFormatError: naming the file, when it is unreadable or truncated
        """
        reader = {
            TableFormat.CSV: self._csv_chunks,
            TableFormat.PARQUET: self._parquet_chunks,
            TableFormat.JSONL: self._jsonl_chunks,
        }[self.format]
        yield from reader()

    # -- CSV -------------------------------------------------------------------------------

    def _csv_chunks(self) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.csv as pacsv

        with self._open() as fh:
            header_line = fh.readline(_HEADER_BYTES)
            header = _csv_header(header_line, self.path)
            if not header_line.endswith(b"\n") and len(header_line) < _HEADER_BYTES:
                # The header without a line end is the whole file (pyarrow calls it empty).
                yield self._no_rows(header)
                return
            offset = 0
            fixed: dict[str, Any] = {}  # column types after the first block, as pyarrow's reader does
            yielded = False
            names = pacsv.ReadOptions(column_names=header)
            for block in self._csv_blocks(fh):
                while True:
                    types = {**fixed, **self._declared_types(header)}
                    convert = pacsv.ConvertOptions(column_types=types, strings_can_be_null=True)
                    try:
                        if block is None:  # the whole file, read by pyarrow itself (no copies)
                            fh.seek(0)
                            table = pacsv.read_csv(fh, convert_options=convert)
                        else:
                            table = pacsv.read_csv(pa.py_buffer(block), read_options=names, convert_options=convert)
                        break
                    except pa.ArrowInvalid as exc:
                        column = self._unparsed_column(exc, header)
                        if column is not None and column not in self.column_types and column in fixed:
                            # No type was asked for: the type pyarrow inferred from the first
                            # block does not fit this one, so infer the column afresh from here on.
                            fixed.pop(column)
                            continue
                        if column is None or column not in self.column_types:
                            raise DatasetFormatError(
                                f"Cannot read {self.path} as CSV (rows from {offset}): {_first_line(exc)}"
                            ) from exc
                        # A value that is not of the column's declared type: read the column
                        # as text from this block on, so that the value is reported.
                        self.text_columns[column] = self.column_types[column]
                if not fixed:
                    fixed = {f.name: f.type for f in table.schema if f.name not in self.column_types}
                    fixed = {k: v for k, v in fixed.items() if not pa.types.is_null(v)}
                frame = _to_pandas(table, offset)
                offset += len(frame)
                yielded = True
                yield frame
            if not yielded:  # a header and nothing else: one frame of no rows, with its columns
                yield self._no_rows(header)

    def _no_rows(self, header: list[str]) -> pd.DataFrame:
        """The frame of a CSV file that has a header and no rows: its columns, typed as declared."""
        import pyarrow as pa

        types = self._declared_types(header)
        arrays = [pa.array([], type=types.get(name, pa.null())) for name in header]
        return _to_pandas(pa.Table.from_arrays(arrays, names=header), 0)

    def _csv_blocks(self, fh: IO[bytes]) -> Iterator[bytes | None]:
        """The rows after the header in blocks of about ``chunk_bytes``, cut at line ends
        (``None``: the file is small enough to be read whole)."""
        if self.whole:
            yield None
            return
        yield from self._line_blocks(fh)

    def _declared_types(self, header: list[str]) -> dict[str, Any]:
        types = {}
        for name, dtype in self.column_types.items():
            if name in header:
                arrow = _arrow_type("str" if name in self.text_columns else dtype)
                if arrow is not None:
                    types[name] = arrow
        for name in self.text_columns:
            types[name] = _arrow_type("str")
        return types

    def _unparsed_column(self, exc: Exception, header: list[str]) -> str | None:
        match = _CSV_COLUMN.search(str(exc))
        if not match or "conversion error" not in str(exc):
            return None
        index = int(match.group(1))
        name = header[index] if index < len(header) else None
        return name if name is not None and name not in self.text_columns else None

    # -- Parquet ---------------------------------------------------------------------------

    def _parquet_chunks(self) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.parquet as pq

        with self._open() as fh:
            try:
                parquet = pq.ParquetFile(fh)
                meta = parquet.metadata
                rows_per_chunk = _rows_per_chunk(self.chunk_bytes, meta.serialized_size + _uncompressed(meta), meta)
                offset = 0
                for batch in parquet.iter_batches(batch_size=rows_per_chunk):
                    frame = _to_pandas(_table([batch]), offset)
                    offset += len(frame)
                    yield frame
            except (pa.ArrowInvalid, OSError) as exc:
                raise DatasetFormatError(f"Cannot read {self.path} as Parquet: {_first_line(exc)}") from exc

    # -- JSON lines ------------------------------------------------------------------------

    def _jsonl_chunks(self) -> Iterator[pd.DataFrame]:
        import pyarrow as pa
        import pyarrow.json as pajson

        with self._open() as fh:
            offset = 0
            for block in self._line_blocks(fh):
                # Each block's types are inferred on their own (pyarrow's streaming reader would
                # fix them from the first block and refuse a later 1.5 in a field of integers).
                try:
                    table = pajson.read_json(pa.py_buffer(block))
                except pa.ArrowInvalid as exc:
                    raise DatasetFormatError(
                        f"Cannot read {self.path} as JSON lines (rows from {offset}): {_first_line(exc)}"
                    ) from exc
                frame = _to_pandas(table, offset)
                offset += len(frame)
                yield frame

    def _line_blocks(self, fh: IO[bytes]) -> Iterator[bytes]:
        """The file in blocks of about ``chunk_bytes``, cut at line ends."""
        leftover = b""
        while True:
            data = fh.read(self.chunk_bytes)
            if not data:
                if leftover.strip():
                    yield leftover
                return
            data = leftover + data if leftover else data
            cut = data.rfind(b"\n")
            if cut < 0:
                leftover = data
                continue
            leftover = data[cut + 1 :]
            yield data[: cut + 1]

    @contextlib.contextmanager
    def _open(self) -> Iterator[IO[bytes]]:
        try:
            fh = self.opener()
        except FileNotFoundError as exc:
            raise DatasetNotFoundError(f"No dataset file at {self.path}.") from exc
        except OSError as exc:
            raise DatasetFormatError(f"Cannot open {self.path}: {exc}") from exc
        with fh:
            yield fh


def _decompressing(source: Any, name: str | None = None) -> Any:
    """A stream of the decompressed bytes of a local path or an open binary file."""
    import bz2
    import gzip

    label = str(name or source).lower()
    if isinstance(source, Path):
        source = source.open("rb")
    return gzip.GzipFile(fileobj=source, mode="rb") if label.endswith(".gz") else bz2.BZ2File(source, mode="rb")


def _csv_header(line: bytes, path: str) -> list[str]:
    import csv
    import io

    if not line.strip():
        raise DatasetFormatError(f"{path} is empty: a CSV file needs at least a header row.")
    try:
        text = line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetFormatError(f"Cannot read {path} as CSV: its header is not UTF-8 text.") from exc
    return next(csv.reader(io.StringIO(text)))


def _arrow_type(dtype: str) -> pa.DataType | None:
    import pyarrow as pa

    return {
        "int64": pa.int64(),
        "int32": pa.int32(),
        "float64": pa.float64(),
        "float32": pa.float32(),
        "bool": pa.bool_(),
        "str": pa.string(),
        "string": pa.string(),
        "object": pa.string(),
    }.get(dtype)


def _table(batches: list[Any]) -> pa.Table:
    import pyarrow as pa

    return pa.Table.from_batches(batches)


def _to_pandas(table: pa.Table, offset: int) -> pd.DataFrame:
    import pandas as pd

    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    frame.index = pd.RangeIndex(offset, offset + len(frame))
    return frame


def _uncompressed(meta: Any) -> int:
    total = 0
    for group in range(meta.num_row_groups):
        total += meta.row_group(group).total_byte_size
    return total


def _rows_per_chunk(chunk_bytes: int, data_bytes: int, meta: Any) -> int:
    rows = max(meta.num_rows, 1)
    per_row = max(data_bytes / rows, 1.0)
    return max(int(chunk_bytes / per_row), 1024)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0]


def file_size(path: str | os.PathLike[str]) -> int:
    """The size of a local file in bytes.

    :param path: the file
    :raises DatasetNotFoundError: naming the path where there is no file
    """
    try:
        return os.stat(path).st_size
    except FileNotFoundError as exc:
        raise DatasetNotFoundError(f"No dataset file at {path}.") from exc
