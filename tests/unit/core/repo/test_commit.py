from __future__ import annotations

import pytest

from airflow_provider_mlci.core.repo import commit as commit_module
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.commit import CommitSpec, commit_files
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.exceptions import GitConflictError, GitPushRefusedError, MlciConfigError

SPEC = CommitSpec(branch="lock-updates", message="Update the lock", author="Pipeline Bot <bot@example.com>")


def open_ws(project, cache):
    return Workspace.open(RepoAccess.local(str(project.remote)), "main", cache_dir=cache)


def remote_file(project, ref: str, name: str) -> str:
    return project.git("show", f"{ref}:{name}", cwd=project.remote)


def test_a_new_branch_gets_one_commit_on_top_of_the_reproduced_one(dvc_project, worker_cache):
    base = dvc_project.head()
    with open_ws(dvc_project, worker_cache) as ws:
        (ws.path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
        result = commit_files(ws, ["dvc.lock"], SPEC)
    assert result.created
    refs = dvc_project.remote_refs()
    assert refs["refs/heads/lock-updates"] == result.commit
    assert refs["refs/heads/main"] == base, "main was not touched"
    assert dvc_project.git("rev-parse", f"{result.commit}^", cwd=dvc_project.remote).strip() == base
    assert remote_file(dvc_project, "lock-updates", "dvc.lock").startswith("schema: '2.0'")
    log = dvc_project.git("log", "-1", "--format=%an <%ae>|%s", result.commit, cwd=dvc_project.remote).strip()
    assert log == "Pipeline Bot <bot@example.com>|Update the lock"


def test_the_same_content_makes_no_new_commit(dvc_project, worker_cache):
    with open_ws(dvc_project, worker_cache) as ws:
        (ws.path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
        first = commit_files(ws, ["dvc.lock"], SPEC)
    with open_ws(dvc_project, worker_cache) as ws:
        (ws.path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
        second = commit_files(ws, ["dvc.lock"], SPEC)
    assert not second.created
    assert second.commit == first.commit


def test_committing_to_a_branch_that_moved_keeps_both_changes(dvc_project, worker_cache):
    with open_ws(dvc_project, worker_cache) as ws:
        (ws.path / "dvc.lock").write_text("first\n")
        commit_files(ws, ["dvc.lock"], CommitSpec(branch="main"))
    # Someone else pushes to main meanwhile, touching another file.
    dvc_project.git("pull", "--quiet", "origin", "main")
    (dvc_project.work / "NOTES.md").write_text("a note\n")
    other = dvc_project.commit_and_push("A note", dvc_push=False)
    with Workspace.open(RepoAccess.local(str(dvc_project.remote)), "main~2", cache_dir=worker_cache) as ws:
        (ws.path / "metrics.json").write_text('{"accuracy": 0.9}\n')
        result = commit_files(ws, ["metrics.json"], CommitSpec(branch="main"))
    assert result.created
    assert dvc_project.git("rev-parse", f"{result.commit}^", cwd=dvc_project.remote).strip() == other
    assert remote_file(dvc_project, "main", "NOTES.md") == "a note\n"
    assert remote_file(dvc_project, "main", "metrics.json") == '{"accuracy": 0.9}\n'
    assert remote_file(dvc_project, "main", "dvc.lock") == "first\n"


def test_a_change_to_another_part_of_the_same_file_is_merged(dvc_project, worker_cache):
    lines = [f"line {i}\n" for i in range(20)]
    (dvc_project.work / "table.txt").write_text("".join(lines))
    base = dvc_project.commit_and_push("A table", dvc_push=False)
    theirs = lines.copy()
    theirs[1] = "line 1 changed on main\n"
    (dvc_project.work / "table.txt").write_text("".join(theirs))
    dvc_project.commit_and_push("Edit the top", dvc_push=False)
    with Workspace.open(RepoAccess.local(str(dvc_project.remote)), base, cache_dir=worker_cache) as ws:
        ours = lines.copy()
        ours[18] = "line 18 changed by the run\n"
        (ws.path / "table.txt").write_text("".join(ours))
        commit_files(ws, ["table.txt"], CommitSpec(branch="main"))
    merged = remote_file(dvc_project, "main", "table.txt")
    assert "line 1 changed on main" in merged
    assert "line 18 changed by the run" in merged


def test_a_real_conflict_names_the_file_and_pushes_nothing(dvc_project, worker_cache):
    (dvc_project.work / "dvc.lock").write_text("stage: a\n")
    base = dvc_project.commit_and_push("Lock v1", dvc_push=False)
    (dvc_project.work / "dvc.lock").write_text("stage: b\n")
    tip = dvc_project.commit_and_push("Lock v2", dvc_push=False)
    with Workspace.open(RepoAccess.local(str(dvc_project.remote)), base, cache_dir=worker_cache) as ws:
        (ws.path / "dvc.lock").write_text("stage: c\n")
        with pytest.raises(GitConflictError, match=r"dvc\.lock"):
            commit_files(ws, ["dvc.lock"], CommitSpec(branch="main"))
    assert dvc_project.remote_refs()["refs/heads/main"] == tip


def test_a_branch_that_moves_between_fetch_and_push_is_retried(dvc_project, worker_cache, monkeypatch):
    """No real component can slip a push in between our fetch and our push on cue, so the
    interleaving is forced by wrapping our own rebase step: on its first call, another commit
    lands on the branch (a real push to the real bare repository)."""
    original = commit_module._rebase
    calls = []

    def racing_rebase(workspace, tip, ours):
        calls.append(tip)
        if len(calls) == 1:
            (dvc_project.work / "RACE.md").write_text("someone else\n")
            dvc_project.commit_and_push("A racing commit", dvc_push=False)
        return original(workspace, tip, ours)

    monkeypatch.setattr(commit_module, "_rebase", racing_rebase)
    with open_ws(dvc_project, worker_cache) as ws:
        (ws.path / "dvc.lock").write_text("ours\n")
        result = commit_files(ws, ["dvc.lock"], CommitSpec(branch="main"))
    assert result.attempts == 2
    assert remote_file(dvc_project, "main", "RACE.md") == "someone else\n"
    assert remote_file(dvc_project, "main", "dvc.lock") == "ours\n"


@pytest.mark.parametrize("branch", ["-delete", "bad..name", "with space", "x.lock", ""])
def test_bad_branch_names_are_refused(dvc_project, worker_cache, branch):
    with open_ws(dvc_project, worker_cache) as ws, pytest.raises(MlciConfigError, match="not a valid branch name"):
        commit_files(ws, [], CommitSpec(branch=branch))


@pytest.mark.parametrize("author", ["nobody", "Name <>", "<a@b>", "A <a@b> extra"])
def test_bad_authors_are_refused(author):
    with pytest.raises(MlciConfigError, match="Name <email>"):
        CommitSpec(branch="main", author=author)


def test_a_push_refused_by_a_hook_fails_at_once_naming_the_refusal(tmp_path):
    import subprocess

    remote, seed = tmp_path / "remote.git", tmp_path / "seed"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "clone", "--quiet", str(remote), str(seed)], check=True, capture_output=True)
    (seed / "dvc.lock").write_text("theirs\n")
    for args in (["add", "-A"], ["commit", "--quiet", "-m", "seed"], ["push", "--quiet", "origin", "main"]):
        subprocess.run(["git", *args], cwd=seed, check=True)
    hook = remote / "hooks" / "pre-receive"
    hook.write_text(
        "#!/bin/sh\necho run >> hook-runs\n"
        'echo "GH006: Protected branch update failed: changes must be made through a pull request."\n'
        "exit 1\n"
    )
    hook.chmod(0o755)
    tip = subprocess.run(["git", "rev-parse", "main"], cwd=remote, capture_output=True, text=True).stdout.strip()
    with Workspace.open(RepoAccess.local(str(remote)), "main", cache_dir=tmp_path / "worker") as ws:
        (ws.path / "dvc.lock").write_text("ours\n")
        with pytest.raises(GitPushRefusedError) as info:
            commit_files(ws, ["dvc.lock"], CommitSpec(branch="main"))
    error = info.value
    assert not error.retryable
    message = str(error)
    assert "refs/heads/main" in message
    assert "changes must be made through a pull request" in message
    assert str(remote) in message
    assert (remote / "hook-runs").read_text().count("run") == 1, "a refusal is not retried"
    now = subprocess.run(["git", "rev-parse", "main"], cwd=remote, capture_output=True, text=True).stdout.strip()
    assert now == tip
