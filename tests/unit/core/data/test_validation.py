from __future__ import annotations

import contextlib
import gzip
import json
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pandera.config
import pandera.pandas as pa
import pytest

from airflow_provider_mlci.core.data.tabular import TableFormat, TableReader
from airflow_provider_mlci.core.data.validation import (
    ValidationOptions,
    ValidationReport,
    load_schema,
    schema_column_types,
    validate_table,
)
from airflow_provider_mlci.exceptions import DataValidationError, MlciConfigError, SchemaLoadError

SMALL = 2048  # bytes per chunk: a few dozen rows of the frames below
MEDIUM = 8192  # for the larger files: still a dozen chunks or more, at a quarter of the cost
WHOLE = 64 * 1024 * 1024


def reader_for(path: Path, schema: pa.DataFrameSchema, chunk_bytes: int = WHOLE) -> TableReader:
    return TableReader(
        path=str(path),
        format=TableFormat.of(str(path)),
        chunk_bytes=chunk_bytes,
        column_types=schema_column_types(schema),
    )


def validate(
    path: Path,
    schema: pa.DataFrameSchema,
    *,
    chunk_bytes: int = WHOLE,
    options: ValidationOptions | None = None,
) -> tuple[ValidationReport, pd.DataFrame]:
    """The report, and every failure case the sink was given."""
    sunk: list[pd.DataFrame] = []
    report = validate_table(
        reader_for(path, schema, chunk_bytes), schema, options=options, failure_sink=sunk.append, schema_label="s"
    )
    return report, (pd.concat(sunk, ignore_index=True) if sunk else pd.DataFrame(columns=["column", "check"]))


def where(cases: pd.DataFrame | list[dict]) -> set[tuple]:
    """(column, check, row) of each failure case; row is None for a whole-column or dataset failure."""
    frame = pd.DataFrame(cases)
    if frame.empty:
        return set()
    return {
        (None if pd.isna(c) else str(c), str(k), None if pd.isna(i) else int(i))
        for c, k, i in zip(frame["column"], frame["check"], frame["index"], strict=True)
    }


def pandera_failures(schema: pa.DataFrameSchema, frame: pd.DataFrame) -> pd.DataFrame:
    with pytest.raises(pa.errors.SchemaErrors) as caught:
        schema.validate(frame, lazy=True)
    return caught.value.failure_cases


def counts_of(cases: pd.DataFrame) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for (column, check), n in cases.groupby([cases["column"].fillna("(dataset)"), "check"]).size().items():
        out.setdefault(str(column), {})[str(check)] = int(n)
    return out


# -- load_schema ----------------------------------------------------------------------------------

SCHEMA_MODULE = """
import pandera.pandas as pa
from pandera.typing import Series

SCHEMA = pa.DataFrameSchema({"age": pa.Column("int64", pa.Check.ge(0))}, name="people")


class People(pa.DataFrameModel):
    age: Series[int] = pa.Field(ge=0, le=120)
    name: Series[str] = pa.Field(nullable=True)


class Namespace:
    INNER = SCHEMA


NOT_A_SCHEMA = {"age": "int64"}
"""


@pytest.fixture
def schema_module(tmp_path, monkeypatch) -> str:
    """The name of a module of schemas, importable from tmp_path."""
    name = f"mlci_test_schemas_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(SCHEMA_MODULE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name
    sys.modules.pop(name, None)


def test_import_path_to_a_dataframe_schema_loads_it(schema_module):
    schema = load_schema(f"{schema_module}:SCHEMA")
    assert isinstance(schema, pa.DataFrameSchema)
    assert schema.name == "people"
    assert list(schema.columns) == ["age"]


def test_import_path_to_a_nested_attribute_loads_it(schema_module):
    assert load_schema(f"{schema_module}:Namespace.INNER").name == "people"


def test_import_path_to_a_dataframe_model_loads_its_schema(schema_module):
    schema = load_schema(f"{schema_module}:People")
    assert isinstance(schema, pa.DataFrameSchema)
    assert set(schema.columns) == {"age", "name"}
    assert [c.name for c in schema.columns["age"].checks] == ["greater_than_or_equal_to", "less_than_or_equal_to"]
    assert schema.columns["name"].nullable


def test_schema_and_model_objects_are_taken_as_they_are(schema_module):
    module = __import__(schema_module)
    assert load_schema(module.SCHEMA) is module.SCHEMA
    assert set(load_schema(module.People).columns) == {"age", "name"}


