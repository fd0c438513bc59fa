from __future__ import annotations

import gzip
import json

import numpy as np
import pandas as pd
import pytest

from airflow_provider_mlci.core.data.tabular import TableFormat, TableReader, file_size
from airflow_provider_mlci.exceptions import DatasetFormatError, DatasetNotFoundError, MlciConfigError

SMALL = 2048  # the smallest practical chunk: a few hundred rows of the frames below


def sample_frame(rows: int = 1000) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "id": np.arange(rows, dtype=np.int64),
            "x": np.arange(rows) * 0.25,
            "name": [f"n{i}" for i in range(rows)],
        }
    )


def read_all(reader: TableReader) -> tuple[list[pd.DataFrame], pd.DataFrame]:
    chunks = list(reader.chunks())
    return chunks, pd.concat(chunks)


def assert_global_index(chunks: list[pd.DataFrame], rows: int) -> None:
    start = 0
    for chunk in chunks:
        assert len(chunk) > 0
        assert chunk.index.equals(pd.RangeIndex(start, start + len(chunk))), "each chunk continues the file's rows"
        start += len(chunk)
    assert start == rows


# -- TableFormat.of ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("data/train.csv", TableFormat.CSV),
        ("data/train.TSV", TableFormat.CSV),
        ("data/train.txt", TableFormat.CSV),
        ("data/train.csv.gz", TableFormat.CSV),
        ("s3://bucket/key/train.parquet", TableFormat.PARQUET),
        ("train.pq", TableFormat.PARQUET),
        ("train.jsonl", TableFormat.JSONL),
        ("train.ndjson.bz2", TableFormat.JSONL),
        ("train.json", TableFormat.JSONL),
    ],
)
def test_format_comes_from_the_file_extension(path, expected):
    assert TableFormat.of(path) is expected


@pytest.mark.parametrize(
    ("given", "expected"),
    [("PARQUET", TableFormat.PARQUET), (".csv", TableFormat.CSV), (TableFormat.JSONL, TableFormat.JSONL)],
)
def test_a_given_format_wins_over_the_extension(given, expected):
    assert TableFormat.of("data/train.csv.bin", given) is expected


def test_an_unknown_given_format_is_refused_naming_the_path_and_the_format():
    with pytest.raises(DatasetFormatError, match=r"'xlsx'.*data/train\.xlsx"):
        TableFormat.of("data/train.xlsx", "xlsx")


def test_an_unknown_extension_is_refused_naming_the_path():
    with pytest.raises(DatasetFormatError, match=r"data/train\.xlsx"):
        TableFormat.of("data/train.xlsx")


# -- CSV -------------------------------------------------------------------------------------------


def test_csv_read_whole_is_one_chunk_indexed_from_zero(tmp_path):
    frame = sample_frame(300)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    reader = TableReader(path=str(path), format=TableFormat.CSV, column_types={"id": "int64", "x": "float64"})
    assert reader.whole
    chunks, full = read_all(reader)
    assert len(chunks) == 1
    assert_global_index(chunks, 300)
    pd.testing.assert_frame_equal(full, frame, check_dtype=False)
    assert full["id"].dtype == np.int64
    assert full["x"].dtype == np.float64
    assert reader.text_columns == {}


def test_csv_read_in_small_chunks_keeps_the_global_row_number_and_the_values(tmp_path):
    frame = sample_frame(1000)
    path = tmp_path / "t.csv"
    frame.to_csv(path, index=False)
    reader = TableReader(path=str(path), format=TableFormat.CSV, chunk_bytes=SMALL)
    assert not reader.whole
    chunks, full = read_all(reader)
    assert len(chunks) >= 5
    assert_global_index(chunks, 1000)
    line_bytes = [len(line) + 1 for line in path.read_bytes().splitlines()[1:]]
    for chunk in chunks:
        assert sum(line_bytes[i] for i in chunk.index) <= SMALL + max(line_bytes), "about chunk_bytes per chunk"
    pd.testing.assert_frame_equal(full, frame, check_dtype=False)
    assert {str(chunk["id"].dtype) for chunk in chunks} == {"int64"}
    assert {str(chunk["x"].dtype) for chunk in chunks} == {"float64"}


def test_csv_value_not_of_the_declared_type_in_the_first_chunk_reads_the_column_as_text(tmp_path):
    lines = ["id,age"] + [f"{i},{i % 90}" for i in range(1000)]
    lines[1 + 3] = "3,abc"
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    reader = TableReader(
        path=str(path), format=TableFormat.CSV, chunk_bytes=SMALL, column_types={"id": "int64", "age": "int64"}
    )
    chunks, full = read_all(reader)
    assert reader.text_columns == {"age": "int64"}
    assert chunks[0]["age"].loc[3] == "abc"
    assert chunks[0]["age"].loc[4] == "4", "the rest of the column is text too, to be parsed by the caller"
    assert all(not pd.api.types.is_numeric_dtype(chunk["age"]) for chunk in chunks)
    assert full["id"].dtype == np.int64
    assert_global_index(chunks, 1000)


def test_csv_value_not_of_the_declared_type_in_a_later_chunk_reads_the_column_as_text_from_there(tmp_path):
    lines = ["id,age"] + [f"{i},{i % 90}" for i in range(1000)]
    lines[1 + 800] = "800,abc"
    path = tmp_path / "t.csv"
    path.write_text("\n".join(lines) + "\n")
    reader = TableReader(
        path=str(path), format=TableFormat.CSV, chunk_bytes=SMALL, column_types={"id": "int64", "age": "int64"}
    )
    chunks, full = read_all(reader)
    assert reader.text_columns == {"age": "int64"}
    assert chunks[0]["age"].dtype == np.int64, "chunks before the bad value keep the declared type"
    holding = next(chunk for chunk in chunks if 800 in chunk.index)
    assert holding["age"].loc[800] == "abc"
    assert not pd.api.types.is_numeric_dtype(holding["age"])
    assert full.loc[799, "id"] == 799
    assert_global_index(chunks, 1000)


def test_csv_column_whose_inferred_type_changes_in_a_later_chunk_is_read_as_it_is(tmp_path):
    # No type was asked for "v" and "notes": the later chunks must not be forced to the type
    # pyarrow inferred from the first one (1.5 would become 1; "hello" would be a dtype failure).
    rows = 1000
    v = [str(i % 3 + 1) for i in range(rows)]
    v[900] = "1.5"
    notes = [str(i) for i in range(rows)]
    notes[950] = "hello"
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": range(rows), "v": v, "notes": notes}).to_csv(path, index=False)
    reader = TableReader(path=str(path), format=TableFormat.CSV, chunk_bytes=SMALL, column_types={"id": "int64"})
    chunks, full = read_all(reader)
    assert reader.text_columns == {}, "only columns with a declared type are reported as text"
    assert float(full.loc[900, "v"]) == 1.5
    assert str(full.loc[950, "notes"]) == "hello"
    assert_global_index(chunks, rows)


def test_csv_row_with_too_few_fields_in_a_later_chunk_is_a_format_error_naming_the_path(tmp_path):
    path = tmp_path / "ragged.csv"
    path.write_text("a,b,c\n" + "".join(f"{i},{i},{i}\n" for i in range(500)) + "7,8\n")
    reader = TableReader(path=str(path), format=TableFormat.CSV, chunk_bytes=SMALL)
    with pytest.raises(DatasetFormatError, match=r"ragged\.csv as CSV \(rows from \d+\).*Expected 3 columns"):
        list(reader.chunks())


def test_csv_without_a_header_is_a_format_error_naming_the_path(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("")
    with pytest.raises(DatasetFormatError, match=r"empty\.csv is empty"):
        list(TableReader(path=str(path), format=TableFormat.CSV).chunks())


def test_csv_whose_header_is_not_utf8_is_a_format_error_naming_the_path(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes(b"\xff\xfe,a\n1,2\n")
    with pytest.raises(DatasetFormatError, match=r"latin\.csv.*not UTF-8"):
        list(TableReader(path=str(path), format=TableFormat.CSV).chunks())


@pytest.mark.xfail(
    strict=True,
    raises=DatasetFormatError,
    reason="known: blocks are cut at any newline, also one inside a quoted value, and pyarrow is not "
    "told newlines_in_values=True (a CSV over 1 MB with multi-line values fails even when read whole)",
)
def test_csv_with_newlines_inside_quoted_values_reads_in_chunks(tmp_path):
    path = tmp_path / "multiline.csv"
    pd.DataFrame({"id": range(300), "note": [f"line {i}\nsecond line" for i in range(300)]}).to_csv(path, index=False)
    _, full = read_all(TableReader(path=str(path), format=TableFormat.CSV, chunk_bytes=SMALL))
    assert full.loc[5, "note"] == "line 5\nsecond line"


# -- Parquet ---------------------------------------------------------------------------------------


def test_parquet_read_whole_and_in_chunks_gives_the_same_rows_and_types(tmp_path):
    frame = sample_frame(5000)
    path = tmp_path / "t.parquet"
    frame.to_parquet(path, row_group_size=700)
    whole_chunks, whole = read_all(TableReader(path=str(path), format=TableFormat.PARQUET))
    chunks, full = read_all(TableReader(path=str(path), format=TableFormat.PARQUET, chunk_bytes=SMALL))
    assert len(whole_chunks) == 1
    assert len(chunks) >= 4
    assert_global_index(chunks, 5000)
    pd.testing.assert_frame_equal(full, frame, check_dtype=False)
    pd.testing.assert_frame_equal(full, whole)
    assert full["id"].dtype == np.int64


def test_truncated_parquet_is_a_format_error_naming_the_path(tmp_path):
    good = tmp_path / "good.parquet"
    sample_frame(1000).to_parquet(good)
    path = tmp_path / "cut.parquet"
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetFormatError, match=r"cut\.parquet as Parquet"):
        list(TableReader(path=str(path), format=TableFormat.PARQUET).chunks())


def test_a_file_that_is_not_parquet_is_a_format_error_naming_the_path(tmp_path):
    path = tmp_path / "really.csv.parquet"
    path.write_text("a,b\n1,2\n")
    with pytest.raises(DatasetFormatError, match=r"really\.csv\.parquet"):
        list(TableReader(path=str(path), format=TableFormat.PARQUET).chunks())


# -- JSON lines ------------------------------------------------------------------------------------


def test_jsonl_read_whole_and_in_chunks_gives_the_same_rows(tmp_path):
    frame = sample_frame(1000)
    path = tmp_path / "t.jsonl"
    frame.to_json(path, orient="records", lines=True)
    whole_chunks, whole = read_all(TableReader(path=str(path), format=TableFormat.JSONL))
    chunks, full = read_all(TableReader(path=str(path), format=TableFormat.JSONL, chunk_bytes=SMALL))
    assert len(whole_chunks) == 1
    assert len(chunks) >= 5
    assert_global_index(chunks, 1000)
    pd.testing.assert_frame_equal(full, frame, check_dtype=False)
    pd.testing.assert_frame_equal(full, whole)


@pytest.mark.parametrize("chunk_bytes", [64 * 1024 * 1024, SMALL])
def test_truncated_jsonl_is_a_format_error_naming_the_path(tmp_path, chunk_bytes):
    path = tmp_path / "cut.jsonl"
    text = "".join(json.dumps({"a": i, "b": f"s{i}"}) + "\n" for i in range(500))
    path.write_text(text[:-12])
    with pytest.raises(DatasetFormatError, match=r"cut\.jsonl as JSON lines"):
        list(TableReader(path=str(path), format=TableFormat.JSONL, chunk_bytes=chunk_bytes).chunks())


def test_jsonl_line_that_is_not_json_is_a_format_error_naming_the_path(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"a": 1}\n{"a": 2}\nnot json\n')
    with pytest.raises(DatasetFormatError, match=r"bad\.jsonl as JSON lines"):
        list(TableReader(path=str(path), format=TableFormat.JSONL).chunks())


def test_jsonl_field_that_widens_from_int_to_float_in_a_later_chunk_reads_in_chunks(tmp_path):
    path = tmp_path / "widen.jsonl"
    rows = [{"id": i, "v": i % 3} for i in range(1000)]
    rows[900]["v"] = 1.5
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    _, full = read_all(TableReader(path=str(path), format=TableFormat.JSONL, chunk_bytes=SMALL))
    assert full.loc[900, "v"] == 1.5


# -- opening ---------------------------------------------------------------------------------------


def test_a_missing_local_file_is_dataset_not_found_naming_the_path(tmp_path):
    path = tmp_path / "absent.csv"
    with pytest.raises(DatasetNotFoundError, match=r"absent\.csv"):
        TableReader(path=str(path), format=TableFormat.CSV)
    with pytest.raises(DatasetNotFoundError, match=r"absent\.csv"):
        file_size(path)


def test_an_opener_that_finds_no_file_is_dataset_not_found_naming_the_shown_path(tmp_path):
    missing = tmp_path / "gone.csv"
    reader = TableReader(
        path="s3://bucket/data/gone.csv", format=TableFormat.CSV, opener=lambda: missing.open("rb"), size=10
    )
    with pytest.raises(DatasetNotFoundError, match=r"s3://bucket/data/gone\.csv"):
        list(reader.chunks())


def test_an_opener_that_is_refused_is_a_format_error_naming_the_shown_path():
    def refuse():
        raise PermissionError("access denied")

    reader = TableReader(path="s3://bucket/data/secret.csv", format=TableFormat.CSV, opener=refuse, size=10)
    with pytest.raises(DatasetFormatError, match=r"Cannot open s3://bucket/data/secret\.csv: access denied"):
        list(reader.chunks())


def test_an_opener_reads_the_file_and_the_given_size_decides_whole_or_chunked(tmp_path):
    path = tmp_path / "t.csv"
    sample_frame(1000).to_csv(path, index=False)
    size = file_size(path)
    assert size == path.stat().st_size
    opened = TableReader(
        path="s3://b/t.csv", format=TableFormat.CSV, opener=lambda: path.open("rb"), size=size, chunk_bytes=SMALL
    )
    assert not opened.whole
    chunks, full = read_all(opened)
    assert len(chunks) > 1
    assert full["id"].tolist() == list(range(1000))


def test_chunk_bytes_below_1024_is_refused(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("a\n1\n")
    with pytest.raises(MlciConfigError, match="chunk_bytes must be at least 1024, not 100"):
        TableReader(path=str(path), format=TableFormat.CSV, chunk_bytes=100)


@pytest.mark.parametrize("suffix", [".gz", ".bz2"])
def test_compressed_csv_and_json_lines_read_in_blocks_like_plain_files(tmp_path, suffix):
    import bz2
    import gzip

    frame = pd.DataFrame({"id": range(4000), "label": [f"row {i}" for i in range(4000)]})
    plain = tmp_path / "plain.csv"
    frame.to_csv(plain, index=False)
    packed = tmp_path / f"packed.csv{suffix}"
    frame.to_csv(packed, index=False)
    _, expected = read_all(TableReader(path=str(plain), format=TableFormat.CSV))
    chunks, got = read_all(TableReader(path=str(packed), format=TableFormat.of(str(packed)), chunk_bytes=SMALL))
    assert len(chunks) > 1
    pd.testing.assert_frame_equal(got, expected)
    lines = tmp_path / f"rows.jsonl{suffix}"
    with (gzip.open if suffix == ".gz" else bz2.open)(lines, "wt") as fh:
        fh.write("".join(json.dumps({"id": i}) + "\n" for i in range(3000)))
    _, rows = read_all(TableReader(path=str(lines), format=TableFormat.of(str(lines)), chunk_bytes=SMALL))
    assert rows["id"].tolist() == list(range(3000))


def test_a_memory_budget_sets_a_chunk_size_that_fits_it_or_is_refused():
    from airflow_provider_mlci.core.data.tabular import chunk_bytes_for_budget

    small, large = chunk_bytes_for_budget(512 * 2**20), chunk_bytes_for_budget(1024 * 2**20)
    assert 2**20 <= small < large < 1024 * 2**20 // 16
    with pytest.raises(MlciConfigError, match="100 MiB"):
        chunk_bytes_for_budget(100 * 2**20)


@pytest.mark.parametrize("suffix", [".csv", ".csv.gz"])
@pytest.mark.parametrize(
    "content", ["id,name\n", "id,name", "id,name\n\n"], ids=["newline", "no-newline", "blank-line"]
)
def test_csv_with_a_header_and_no_rows_reads_as_one_frame_of_its_columns_and_no_rows(tmp_path, content, suffix):
    path = tmp_path / f"header-only{suffix}"
    if suffix.endswith(".gz"):  # read in blocks: its size is unknown until read
        with gzip.open(path, "wb") as fh:
            fh.write(content.encode())
    else:
        path.write_text(content)
    reader = TableReader(path=str(path), format=TableFormat.CSV, column_types={"id": "int64"})
    chunks = list(reader.chunks())
    assert [(list(c.columns), len(c)) for c in chunks] == [(["id", "name"], 0)]
    assert str(chunks[0]["id"].dtype) == "int64"  # typed as asked, like the rows it does not have
