from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

from airflow_provider_mlci.core.access import GitAccess
from airflow_provider_mlci.core.git import Git, check_rev
from airflow_provider_mlci.core.process import CommandRunner
from airflow_provider_mlci.exceptions import GitRemoteError, MlciConfigError
from airflow_provider_mlci.testing.git_http import GitHttpServer


@pytest.mark.parametrize("rev", ["main", "v1.2.3", "HEAD", "HEAD~1", "a1b2c3d", "feature/x", "main^", "model@v1.0.0"])
def test_valid_revisions_pass(rev):
    assert check_rev(rev) == rev


@pytest.mark.parametrize("rev", ["", "-n", "--upload-pack=x", "main..dev", "a b", "x\n", "\t", "x" * 300])
def test_invalid_revisions_are_refused_naming_them(rev):
    with pytest.raises(MlciConfigError, match="not a valid git revision"):
        check_rev(rev)


def _bare_repo_with_a_commit(path):
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(path)], check=True)
    work = path.parent / "seed"
    subprocess.run(["git", "clone", "--quiet", str(path), str(work)], check=True, capture_output=True)
    (work / "README").write_text("hello\n")
    subprocess.run(["git", "add", "README"], cwd=work, check=True)
    subprocess.run(["git", "commit", "--quiet", "-m", "seed"], cwd=work, check=True)
    subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=work, check=True)
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, capture_output=True, text=True).stdout.strip()


def test_an_https_token_reaches_the_server_through_askpass_not_argv(tmp_path):
    token = "tok-7f3a9c1e5b"
    sha = _bare_repo_with_a_commit(tmp_path / "repo.git")
    with GitHttpServer(tmp_path, username="bot", token=token) as server:
        access = GitAccess(url=server.url("repo.git"), username="bot", password=token)
        runner = CommandRunner()
        with Git(access, runner) as git:
            env = git.env
            out = git.check(["ls-remote", "--", access.url, "refs/heads/main"], capture=True, remote=True)
            assert "GIT_ASKPASS" in env
            assert env["MLCI_GIT_PASSWORD"] == token
            askpass = env["GIT_ASKPASS"]
        assert out.split()[0] == sha
        assert server.seen_authorizations, "git never sent credentials"
        assert all(token not in line for line in server.request_lines)
    assert not os.path.exists(askpass), "the askpass helper outlived the session"


def test_a_wrong_token_is_a_remote_error_naming_the_url_without_the_token(tmp_path):
    _bare_repo_with_a_commit(tmp_path / "repo.git")
    with GitHttpServer(tmp_path, username="bot", token="right-token") as server:
        access = GitAccess(url=server.url("repo.git"), username="bot", password="wrong-token-123")
        with Git(access, CommandRunner()) as git, pytest.raises(GitRemoteError) as info:
            git.check(["ls-remote", "--", access.url], capture=True, remote=True)
        assert server.denied >= 1
    message = str(info.value)
    assert server.url("repo.git") in message
    assert "wrong-token-123" not in message


def test_an_ssh_key_goes_to_a_private_file_named_in_git_ssh_command(tmp_path):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----"
    access = GitAccess(url="git@git.example.com:acme/repo.git", private_key=key, strict_host_key_checking="yes")
    with Git(access, CommandRunner()) as git:
        command = git.env["GIT_SSH_COMMAND"]
        key_path = command.split(" -i ", 1)[1].split()[0]
        assert Path(key_path).read_text().strip() == key
        assert stat.S_IMODE(os.stat(key_path).st_mode) == 0o600
        assert "StrictHostKeyChecking=yes" in command
        assert "BatchMode=yes" in command
        assert key not in command
    assert not os.path.exists(key_path)


def test_no_prompt_can_hang_a_task(tmp_path):
    with Git(GitAccess(url=str(tmp_path)), CommandRunner()) as git:
        assert git.env["GIT_TERMINAL_PROMPT"] == "0"