def test_yaml_schema_file_relative_to_the_repository_loads(tmp_path):
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "people.yaml").write_text(
        textwrap.dedent(
            """
            schema_type: dataframe
            columns:
              age:
                dtype: int64
                nullable: false
                checks:
                  in_range: {min_value: 0, max_value: 120}
              color:
                dtype: str
                checks:
                  isin: {allowed_values: [red, green, blue]}
            strict: true
            """
        )
    )
    schema = load_schema("schemas/people.yaml", base_dir=tmp_path)
    assert set(schema.columns) == {"age", "color"}
    assert schema.strict is True
    assert str(schema.columns["age"].checks[0]) == "<Check in_range: in_range(0, 120)>"


def test_json_schema_file_by_absolute_path_loads(tmp_path):
    written = pa.DataFrameSchema({"x": pa.Column("float64", pa.Check.lt(1.0), nullable=True)})
    path = tmp_path / "x.json"
    path.write_text(written.to_json())
    schema = load_schema(str(path))
    assert list(schema.columns) == ["x"]
    assert str(schema.columns["x"].dtype) == "float64"
    assert schema.columns["x"].checks[0].name == "less_than"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("mlci_no_such_module_here:SCHEMA", r"'mlci_no_such_module_here:SCHEMA'.*does not import"),
        ("json:NO_SUCH_SCHEMA", r"'json:NO_SUCH_SCHEMA'.*has no attribute 'NO_SUCH_SCHEMA'"),
        ("json:dumps", r"'json:dumps' is a function, not a pandera DataFrameSchema"),
        ("schemas/people", r"'schemas/people' is neither an import path"),
        ("not a schema", r"'not a schema' is neither an import path"),
        ("../outside.yaml", r"'\.\./outside\.yaml' is not a path inside the repository"),
    ],
)
def test_a_schema_spec_that_names_nothing_usable_is_refused_naming_it(spec, message):
    with pytest.raises(SchemaLoadError, match=message):
        load_schema(spec)


def test_import_path_whose_module_raises_on_import_is_refused_naming_it(tmp_path, monkeypatch):
    name = f"mlci_broken_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text("raise RuntimeError('no database here')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(SchemaLoadError, match=rf"'{name}:SCHEMA'.*does not import: no database here"):
        load_schema(f"{name}:SCHEMA")


def test_import_path_to_something_that_is_no_schema_is_refused_naming_it(schema_module):
    with pytest.raises(SchemaLoadError, match=rf"'{schema_module}:NOT_A_SCHEMA' is a dict"):
        load_schema(f"{schema_module}:NOT_A_SCHEMA")


def test_an_object_that_is_no_schema_is_refused():
    with pytest.raises(SchemaLoadError, match="is a int, not a pandera"):
        load_schema(42)


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("broken.yaml", "columns: [unclosed\n"),
        ("unknown_dtype.yml", "schema_type: dataframe\ncolumns:\n  a:\n    dtype: no_such_type\n"),
        ("broken.json", '{"schema_type": "dataframe", "columns": {'),
    ],
)
def test_a_schema_file_that_does_not_parse_is_refused_naming_it(tmp_path, name, content):
    (tmp_path / name).write_text(content)
    with pytest.raises(SchemaLoadError, match=rf"Schema file {name} does not parse as a pandera schema"):
        load_schema(name, base_dir=tmp_path)


def test_a_missing_schema_file_is_refused_naming_it(tmp_path):
    with pytest.raises(SchemaLoadError, match=r"Schema file schemas/absent\.yaml does not exist in the repository"):
        load_schema("schemas/absent.yaml", base_dir=tmp_path)


def test_schema_load_error_is_a_config_error():
    with pytest.raises(MlciConfigError):
        load_schema("neither")


# -- each kind of check ---------------------------------------------------------------------------


