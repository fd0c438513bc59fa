"""Arguments of the validation operators: stored as given, refused before any work when they cannot work."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, AirflowSkipException

from airflow_provider_mlci.operators.validation import DataDriftCheckOperator, DataValidationOperator


def test_constructors_only_store_their_arguments():
    op = DataValidationOperator(
        task_id="v", dataset="data/raw.csv", schema="pkg.missing:Schema", rev="{{ params.rev }}"
    )
    assert (op.dataset, op.schema, op.rev, op.mode) == (
        "data/raw.csv",
        "pkg.missing:Schema",
        "{{ params.rev }}",
        "fail",
    )
    assert set(op.template_fields) >= {"dataset", "schema", "rev"}
    drift = DataDriftCheckOperator(task_id="d", dataset="data/raw.csv", baseline_rev="main")
    assert drift.psi == 0.2
    assert drift.ks == 0.1


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"dataset": "s3://bucket/raw.csv"}, "a URL has no revisions"),
        ({"dataset": "data/raw.csv"}, "give baseline_rev or baseline_dataset"),
        ({"dataset": "data/raw.csv", "baseline_rev": "main", "psi": 0}, "thresholds must be positive"),
        ({"dataset": "data/raw.csv", "baseline_rev": "main", "mode": "quiet"}, "quiet"),
        ({"dataset": "data/raw.xls", "baseline_rev": "main"}, "data/raw.xls"),
    ],
)
def test_drift_arguments_that_cannot_work_fail_before_reading_anything(kwargs, named):
    op = DataDriftCheckOperator(task_id="d", dvc_conn_id="no_such_connection", **kwargs)
    with pytest.raises(AirflowFailException, match=named):
        op.execute({})


def test_validation_with_both_chunk_bytes_and_a_memory_budget_is_refused():
    op = DataValidationOperator(
        task_id="v", dataset="data/raw.csv", schema="schemas/raw.yaml", chunk_bytes=2**20, memory_budget_mb=1024
    )
    with pytest.raises(AirflowFailException, match="not both"):
        op.execute({})


def test_drift_without_a_baseline_revision_is_skipped_when_asked_before_reading_anything():
    # No such connection: any attempt to reach the repository would fail, not skip.
    op = DataDriftCheckOperator(
        task_id="d",
        dataset="data/raw.csv",
        baseline_rev="",
        skip_without_baseline=True,
        dvc_conn_id="no_such_connection",
    )
    with pytest.raises(AirflowSkipException, match=r"No baseline revision to compare data/raw\.csv with"):
        op.execute({})


def test_drift_without_a_baseline_revision_still_fails_without_the_flag_or_checks_a_baseline_dataset():
    op = DataDriftCheckOperator(task_id="d", dataset="data/raw.csv", baseline_rev="", dvc_conn_id="no_such_connection")
    assert op.skip_without_baseline is False
    with pytest.raises(AirflowFailException, match="give baseline_rev or baseline_dataset"):
        op.execute({})
    # A baseline dataset is a baseline: the flag does not skip, the arguments are checked as usual.
    op = DataDriftCheckOperator(
        task_id="d",
        dataset="data/raw.xls",
        baseline_dataset="data/old.csv",
        baseline_rev="",
        skip_without_baseline=True,
        dvc_conn_id="no_such_connection",
    )
    with pytest.raises(AirflowFailException, match=r"data/raw\.xls"):
        op.execute({})


def test_a_csv_with_a_header_and_no_rows_fails_the_task_with_a_validation_error_naming_the_file(tmp_path):
    import pandera.pandas as pa

    from airflow_provider_mlci.exceptions import DataValidationError
    from tests.helpers.task_instance import TaskInstanceStandIn

    path = tmp_path / "header-only.csv"
    path.write_text("when,kind\n")
    schema = pa.DataFrameSchema({"when": pa.Column("datetime64[ns]"), "kind": pa.Column(str)})
    op = DataValidationOperator(
        task_id="validate", dataset=f"file://{path}", schema=schema, report_dir=f"file://{tmp_path / 'reports'}"
    )
    with pytest.raises(AirflowFailException) as caught:
        op.execute({"ti": TaskInstanceStandIn("validate", dag_id="validation")})
    assert isinstance(caught.value.__cause__, DataValidationError)  # deterministic: not retried
    assert str(caught.value).startswith(
        f"DataValidationError: file://{path} has a header but 0 rows: an empty dataset fails (min_rows=0 allows one)."
    )
    assert "dtype" not in str(caught.value)
