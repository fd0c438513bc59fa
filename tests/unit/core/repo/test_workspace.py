from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import pytest

from airflow_provider_mlci.core.repo import workspace as workspace_module
from airflow_provider_mlci.core.repo.access import GitAccess, RepoAccess
from airflow_provider_mlci.core.repo.workspace import WorkerCache, Workspace, default_cache_dir
from airflow_provider_mlci.exceptions import (
    GitRemoteError,
    GitRevisionNotFoundError,
    GitUnavailableError,
    MlciConfigError,
)
from airflow_provider_mlci.testing.git_http import GitHttpServer


@contextlib.contextmanager
def _holding(lock: Path):
    """Hold an exclusive ``flock`` on ``lock`` for the ``with`` block, as a live task does."""
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def test_a_checkout_is_private_exact_and_removed_afterwards(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        assert ws.sha == dvc_project.head()
        assert (ws.path / "dvc.yaml").is_file()
        assert ws.path.is_relative_to(worker_cache / "checkouts")
        head = ws.git.check(["rev-parse", "HEAD"], cwd=ws.path, capture=True).strip()
        assert head == ws.sha
        status = ws.git.check(["status", "--porcelain"], cwd=ws.path, capture=True)
        assert status == ""
        path = ws.path
    assert not path.exists()
    assert list((worker_cache / "checkouts").iterdir()) == []


def test_revisions_resolve_by_branch_tag_sha_and_short_sha(dvc_project, worker_cache):
    first = dvc_project.head()
    dvc_project.git("tag", "v1.0.0")
    dvc_project.git("push", "--quiet", "origin", "v1.0.0")
    (dvc_project.work / "NOTES.md").write_text("second\n")
    second = dvc_project.commit_and_push("Second commit", dvc_push=False)
    access = RepoAccess.local(str(dvc_project.remote))
    for rev, expected in [
        ("main", second),
        ("HEAD", second),
        ("v1.0.0", first),
        (first, first),
        (first[:8], first),
        ("main~1", first),
    ]:
        with Workspace.open(access, rev, cache_dir=worker_cache) as ws:
            assert ws.sha == expected, rev
            assert (ws.path / "NOTES.md").exists() is (expected == second)


def test_the_mirror_is_fetched_not_recloned_and_follows_new_commits(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        first = ws.sha
    mirror = WorkerCache(worker_cache).mirror_path(access.git.url)
    marker = mirror / "mlci-marker"
    marker.write_text("still the same mirror")
    (dvc_project.work / "NOTES.md").write_text("new\n")
    second = dvc_project.commit_and_push("New commit", dvc_push=False)
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        assert ws.sha == second != first
    assert marker.exists()


def test_a_known_commit_needs_no_remote(dvc_project, worker_cache, tmp_path):
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        sha = ws.sha
    dvc_project.remote.rename(tmp_path / "moved.git")
    with Workspace.open(access, sha, cache_dir=worker_cache) as ws:
        assert ws.sha == sha
    with (
        pytest.raises(GitRemoteError, match=str(dvc_project.remote)),
        Workspace.open(access, "main", cache_dir=worker_cache),
    ):
        pass


def test_an_unknown_revision_names_the_revision_and_the_repository(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    with (
        pytest.raises(GitRevisionNotFoundError) as info,
        Workspace.open(access, "no-such-branch", cache_dir=worker_cache),
    ):
        pass
    assert "'no-such-branch'" in str(info.value)
    assert str(dvc_project.remote) in str(info.value)
    with (
        pytest.raises(GitRevisionNotFoundError, match="'deadbeefdeadbeef'"),
        Workspace.open(access, "deadbeefdeadbeef", cache_dir=worker_cache),
    ):
        pass
    assert list((worker_cache / "checkouts").iterdir()) == []


def test_an_invalid_revision_fails_before_any_git_work(worker_cache):
    access = RepoAccess.local("/nonexistent/repo.git")
    with (
        pytest.raises(MlciConfigError, match="not a valid git revision"),
        Workspace.open(access, "--upload-pack=evil", cache_dir=worker_cache),
    ):
        pass
    assert list((worker_cache / "mirrors").iterdir()) == []


def test_a_repository_that_does_not_exist_names_its_url(worker_cache, tmp_path):
    missing = tmp_path / "nothing-here.git"
    with (
        pytest.raises(GitRemoteError, match=str(missing)),
        Workspace.open(RepoAccess.local(str(missing)), "main", cache_dir=worker_cache),
    ):
        pass
    assert not any(p.suffix == ".git" for p in (worker_cache / "mirrors").iterdir())


def test_concurrent_tasks_get_separate_checkouts(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    paths: list[Path] = []
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def task():
        try:
            with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
                paths.append(ws.path)
                barrier.wait(timeout=30)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=task) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert errors == []
    assert len(set(paths)) == 3


def test_abandoned_checkouts_are_pruned_and_live_ones_kept(worker_cache):
    cache = WorkerCache(worker_cache)
    old = time.time() - 3600
    abandoned = cache.checkouts / "20200101T000000-1-dead"
    abandoned.mkdir()
    (abandoned / "file").write_text("x")
    lock = cache.checkouts / f"{abandoned.name}.lock"
    lock.write_text("")
    os.utime(lock, (old, old))
    live = cache.checkouts / "20200101T000000-2-live"
    live.mkdir()
    live_lock = cache.checkouts / f"{live.name}.lock"
    live_lock.write_text("")
    os.utime(live_lock, (old, old))
    orphan = cache.checkouts / "20200101T000000-3-nolock"
    orphan.mkdir()
    os.utime(orphan, (old, old))
    with _holding(live_lock):
        removed = cache.prune_checkouts()
    assert set(removed) == {abandoned, orphan}
    assert not abandoned.exists()
    assert not lock.exists()
    assert live.exists()


def test_dvc_points_at_the_worker_cache(dvc_project, worker_cache):
    with Workspace.open(RepoAccess.local(str(dvc_project.remote)), "main", cache_dir=worker_cache) as ws:
        config = ws.dvc_config()
    assert config["cache"]["dir"] == str(worker_cache / "dvc" / "cache")
    assert config["core"]["site_cache_dir"] == str(worker_cache / "dvc" / "site")


def test_default_cache_dir_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == str(tmp_path / "airflow-provider-mlci")


def fill_cache(cache: WorkerCache, sizes_and_ages: list[tuple[int, float]]) -> list[Path]:
    paths = []
    now = time.time()
    for index, (size, age) in enumerate(sizes_and_ages):
        path = cache.dvc_cache / "files" / "md5" / f"{index:02d}" / ("f" * 30)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
        path.chmod(0o444)  # as DVC leaves its cache files
        os.utime(path, (now - age, now - age))
        paths.append(path)
    return paths


def test_eviction_removes_the_least_recently_used_objects_down_to_80_percent(worker_cache):
    cache = WorkerCache(worker_cache)
    paths = fill_cache(cache, [(1000, 500), (1000, 400), (1000, 300), (1000, 200), (1000, 100)])
    freed = cache.evict(max_bytes=4000)
    assert freed == 2000  # 5000 -> 3000 (80 % of 4000 is 3200)
    assert [p.exists() for p in paths] == [False, False, True, True, True]
    assert cache.evict(max_bytes=4000) == 0


def test_nothing_is_evicted_without_a_cap(worker_cache):
    cache = WorkerCache(worker_cache)
    paths = fill_cache(cache, [(1000, 100)] * 4)
    assert cache.evict(max_bytes=0) == 0
    assert all(p.exists() for p in paths)


def test_a_checkout_enforces_the_cap_when_it_goes(dvc_project, worker_cache):
    cache = WorkerCache(worker_cache)
    old = fill_cache(cache, [(5000, 10_000)])
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache, max_cache_bytes=1000):
        assert old[0].exists(), "nothing may go while the checkout lives"
    assert not old[0].exists()


def test_stage_commands_run_with_the_interpreter_asked_for(tmp_path, worker_cache):
    import subprocess
    import sys

    from airflow_provider_mlci.core.dvc import ops as dvc_ops
    from airflow_provider_mlci.core.dvc.ops import ReproRequest
    from airflow_provider_mlci.testing import create_dvc_project

    template = tmp_path / "template"
    template.mkdir()
    (template / "dvc.yaml").write_text(
        "stages:\n  which:\n    cmd: python -c \"import sys; open('which.txt', 'w').write(sys.prefix)\"\n"
        "    outs:\n      - which.txt\n"
    )
    project = create_dvc_project(template, tmp_path / "project")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    access = RepoAccess.local(str(project.remote), url=project.dvc_remote_url)
    with Workspace.open(access, "main", cache_dir=worker_cache, python=str(venv)) as ws:
        dvc_ops.repro(ws, ReproRequest())
        assert Path((ws.path / "which.txt").read_text()).resolve() == venv.resolve()
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        dvc_ops.repro(ws, ReproRequest(force=True))
        assert Path((ws.path / "which.txt").read_text()).resolve() == Path(sys.prefix).resolve()


@pytest.mark.parametrize("python", ["/no/such/python", "relative-venv-that-is-not-there"])
def test_an_interpreter_that_does_not_exist_is_named(python, worker_cache):
    with (
        pytest.raises(MlciConfigError, match="not an executable interpreter"),
        Workspace.open(RepoAccess.local("/nonexistent.git"), "main", cache_dir=worker_cache, python=python),
    ):
        pass


# ------------------------------------------------------------------ credentials and key files


def _dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def _files_holding(root: Path, text: str) -> list[Path]:
    found = []
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            with contextlib.suppress(OSError):
                if text.encode() in path.read_bytes():
                    found.append(path)
    return found


def test_a_token_in_the_url_user_part_reaches_git_through_askpass_only(dvc_project, worker_cache, caplog):
    token = "ghp_urlUserT0ken8841"
    with GitHttpServer(dvc_project.remote.parent, username=None, token=token) as server:
        plain_url = server.url("remote.git")
        access = RepoAccess(git=GitAccess(url=plain_url.replace("http://", f"http://{token}@")))
        with caplog.at_level(logging.DEBUG), Workspace.open(access, "main", cache_dir=worker_cache) as ws:
            assert ws.sha == dvc_project.head()
            assert (ws.path / "dvc.yaml").is_file()
            configs = [ws.path / ".git" / "config", *worker_cache.glob("mirrors/*.git/config")]
            assert len(configs) == 2
            for config in configs:
                assert token not in config.read_text(), config
            origin = ws.git.check(["remote", "get-url", "origin"], cwd=ws.path, capture=True).strip()
            assert origin == plain_url
        assert server.seen_authorizations, "git never sent the token"
        assert all(token not in line for line in server.request_lines)
    assert token not in caplog.text
    assert _files_holding(worker_cache, token) == []


def test_no_ssh_key_is_on_disk_while_the_checkout_is_in_use(dvc_project, worker_cache, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))
    key = "-----BEGIN OPENSSH PRIVATE KEY-----\nworkspace-key-material-77\n-----END OPENSSH PRIVATE KEY-----"
    access = RepoAccess(git=GitAccess(url=str(dvc_project.remote), private_key=key))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        assert (ws.path / "dvc.yaml").is_file()
        # What a stage would see: no key anywhere under the temporary folder or the cache root.
        assert _files_holding(tmp, "workspace-key-material-77") == []
        assert _files_holding(worker_cache, "workspace-key-material-77") == []
    assert list(tmp.iterdir()) == []


_TASK_KILLED_WHILE_SSH_CONNECTS = """
from airflow_provider_mlci.core.repo.access import GitAccess
from airflow_provider_mlci.core.repo.git import Git
from airflow_provider_mlci.core.runtime.process import CommandRunner

key = "-----BEGIN OPENSSH PRIVATE KEY-----\\nkilled-task-key-31\\n-----END OPENSSH PRIVATE KEY-----"
access = GitAccess(url="ssh://git.example.invalid/srv/repo.git", private_key=key)
with Git(access, CommandRunner()) as git:
    git.run(["ls-remote", access.url])
"""

#: Stand-in for ssh (no sshd here): says where it runs, then hangs as a slow connection would.
_HANGING_SSH = """#!/bin/sh
echo $$ >"$HANGING_SSH_PID.tmp" && mv "$HANGING_SSH_PID.tmp" "$HANGING_SSH_PID"
exec sleep 60
"""


def test_a_killed_tasks_key_folder_goes_at_the_next_start(dvc_project, worker_cache, tmp_path, monkeypatch):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "ssh").write_text(_HANGING_SSH)
    (bin_dir / "ssh").chmod(0o755)
    ssh_pid_file = tmp_path / "ssh.pid"
    env = {**os.environ, "TMPDIR": str(tmp), "HANGING_SSH_PID": str(ssh_pid_file)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    task = subprocess.Popen([sys.executable, "-c", _TASK_KILLED_WHILE_SSH_CONNECTS], env=env)
    ssh_pid = None
    try:
        deadline = time.monotonic() + 30
        while not ssh_pid_file.exists() and time.monotonic() < deadline and task.poll() is None:
            time.sleep(0.05)
        ssh_pid = int(ssh_pid_file.read_text())
        task.kill()  # SIGKILL: nothing of the task's own clean-up runs
        task.wait()
        left = [p for p in tmp.iterdir() if p.name.startswith(f"mlci-git-{task.pid}-")]
        assert len(left) == 1
        assert _files_holding(left[0], "killed-task-key-31"), "the key is on disk while ssh connects"
        other = tmp / "mlci-report-no-pid"
        other.mkdir()
        monkeypatch.setattr(tempfile, "tempdir", str(tmp))
        with Workspace.open(RepoAccess.local(str(dvc_project.remote)), "main", cache_dir=worker_cache):
            assert not left[0].exists()
            assert other.exists()
            ours = [p for p in tmp.iterdir() if p.name.startswith(f"mlci-git-{os.getpid()}-")]
            assert len(ours) == 1, "this task's own folder stays while it runs"
        assert _files_holding(tmp, "killed-task-key-31") == []
    finally:
        if task.poll() is None:
            task.kill()
            task.wait()
        if ssh_pid is not None:  # git and the hanging ssh outlive the task (a session of their own)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(os.getpgid(ssh_pid), signal.SIGKILL)


# ------------------------------------------------------------------ the mirror


def _move_main(project) -> str:
    (project.work / "NOTES.md").write_text(f"moved on {time.time()}\n")
    return project.commit_and_push("Move main", dvc_push=False)


def _age(path: Path, seconds: float) -> None:
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_lock_left_in_the_mirror_by_a_killed_fetch_does_not_block_the_next(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache):
        pass
    mirror = WorkerCache(worker_cache).mirror_path(access.git.url)
    second = _move_main(dvc_project)
    leftovers = [mirror / "refs" / "heads" / "main.lock", mirror / "objects" / "pack" / "tmp_pack_Kx81Ab"]
    for path in leftovers:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("")
        _age(path, 3600)
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        assert ws.sha == second
    assert not any(path.exists() for path in leftovers)


def test_a_fresh_lock_in_the_way_of_a_fetch_is_removed_once_it_is_stale(dvc_project, worker_cache, monkeypatch):
    monkeypatch.setattr(workspace_module, "_GIT_LOCK_GRACE_SECONDS", 0.5, raising=False)
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache):
        pass
    mirror = WorkerCache(worker_cache).mirror_path(access.git.url)
    second = _move_main(dvc_project)
    lock = mirror / "refs" / "heads" / "main.lock"
    lock.write_text("")  # too young to clear before the fetch: the fetch meets it
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        assert ws.sha == second
    assert not lock.exists()


