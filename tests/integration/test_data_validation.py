"""The validation operators in real DAG runs (dag.test()) on a real DVC project: the example DAG,
failures named by column and check, the failure-case table in storage, drift against an earlier
revision, the no-silent-pass guard, and every bad input failing typed and named."""

from __future__ import annotations

import csv
import json
import textwrap
from urllib.parse import quote

import pyarrow.parquet as pq
import pytest

from tests.conftest import EXAMPLE_DAGS
from tests.helpers.airflow_records import xcom
from tests.helpers.log_lines import OPERATORS, error_lines, logged

DAG_TEMPLATE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.operators.validation import DataDriftCheckOperator, DataValidationOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        {task}
    """
)


def report_uri(tmp_path, dag_id: str, record) -> str:
    """Where a run of ``dag_id`` stores its validation report (all failure cases among it)."""
    return f"file://{tmp_path / 'reports'}/{dag_id}/{record.run_id.replace(':', '_')}/validate"


def failures(dataset: str, rows: int, counts: dict[str, int], examples: list[str], uri: str) -> str:
    """The message of a failed validation: per column and check how many rows failed, a few examples."""
    cases = sum(counts.values())
    return "\n".join(
        [
            f"{dataset}: {cases} failure case(s) in {rows} rows checked against schemas/raw.yaml:",
            *(f"  column {check}: {count} failure(s)" for check, count in counts.items()),
            *(f"  e.g. {example}" for example in examples),
            f"All failure cases: {uri}",
        ]
    )


@pytest.fixture
def project(dvc_project, dvc_connection, worker_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    return dvc_project


@pytest.fixture
def run_task(run_dag, capfd):
    def _run(dag_id: str, task: str):
        capfd.readouterr()
        record = run_dag(dag_id, source=DAG_TEMPLATE.format(dag_id=dag_id, task=task))
        return record, capfd.readouterr().out

    return _run


def rewrite_raw(project, change) -> str:
    """Apply ``change`` to each row of data/raw.csv, commit it with DVC, push; return the commit."""
    path = project.work / "data" / "raw.csv"
    with path.open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    fields = list(rows[0])
    rows = [change(index, dict(row)) for index, row in enumerate(rows)]
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    project.dvc("add", "--quiet", "data/raw.csv")
    return project.commit_and_push("Change the raw data")


@pytest.mark.smoke
def test_the_example_dag_validates_and_compares_the_data(run_dag, project, tmp_path):
    record = run_dag("example_data_validation", path=EXAMPLE_DAGS / "example_data_validation.py")
    assert record.state == "success", record.task_states
    checked = record.xcom["validate"]
    assert checked["valid"] is True
    assert checked["error_counts"] == {}
    assert checked["dataset"] == f"data/raw.csv@{project.head()[:12]}"
    assert checked["report_uri"].startswith(f"file://{tmp_path / 'reports'}")
    from pathlib import Path

    stored = json.loads((Path(checked["report_uri"].removeprefix("file://")) / "validation.json").read_text())
    assert stored["rows_checked"] == checked["rows_checked"] > 100
    assert xcom(record, "validate", "mlci_report_uri") == checked["report_uri"]
    # Airflow 3 resolves extra links on the worker and keeps them in XCom for the UI.
    link = xcom(record, "validate", "_link_MlciReportLink")
    assert link == f"/mlci/task-report/example_data_validation/{quote(record.run_id, safe='')}/validate?map_index=-1"
    comparison = record.xcom["drift"]
    assert comparison["drifted"] is False
    assert set(comparison["columns"]) == {"amount", "hour", "merchant_risk", "distance_km", "fraud"}
    assert record.xcom["summary"] == {"valid": True, "drifted": False}


def test_bad_rows_fail_naming_column_and_check_with_every_case_stored(run_task, project, tmp_path):
    def corrupt(index, row):
        if index % 10 == 0:
            row["hour"] = "25"
        if index == 3:
            row["merchant_risk"] = "not-a-number"
        return row

    sha = rewrite_raw(project, corrupt)
    task = (
        'DataValidationOperator(task_id="validate", dataset="data/raw.csv", schema="schemas/raw.yaml", '
        "max_failure_cases=5)"
    )
    record, out = run_task("mlci_validation_bad_rows", task)
    assert record.task_states == {"validate": "failed"}
    rows = len((project.work / "data" / "raw.csv").read_text().splitlines()) - 1
    message = failures(
        f"data/raw.csv@{sha[:12]}",
        rows,
        {"'merchant_risk', check dtype('float64')": 1, "'hour', check in_range(0, 23)": (rows + 9) // 10},
        ["'merchant_risk' dtype('float64') at row 3: 'not-a-number'"]
        + [f"'hour' in_range(0, 23) at row {row}: 25" for row in (0, 10, 20, 30)],
        report_uri(tmp_path, "mlci_validation_bad_rows", record),
    )
    assert error_lines(out, "DataValidationError") == [
        f"airflow.sdk.exceptions.AirflowFailException: DataValidationError: {message}"
    ]
    assert logged(out, "warning", message, VALIDATION_LOGGER) == 1
    table_files = list((tmp_path / "reports").rglob("failure_cases.parquet"))
    assert len(table_files) == 1
    table = pq.read_table(table_files[0]).to_pandas()
    hours = table[table["column"] == "hour"]
    assert len(hours) == (rows + 9) // 10
    assert set(hours["failure_case"]) == {"25"}
    assert sorted(hours["index"]) == list(range(0, rows, 10))
    assert table[table["column"] == "merchant_risk"]["index"].tolist() == [3]


def test_warn_mode_logs_and_succeeds_with_a_small_summary(run_task, project, tmp_path):
    sha = rewrite_raw(project, lambda index, row: {**row, "fraud": "7"})
    task = 'DataValidationOperator(task_id="validate", dataset="data/raw.csv", schema="schemas/raw.yaml", mode="warn")'
    record, out = run_task("mlci_validation_warn", task)
    assert record.task_states == {"validate": "success"}
    summary = record.xcom["validate"]
    assert summary["valid"] is False
    assert summary["error_counts"] == {"fraud": {"isin([0, 1])": summary["rows_checked"]}}
    assert len(summary["failure_cases"]) == 100
    assert len(json.dumps(summary)) < 30_000
    rows = summary["rows_checked"]
    message = failures(
        f"data/raw.csv@{sha[:12]}",
        rows,
        {"'fraud', check isin([0, 1])": rows},
        [f"'fraud' isin([0, 1]) at row {row}: 7" for row in range(5)],
        report_uri(tmp_path, "mlci_validation_warn", record),
    )
    assert logged(out, "warning", message, VALIDATION_LOGGER) == 1
    assert error_lines(out, "DataValidationError") == []


def test_a_worker_with_pandera_switched_off_still_validates(run_task, project, monkeypatch, tmp_path):
    from pandera.config import CONFIG, ValidationDepth

    monkeypatch.setattr(CONFIG, "validation_enabled", False)
    monkeypatch.setattr(CONFIG, "validation_depth", ValidationDepth.SCHEMA_ONLY)
    monkeypatch.setenv("PANDERA_VALIDATION_ENABLED", "False")
    sha = rewrite_raw(project, lambda index, row: {**row, "amount": "-1"} if index == 0 else row)
    task = 'DataValidationOperator(task_id="validate", dataset="data/raw.csv", schema="schemas/raw.yaml")'
    record, out = run_task("mlci_validation_pandera_off", task)
    assert record.task_states == {"validate": "failed"}
    message = failures(
        f"data/raw.csv@{sha[:12]}",
        len((project.work / "data" / "raw.csv").read_text().splitlines()) - 1,
        {"'amount', check greater_than_or_equal_to(0)": 1},
        ["'amount' greater_than_or_equal_to(0) at row 0: -1.0"],
        report_uri(tmp_path, "mlci_validation_pandera_off", record),
    )
    assert error_lines(out, "DataValidationError") == [
        f"airflow.sdk.exceptions.AirflowFailException: DataValidationError: {message}"
    ]


def test_drift_is_found_on_a_shifted_column_and_not_on_a_resample(run_task, project):
    before = project.head()
    task = (
        'DataDriftCheckOperator(task_id="drift", dataset="data/raw.csv", baseline_rev="{before}", '
        'columns=["amount", "hour", "merchant_risk", "distance_km"])'
    )
    # A resample of the same distribution: the generator with another seed.
    import subprocess
    import sys

    subprocess.run(
        [sys.executable, "src/generate.py", "data/raw.csv", "--rows", "600", "--seed", "7"],
        cwd=project.work,
        check=True,
    )
    project.dvc("add", "--quiet", "data/raw.csv")
    project.commit_and_push("New data from the same source")
    record, _ = run_task("mlci_drift_resample", task.format(before=before))
    assert record.task_states == {"drift": "success"}
    assert record.xcom["drift"]["drifted"] is False
    resampled = project.head()
    shifted = rewrite_raw(project, lambda index, row: {**row, "amount": str(round(float(row["amount"]) * 3 + 40, 2))})
    record, out = run_task("mlci_drift_shift", task.format(before=resampled))
    assert record.task_states == {"drift": "failed"}
    # Only 'amount' is named: the statistics are of fixed data (seeded generator, fixed rewrite).
    message = (
        f"data/raw.csv@{shifted[:12]} drifted from data/raw.csv@{resampled[:12]}: "
        "column 'amount' shifted: PSI 5.493 > 0.2, KS 0.707 > 0.1"
    )
    assert error_lines(out, "DataValidationError") == [
        f"airflow.sdk.exceptions.AirflowFailException: DataValidationError: {message}"
    ]
    assert logged(out, "warning", message, OPERATORS + "drift.DataDriftCheckOperator") == 1


VALIDATION_LOGGER = OPERATORS + "validation.DataValidationOperator"
#: The whole message each bad input fails with, by what it names; ``{where}``: repository and revision.
BAD_INPUT_MESSAGES = {
    "data/missing.csv": "No dataset data/missing.csv in {where}: 'data/missing.csv' does not exist as an output or a "
    "stage name in 'dvc.yaml' [in {where}]",
    "schemas/nope.yaml": "Schema file schemas/nope.yaml does not exist in the repository.",
    "schemas/broken.yaml": "Schema file schemas/broken.yaml does not parse as a pandera schema: while parsing a flow "
    "sequence",
    "no_such_module": "Schema 'no_such_module.schemas:RAW': module 'no_such_module.schemas' does not import: No module "
    "named 'no_such_module'",
    "data/raw.xlsx": "Cannot tell the format of data/raw.xlsx from its name: pass format= (one of csv, parquet, "
    "jsonl).",
    "avro": "Unknown format 'avro' for data/raw.csv: use one of csv, parquet, jsonl.",
    "/nonexistent": "No dataset file at file:///nonexistent/raw.csv.",
    "loud": "mode='loud': use 'fail' (raise on failures) or 'warn' (log and succeed).",
    "100 MiB": "A memory budget of 100 MiB leaves no room to read data in: allow at least 184 MiB.",
}


@pytest.mark.parametrize(
    ("task", "error", "named"),
    [
        ('dataset="data/missing.csv", schema="schemas/raw.yaml"', "DatasetNotFoundError", "data/missing.csv"),
        ('dataset="data/raw.csv", schema="schemas/nope.yaml"', "SchemaLoadError", "schemas/nope.yaml"),
        ('dataset="data/raw.csv", schema="schemas/broken.yaml"', "SchemaLoadError", "schemas/broken.yaml"),
        ('dataset="data/raw.csv", schema="no_such_module.schemas:RAW"', "SchemaLoadError", "no_such_module"),
        ('dataset="data/raw.xlsx", schema="schemas/raw.yaml"', "DatasetFormatError", "data/raw.xlsx"),
        ('dataset="data/raw.csv", schema="schemas/raw.yaml", format="avro"', "DatasetFormatError", "avro"),
        ('dataset="file:///nonexistent/raw.csv", schema="schemas/raw.yaml"', "DatasetNotFoundError", "/nonexistent"),
        ('dataset="data/raw.csv", schema="schemas/raw.yaml", mode="loud"', "MlciConfigError", "loud"),
        ('dataset="data/raw.csv", schema="schemas/raw.yaml", memory_budget_mb=100', "MlciConfigError", "100 MiB"),
    ],
)
def test_each_bad_input_fails_typed_and_named(run_task, project, task, error, named):
    (project.work / "schemas" / "broken.yaml").write_text("schema_type: dataframe\ncolumns: [unclosed\n")
    sha = project.commit_and_push("Add a broken schema", dvc_push=False)
    dag_id = "mlci_validation_bad_" + "".join(c for c in error.lower() if c.isalpha())
    record, out = run_task(dag_id, f'DataValidationOperator(task_id="validate", {task})')
    assert record.task_states == {"validate": "failed"}
    message = BAD_INPUT_MESSAGES[named].format(where=f"{project.remote} at HEAD ({sha[:12]})")
    assert named in message
    assert error_lines(out, error) == [f"airflow.sdk.exceptions.AirflowFailException: {error}: {message}"]


def test_a_truncated_parquet_file_fails_naming_it(run_task, project, tmp_path):
    import pandas as pd

    path = tmp_path / "raw.parquet"
    pd.read_csv(project.work / "data" / "raw.csv").to_parquet(path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    task = f'DataValidationOperator(task_id="validate", dataset="file://{path}", schema="schemas/raw.yaml")'
    record, out = run_task("mlci_validation_truncated", task)
    assert record.task_states == {"validate": "failed"}
    assert error_lines(out, "DatasetFormatError") == [
        f"airflow.sdk.exceptions.AirflowFailException: DatasetFormatError: Cannot read file://{path} as Parquet: "
        "Parquet magic bytes not found in footer. Either the file is corrupted or this is not a parquet file."
    ]


def test_a_parquet_dataset_on_s3_through_an_aws_connection(
    run_task, project, aws_moto_connection, moto_endpoint, s3_bucket, tmp_path
):
    import boto3
    import pandas as pd

    frame = pd.read_csv(project.work / "data" / "raw.csv")
    frame.loc[5, "distance_km"] = -3.0
    local = tmp_path / "raw.parquet"
    frame.to_parquet(local)
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.upload_file(str(local), s3_bucket, "landing/raw.parquet")
    task = (
        f'DataValidationOperator(task_id="validate", dataset="s3://{s3_bucket}/landing/raw.parquet", '
        'conn_id="aws_moto", schema="schemas/raw.yaml", mode="warn")'
    )
    record, _ = run_task("mlci_validation_s3", task)
    assert record.task_states == {"validate": "success"}
    summary = record.xcom["validate"]
    assert summary["dataset"] == f"s3://{s3_bucket}/landing/raw.parquet"
    assert summary["error_counts"] == {"distance_km": {"greater_than_or_equal_to(0)": 1}}
    assert summary["failure_cases"][0]["index"] == 5
