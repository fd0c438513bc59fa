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
