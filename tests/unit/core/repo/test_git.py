from __future__ import annotations

import json
import logging
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from airflow_provider_mlci.core.repo.access import GitAccess
from airflow_provider_mlci.core.repo.git import Git, check_rev
from airflow_provider_mlci.core.runtime.process import CommandRunner
from airflow_provider_mlci.exceptions import GitRemoteError, GitUnavailableError, MlciConfigError
from airflow_provider_mlci.testing.git_http import GitHttpServer

#: The logger that reports a failed try of a remote git command.
PROCESS_LOGGER = "airflow_provider_mlci.core.runtime.process"


@pytest.mark.parametrize("rev", ["main", "v1.2.3", "HEAD", "HEAD~1", "a1b2c3d", "feature/x", "main^", "model@v1.0.0"])
def test_valid_revisions_pass(rev):
    assert check_rev(rev) == rev


@pytest.mark.parametrize("rev", ["", "-n", "--upload-pack=x", "main..dev", "a b", "x\n", "\t", "x" * 300])
def test_invalid_revisions_are_refused_naming_them(rev):
    with pytest.raises(MlciConfigError) as info:
        check_rev(rev)
    assert str(info.value) == f"{rev!r} is not a valid git revision."


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
    url = server.url("repo.git")
    assert str(info.value) == f"git ls-remote from {url} failed: fatal: Authentication failed for '{url}/'"


#: Stand-in for ssh: there is no sshd on the test machine. It records the key file it was
#: given (path, text, modes) and runs the remote command locally, as sshd would on the host.
_STAND_IN_SSH = """#!{python}
import json, os, stat, subprocess, sys
args = sys.argv[1:]
key = args[args.index("-i") + 1]
record = {{
    "key": key,
    "text": open(key).read(),
    "mode": stat.S_IMODE(os.stat(key).st_mode),
    "folder_mode": stat.S_IMODE(os.stat(os.path.dirname(key)).st_mode),
    "args": args,
}}
with open(os.environ["STAND_IN_SSH_RECORD"], "a") as fh:
    fh.write(json.dumps(record) + "\\n")
sys.exit(subprocess.call(["sh", "-c", args[-1]]))
"""


def files_holding(root: Path, text: str) -> list[Path]:
    """Every file under ``root`` whose content holds ``text``."""
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            try:
                if text.encode() in path.read_bytes():
                    found.append(path)
            except OSError:
                pass
    return found


def test_an_ssh_key_is_on_disk_only_while_ssh_talks_to_the_remote(tmp_path, monkeypatch):
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nstand-in-key-material-42\n-----END OPENSSH PRIVATE KEY-----"
    sha = _bare_repo_with_a_commit(tmp_path / "repo.git")
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(_STAND_IN_SSH.format(python=sys.executable))
    (bin_dir / "ssh").chmod(0o755)
    record = tmp_path / "ssh-calls.jsonl"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("STAND_IN_SSH_RECORD", str(record))
    access = GitAccess(
        url=f"ssh://git.example.invalid{tmp_path}/repo.git", private_key=key, strict_host_key_checking="yes"
    )
    with Git(access, CommandRunner()) as git:
        assert files_holding(tmp, "stand-in-key-material-42") == [], "a key on disk before any remote command"
        out = git.check(["ls-remote", "--", access.url, "refs/heads/main"], capture=True, remote=True)
        assert out.split()[0] == sha
        assert files_holding(tmp, "stand-in-key-material-42") == [], "the key outlived the command"
        git.check(["clone", "--quiet", "--", access.url, str(tmp_path / "clone")], remote=True)
        assert files_holding(tmp, "stand-in-key-material-42") == []
        assert key not in git.env["GIT_SSH_COMMAND"]
    calls = [json.loads(line) for line in record.read_text().splitlines()]
    assert len(calls) == 2
    for call in calls:
        assert call["text"].strip() == key
        assert call["mode"] == 0o600
        assert call["folder_mode"] == 0o700
        assert Path(call["key"]).is_relative_to(tmp)
        assert f"mlci-git-{os.getpid()}-" in call["key"]
        assert not Path(call["key"]).parent.exists()
        assert "StrictHostKeyChecking=yes" in call["args"]
        assert "BatchMode=yes" in call["args"]
    assert list(tmp.iterdir()) == [], "the private folder outlived the session"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _info_refs(server: GitHttpServer) -> int:
    return sum("info/refs" in line for line in server.request_lines)


