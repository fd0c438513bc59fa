"""A worker killed (SIGKILL, with every process it started) in the middle of a repro-and-push.

The worker is a real process doing what ``DvcReproOperator(commit_to=...)`` does on a worker:
open a workspace, reproduce with DVC (pull, stages, push of outputs and run-cache) and commit
``dvc.lock`` to a branch. It is paused at one of five points and killed there, then run again as
a retried task would be. Pausing uses a ``sitecustomize`` on the worker's ``PYTHONPATH`` that
wraps the DVC (or git) function where the point is and waits there; it is test instrumentation,
not a stand-in: DVC, git and the remotes are real, and the kill is a real SIGKILL.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest
import yaml

from airflow_provider_mlci.testing import create_dvc_project
from airflow_provider_mlci.testing.repos import REMOTE_NAME

POINTS = ("pull", "stage", "push_outputs", "push_run_cache", "commit")
BRANCH = "mlci/retrain"

HOOKS = """
import os, pathlib, time

POINT = os.environ.get("MLCI_TEST_FAULT")


def _pause(point):
    pathlib.Path(os.environ["MLCI_TEST_FAULT_DIR"], point).write_text(str(os.getpid()))
    time.sleep(600)


def _after(cls, name, point):
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        result = original(*args, **kwargs)
        _pause(point)
        return result

    setattr(cls, name, wrapper)


def _before(cls, name, point, when=lambda *a, **k: True):
    original = getattr(cls, name)

    def wrapper(*args, **kwargs):
        if when(*args, **kwargs):
            _pause(point)
        return original(*args, **kwargs)

    setattr(cls, name, wrapper)


if POINT == "pull":  # the data is in the cache, the checkout of it has not happened
    import dvc.repo
    _after(dvc.repo.Repo, "fetch", POINT)
elif POINT == "stage":  # DVC holds its lock and is about to run the stage command
    import dvc.stage.run
    _before(dvc.stage.run, "cmd_run", POINT)
elif POINT == "push_outputs":  # the stages ran; their outputs are about to go to the remote
    import dvc_data.index.push
    _before(dvc_data.index.push, "push", POINT)
elif POINT == "push_run_cache":  # outputs pushed, run-cache entries not yet
    import dvc.stage.cache
    _before(dvc.stage.cache.StageCache, "push", POINT)
elif POINT == "commit":  # the commit is made in the checkout, not pushed to the branch
    from airflow_provider_mlci.core.runtime import process
    _before(process.CommandRunner, "run", POINT, when=lambda self, argv, **k: list(argv[:2]) == ["git", "push"])
"""

WORKER = """
import logging, sys
from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.commit import CommitSpec, commit_files
from airflow_provider_mlci.core.repo.workspace import Workspace

logging.basicConfig(level=logging.INFO)
repo, dvc_remote, cache, branch = sys.argv[1:]
with Workspace.open(RepoAccess.local(repo, url=dvc_remote), "main", cache_dir=cache) as ws:
    outcome = dvc_ops.repro(ws, dvc_ops.ReproRequest())
    commit = commit_files(ws, list(outcome.changed_files), CommitSpec(branch=branch, message="Reproduce"))
