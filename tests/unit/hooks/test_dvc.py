from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_provider_mlci.exceptions import ConnectionNotFoundError, MlciConfigError
from airflow_provider_mlci.hooks.dvc import DvcHook


def test_fields_map_onto_git_and_dvc_settings(dvc_connection):
    dvc_connection(
        "https://git.example.com/acme/model.git",
        login="bot",
        password="tok-abcdef123",
        extra={
            "dvc_remote": "storage",
            "dvc_remote_url": "s3://bucket/store",
            "endpoint_url": "http://127.0.0.1:9000",
            "verify": "false",
            "strict_host_key_checking": "yes",
        },
    )
    access = DvcHook().get_access()
    assert access.git.url == "https://git.example.com/acme/model.git"
    assert access.git.username == "bot"
    assert access.git.password == "tok-abcdef123"
    assert access.git.strict_host_key_checking == "yes"
    assert access.dvc.remote == "storage"
    assert access.dvc.url == "s3://bucket/store"
    assert access.dvc.endpoint_url == "http://127.0.0.1:9000"
    assert access.dvc.verify is False


def test_s3_credentials_come_from_the_named_aws_connection(dvc_connection, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_STORE",
        json.dumps(
            {
                "conn_type": "aws",
                "login": "AKIDSTORE",
                "password": "store-secret-key",
                "extra": {"endpoint_url": "http://127.0.0.1:7777", "region_name": "eu-central-1"},
            }
        ),
    )
    dvc_connection("/srv/repo.git", extra={"aws_conn_id": "aws_store", "dvc_remote_url": "s3://b/p"})
    dvc = DvcHook().get_access().dvc
    assert dvc.endpoint_url == "http://127.0.0.1:7777"
    assert dvc.region_name == "eu-central-1"
    assert dvc.environment()["AWS_ACCESS_KEY_ID"] == "AKIDSTORE"
    assert dvc.environment()["AWS_SECRET_ACCESS_KEY"] == "store-secret-key"
    assert "store-secret-key" not in repr(dvc)
    assert "store-secret-key" not in json.dumps(dvc.dvc_overrides())


def test_an_endpoint_on_the_dvc_connection_wins_over_the_aws_one(dvc_connection, monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_STORE",
        json.dumps({"conn_type": "aws", "login": "A", "password": "B", "extra": {"endpoint_url": "http://aws"}}),
    )
    dvc_connection("/srv/repo.git", extra={"aws_conn_id": "aws_store", "endpoint_url": "http://mine"})
    assert DvcHook().get_access().dvc.endpoint_url == "http://mine"


def test_a_missing_connection_is_named(dvc_connection):
    with pytest.raises(ConnectionNotFoundError, match="'no_such_repo'"):
        DvcHook("no_such_repo").get_access()


def test_a_missing_aws_connection_is_named(dvc_connection):
    dvc_connection("/srv/repo.git", extra={"aws_conn_id": "aws_absent"})
    with pytest.raises(ConnectionNotFoundError, match="'aws_absent'"):
        DvcHook().get_access()


def test_a_connection_without_host_is_refused(dvc_connection):
    dvc_connection("")
    with pytest.raises(MlciConfigError, match="no host"):
        DvcHook().get_access()


@pytest.mark.parametrize(
    ("value", "parsed"), [("true", True), ("False", False), ("/etc/ca.pem", "/etc/ca.pem"), (True, True)]
)
def test_verify_accepts_booleans_and_ca_bundles(dvc_connection, value, parsed):
    dvc_connection("/srv/repo.git", extra={"verify": value})
    assert DvcHook().get_access().dvc.verify == parsed


def test_unknown_extras_are_reported(dvc_connection, capsys):
    dvc_connection("/srv/repo.git", extra={"dvc_remtoe": "typo"})
    DvcHook().get_access()
    out = capsys.readouterr().out
    assert "unknown extra fields" in out
    assert "dvc_remtoe" in out