def test_a_short_outage_is_tried_again_after_a_growing_wait(tmp_path, caplog):
    from airflow_provider_mlci.core.repo.git import RetryPolicy

    token = "tok-outage-1234"
    sha = _bare_repo_with_a_commit(tmp_path / "repo.git")
    with GitHttpServer(tmp_path, username="bot", token=token) as server:
        server.fail_next(2, status=503)
        access = GitAccess(url=server.url("repo.git"), username="bot", password=token)
        started = time.monotonic()
        with Git(access, CommandRunner(), retry=RetryPolicy(attempts=3, delay=0.1, factor=2.0)) as git:
            out = git.check(["ls-remote", "--", access.url, "refs/heads/main"], capture=True, remote=True)
        elapsed = time.monotonic() - started
    assert out.split()[0] == sha
    assert _info_refs(server) >= 3
    assert elapsed >= 0.3  # 0.1 s, then 0.2 s
    url = server.url("repo.git")
    assert [(r.name, r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING] == [
        (PROCESS_LOGGER, "WARNING", f"git ls-remote from {url} failed (try 1 of 3); trying again in 0.1 s"),
        (PROCESS_LOGGER, "WARNING", f"git ls-remote from {url} failed (try 2 of 3); trying again in 0.2 s"),
    ]
    assert token not in caplog.text


def test_a_lasting_outage_is_a_retryable_error_after_the_last_try(tmp_path):
    from airflow_provider_mlci.core.repo.git import RetryPolicy

    token = "tok-outage-5678"
    _bare_repo_with_a_commit(tmp_path / "repo.git")
    with GitHttpServer(tmp_path, username="bot", token=token) as server:
        server.fail_next(100, status=503)
        access = GitAccess(url=server.url("repo.git"), username="bot", password=token)
        with (
            Git(access, CommandRunner(), retry=RetryPolicy(attempts=3, delay=0.01)) as git,
            pytest.raises(GitUnavailableError) as info,
        ):
            git.check(["ls-remote", "--", access.url], capture=True, remote=True)
    assert info.value.retryable
    assert isinstance(info.value, GitRemoteError)
    assert _info_refs(server) == 3
    url = server.url("repo.git")
    assert str(info.value) == (
        f"git ls-remote from {url} failed: fatal: unable to access '{url}/': The requested URL returned error: 503 "
        "(tried 3 times)"
    )


def test_refused_credentials_are_not_tried_again(tmp_path):
    from airflow_provider_mlci.core.repo.git import RetryPolicy

    _bare_repo_with_a_commit(tmp_path / "repo.git")
    with GitHttpServer(tmp_path, username="bot", token="right-token") as server:
        access = GitAccess(url=server.url("repo.git"), username="bot", password="wrong-token-456")
        with (
            Git(access, CommandRunner(), retry=RetryPolicy(attempts=3, delay=0.01)) as git,
            pytest.raises(GitRemoteError) as info,
        ):
            git.check(["ls-remote", "--", access.url], capture=True, remote=True)
    assert not isinstance(info.value, GitUnavailableError)
    assert not info.value.retryable
    assert _info_refs(server) == 2  # one try: without credentials, then with them


def test_a_host_that_refuses_connections_is_unavailable(tmp_path):
    from airflow_provider_mlci.core.repo.git import RetryPolicy

    port = _free_port()
    access = GitAccess(url=f"http://127.0.0.1:{port}/repo.git")
    with (
        Git(access, CommandRunner(), retry=RetryPolicy(attempts=2, delay=0.01)) as git,
        pytest.raises(GitUnavailableError) as info,
    ):
        git.check(["ls-remote", "--", access.url], capture=True, remote=True)
    url = re.escape(access.url)
    # curl says how long the refused connection took: the one part that varies.
    assert re.fullmatch(
        rf"git ls-remote from {url} failed: fatal: unable to access '{url}/': Failed to connect to 127\.0\.0\.1 "
        rf"port {port} after \d+ ms: Couldn't connect to server \(tried 2 times\)",
        str(info.value),
    ), str(info.value)


@pytest.mark.parametrize(
    ("said", "retryable"),
    [
        ("fatal: unable to access 'https://h/r.git/': The requested URL returned error: 503", True),
        ("error: RPC failed; HTTP 502 curl 22 The requested URL returned error: 502", True),
        ("fatal: unable to access 'https://h/r.git/': Could not resolve host: h", True),
        ("fatal: unable to access 'https://h/r.git/': Failed to connect to h port 443: Connection timed out", True),
        ("ssh: connect to host h port 22: Connection refused\nfatal: Could not read from remote repository.", True),
        ("fatal: the remote end hung up unexpectedly\nfatal: early EOF", True),
        ("remote: Invalid username or password.\nfatal: Authentication failed for 'https://h/r.git/'", False),
        ("fatal: unable to access 'https://h/r.git/': The requested URL returned error: 403", False),
        ("remote: Repository not found.\nfatal: repository 'https://h/r.git/' not found", False),
        ("git@h: Permission denied (publickey).\nfatal: Could not read from remote repository.", False),
        ("fatal: '/srv/r.git' does not appear to be a git repository", False),
    ],
)
def test_what_git_says_decides_whether_a_retry_can_help(said, retryable):
    from airflow_provider_mlci.core.repo.git import remote_error_class

    assert remote_error_class(said).retryable is retryable


def test_no_prompt_can_hang_a_task(tmp_path):
    with Git(GitAccess(url=str(tmp_path)), CommandRunner()) as git:
        assert git.env["GIT_TERMINAL_PROMPT"] == "0"