CHECK_CASES = {
    "not_nullable": (
        pd.DataFrame({"a": [1.0, None, 3.0, None]}),
        pa.DataFrameSchema({"a": pa.Column("float64")}),
        {},
        {"a": {"not_nullable": 2}},
        {("a", "not_nullable", 1), ("a", "not_nullable", 3)},
    ),
    "in_range": (
        pd.DataFrame({"a": [5, -1, 121, 120]}),
        pa.DataFrameSchema({"a": pa.Column("int64", pa.Check.in_range(0, 120))}),
        {},
        {"a": {"in_range(0, 120)": 2}},
        {("a", "in_range(0, 120)", 1), ("a", "in_range(0, 120)", 2)},
    ),
    "ge_and_lt": (
        pd.DataFrame({"a": [0.5, -0.1, 1.0, 0.0]}),
        pa.DataFrameSchema({"a": pa.Column("float64", [pa.Check.ge(0), pa.Check.lt(1)])}),
        {},
        {"a": {"greater_than_or_equal_to(0)": 1, "less_than(1)": 1}},
        {("a", "greater_than_or_equal_to(0)", 1), ("a", "less_than(1)", 2)},
    ),
    "isin": (
        pd.DataFrame({"a": ["red", "pink", "blue", "teal"]}),
        pa.DataFrameSchema({"a": pa.Column("str", pa.Check.isin(["red", "green", "blue"]))}),
        {},
        {"a": {"isin(['red', 'green', 'blue'])": 2}},
        {("a", "isin(['red', 'green', 'blue'])", 1), ("a", "isin(['red', 'green', 'blue'])", 3)},
    ),
    "field_uniqueness": (
        pd.DataFrame({"a": [1, 2, 1, 3]}),
        pa.DataFrameSchema({"a": pa.Column("int64", unique=True)}),
        {},
        {"a": {"field_uniqueness": 2}},
        {("a", "field_uniqueness", 0), ("a", "field_uniqueness", 2)},
    ),
    "multiple_fields_uniqueness": (
        pd.DataFrame({"a": [1, 1, 1], "b": ["x", "y", "x"]}),
        pa.DataFrameSchema({"a": pa.Column("int64"), "b": pa.Column("str")}, unique=["a", "b"]),
        {},
        {"a": {"multiple_fields_uniqueness": 2}, "b": {"multiple_fields_uniqueness": 2}},
        {(c, "multiple_fields_uniqueness", i) for c in "ab" for i in (0, 2)},
    ),
    "column_in_schema": (
        pd.DataFrame({"a": [1, 2], "extra": [3, 4]}),
        pa.DataFrameSchema({"a": pa.Column("int64")}, strict=True),
        {},
        {"(dataset)": {"column_in_schema": 1}},
        {(None, "column_in_schema", None)},
    ),
    "column_in_dataframe": (
        pd.DataFrame({"a": [1, 2]}),
        pa.DataFrameSchema({"a": pa.Column("int64"), "gone": pa.Column("int64")}),
        {},
        {"(dataset)": {"column_in_dataframe": 1}},
        {(None, "column_in_dataframe", None)},
    ),
    "min_rows": (
        pd.DataFrame({"a": [1, 2]}),
        pa.DataFrameSchema({"a": pa.Column("int64")}),
        {"min_rows": 3},
        {"(dataset)": {"row_count >= 3": 1}},
        {(None, "row_count >= 3", None)},
    ),
    "max_rows": (
        pd.DataFrame({"a": [1, 2]}),
        pa.DataFrameSchema({"a": pa.Column("int64")}),
        {"max_rows": 1},
        {"(dataset)": {"row_count <= 1": 1}},
        {(None, "row_count <= 1", None)},
    ),
}


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
@pytest.mark.parametrize("case", list(CHECK_CASES))
def test_each_check_that_fails_is_named_with_its_column_in_counts_and_cases(tmp_path, case, suffix):
    frame, schema, options, counts, cases = CHECK_CASES[case]
    path = tmp_path / f"data.{suffix}"
    frame.to_csv(path, index=False) if suffix == "csv" else frame.to_parquet(path)
    report, sunk = validate(path, schema, options=ValidationOptions(**options))
    assert not report.valid
    assert report.error_counts == counts
    assert where(report.failure_cases) == cases
    assert where(sunk) == cases
    assert report.failure_cases_total == len(sunk) == sum(n for c in counts.values() for n in c.values())
    assert report.rows_checked == len(frame)


def test_parquet_column_of_another_dtype_is_one_failure_of_the_whole_column(tmp_path):
    path = tmp_path / "t.parquet"
    pd.DataFrame({"a": [1.5, 2.5, 3.5], "b": [1, 2, 3]}).to_parquet(path)
    schema = pa.DataFrameSchema({"a": pa.Column("int64"), "b": pa.Column("int64")})
    report, sunk = validate(path, schema)
    assert report.error_counts == {"a": {"dtype('int64')": 1}}
    assert report.failure_cases == [
        {
            "schema_context": "Column",
            "column": "a",
            "check": "dtype('int64')",
            "check_number": None,
            "failure_case": "float64",
            "index": None,
        }
    ]
    assert len(sunk) == 1