def test_the_cache_dir_comes_from_the_argument_then_the_setting(monkeypatch, tmp_path):
    assert DvcHook(cache_dir=str(tmp_path)).cache_dir == str(tmp_path)
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(tmp_path / "setting"))
    assert DvcHook().cache_dir == str(tmp_path / "setting")


def test_the_ui_test_button_reaches_the_repository(dvc_connection, dvc_project, tmp_path):
    dvc_connection(str(dvc_project.remote))
    ok, message = DvcHook().test_connection()
    assert ok, message
    dvc_connection(str(tmp_path / "missing.git"))
    ok, message = DvcHook().test_connection()
    assert not ok
    assert "missing.git" in message


def test_verify_objects_reaches_dvc_as_its_verify_option(dvc_connection):
    dvc_connection("/srv/repo.git", extra={"verify_objects": "true"})
    dvc = DvcHook().get_access().dvc
    assert dvc.verify_objects is True
    assert dvc.dvc_overrides() == {"remote_config": {"verify": True}}
    dvc_connection("/srv/repo.git", extra={"verify_objects": "sometimes"})
    with pytest.raises(MlciConfigError, match="verify_objects"):
        DvcHook().get_access()


def test_the_cache_cap_comes_from_the_setting(monkeypatch):
    assert DvcHook().max_cache_bytes == 50_000_000_000
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_MAX_SIZE_GB", "0.5")
    assert DvcHook().max_cache_bytes == 500_000_000
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_MAX_SIZE_GB", "lots")
    with pytest.raises(MlciConfigError, match="cache_max_size_gb"):
        _ = DvcHook().max_cache_bytes


def test_a_token_in_the_hosts_user_part_is_masked_and_kept_out_of_urls_and_git_config(
    dvc_connection, dvc_project, tmp_path, caplog
):
    import logging

    from airflow.sdk.log import redact

    from airflow_provider_mlci.testing.git_http import GitHttpServer

    token = "ghp_hostUserT0ken5521"
    with GitHttpServer(dvc_project.remote.parent, username=None, token=token) as server:
        plain_url = server.url("remote.git")
        dvc_connection(plain_url.replace("http://", f"http://{token}@"))
        hook = DvcHook(cache_dir=str(tmp_path / "cache"))
        access = hook.get_access()
        assert access.git.url == plain_url
        assert access.git.password == token
        assert redact(f"cloning with {token}") == "cloning with ***"
        with caplog.at_level(logging.DEBUG), hook.open_workspace("main") as ws:
            assert ws.sha == dvc_project.head()
            for config in [ws.path / ".git" / "config", *(tmp_path / "cache").glob("mirrors/*.git/config")]:
                assert token not in config.read_text(), config
        assert all(token not in line for line in server.request_lines)
    assert token not in caplog.text


def test_airflow_3_1_reads_the_form_behaviour_from_the_hook_as_its_schema_wants_it():
    # Airflow 3.2+ read the provider info; 3.1 asks the hook, in the customized-fields schema's shape.
    import airflow
    import jsonschema

    from airflow_provider_mlci.get_provider_info import get_provider_info

    behaviour = DvcHook.get_ui_field_behaviour()
    schema = json.loads((Path(airflow.__file__).parent / "customized_form_field_behaviours.schema.json").read_text())
    jsonschema.validate(behaviour, schema)
    (declared,) = get_provider_info()["connection-types"]
    assert behaviour["hidden_fields"] == declared["ui-field-behaviour"]["hidden-fields"] == ["schema", "port"]
    assert behaviour["relabeling"]["host"] == "Repository URL or path"


def test_without_the_fab_form_library_the_extra_fields_are_left_to_json_as_airflow_3_1_expects():
    # Airflow 3.1 catches an ImportError of flask_appbuilder or wtforms and shows the extra as JSON.
    with pytest.raises(ImportError) as missing:
        DvcHook.get_connection_form_widgets()
    assert missing.value.name in ("flask_appbuilder", "wtforms")