def test_a_short_outage_of_the_remote_is_ridden_out(dvc_project, worker_cache, monkeypatch):
    from airflow_provider_mlci.core.repo import git as git_module
    from airflow_provider_mlci.core.repo.git import RetryPolicy

    monkeypatch.setattr(git_module, "DEFAULT_RETRY", RetryPolicy(attempts=3, delay=0.01))
    token = "tok-outage-ws-2231"
    with GitHttpServer(dvc_project.remote.parent, username="bot", token=token) as server:
        access = RepoAccess(git=GitAccess(url=server.url("remote.git"), username="bot", password=token))
        server.fail_next(2, status=503)
        with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
            assert ws.sha == dvc_project.head()
        server.fail_next(100, status=502)
        with pytest.raises(GitUnavailableError) as info, Workspace.open(access, "main", cache_dir=worker_cache):
            pass
    assert info.value.retryable


def _objects(mirror: Path) -> dict[str, int]:
    out = subprocess.run(["git", "count-objects", "-v"], cwd=mirror, capture_output=True, text=True, check=True)
    return {key: int(value) for key, value in (line.split(": ") for line in out.stdout.splitlines()) if value.isdigit()}


def test_a_mirror_is_packed_and_pruned_when_due(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache):
        pass
    mirror = WorkerCache(worker_cache).mirror_path(access.git.url)
    stamp = mirror.with_suffix(".gc")
    for _ in range(3):
        _move_main(dvc_project)
    with Workspace.open(access, "main", cache_dir=worker_cache):
        pass
    assert _objects(mirror)["count"] > 0, "small fetches leave loose objects"
    _age(stamp, 2 * 24 * 3600)
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        assert ws.sha == dvc_project.head()
    counted = _objects(mirror)
    assert counted["count"] == 0
    assert counted["packs"] == 1
    assert time.time() - stamp.stat().st_mtime < 60


