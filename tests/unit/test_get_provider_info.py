from __future__ import annotations

import importlib
import importlib.metadata
import inspect
from pathlib import Path

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


def _kinds() -> dict[str, type]:
    from airflow.sdk import BaseHook, BaseOperator, BaseSensorOperator
    from airflow.triggers.base import BaseTrigger

    return {"hooks": BaseHook, "operators": BaseOperator, "sensors": BaseSensorOperator, "triggers": BaseTrigger}


def _defines(module: str, kind: type) -> bool:
    """Whether ``module`` defines (not only imports) a class of ``kind``."""
    loaded = importlib.import_module(module)
    assert loaded.__name__ == module
    return any(
        inspect.isclass(value) and issubclass(value, kind) and value.__module__ == module
        for value in vars(loaded).values()
    )


def test_listed_modules_import_and_define_what_their_section_lists():
    info = get_provider_info()
    listed, empty = [], []
    for section, kind in _kinds().items():
        for entry in info[section]:
            for module in entry["python-modules"]:
                listed.append(module)
                if not _defines(module, kind):
                    empty.append(module)
    assert len(listed) == len(set(listed)) > 0
    assert empty == []


def test_every_module_that_defines_a_hook_operator_sensor_or_trigger_is_listed():
    info = get_provider_info()
    package = Path(airflow_provider_mlci.__file__).parent
    for section, kind in _kinds().items():
        listed = {module for entry in info[section] for module in entry["python-modules"]}
        defining = {
            f"airflow_provider_mlci.{section}.{path.stem}"
            for path in sorted((package / section).glob("*.py"))
            if path.stem != "__init__" and _defines(f"airflow_provider_mlci.{section}.{path.stem}", kind)
        }
        assert defining == listed, section


def test_cache_dir_setting_is_declared():
    option = get_provider_info()["config"]["mlci"]["options"]["cache_dir"]
    assert option["type"] == "string"
    assert option["default"] == ""
