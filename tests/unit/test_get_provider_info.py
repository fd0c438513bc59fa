from __future__ import annotations

import importlib
import importlib.metadata
import inspect

import airflow_provider_mlci
from airflow_provider_mlci.get_provider_info import get_provider_info


def test_package_name_matches_the_distribution():
    info = get_provider_info()
    dist = importlib.metadata.distribution("airflow-provider-mlci")
    assert info["package-name"] == dist.metadata["Name"] == "airflow-provider-mlci"
    assert info["versions"][0] == airflow_provider_mlci.__version__ == dist.version


def test_entry_point_is_registered():
    points = importlib.metadata.entry_points(group="apache_airflow_provider")
    ours = [ep for ep in points if ep.value.startswith("airflow_provider_mlci")]
    assert len(ours) == 1
    assert ours[0].load() is get_provider_info


def test_connection_type_points_at_a_hook_of_that_type():
    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == "mlci_dvc"
    module, _, name = conn["hook-class-name"].rpartition(".")
    hook_class = getattr(importlib.import_module(module), name)
    assert hook_class.conn_type == "mlci_dvc"
    assert hook_class.default_conn_name == "mlci_dvc_default"
    fields = conn["conn-fields"]
    assert fields["private_key"]["schema"]["format"] == "password"
    for key in ("dvc_remote", "dvc_remote_url", "aws_conn_id", "endpoint_url", "verify", "key_file"):
        assert key in fields
    assert {"schema", "port"} <= set(conn["ui-field-behaviour"]["hidden-fields"])


def test_listed_modules_import_and_define_what_their_section_lists():
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

    info = get_provider_info()
    kinds = {"hooks": BaseHook, "operators": BaseOperator, "sensors": BaseSensorOperator, "triggers": BaseTrigger}
    listed, empty = [], []
    for section, kind in kinds.items():
        for entry in info[section]:
            for module in entry["python-modules"]:
                loaded = importlib.import_module(module)
                assert loaded.__name__ == module
                listed.append(module)
                defined = [
                    value
                    for value in vars(loaded).values()
                    if inspect.isclass(value) and issubclass(value, kind) and value.__module__ == module
                ]
                if not defined:
                    empty.append(module)
    assert len(listed) == len(set(listed)) > 0
    # operators.dataset holds DatasetMixin, the reading shared by the data operators, and no operator
    assert empty == ["airflow_provider_mlci.operators.dataset"]


def test_cache_dir_setting_is_declared():
    option = get_provider_info()["config"]["mlci"]["options"]["cache_dir"]
    assert option["type"] == "string"
    assert option["default"] == ""