def test_csv_value_that_is_no_number_of_the_declared_type_is_a_dtype_failure_at_its_row(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text("age\n5\n1.5\n7\nabc\n1e30\n\n3\n")
    schema = pa.DataFrameSchema({"age": pa.Column("int64", pa.Check.isin([1, 3, 5, 7]), nullable=True)})
    report, _ = validate(path, schema)
    # 1.5 must not be read as 1 (nor 1e30 wrap around): each is reported, not silently passed.
    assert report.error_counts == {"age": {"dtype('int64')": 3}}
    assert {(c["failure_case"], c["index"]) for c in report.failure_cases} == {("1.5", 1), ("abc", 3), ("1e30", 4)}


def test_a_valid_file_reports_valid_with_no_failures(tmp_path):
    path = tmp_path / "ok.csv"
    pd.DataFrame({"a": range(100), "b": ["red"] * 100}).to_csv(path, index=False)
    schema = pa.DataFrameSchema(
        {"a": pa.Column("int64", pa.Check.ge(0), unique=True), "b": pa.Column("str", pa.Check.isin(["red"]))},
        strict=True,
    )
    report, sunk = validate(path, schema, chunk_bytes=SMALL, options=ValidationOptions(min_rows=100, max_rows=100))
    assert report.valid
    assert report.error_counts == {}
    assert report.failure_cases_total == 0
    assert sunk.empty
    assert report.rows_checked == 100
    assert "100 rows valid" in report.describe()


# -- chunked against whole -----------------------------------------------------------------------


def _rich_dataset(tmp_path: Path) -> tuple[Path, pa.DataFrameSchema]:
    """3,000 rows failing every kind of check, some failures in the first chunk, some far later."""
    rows = 3000
    rng = np.random.default_rng(7)
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "key": [f"k{i}" for i in range(rows)],
            "age": rng.integers(0, 100, rows).astype(str).astype(object),
            "score": rng.random(rows),
            "color": rng.choice(["red", "green", "blue"], rows),
            "grp": rng.integers(0, 1_000_000, rows),
            "extra": 1,
        }
    )
    frame.loc[[2, 2500], "age"] = ["abc", "x1"]  # no int64: text fallback in the first and a later chunk
    frame.loc[[5, 1500, 2900], "age"] = ["-3", "150", "121"]
    frame.loc[[10, 1700], "score"] = np.nan
    frame.loc[[11, 2700], "score"] = [1.0, -0.5]
    frame.loc[[20, 1800], "color"] = "purple"
    frame.loc[[2999], "id"] = 3  # a duplicate far from its first occurrence
    frame.loc[[2998], "key"] = "k1"
    frame.loc[[100, 2100], "grp"] = 42  # (key, grp) duplicates need key equal too: none from these
    frame.loc[[2997], ["key", "grp"]] = ["k7", frame.loc[7, "grp"]]  # ...but this one is (and repeats k7)
    path = tmp_path / "rich.csv"
    frame.to_csv(path, index=False)
    schema = pa.DataFrameSchema(
        {
            "id": pa.Column("int64", unique=True),
            "key": pa.Column("str", unique=True),
            "age": pa.Column("int64", pa.Check.in_range(0, 120)),
            "score": pa.Column("float64", [pa.Check.ge(0), pa.Check.lt(1)]),
            "color": pa.Column("str", pa.Check.isin(["red", "green", "blue"])),
            "grp": pa.Column("int64"),
            "missing": pa.Column("int64"),
        },
        strict=True,
        unique=["key", "grp"],
    )
    return path, schema


def test_chunked_validation_finds_exactly_what_whole_file_validation_finds(tmp_path):
    path, schema = _rich_dataset(tmp_path)
    options = ValidationOptions(min_rows=5000)
    whole, whole_cases = validate(path, schema, options=options)
    chunked, chunked_cases = validate(path, schema, chunk_bytes=MEDIUM, options=options)
    assert whole.chunks == 1
    assert chunked.chunks > 10
    assert chunked.error_counts == whole.error_counts
    assert chunked.failure_cases_total == whole.failure_cases_total == len(whole_cases) == len(chunked_cases)
    assert where(chunked_cases) == where(whole_cases)
    assert whole.error_counts == {
        "(dataset)": {"column_in_schema": 1, "column_in_dataframe": 1, "row_count >= 5000": 1},
        "age": {"dtype('int64')": 2, "in_range(0, 120)": 3},
        "score": {"not_nullable": 2, "greater_than_or_equal_to(0)": 1, "less_than(1)": 1},
        "color": {"isin(['red', 'green', 'blue'])": 2},
        "id": {"field_uniqueness": 2},
        "key": {"field_uniqueness": 4, "multiple_fields_uniqueness": 2},
        "grp": {"multiple_fields_uniqueness": 2},
    }
    assert {(c, k, i) for c, k, i in where(chunked_cases) if k in ("field_uniqueness", "dtype('int64')")} == {
        ("age", "dtype('int64')", 2),
        ("age", "dtype('int64')", 2500),
        ("id", "field_uniqueness", 3),
        ("id", "field_uniqueness", 2999),
        ("key", "field_uniqueness", 1),
        ("key", "field_uniqueness", 2998),
        ("key", "field_uniqueness", 7),
        ("key", "field_uniqueness", 2997),
    }
    values = {(c, i): v for c, i, v in chunked_cases[["column", "index", "failure_case"]].itertuples(index=False)}
    assert values[("color", 1800)] == "purple"
    assert values[("age", 2500)] == "x1"
    assert float(values[("score", 2700)]) == -0.5
    assert float(values[("age", 2900)]) == 121
    assert values[("key", 2998)] == "k1"


