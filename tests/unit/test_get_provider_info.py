from __future__ import annotations

import importlib
import importlib.metadata

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


def test_listed_modules_import():
    info = get_provider_info()
    for section in ("hooks", "operators", "sensors", "triggers"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)


def test_cache_dir_setting_is_declared():
    option = get_provider_info()["config"]["mlci"]["options"]["cache_dir"]
    assert option["type"] == "string"
    assert option["default"] == ""
