from __future__ import annotations

import pytest

from airflow_provider_mlci.core.access import DvcRemoteAccess, GitAccess, RepoAccess
from airflow_provider_mlci.exceptions import MlciConfigError


def test_a_token_in_the_url_moves_out_of_it():
    access = GitAccess.from_url("https://bot:tok%2Fen@git.example.com:8443/acme/repo.git")
    assert access.url == "https://git.example.com:8443/acme/repo.git"
    assert access.username == "bot"
    assert access.password == "tok/en"
    assert "tok" not in repr(access)


def test_secrets_stay_out_of_repr():
    access = RepoAccess(
        git=GitAccess(url="https://h/r.git", password="pw-123456", private_key=None),
        dvc=DvcRemoteAccess(
            aws_access_key_id="AKIDEXAMPLE", aws_secret_access_key="sk-abcdef", aws_session_token="st-1"
        ),
    )
    text = repr(access)
    for secret in ("pw-123456", "sk-abcdef", "st-1"):
        assert secret not in text
    assert set(access.secrets) == {"pw-123456", "sk-abcdef", "st-1"}


@pytest.mark.parametrize("url", ["", "  ", "--upload-pack=touch /tmp/x", "https://h/r\n.git"])
def test_bad_urls_are_refused(url):
    with pytest.raises(MlciConfigError):
        GitAccess(url=url)


def test_ssh_options_are_checked():
    with pytest.raises(MlciConfigError, match="strict_host_key_checking"):
        GitAccess(url="git@h:r.git", strict_host_key_checking="maybe")
    with pytest.raises(MlciConfigError, match="not both"):
        GitAccess(url="git@h:r.git", private_key="k", key_file="/k")


def test_remote_overrides_carry_no_secrets():
    access = DvcRemoteAccess(
        url="s3://bucket/store",
        endpoint_url="http://127.0.0.1:9000",
        verify=False,
        aws_access_key_id="AKID",
        aws_secret_access_key="secret-key",
        region_name="eu-west-1",
    )
    overrides = access.dvc_overrides()
    assert overrides == {
        "remote": DvcRemoteAccess.DEFAULT_NAME,
        "remote_config": {
            "url": "s3://bucket/store",
            "endpointurl": "http://127.0.0.1:9000",
            "ssl_verify": False,
            "region": "eu-west-1",
        },
    }
    assert "secret-key" not in repr(overrides)
    assert access.environment() == {
        "AWS_ACCESS_KEY_ID": "AKID",
        "AWS_SECRET_ACCESS_KEY": "secret-key",
        "AWS_DEFAULT_REGION": "eu-west-1",
    }


def test_a_named_remote_keeps_its_name_and_the_default_stays_default():
    assert DvcRemoteAccess(remote="backup").dvc_overrides() == {"remote": "backup"}
    assert DvcRemoteAccess(endpoint_url="http://e").dvc_overrides() == {"remote_config": {"endpointurl": "http://e"}}
    assert DvcRemoteAccess().dvc_overrides() == {}


@pytest.mark.parametrize("name", ["-x", "a b", "../up", ""])
def test_bad_remote_names_are_refused(name):
    with pytest.raises(MlciConfigError):
        DvcRemoteAccess(remote=name)