def test_whole_and_chunked_validation_count_what_plain_pandera_counts(tmp_path):
    # No value here fails to parse as its column's type, so pandas.read_csv reads the same types.
    rows = 2500
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "id": np.arange(rows),
            "age": rng.integers(0, 100, rows),
            "score": rng.random(rows),
            "color": rng.choice(["red", "green", "blue"], rows),
            "b": rng.integers(0, 1_000_000, rows),
            "extra": 0,
        }
    )
    frame.loc[[5, 1500, 2400], "age"] = [-3, 150, 121]
    frame.loc[[10, 1700], "score"] = np.nan
    frame.loc[[11, 2300], "score"] = [1.0, -0.5]
    frame.loc[[20, 1800], "color"] = "purple"
    frame.loc[[2499, 2000], "id"] = [3, 1000]
    frame.loc[2200, ["age", "b"]] = frame.loc[0, ["age", "b"]]  # the one repeated (age, b) pair
    path = tmp_path / "plain.csv"
    frame.to_csv(path, index=False)
    schema = pa.DataFrameSchema(
        {
            "id": pa.Column("int64", unique=True),
            "age": pa.Column("int64", pa.Check.in_range(0, 120)),
            "score": pa.Column("float64", [pa.Check.ge(0), pa.Check.lt(1)]),
            "color": pa.Column("str", pa.Check.isin(["red", "green", "blue"])),
            "b": pa.Column("int64"),
            "gone": pa.Column("int64"),
        },
        strict=True,
        unique=["age", "b"],
    )
    expected = pandera_failures(schema, pd.read_csv(path))
    whole, whole_cases = validate(path, schema)
    chunked, chunked_cases = validate(path, schema, chunk_bytes=MEDIUM)
    assert chunked.chunks > 10
    assert whole.error_counts == chunked.error_counts == counts_of(expected)
    assert where(whole_cases) == where(chunked_cases) == where(expected)
    assert whole.error_counts["id"] == {"field_uniqueness": 4}
    assert whole.error_counts["b"] == {"multiple_fields_uniqueness": 2}
    assert {i for c, k, i in where(chunked_cases) if k == "multiple_fields_uniqueness"} == {0, 2200}


def test_duplicates_in_different_chunks_are_found_by_value_and_reported_as_pandera_would(tmp_path):
    rows = 1500
    frame = pd.DataFrame({"id": np.arange(rows), "name": [f"name-{i}" for i in range(rows)]})
    frame.loc[1400, ["id", "name"]] = [7, "name-9"]
    path = tmp_path / "dup.csv"
    frame.to_csv(path, index=False)
    all_dups = pa.DataFrameSchema({"id": pa.Column("int64", unique=True), "name": pa.Column("str", unique=True)})
    report, _ = validate(path, all_dups, chunk_bytes=SMALL)
    assert report.chunks > 5
    assert where(report.failure_cases) == {
        ("id", "field_uniqueness", 7),
        ("id", "field_uniqueness", 1400),
        ("name", "field_uniqueness", 9),
        ("name", "field_uniqueness", 1400),
    }
    later_only = pa.DataFrameSchema(
        {"id": pa.Column("int64", unique=True, report_duplicates="exclude_first"), "name": pa.Column("str")}
    )
    report, _ = validate(path, later_only, chunk_bytes=SMALL)
    assert where(report.failure_cases) == {("id", "field_uniqueness", 1400)}


def test_duplicates_are_found_when_a_chunk_reads_the_integer_column_as_float(tmp_path):
    # A null makes the chunk holding row 950 read "id" as float64; 5 there must still equal 5.
    ids = [str(i) for i in range(1000)]
    ids[900], ids[950] = "5", ""
    path = tmp_path / "ids.csv"
    pd.DataFrame({"id": ids, "x": range(1000)}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"id": pa.Column("int64", unique=True, nullable=True), "x": pa.Column("int64")})
    whole, _ = validate(path, schema)
    chunked, _ = validate(path, schema, chunk_bytes=SMALL)
    assert chunked.chunks > 3
    unique_cases = {(c, k, i) for c, k, i in where(chunked.failure_cases) if k == "field_uniqueness"}
    assert unique_cases == {("id", "field_uniqueness", 5), ("id", "field_uniqueness", 900)}
    assert chunked.error_counts == whole.error_counts
    expected = pandera_failures(schema, pd.read_csv(path))
    assert counts_of(expected)["id"]["field_uniqueness"] == 2