def test_a_mirror_no_task_used_for_a_month_goes_and_the_others_stay(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache):
        pass
    cache = WorkerCache(worker_cache)
    used = cache.mirror_path(access.git.url)
    idle = cache.mirror_path("/srv/gone-for-good.git")
    busy = cache.mirror_path("/srv/idle-but-locked.git")
    for mirror in (idle, busy):
        shutil.copytree(used, mirror)
        mirror.with_suffix(".lock").write_text("")
        _age(mirror.with_suffix(".lock"), 40 * 24 * 3600)
    fd = os.open(busy.with_suffix(".lock"), os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
            assert ws.sha == dvc_project.head()
    finally:
        os.close(fd)
    assert not idle.exists()
    assert not idle.with_suffix(".lock").exists()
    assert used.exists()
    assert busy.exists()


def test_a_mirror_clone_left_unfinished_goes_unless_a_clone_is_running(worker_cache):
    cache = WorkerCache(worker_cache)
    dead = cache.mirrors / "repo-0123456789abcdef.git.tmp-1-dead"
    (dead / "objects").mkdir(parents=True)
    busy = cache.mirrors / "other-fedcba9876543210.git.tmp-2-busy"
    (busy / "objects").mkdir(parents=True)
    fd = os.open(cache.mirrors / "other-fedcba9876543210.lock", os.O_CREAT | os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        cache.prune_checkouts()
    finally:
        os.close(fd)
    assert not dead.exists()
    assert busy.exists()


def test_a_checkout_of_a_dead_task_goes_at_once_and_a_live_ones_private_cache_stays(worker_cache):
    cache = WorkerCache(worker_cache)
    dead_name = f"{time.strftime('%Y%m%dT%H%M%S')}-{_dead_pid()}-0badc0de"
    dead = cache.checkouts / dead_name
    dead.mkdir()
    dead_cache = cache.checkouts / f"{dead_name}.dvc-cache"
    dead_cache.mkdir()
    (cache.checkouts / f"{dead_name}.lock").write_text("")  # young, but its task is gone
    live_name = f"20200101T000000-{os.getpid()}-11ve0000"
    live = cache.checkouts / live_name
    live.mkdir()
    live_cache = cache.checkouts / f"{live_name}.dvc-cache"
    live_cache.mkdir()
    live_lock = cache.checkouts / f"{live_name}.lock"
    live_lock.write_text("")
    for path in (live, live_cache, live_lock):
        _age(path, 3600)
    with _holding(live_lock):
        removed = cache.prune_checkouts()
    assert set(removed) == {dead, dead_cache}
    assert not (cache.checkouts / f"{dead_name}.lock").exists()
    assert live.exists()
    assert live_cache.exists()


# ------------------------------------------------------------------ the DVC cache under its cap


def _put_object(cache: WorkerCache, oid: str, data: bytes, age: float) -> Path:
    path = cache.dvc_cache / "files" / "md5" / oid[:2] / oid[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    path.chmod(0o444)
    _age(path, age)
    return path


@contextlib.contextmanager
def _live_checkout(cache: WorkerCache, files: dict[str, str]):
    """A checkout whose task runs (its lock held), with these DVC files in it."""
    name = f"20200101T000000-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    path = cache.checkouts / name
    for relpath, text in files.items():
        (path / relpath).parent.mkdir(parents=True, exist_ok=True)
        (path / relpath).write_text(text)
    lock = cache.checkouts / f"{name}.lock"
    lock.write_text("")
    _age(lock, 3600)
    fd = os.open(lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield path
    finally:
        os.close(fd)


def test_eviction_runs_while_tasks_do_and_spares_what_live_checkouts_name(worker_cache):
    cache = WorkerCache(worker_cache)
    md5 = lambda text: hashlib.md5(text.encode()).hexdigest()  # noqa: E731
    in_folder, in_lock, in_exp = md5("in a folder"), md5("in dvc.lock"), md5("in an experiment")
    listing = json.dumps([{"md5": in_folder, "relpath": "part.bin"}])
    folder = md5(listing) + ".dir"
    kept = [
        _put_object(cache, in_folder, b"x" * 1000, 900),
        _put_object(cache, folder, listing.encode(), 900),
        _put_object(cache, in_lock, b"x" * 1000, 900),
        _put_object(cache, in_exp, b"x" * 1000, 900),
    ]
    others = [_put_object(cache, md5(f"other {i}"), b"y" * 1000, 800 - i * 100) for i in range(5)]
    run_entry = cache.dvc_cache / "runs" / "ab" / ("c" * 64) / ("d" * 64)
    run_entry.parent.mkdir(parents=True)
    run_entry.write_bytes(b"z" * 1000)
    _age(run_entry, 850)
    files = {
        "data.dvc": f"outs:\n- md5: {folder}\n  size: 1000\n  nfiles: 1\n  hash: md5\n  path: data\n",
        "sub/dvc.lock": f"schema: '2.0'\nstages:\n  train:\n    outs:\n    - path: model.pkl\n      md5: {in_lock}\n",
        ".dvc/tmp/exps/tmp1a2b/dvc.lock": f"stages:\n  train:\n    outs:\n    - md5: {in_exp}\n",
    }
    with _live_checkout(cache, files):
        freed = cache.evict(max_bytes=5100)
    # 9000 bytes and the listing, down to 80 % of 5100: the run-cache entry and the oldest others go
    assert all(path.exists() for path in kept)
    assert not run_entry.exists()
    assert [path.exists() for path in others] == [False, False, False, False, True]
    assert freed == 5000


def test_what_a_running_dvc_command_added_stays_until_it_ends(worker_cache):
    cache = WorkerCache(worker_cache)
    objects = [_put_object(cache, hashlib.md5(str(i).encode()).hexdigest(), b"x" * 1000, 0) for i in range(4)]
    with _live_checkout(cache, {".dvc/tmp/lock": "4242\n"}) as checkout:
        dvc_lock = checkout / ".dvc" / "tmp" / "lock"
        _age(dvc_lock, 30)
        with _holding(dvc_lock):  # as DVC holds it while it runs
            assert cache.evict(max_bytes=1000) == 0
        assert all(path.exists() for path in objects)
        assert cache.evict(max_bytes=1000) == 4000


def _data_versions(root: Path, versions: int, size: int) -> tuple[Path, Path, list[str]]:
    """A git + DVC repository, its bare git remote and its DVC remote; returns those two and the
    commits, oldest first.

    The first commit tracks a folder ``data/`` with real ``dvc add`` and ``dvc push`` (in this
    process). Each later commit tracks another ``blob.bin`` of ``size`` bytes: its ``.dvc`` file
    and its object in the DVC remote are written as ``dvc add`` and ``dvc push`` write them for a
    file (DVC 3's ``files/md5/<xx>/<rest>``), which is quicker than DVC by some 0.3 s a version,
    and the object is a sparse file.
    """
    from dvc.repo import Repo

    work, remote, store = root / "work", root / "remote.git", root / "dvc-remote"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t"}
    env["GIT_COMMITTER_EMAIL"] = "t@t"

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=work, env=env, check=True, capture_output=True, text=True).stdout

    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(remote)], check=True)
    (work / "data").mkdir(parents=True)
    git("init", "--quiet", "-b", "main")
    git("remote", "add", "origin", str(remote))
    Repo.init(str(work))
    (work / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n    analytics = false\n['remote \"storage\"']\n    url = {store}\n"
    )
    (work / "data" / "shared.txt").write_text("in every version\n")
    (work / "data" / "part.bin").write_bytes(b"first version " * (size // 14))
    with Repo(str(work)) as repo:
        repo.add([str(work / "data")])
        repo.push()
    git("add", "-A")
    git("commit", "--quiet", "-m", "data")
    git("push", "--quiet", "origin", "main")
    stream = []  # the later commits in one git fast-import run: one process, not three a version
    zeros = hashlib.md5(bytes(size - 4))  # each blob: zeros, then its version number
    for version in range(1, versions):
        digest = zeros.copy()
        digest.update(version.to_bytes(4, "big"))
        oid = digest.hexdigest()
        obj = store / "files" / "md5" / oid[:2] / oid[2:]
        obj.parent.mkdir(parents=True, exist_ok=True)
        with obj.open("wb") as fh:  # sparse: the zeros cost no writing
            fh.truncate(size - 4)
            fh.seek(size - 4)
            fh.write(version.to_bytes(4, "big"))
        text = f"outs:\n- md5: {oid}\n  size: {size}\n  hash: md5\n  path: blob.bin\n".encode()
        message = f"version {version}\n".encode()
        stream += [
            b"commit refs/heads/main\n",
            f"committer t <t@t> {1_700_000_000 + version} +0000\n".encode(),
            b"data %d\n%s" % (len(message), message),
            b"from refs/heads/main^0\n" if version == 1 else b"",
            b"M 100644 inline blob.bin.dvc\ndata %d\n%s\n" % (len(text), text),
        ]
    subprocess.run(["git", "fast-import", "--quiet"], cwd=remote, input=b"".join(stream), check=True)
    shas = subprocess.run(
        ["git", "rev-list", "--reverse", "main"], cwd=remote, check=True, capture_output=True, text=True
    ).stdout.split()
    assert len(shas) == versions
    return remote, store, shas


def _dvc_fetch(ws: Workspace) -> None:
    """``dvc fetch`` in the checkout, DVC in this process."""
    from dvc.repo import Repo

    with Repo(str(ws.path), config=ws.dvc_config(runs_user_code=False)) as repo:
        repo.fetch()


def _fetch_as_dvc_does(ws: Workspace, store: Path) -> None:
    """Stand-in for ``dvc fetch`` (real DVC costs some 0.4 s a call here): put the objects the
    checkout's ``.dvc`` files name from the local DVC remote into the worker cache, read-only, at
    the paths where DVC puts them (a hard link: the same size, and no time spent copying)."""
    for dvc_file in (path for path in ws.path.glob("*.dvc") if path.is_file()):
        for oid in re.findall(r"md5: ([0-9a-f]{32}(?:\.dir)?)", dvc_file.read_text()):
            target = ws.cache.dvc_cache / "files" / "md5" / oid[:2] / oid[2:]
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.link(store / "files" / "md5" / oid[:2] / oid[2:], target)
                target.chmod(0o444)


def _cache_size(cache_root: Path) -> int:
    return sum(p.stat().st_size for p in (cache_root / "dvc" / "cache").rglob("*") if p.is_file())


def test_the_cache_stays_under_its_cap_while_a_live_checkout_keeps_its_objects(tmp_path, worker_cache):
    cap, size, versions = 200 << 20, 8 << 20, 50
    remote, store, shas = _data_versions(tmp_path / "versions", versions + 1, size)
    access = RepoAccess.local(str(remote))
    with Workspace.open(access, shas[-1], cache_dir=worker_cache, max_cache_bytes=cap) as held:
        _dvc_fetch(held)  # real DVC: the folder's listing and two files, and the last blob
        held_objects = [p for p in (worker_cache / "dvc" / "cache").rglob("*") if p.is_file()]
        assert len(held_objects) == 4
        for sha in shas[1:]:
            with Workspace.open(access, sha, cache_dir=worker_cache, max_cache_bytes=cap) as ws:
                _fetch_as_dvc_does(ws, store)
            assert _cache_size(worker_cache) <= cap
        assert all(path.exists() for path in held_objects), "eviction took what a running task uses"
    assert _cache_size(worker_cache) <= cap
