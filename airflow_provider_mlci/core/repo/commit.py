"""Commit what a reproduction changed (``dvc.lock``, metrics, ...) to a branch, safely.

Never a force-push. The commit is built on the branch's current tip without touching anyone's
working tree (a temporary index, ``git commit-tree``), then pushed as a fast-forward. If the
branch moved meanwhile, the change is redone on the new tip; a file that the tip changed too is
merged line by line (``git merge-file``), and a real conflict is a non-retryable
:class:`~airflow_provider_mlci.exceptions.GitConflictError` naming the file. When the tip already
holds exactly these files, no commit is made. A push the remote refuses by a rule of its own (a
hook, a protected branch) is not a race: it fails at once with
:class:`~airflow_provider_mlci.exceptions.GitPushRefusedError`, quoting the remote.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.core.runtime.process import private_tempdir
from airflow_provider_mlci.exceptions import GitConflictError, GitPushRejectedError, MlciConfigError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.git import Git
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["CommitResult", "CommitSpec", "commit_changes", "commit_files", "commit_tree"]

_AUTHOR = re.compile(r"^\s*(?P<name>[^<>\n]+?)\s*<(?P<email>[^<>\s]+)>\s*$")


@dataclass(frozen=True, kw_only=True)
class CommitSpec:
    """Where and how to commit.

    :param branch: the branch to commit to (created from the reproduced commit if missing)
    :param message: the commit message
    :param author: ``"Name <email>"`` of the author and committer
    :param max_attempts: how often to redo the commit when the branch moves under us
    """

    branch: str
    message: str = "Update dvc.lock [mlci]"
    author: str = "Airflow MLCI <mlci@airflow.invalid>"
    max_attempts: int = 5

    def __post_init__(self) -> None:
        if not _AUTHOR.match(self.author):
            raise MlciConfigError(f"author={self.author!r} is not of the form 'Name <email>'.")
        if not self.message.strip():
            raise MlciConfigError("The commit message is empty.")
        if self.max_attempts < 1:
            raise MlciConfigError("max_attempts must be at least 1.")

    def environment(self) -> dict[str, str]:
        """Author and committer for git."""
        match = _AUTHOR.match(self.author)
        assert match is not None
        name, email = match["name"], match["email"]
        return {
            "GIT_AUTHOR_NAME": name,
            "GIT_AUTHOR_EMAIL": email,
            "GIT_COMMITTER_NAME": name,
            "GIT_COMMITTER_EMAIL": email,
        }


@dataclass(frozen=True, kw_only=True)
class CommitResult:
    """What :func:`commit_files` did.

    :param branch: the branch
    :param commit: the branch's tip afterwards
    :param created: whether a new commit was made (``False``: the tip already held the files)
    :param attempts: how many tries it took
    """

    branch: str
    commit: str
    created: bool
    attempts: int


def check_branch(git: Git, cwd: Path, branch: str) -> str:
    """Return ``branch`` if git accepts it as a branch name, else raise naming it.

    :param git: git for the repository
    :param cwd: a repository folder
    :param branch: the name to check
    """
    if not branch or branch.startswith("-"):
        raise MlciConfigError(f"{branch!r} is not a valid branch name.")
    result = git.run(["check-ref-format", "--branch", branch], cwd=cwd, capture=True)
    if result.returncode != 0:
        raise MlciConfigError(f"{branch!r} is not a valid branch name.")
    return branch


def commit_files(workspace: Workspace, files: list[str], spec: CommitSpec) -> CommitResult:
    """Commit ``files`` as they are in the workspace to ``spec.branch`` and push the commit.

    :param workspace: the checkout holding the changed files (its commit is the base they
        were made against)
    :param files: paths relative to the checkout
    :param spec: branch, message, author
    :raises GitConflictError: the branch changed one of the files in a way that conflicts
    :raises GitPushRejectedError: the branch kept moving for ``max_attempts`` tries (retryable)
    :raises GitPushRefusedError: the remote refused the push by a rule of its own (a hook, a
        protected branch); at once, not retried
    """
    git, root = workspace.git, workspace.path
    check_branch(git, root, spec.branch)
    ours: dict[str, bytes | None] = {}
    for name in files:
        path = inside(root, name, what="file to commit")
        ours[name] = path.read_bytes() if path.exists() else None
    env = {**git.env, **spec.environment()}
    remote_ref = f"refs/mlci/remote/{spec.branch}"
    for attempt in range(1, spec.max_attempts + 1):
        fetched = git.run(["fetch", "--quiet", "origin", f"+refs/heads/{spec.branch}:{remote_ref}"], cwd=root)
        tip = git.rev_parse(root, remote_ref) if fetched.returncode == 0 else None
        if fetched.returncode != 0 and not _missing_ref(fetched.tail_text):
            raise git.error(fetched, remote=True)
        base = tip or workspace.sha
        contents = _rebase(workspace, base, ours)
        if tip and all(_blob(workspace, tip, name) == data for name, data in contents.items()):
            return CommitResult(branch=spec.branch, commit=tip, created=False, attempts=attempt)
        commit = commit_tree(workspace, base, contents, spec, env)
        pushed = git.runner.run(
            ["git", "push", "--porcelain", "origin", f"{commit}:refs/heads/{spec.branch}"],
            cwd=root,
            env=env,
            capture=True,
            quiet=True,
        )
        if pushed.returncode == 0:
            return CommitResult(branch=spec.branch, commit=commit, created=True, attempts=attempt)
        error = git.push_failure(pushed, what=f"Commit {commit[:12]} to branch {spec.branch!r}")
        if error is not None:
            raise error
        workspace.git.runner.log.info("Branch %s moved while committing; trying again on its new tip", spec.branch)
    raise GitPushRejectedError(
        f"Branch {spec.branch!r} of {workspace.access.git.display_url} kept moving: no fast-forward push "
        f"in {spec.max_attempts} attempts."
    )


def commit_changes(workspace: Workspace, files: list[str], spec: CommitSpec, log: Any) -> dict[str, Any]:
    """Commit ``files`` as :func:`commit_files` does, saying what happened; return it as JSON.

    :param workspace: the checkout holding the changed files
    :param files: the changed files (none: no commit)
    :param spec: where and how to commit
    :param log: where to say it
    :return: ``{"branch", "commit", "created"}`` (``commit`` is ``None`` when nothing changed)
    """
    if not files:
        log.info("Nothing changed under git: no commit")
        return {"branch": spec.branch, "commit": None, "created": False}
    result = commit_files(workspace, files, spec)
    if result.created:
        log.info("Committed %s to %s as %s", ", ".join(files), spec.branch, result.commit[:12])
    else:
        log.info("Branch %s already holds these files at %s: no new commit", spec.branch, result.commit[:12])
    return {"branch": result.branch, "commit": result.commit, "created": result.created}


def _missing_ref(text: str) -> bool:
    return "couldn't find remote ref" in text.lower()


def _blob(workspace: Workspace, commit: str, name: str) -> bytes | None:
    # A quick local read, as bytes: not through the (text) command runner.
    result = subprocess.run(
        ["git", "cat-file", "blob", f"{commit}:{name}"],
        cwd=workspace.path,
        env=workspace.git.env,
        capture_output=True,
        check=False,
    )
    return result.stdout if result.returncode == 0 else None


def _rebase(workspace: Workspace, tip: str, ours: Mapping[str, bytes | None]) -> dict[str, bytes | None]:
    """Our files as they should be on ``tip``: ours where the tip left the file alone, merged
    line by line where both changed it."""
    if tip == workspace.sha:
        return dict(ours)
    result: dict[str, bytes | None] = {}
    for name, data in ours.items():
        original = _blob(workspace, workspace.sha, name)
        theirs = _blob(workspace, tip, name)
        if theirs in (original, data):
            result[name] = data
        elif data is None or original is None or theirs is None:
            raise GitConflictError(f"{name} was changed on {tip[:12]} and by this run: a conflict to resolve by hand.")
        else:
            result[name] = _merge(workspace, name, data, original, theirs, tip)
    return result


def _merge(workspace: Workspace, name: str, ours: bytes, base: bytes, theirs: bytes, tip: str) -> bytes:
    with private_tempdir("merge") as tmp:
        paths = []
        for label, data in (("ours", ours), ("base", base), ("theirs", theirs)):
            path = Path(tmp) / label
            path.write_bytes(data)
            paths.append(str(path))
        merged = subprocess.run(
            ["git", "merge-file", "-p", *paths], cwd=workspace.path, env=workspace.git.env, capture_output=True
        )
    if merged.returncode != 0:
        raise GitConflictError(
            f"{name} conflicts: it was changed on {tip[:12]} and by this run in the same lines; "
            "resolve by hand (no commit was made)."
        )
    return merged.stdout


def commit_tree(
    workspace: Workspace, base: str, contents: Mapping[str, bytes | None], spec: CommitSpec, env: dict[str, str]
) -> str:
    """Commit ``contents`` (``None``: delete the path) on top of ``base``, touching no working tree; return its id.

    :param workspace: the checkout whose repository holds ``base``
    :param base: the parent commit
    :param contents: path -> new bytes, or ``None`` to remove the path
    :param spec: the message and author
    :param env: git's environment (author and committer included)
    """
    git, root = workspace.git, workspace.path
    with private_tempdir("index") as tmp:
        index_env = {**env, "GIT_INDEX_FILE": os.path.join(tmp, "index")}

        def run(*args: str, input_text: str | None = None) -> str:
            result = git.runner.run(
                ["git", *args], cwd=root, env=index_env, capture=True, quiet=True, input_text=input_text
            )
            if result.returncode != 0:
                raise git.error(result, remote=False)
            return result.stdout.strip()

        run("read-tree", base)
        for name, data in contents.items():
            if data is None:
                run("update-index", "--force-remove", "--", name)
                continue
            blob_path = Path(tmp) / "blob"
            blob_path.write_bytes(data)
            blob = run("hash-object", "-w", "--", str(blob_path))
            mode = "100755" if os.access(root / name, os.X_OK) else "100644"
            run("update-index", "--add", "--cacheinfo", f"{mode},{blob},{name}")
        tree = run("write-tree")
        return run("commit-tree", tree, "-p", base, "-F", "-", input_text=spec.message)