def test_a_column_the_schema_gives_no_type_is_checked_on_its_values_in_every_chunk(tmp_path):
    # "v" looks like integers in the first chunk and holds 1.5 later; "notes" is not in the schema.
    rows = 1000
    v = [str(i % 3 + 1) for i in range(rows)]
    v[900] = "1.5"
    notes = [str(i) for i in range(rows)]
    notes[950] = "hello"
    path = tmp_path / "t.csv"
    pd.DataFrame({"id": range(rows), "v": v, "notes": notes}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"id": pa.Column("int64"), "v": pa.Column(checks=pa.Check.isin([1, 2, 3]))})
    whole, _ = validate(path, schema)
    chunked, _ = validate(path, schema, chunk_bytes=SMALL)
    assert chunked.chunks > 3
    assert whole.error_counts == chunked.error_counts == {"v": {"isin([1, 2, 3])": 1}}
    assert where(chunked.failure_cases) == {("v", "isin([1, 2, 3])", 900)}
    assert chunked.failure_cases[0]["failure_case"] == 1.5


def test_unique_nullable_integer_column_from_parquet_is_checked(tmp_path):
    path = tmp_path / "ids.parquet"
    pd.DataFrame({"id": pd.array([1, 2, None, 2, None], dtype="Int64")}).to_parquet(path)
    schema = pa.DataFrameSchema({"id": pa.Column("Int64", unique=True, nullable=True)})
    report, _ = validate(path, schema)
    assert report.error_counts == {"id": {"field_uniqueness": 4}}
    assert {c["index"] for c in report.failure_cases} == {1, 2, 3, 4}


def test_dataset_wide_checks_run_per_chunk_with_a_warning(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": range(1000)}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"a": pa.Column("int64")}, checks=[pa.Check(lambda df: len(df) > 0, name="nonempty")])
    whole, _ = validate(path, schema)
    chunked, _ = validate(path, schema, chunk_bytes=SMALL)
    assert whole.valid
    assert whole.warnings == []
    assert chunked.valid
    assert len(chunked.warnings) == 1
    assert "nonempty" in chunked.warnings[0]


# -- the summary ----------------------------------------------------------------------------------


def test_summary_carries_at_most_max_failure_cases_while_the_total_and_the_sink_carry_all(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [-1] * 500 + [1] * 500}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"a": pa.Column("int64", pa.Check.ge(0))})
    for chunk_bytes in (WHOLE, SMALL):
        report, sunk = validate(path, schema, chunk_bytes=chunk_bytes, options=ValidationOptions(max_failure_cases=10))
        assert len(report.failure_cases) == 10
        assert [c["index"] for c in report.failure_cases] == list(range(10))
        assert report.failure_cases_total == 500
        assert report.error_counts == {"a": {"greater_than_or_equal_to(0)": 500}}
        assert len(sunk) == 500
        assert sorted(sunk["index"].tolist()) == list(range(500))


def test_summary_of_a_column_failing_on_every_one_of_200000_rows_is_small_strict_json(tmp_path):
    rows = 200_000
    x = np.full(rows, -1.5)
    x[:50] = -np.inf  # failure values that JSON cannot carry as numbers
    y = np.arange(rows, dtype=np.float64)
    y[::1000] = np.nan
    path = tmp_path / "big.csv"
    pd.DataFrame({"x": x, "y": y}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"x": pa.Column("float64", pa.Check.ge(0)), "y": pa.Column("float64")})
    sunk_rows = []
    report = validate_table(
        reader_for(path, schema, chunk_bytes=1024 * 1024),
        schema,
        options=ValidationOptions(max_failure_cases=100),
        failure_sink=lambda cases: sunk_rows.append(len(cases)),
    )
    assert report.chunks > 1
    assert report.error_counts == {"x": {"greater_than_or_equal_to(0)": rows}, "y": {"not_nullable": 200}}
    assert report.failure_cases_total == rows + 200 == sum(sunk_rows)
    text = json.dumps(report.to_json(), allow_nan=False)
    assert len(text.encode()) < 50_000
    summary = json.loads(text)
    assert summary["valid"] is False
    assert len(summary["failure_cases"]) == 100
    assert summary["failure_cases"][0] == {
        "schema_context": "Column",
        "column": "x",
        "check": "greater_than_or_equal_to(0)",
        "check_number": 0,
        "failure_case": None,
        "index": 0,
    }
    assert "column 'x', check greater_than_or_equal_to(0): 200000 failure(s)" in report.describe()


