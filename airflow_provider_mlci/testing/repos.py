"""Build a DVC project with a bare git remote and a DVC remote on this machine.

Used by ``make demo`` and by the test suite; handy for testing your own DAGs too::

    project = create_dvc_project(Path("my_project"), tmp_path, track=["data/raw.csv"])
    # project.remote is a bare repository to point an ``mlci_dvc`` connection at
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["DEMO_DATA", "REMOTE_NAME", "LocalDvcProject", "create_demo_project", "create_dvc_project"]

#: The name of the default DVC remote of the projects made here.
REMOTE_NAME = "storage"

#: What the demo project's ``src/generate.py --init`` writes and DVC tracks: day 0's raw data,
#: the frozen evaluation set, and the (empty) base model a refinement starts from.
DEMO_DATA = ("data/raw.csv", "data/eval.csv", "models/base.pkl")

_AUTHOR = {
    "GIT_AUTHOR_NAME": "mlci tests",
    "GIT_AUTHOR_EMAIL": "mlci-tests@example.invalid",
    "GIT_COMMITTER_NAME": "mlci tests",
    "GIT_COMMITTER_EMAIL": "mlci-tests@example.invalid",
}


@dataclass(kw_only=True)
class LocalDvcProject:
    """A working copy of a DVC project, its bare git remote and its DVC remote.

    :param work: the working copy
    :param remote: the bare git repository it pushes to (branch ``main``)
    :param dvc_remote_url: the URL of its default DVC remote
    :param env: extra environment for git and DVC (for example S3 credentials)
    """

    work: Path
    remote: Path
    dvc_remote_url: str
    env: dict[str, str] = field(default_factory=dict)

    def _env(self) -> dict[str, str]:
        env = {**os.environ, **_AUTHOR, **self.env, "DVC_NO_ANALYTICS": "1"}
        env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
        return env

    def git(self, *args: str, cwd: Path | None = None) -> str:
        """Run git in the working copy and return its output.

        :param args: git's arguments
        :param cwd: another folder to run in
        """
        return _run(["git", *args], cwd or self.work, self._env())

    def dvc(self, *args: str) -> str:
        """Run the DVC command line in the working copy and return its output.

        :param args: dvc's arguments
        """
        return _run([sys.executable, "-m", "dvc", *args], self.work, self._env())

    def commit_and_push(self, message: str, *, dvc_push: bool = True, branch: str = "main") -> str:
        """Commit everything, push data to the DVC remote and the commit to ``branch``; return the sha.

        :param message: the commit message
        :param dvc_push: also push DVC-tracked data
        :param branch: the branch checked out in the working copy, pushed to the same name
        """
        self.git("add", "-A")
        self.git("commit", "--quiet", "--allow-empty", "-m", message)
        if dvc_push:
            self.dvc("push", "--quiet")
        self.git("push", "--quiet", "origin", branch)
        return self.head()

    def head(self) -> str:
        """The commit id of the working copy's ``HEAD``."""
        return self.git("rev-parse", "HEAD").strip()

    def copy_to(
        self,
        root: Path,
        *,
        dvc_remote_url: str | None = None,
        dvc_remote_options: Mapping[str, str] | None = None,
        env: Mapping[str, str] | None = None,
    ) -> LocalDvcProject:
        """Copy working copy, git remote and local DVC remote to ``root``; the copy uses its own remotes.

        The copy's DVC remote is ``root/dvc-remote`` (a copy of this one) unless ``dvc_remote_url``
        names another, set in the copy's ``.dvc/config.local`` (the committed config is untouched).

        :param root: an empty or missing folder
        :param dvc_remote_url: another DVC remote for the copy (nothing is pushed there yet)
        :param dvc_remote_options: ``dvc remote modify`` settings for it, e.g. ``endpointurl``
        :param env: extra environment for the copy's git and DVC
        """
        root.mkdir(parents=True, exist_ok=True)
        work, remote = root / "work", root / "remote.git"
        shutil.copytree(self.work, work, symlinks=True)
        shutil.copytree(self.remote, remote, symlinks=True)
        if dvc_remote_url is None:
            dvc_remote_url = str(root / "dvc-remote")
            if Path(self.dvc_remote_url).is_dir():
                shutil.copytree(self.dvc_remote_url, dvc_remote_url, symlinks=True)
        copy = LocalDvcProject(work=work, remote=remote, dvc_remote_url=dvc_remote_url, env={**self.env, **(env or {})})
        copy.git("remote", "set-url", "origin", str(remote))
        lines = [f"['remote \"{REMOTE_NAME}\"']", f"    url = {dvc_remote_url}"]
        lines += [f"    {key} = {value}" for key, value in (dvc_remote_options or {}).items()]
        (work / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")
        return copy

    def remote_refs(self) -> dict[str, str]:
        """Every ref of the bare remote and the commit it points at."""
        out = self.git("for-each-ref", "--format=%(refname) %(objectname)", cwd=self.remote)
        return dict(line.split(" ", 1) for line in out.splitlines() if line)

    def remote_tags(self, prefix: str = "") -> dict[str, str]:
        """The bare remote's tags whose names start with ``prefix`` and the commit each names
        (an annotated tag peeled to its commit)."""
        fmt = "%(refname:lstrip=2) %(*objectname) %(objectname)"
        out = self.git("for-each-ref", f"--format={fmt}", "refs/tags", cwd=self.remote)
        tags = {}
        for line in out.splitlines():
            name, peeled, own = line.split(" ")
            if name.startswith(prefix):
                tags[name] = peeled or own
        return tags


def create_dvc_project(
    template: Path,
    root: Path,
    *,
    track: Sequence[str] = (),
    prepare: Callable[[Path], None] | None = None,
    dvc_remote_url: str | None = None,
    dvc_remote_options: Mapping[str, str] | None = None,
    env: Mapping[str, str] | None = None,
) -> LocalDvcProject:
    """Copy ``template`` to ``root/work``, make it a git + DVC repository and push it.

    :param template: a folder with ``dvc.yaml`` and the project's code
    :param root: an empty folder to build in (``work``, ``remote.git`` and ``dvc-remote`` go there)
    :param track: paths to track with ``dvc add`` (created by ``prepare``)
    :param prepare: called with the working copy before anything is committed (generate data here)
    :param dvc_remote_url: the default DVC remote (default: the folder ``root/dvc-remote``)
    :param dvc_remote_options: ``dvc remote modify`` settings, e.g. ``{"endpointurl": ...}``
    :param env: extra environment for git and DVC (credentials for an S3 remote)
    """
    root.mkdir(parents=True, exist_ok=True)
    work, remote = root / "work", root / "remote.git"
    shutil.copytree(template, work, ignore=shutil.ignore_patterns("__pycache__", ".dvc", ".git"))
    url = dvc_remote_url or str(root / "dvc-remote")
    project = LocalDvcProject(work=work, remote=remote, dvc_remote_url=url, env=dict(env or {}))
    remote.mkdir()
    project.git("init", "--quiet", "--bare", "-b", "main", cwd=remote)
    project.git("config", "receive.denyNonFastForwards", "true", cwd=remote)
    project.git("init", "--quiet", "-b", "main")
    project.git("remote", "add", "origin", str(remote))
    project.dvc("init", "--quiet")
    project.dvc("config", "core.analytics", "false")
    project.dvc("remote", "add", "--default", REMOTE_NAME, url)
    for key, value in (dvc_remote_options or {}).items():
        project.dvc("remote", "modify", REMOTE_NAME, key, value)
    if prepare is not None:
        prepare(work)
    if track:
        project.dvc("add", "--quiet", *track)
    project.commit_and_push("Start the project")
    return project


def create_demo_project(template: Path, root: Path, *, rows: int = 600, **options: Any) -> LocalDvcProject:
    """The demo project (``example_dags/demo_project``) with day 0's data, committed and pushed.

    :param template: the demo project's folder
    :param root: an empty folder to build in
    :param rows: the rows of day 0's raw data
    :param options: more arguments for :func:`create_dvc_project` (remote URL and options, env)
    """

    def generate(work: Path) -> None:
        subprocess.run([sys.executable, "src/generate.py", "--init", "--rows", str(rows)], cwd=work, check=True)

    return create_dvc_project(template, root, track=DEMO_DATA, prepare=generate, **options)


def _run(argv: list[str], cwd: Path, env: dict[str, str]) -> str:
    proc = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:4])} failed in {cwd} ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout
