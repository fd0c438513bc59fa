"""The git command line, with credentials passed through the environment.

HTTPS tokens reach git through ``GIT_ASKPASS`` (a small script that reads them from the
environment); SSH keys through ``GIT_SSH_COMMAND`` pointing at a private key file. Nothing
secret is ever put on a command line, where ``ps`` would show it.
"""

from __future__ import annotations

import os
import re
import stat
import tempfile
from collections.abc import Sequence
from pathlib import Path

from airflow_provider_mlci.core.access import GitAccess
from airflow_provider_mlci.core.process import CommandResult, CommandRunner
from airflow_provider_mlci.exceptions import GitError, GitRemoteError, GitRevisionNotFoundError, MlciConfigError

__all__ = ["Git", "check_rev"]

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$MLCI_GIT_USERNAME" ;;
  *) printf '%s\\n' "$MLCI_GIT_PASSWORD" ;;
esac
"""

_BAD_REV = re.compile(r"[\x00-\x20\x7f]|\.\.|^-|^$")


def check_rev(rev: str) -> str:
    """Return ``rev`` if it can be a git revision, else raise :class:`MlciConfigError`.

    Accepts branch and tag names, commit ids and expressions like ``main~1``; refuses what
    could be read as an option (a leading ``-``), ranges (``..``) and whitespace.

    :param rev: the revision as the user wrote it
    """
    if not isinstance(rev, str) or _BAD_REV.search(rev) or len(rev) > 250:
        raise MlciConfigError(f"{rev!r} is not a valid git revision.")
    return rev


class Git:
    """Run git for one repository URL, with that URL's credentials.

    Use it as a context manager: on entry it writes the SSH key (if any) and the askpass
    helper to a private temporary folder; on exit it removes them.

    :param access: the repository URL and credentials
    :param runner: runs and streams the commands
    """

    def __init__(self, access: GitAccess, runner: CommandRunner) -> None:
        self.access = access
        self.runner = runner
        runner.add_secrets(access.secrets)
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._env: dict[str, str] | None = None

    def __enter__(self) -> Git:
        self._tmp = tempfile.TemporaryDirectory(prefix="mlci-git-")
        self._env = self._environment(Path(self._tmp.name))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._tmp is not None:
            self._tmp.cleanup()
        self._tmp = None
        self._env = None

    @property
    def env(self) -> dict[str, str]:
        """The environment git runs with (holds credentials: never log it)."""
        if self._env is None:
            raise RuntimeError("use Git as a context manager")
        return self._env

    def _environment(self, tmp: Path) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"GIT_TERMINAL_PROMPT": "0", "LC_ALL": "C", "LANGUAGE": "C"})
        env.pop("GIT_DIR", None)
        env.pop("GIT_WORK_TREE", None)
        access = self.access
        if access.password:
            askpass = tmp / "askpass.sh"
            askpass.write_text(_ASKPASS)
            askpass.chmod(stat.S_IRWXU)
            env["GIT_ASKPASS"] = str(askpass)
            env["MLCI_GIT_USERNAME"] = access.username or "x-access-token"
            env["MLCI_GIT_PASSWORD"] = access.password
        key_file = access.key_file
        if access.private_key:
            key_path = tmp / "id_key"
            fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as fh:
                fh.write(access.private_key.strip() + "\n")
            key_file = str(key_path)
        if key_file or access.known_hosts_file or access.strict_host_key_checking != "accept-new":
            ssh = ["ssh", "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={access.strict_host_key_checking}"]
            if key_file:
                ssh += ["-i", _quote(key_file), "-o", "IdentitiesOnly=yes"]
            if access.known_hosts_file:
                ssh += ["-o", f"UserKnownHostsFile={_quote(access.known_hosts_file)}"]
            env["GIT_SSH_COMMAND"] = " ".join(ssh)
        else:
            env.setdefault("GIT_SSH_COMMAND", "ssh -o BatchMode=yes -o StrictHostKeyChecking=accept-new")
        return env

    def run(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        capture: bool = False,
        quiet: bool = True,
    ) -> CommandResult:
        """Run ``git <args>`` and return its result, whatever its exit status.

        :param args: git's arguments
        :param cwd: the working directory
        :param capture: return standard output instead of logging it
        :param quiet: log output at DEBUG level
        """
        return self.runner.run(["git", *args], cwd=cwd, env=self.env, capture=capture, quiet=quiet)

    def check(
        self,
        args: Sequence[str],
        *,
        cwd: str | os.PathLike[str] | None = None,
        capture: bool = False,
        remote: bool = False,
    ) -> str:
        """Run ``git <args>``; raise if it fails, naming the URL when it talked to the remote.

        :param args: git's arguments
        :param cwd: the working directory
        :param capture: return standard output
        :param remote: the command contacts the remote (fetch, clone, push, ls-remote)
        """
        result = self.run(args, cwd=cwd, capture=capture)
        if result.returncode != 0:
            raise self.error(result, remote=remote)
        return result.stdout

    def error(self, result: CommandResult, *, remote: bool) -> GitError:
        """Turn a failed command into the matching error.

        :param result: the failed command
        :param remote: whether it talked to the remote
        """
        detail = result.tail_text.strip() or f"exit status {result.returncode}"
        if remote:
            return GitRemoteError(f"git {result.argv[1]} from {self.access.display_url} failed: {detail}")
        return GitError(f"git {result.argv[1]} failed: {detail}")

    def rev_parse(self, git_dir: str | os.PathLike[str], rev: str) -> str | None:
        """Return the commit id ``rev`` names in the repository at ``git_dir``, or ``None``.

        :param git_dir: a repository (bare or not)
        :param rev: a checked revision
        """
        result = self.run(
            ["rev-parse", "--verify", "--quiet", "--end-of-options", f"{rev}^{{commit}}"],
            cwd=git_dir,
            capture=True,
        )
        sha = result.stdout.strip()
        return sha if result.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", sha) else None

    def not_found(self, rev: str) -> GitRevisionNotFoundError:
        """The error for a revision the repository lacks.

        :param rev: the revision
        """
        return GitRevisionNotFoundError(
            f"Revision {rev!r} does not exist in {self.access.display_url} (no branch, tag or commit by that name)."
        )


def _quote(path: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./~@%+=:,-]+", path):
        return path
    return "'" + path.replace("'", "'\\''") + "'"