def test_failure_sink_gets_one_type_per_column(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [-1, 2, -3], "b": ["x", "y", "x"], "extra": 0}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"a": pa.Column("int64", pa.Check.ge(0)), "b": pa.Column("str", unique=True)})
    report, sunk = validate(path, schema)
    assert len(sunk) == report.failure_cases_total == 4
    assert sunk["failure_case"].tolist() == ["-1", "-3", "x", "x"]
    assert str(sunk["index"].dtype) == "Int64"
    assert str(sunk["check_number"].dtype) == "Int64"


# -- sampling -------------------------------------------------------------------------------------


def test_fractional_sampling_checks_about_that_share_of_each_chunk_and_is_repeatable(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [-1] * 2000}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"a": pa.Column("int64", pa.Check.ge(0))})

    def run(seed: int) -> ValidationReport:
        options = ValidationOptions(sample=0.1, seed=seed, max_failure_cases=1000)
        return validate(path, schema, chunk_bytes=SMALL, options=options)[0]

    first, again, other = run(1), run(1), run(2)
    assert 150 <= first.rows_checked <= 250
    assert first.error_counts == {"a": {"greater_than_or_equal_to(0)": first.rows_checked}}
    assert first.sampled == "10% of the rows of each chunk (seed 1)"
    rows = [c["index"] for c in first.failure_cases]
    assert rows == sorted(rows)
    assert max(rows) > 1500, "rows are drawn from every chunk"
    assert rows == [c["index"] for c in again.failure_cases]
    assert rows != [c["index"] for c in other.failure_cases]


