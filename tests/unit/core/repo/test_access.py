from __future__ import annotations

import pytest

from airflow_provider_mlci.core.repo.access import DvcRemoteAccess, GitAccess, RepoAccess
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


@pytest.mark.parametrize(
    ("url", "expected_user"),
    [
        ("https://ghp_tok3n123@github.com/acme/repo.git", None),
        ("https://bot:ghp_tok3n123@github.com/acme/repo.git", "bot"),
        ("http://ghp_tok3n123@127.0.0.1:8080/repo.git", None),
    ],
)
def test_a_token_in_the_url_user_part_moves_out_of_the_url(url, expected_user):
    for access in (GitAccess(url=url), GitAccess.from_url(url, username=None, password=None)):
        assert "ghp_tok3n123" not in access.url
        assert access.url.endswith("/repo.git")
        assert "@" not in access.url
        assert access.password == "ghp_tok3n123"
        assert access.username == expected_user
        assert access.secrets == ("ghp_tok3n123",)
        assert "ghp_tok3n123" not in repr(access)


def test_with_a_password_given_a_bare_url_user_is_the_user_name():
    access = GitAccess.from_url("https://alice@git.example.com/acme/repo.git", username=None, password="pw-1")
    assert (access.url, access.username, access.password) == ("https://git.example.com/acme/repo.git", "alice", "pw-1")
    explicit = GitAccess.from_url("https://bot:url-token@h/r.git", username="ci", password="conn-token")
    assert (explicit.url, explicit.username, explicit.password) == ("https://h/r.git", "ci", "conn-token")


def test_an_ssh_url_keeps_its_user_and_refuses_a_password_without_showing_it():
    assert GitAccess(url="ssh://git@git.example.com/acme/repo.git").url == "ssh://git@git.example.com/acme/repo.git"
    assert GitAccess(url="git@git.example.com:acme/repo.git").url == "git@git.example.com:acme/repo.git"
    with pytest.raises(MlciConfigError, match="SSH takes a key") as info:
        GitAccess(url="ssh://git:s3cr3t-pw@git.example.com/acme/repo.git")
    assert "s3cr3t-pw" not in str(info.value)
