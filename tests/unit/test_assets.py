"""The ``x-dvc`` and ``x-dvc-data`` Asset URI schemes, as Airflow itself resolves them."""

from __future__ import annotations

from urllib.parse import urlsplit

import pendulum
import pytest
from airflow.sdk import DAG, Asset

from airflow_provider_mlci.assets import create_asset, dvc_asset_uri, sanitize_uri
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.get_provider_info import get_provider_info
from tests.conftest import DEMO_PROJECT


def normal(uri: str) -> str:
    return sanitize_uri(urlsplit(uri)).geturl()


@pytest.mark.parametrize(
    ("written", "expected"),
    [
        ("x-dvc://demo/data/raw.csv", "x-dvc://demo/data/raw.csv"),
        ("X-DVC://Demo/data/raw.csv/", "x-dvc://demo/data/raw.csv"),
        ("x-dvc://demo//data/./prepared//", "x-dvc://demo/data/prepared"),
        ("x-dvc://demo/Models/Model.PKL", "x-dvc://demo/Models/Model.PKL"),  # paths keep their case
        (
            "x-dvc-data://mlci_dvc_default/data/raw.csv+data/eval.csv/",
            "x-dvc-data://mlci_dvc_default/data/raw.csv+data/eval.csv",
        ),
        ("x-dvc-data://Conn-1/./a//b", "x-dvc-data://conn-1/a/b"),
    ],
)
def test_the_normal_form(written, expected):
    assert normal(written) == expected
    assert normal(expected) == expected  # idempotent


@pytest.mark.parametrize(
    ("written", "reason"),
    [
        ("x-dvc:///data/raw.csv", "needs a namespace"),
        ("x-dvc://demo", "needs a path"),
        ("x-dvc://demo/", "needs a path"),
        ("x-dvc://demo/data/../../etc/passwd", "may not leave the repository"),
        ("x-dvc://user:secret@demo/data", "no user part"),
        ("x-dvc://demo:8080/data", "no port"),
        ("x-dvc://my%20project/data", "only letters"),
        ("x-dvc://demo/data?rev=main", "no query or fragment"),
        ("x-dvc://demo/data#top", "no query or fragment"),
        ("x-dvc-data://demo/a++b", "needs a path"),
        ("s3://bucket/key", "not an x-dvc or x-dvc-data URI"),
    ],
)
def test_what_is_not_a_valid_uri_is_refused_with_a_value_error(written, reason):
    with pytest.raises(ValueError, match=reason):
        normal(written)


def test_the_schemes_are_registered_with_their_handler_factory_and_converter():
    entries = {tuple(entry["schemes"]): entry for entry in get_provider_info()["asset-uris"]}
    assert set(entries) == {("x-dvc",), ("x-dvc-data",)}
    for entry in entries.values():
        assert entry["handler"] == "airflow_provider_mlci.assets.sanitize_uri"
        assert entry["to_openlineage_converter"] == "airflow_provider_mlci.assets.convert_asset_to_openlineage"
    assert entries["x-dvc",]["factory"] == "airflow_provider_mlci.assets.create_asset"


def test_airflow_resolves_our_handler_for_an_asset():
    # Airflow keeps a custom (x-) URI as written when the Asset is made, and applies the scheme's
    # registered handler for the normalised URI (what OpenLineage and lineage readers use).
    asset = Asset("x-dvc://Demo/data/raw.csv/")
    assert asset.uri == "x-dvc://Demo/data/raw.csv/"
    assert asset.normalized_uri == "x-dvc://demo/data/raw.csv"
    assert Asset("x-dvc-data://Watch/raw//").normalized_uri == "x-dvc-data://watch/raw"
    assert Asset("x-dvc://demo/../outside").normalized_uri is None  # the handler refused it


def test_airflow_finds_the_factory_and_the_converter():
    try:  # Airflow 3.2+: the task runtime's own providers manager
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as Manager
    except ImportError:
        from airflow.providers_manager import ProvidersManager as Manager

    manager = Manager()
    assert manager.asset_uri_handlers["x-dvc"] is sanitize_uri
    assert manager.asset_uri_handlers["x-dvc-data"] is sanitize_uri
    assert manager.asset_factories["x-dvc"] is create_asset
    asset = manager.asset_factories["x-dvc"](namespace="Fraud", path="models/model.pkl")
    assert (asset.uri, asset.name, asset.group) == ("x-dvc://fraud/models/model.pkl",) * 2 + ("dvc",)


def test_the_openlineage_converter_names_the_dataset_by_namespace_and_path():
    from airflow.providers.openlineage.utils.utils import translate_airflow_asset

    dataset = translate_airflow_asset(Asset("x-dvc://Fraud/models//model.pkl"), None)
    assert (dataset.namespace, dataset.name) == ("x-dvc://fraud", "models/model.pkl")


def test_the_provider_builds_uris_in_normal_form():
    assert dvc_asset_uri("Fraud", "/models/./model.pkl") == "x-dvc://fraud/models/model.pkl"
    with pytest.raises(ValueError, match="scheme="):
        dvc_asset_uri("fraud", "x", scheme="s3")
    from airflow_provider_mlci.sensors.dvc import DvcDataChangedSensor
    from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

    with DAG(dag_id="assets", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        DvcPipelineTaskGroup(group_id="pipeline", project_dir=DEMO_PROJECT, asset_namespace="Fraud")
        sensor = DvcDataChangedSensor(task_id="watch", targets=["./data//raw.csv"], dvc_conn_id="MLCI_Repo")
    (outlet,) = dag.get_task("pipeline.train").outlets
    assert outlet.uri == outlet.normalized_uri == "x-dvc://fraud/models/model.pkl"
    assert sensor.asset.uri == "x-dvc-data://mlci_repo/data/raw.csv"


def test_a_namespace_that_cannot_be_one_fails_at_parse_time_naming_the_argument():
    from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

    dag = DAG(dag_id="assets", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"))
    with pytest.raises(MlciConfigError, match="asset_namespace"):
        DvcPipelineTaskGroup(group_id="pipeline", project_dir=DEMO_PROJECT, asset_namespace="fraud model", dag=dag)