def test_sampling_the_first_rows_checks_exactly_those_across_chunks(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": [-1] * 2000}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"a": pa.Column("int64", pa.Check.ge(0))})
    report, sunk = validate(path, schema, chunk_bytes=SMALL, options=ValidationOptions(sample=700))
    assert report.rows_checked == 700
    assert report.chunks > 1
    assert report.sampled == "the first 700 rows"
    assert sorted(sunk["index"].tolist()) == list(range(700))


def test_row_bounds_apply_to_the_dataset_when_sampling(tmp_path):
    path = tmp_path / "t.csv"
    pd.DataFrame({"a": range(1000)}).to_csv(path, index=False)
    schema = pa.DataFrameSchema({"a": pa.Column("int64")})
    report, _ = validate(path, schema, options=ValidationOptions(sample=0.1, min_rows=500))
    assert report.valid
    assert report.rows_total == 1000
    assert report.rows_checked == 100
    report, _ = validate(path, schema, options=ValidationOptions(sample=50, max_rows=999))
    assert report.rows_checked == 50
    assert report.error_counts == {"(dataset)": {"row_count <= 999": 1}}


@pytest.mark.parametrize(
    "options",
    [
        {"max_failure_cases": -1},
        {"sample": 0},
        {"sample": 1.5},
        {"sample": -3},
        {"sample": float("nan")},
        {"min_rows": -1},
        {"max_rows": -5},
    ],
)
def test_bad_validation_options_are_refused(options):
    with pytest.raises(MlciConfigError):
        ValidationOptions(**options)


# -- the no-silent-pass guard -----------------------------------------------------------------------


@pytest.fixture
def pandera_switched_off():
    """pandera's global settings as a worker with PANDERA_VALIDATION_ENABLED=False and
    PANDERA_VALIDATION_DEPTH=SCHEMA_ONLY has them (the environment is read only on import)."""
    config = pandera.config.CONFIG
    saved = (config.validation_enabled, config.validation_depth)
    pandera.config.set_config(validation_enabled=False, validation_depth="SCHEMA_ONLY")
    pandera.config.reset_config_context()
    try:
        yield
    finally:
        config.validation_enabled, config.validation_depth = saved
        pandera.config.reset_config_context()


def _failing_file(tmp_path: Path) -> tuple[Path, pa.DataFrameSchema]:
    path = tmp_path / "bad.csv"
    pd.DataFrame({"x": [1, -1, 2, -2]}).to_csv(path, index=False)
    return path, pa.DataFrameSchema({"x": pa.Column("int64", pa.Check.ge(0))})


def test_validation_reports_failures_when_pandera_is_switched_off_on_the_worker(tmp_path, pandera_switched_off):
    path, schema = _failing_file(tmp_path)
    schema.validate(pd.read_csv(path), lazy=True)  # plain pandera passes the bad data silently
    report, _ = validate(path, schema)
    assert not report.valid
    assert where(report.failure_cases) == {
        ("x", "greater_than_or_equal_to(0)", 1),
        ("x", "greater_than_or_equal_to(0)", 3),
    }
    assert not pandera.config.get_config_context().validation_enabled, "the override ends with the validation"


def test_validation_reports_failures_when_the_worker_environment_switches_pandera_off(tmp_path):
    path, _ = _failing_file(tmp_path)
    script = textwrap.dedent(
        f"""
        import json, pandas as pd, pandera.pandas as pa
        from airflow_provider_mlci.core.data.tabular import TableFormat, TableReader
        from airflow_provider_mlci.core.data.validation import validate_table

        schema = pa.DataFrameSchema({{"x": pa.Column("int64", pa.Check.ge(0))}})
        schema.validate(pd.read_csv({str(path)!r}), lazy=True)  # would raise if pandera validated
        report = validate_table(TableReader(path={str(path)!r}, format=TableFormat.CSV), schema)
        print(json.dumps(report.error_counts))
        """
    )
    env = {"PANDERA_VALIDATION_ENABLED": "False", "PANDERA_VALIDATION_DEPTH": "SCHEMA_ONLY", "PATH": ""}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == {"x": {"greater_than_or_equal_to(0)": 2}}


def test_validation_refuses_to_report_when_pandera_cannot_be_switched_on(tmp_path, pandera_switched_off, monkeypatch):
    # A config_context that changes nothing simulates a pandera that ignores the override.
    monkeypatch.setattr(pandera.config, "config_context", lambda **_: contextlib.nullcontext())
    monkeypatch.setenv("PANDERA_VALIDATION_ENABLED", "False")
    path, schema = _failing_file(tmp_path)
    sunk: list[pd.DataFrame] = []
    with pytest.raises(DataValidationError, match=r"pandera does not validate data.*PANDERA_VALIDATION_ENABLED"):
        validate_table(reader_for(path, schema), schema, failure_sink=sunk.append)
    assert sunk == [], "nothing is reported"


# -- empty datasets -------------------------------------------------------------------------------

#: Columns whose types a CSV header alone cannot show (read as text, they would fail as dtypes).
UNTYPED = pa.DataFrameSchema({"when": pa.Column("datetime64[ns]"), "kind": pa.Column("category")})


@pytest.mark.parametrize("name", ["header-only.csv", "header-only.csv.gz"])
@pytest.mark.parametrize("content", ["when,kind\n", "when,kind"], ids=["newline", "no-newline"])
def test_a_csv_with_a_header_and_no_rows_fails_saying_so_naming_the_file_not_with_dtype_failures(
    tmp_path, name, content
):
    path = tmp_path / name
    if name.endswith(".gz"):
        with gzip.open(path, "wb") as fh:
            fh.write(content.encode())
    else:
        path.write_text(content)
    report, sunk = validate(path, UNTYPED)
    assert not report.valid
    assert (report.empty, report.rows_total) == ("a header but 0 rows", 0)
    assert report.error_counts == {"(dataset)": {"row_count >= 1": 1}}
    assert where(sunk) == {(None, "row_count >= 1", None)}
    message = report.describe()
    assert message.startswith(f"{path} has a header but 0 rows: an empty dataset fails (min_rows=0 allows one).")
    assert "dtype" not in message


@pytest.mark.parametrize("suffix", [".parquet", ".jsonl"])
def test_a_parquet_or_json_lines_file_of_no_rows_fails_saying_it_has_0_rows(tmp_path, suffix):
    path = tmp_path / f"none{suffix}"
    if suffix == ".parquet":
        pd.DataFrame({"a": pd.Series([], dtype="int64")}).to_parquet(path)
    else:
        path.write_text("")
    report, _ = validate(path, pa.DataFrameSchema({"a": pa.Column("int64")}))
    assert (report.valid, report.empty, report.error_counts) == (False, "0 rows", {"(dataset)": {"row_count >= 1": 1}})
    assert report.describe().startswith(f"{path} has 0 rows")


def test_min_rows_0_allows_an_empty_dataset_and_min_rows_above_0_names_its_bound(tmp_path):
    path = tmp_path / "header-only.csv"
    path.write_text("a,b\n")
    schema = pa.DataFrameSchema({"a": pa.Column("int64"), "b": pa.Column(str)})
    allowed, _ = validate(path, schema, options=ValidationOptions(min_rows=0))
    assert (allowed.valid, allowed.empty, allowed.rows_total) == (True, None, 0)
    bounded, _ = validate(path, schema, options=ValidationOptions(min_rows=5))
    assert (bounded.empty, bounded.error_counts) == ("a header but 0 rows", {"(dataset)": {"row_count >= 5": 1}})