print("WORKER-DONE", outcome.stages, commit.commit)
"""

FILES = {
    "dvc.yaml": """
        stages:
          prepare:
            cmd: python prepare.py
            deps: [data/raw.txt, prepare.py]
            outs: [data/prepared.txt]
          count:
            cmd: python count.py
            deps: [data/prepared.txt, count.py]
            outs: [model.txt]
            metrics:
              - metrics.json:
                  cache: false
        """,
    "prepare.py": """
        lines = open("data/raw.txt").read().split()
        open("data/prepared.txt", "w").write("\\n".join(sorted(lines)))
        """,
    "count.py": """
        import json
        words = open("data/prepared.txt").read().split()
        open("model.txt", "w").write(str(len(set(words))))
        json.dump({"words": len(words)}, open("metrics.json", "w"))
        """,
}


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    root = tmp_path_factory.mktemp("kill-template")
    folder = root / "template"
    for name, text in FILES.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(textwrap.dedent(text).lstrip())

    def data(work: Path) -> None:
        (work / "data").mkdir(exist_ok=True)
        (work / "data" / "raw.txt").write_text(" ".join(f"w{i % 97}" for i in range(5000)))

    return create_dvc_project(folder, root / "project", track=["data/raw.txt"], prepare=data)


def _kill_tree(worker: subprocess.Popen) -> int:
    """SIGKILL the worker and every process it started (as when its machine or container dies)."""
    descendants = psutil.Process(worker.pid).children(recursive=True)
    for proc in [psutil.Process(worker.pid), *descendants]:
        with contextlib.suppress(psutil.NoSuchProcess):
            proc.send_signal(signal.SIGKILL)
    status = worker.wait()
    psutil.wait_procs(descendants, timeout=10)  # not the worker: Popen reaps its own child
    return status


def _run_cache_entries(project) -> list[dict]:
    """The run-cache entries on the DVC remote, each checked to find the outputs it restores
    there: another worker may restore from it at any moment, killed run or not (the uncached
    metrics file is not in the remote: DVC runs such a stage again, as by hand)."""
    remote = Path(project.dvc_remote_url)
    entries = [yaml.safe_load(path.read_text()) for path in (remote / "runs").rglob("*") if path.is_file()]
    for entry in entries:
        for out in entry["outs"]:
            if out["path"] != "metrics.json":
                where = remote / "files" / "md5" / out["md5"][:2] / out["md5"][2:]
                assert where.is_file(), f"a run-cache entry of {entry['cmd']!r} names {out['path']}, not on the remote"
    return entries


@pytest.mark.parametrize("point", POINTS)
def test_a_worker_killed_mid_repro_leaves_nothing_half_done_and_the_retry_finishes(point, template, tmp_path):
    project = template.copy_to(tmp_path / "project")
    hooks, marks, tmp = tmp_path / "hooks", tmp_path / "marks", tmp_path / "worker-tmp"
    for folder in (hooks, marks, tmp):
        folder.mkdir()
    (hooks / "sitecustomize.py").write_text(HOOKS)
    cache = tmp_path / "worker-cache"
    argv = [sys.executable, "-c", WORKER, str(project.remote), project.dvc_remote_url, str(cache), BRANCH]
    env = {**os.environ, "PYTHONPATH": str(hooks), "MLCI_TEST_FAULT_DIR": str(marks), "TMPDIR": str(tmp)}

    worker = subprocess.Popen(argv, env={**env, "MLCI_TEST_FAULT": point}, stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (marks / point).exists():
        assert worker.poll() is None, f"the worker ended before reaching {point}: {worker.stdout.read()}"
        assert time.monotonic() < deadline, f"the worker never reached {point}"
        time.sleep(0.05)
    assert _kill_tree(worker) == -signal.SIGKILL
    refs_after_kill = project.remote_refs()
    assert f"refs/heads/{BRANCH}" not in refs_after_kill  # nothing reached the branch
    _run_cache_entries(project)  # what the killed run left on the remote is consistent

    retry = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
    assert retry.returncode == 0, retry.stdout[-3000:] + retry.stderr[-3000:]
    assert "WORKER-DONE" in retry.stdout

    # The branch holds one whole commit on top of main: dvc.lock of both stages and the metrics.
    refs = project.remote_refs()
    assert set(refs) == {"refs/heads/main", f"refs/heads/{BRANCH}"}  # no tag, no stray branch
    tip = refs[f"refs/heads/{BRANCH}"]
    assert project.git("rev-parse", f"{tip}^", cwd=project.remote).strip() == refs["refs/heads/main"]
    changed = set(project.git("diff", "--name-only", refs["refs/heads/main"], tip, cwd=project.remote).split())
    assert {"dvc.lock", "metrics.json"} <= changed
    # By hand on the branch: a fresh clone pulls everything (checked out as dvc.lock says), and
    # its cache and the remote agree.
    clone = tmp_path / "by-hand"
    project.git("clone", "--quiet", "--branch", BRANCH, str(project.remote), str(clone), cwd=tmp_path)
    (clone / ".dvc" / "config.local").write_text(f"['remote \"{REMOTE_NAME}\"']\n    url = {project.dvc_remote_url}\n")
    by_hand = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "pull", "--quiet"], cwd=clone, env=by_hand, check=True)
    status = subprocess.run([*dvc, "status", "--cloud", "--json"], cwd=clone, env=by_hand, capture_output=True)
    assert json.loads(status.stdout or "{}") == {}, status.stdout
    assert {entry["cmd"] for entry in _run_cache_entries(project)} == {"python prepare.py", "python count.py"}
    # Nothing of the killed run is left on the worker.
    assert sorted(p.name for p in tmp.iterdir()) == []
    assert sorted(p.name for p in (cache / "checkouts").iterdir()) == []
