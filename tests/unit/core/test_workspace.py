from __future__ import annotations

import fcntl
import os
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_mlci.core.access import RepoAccess
from airflow_provider_mlci.core.workspace import WorkerCache, Workspace, default_cache_dir
from airflow_provider_mlci.exceptions import GitRemoteError, GitRevisionNotFoundError, MlciConfigError


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
    fd = os.open(live_lock, os.O_RDWR)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        removed = cache.prune_checkouts()
    finally:
        os.close(fd)
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


def test_nothing_is_evicted_while_a_task_uses_the_cache_or_without_a_cap(worker_cache):
    cache = WorkerCache(worker_cache)
    paths = fill_cache(cache, [(1000, 100)] * 4)
    with cache.in_use():
        assert cache.evict(max_bytes=1000) == 0
    assert all(p.exists() for p in paths)
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

    from airflow_provider_mlci.core import dvc_ops
    from airflow_provider_mlci.core.dvc_ops import ReproRequest
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
