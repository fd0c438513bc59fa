"""Every example DAG loads without import errors or cycles, as the dag-processor would load it."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import EXAMPLE_DAGS

pytestmark = pytest.mark.smoke  # also on every supported Airflow and Python (make smoke)


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    from airflow_provider_mlci.testing.airflow import dag_bag

    return dag_bag(EXAMPLE_DAGS, safe_mode=True)


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_example_file_defines_a_dag(dagbag):
    files = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    expected = {p.name for p in EXAMPLE_DAGS.glob("example_*.py")}
    assert expected
    assert files == expected


def test_no_cycles_and_every_dag_is_tagged(dagbag):
    for dag_id, dag in dagbag.dags.items():
        dag.check_cycle()
        assert "mlci" in dag.tags, dag_id
        assert dag.description, dag_id


def test_the_demo_project_is_kept_out_of_parsing(dagbag):
    ignore = (EXAMPLE_DAGS / ".airflowignore").read_text().split()
    assert "demo_project/" in ignore
    assert not any("demo_project" in path for path in dagbag.file_last_changed)
