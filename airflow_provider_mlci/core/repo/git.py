"""The git command line, with credentials passed through the environment.

HTTPS tokens reach git through ``GIT_ASKPASS`` (a small script that reads them from the
environment). An SSH key reaches ssh through ``GIT_SSH_COMMAND``, a small script that writes
the key from the environment into a folder of its own just before ssh connects and removes it
as soon as ssh ends: the key is on disk only while a remote command (fetch, clone, ls-remote,
push) talks to the remote, never while a stage runs. Nothing secret is ever put on a command
line, where ``ps`` would show it, nor in a URL, where git would store it in ``.git/config``.

A remote command that fails for a transient reason (a 5xx or 429 answer, a timeout, a refused
or reset connection, a host name that did not resolve) is tried again after a short, growing
wait (:class:`RetryPolicy`); if it keeps failing it raises the retryable
:class:`~airflow_provider_mlci.exceptions.GitUnavailableError`, so Airflow retries the task.
Refused credentials and missing repositories raise
:class:`~airflow_provider_mlci.exceptions.GitRemoteError` at once: retrying cannot help.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_mlci.core.repo.access import GitAccess
from airflow_provider_mlci.core.runtime.process import CommandResult, CommandRunner, private_tempdir
from airflow_provider_mlci.exceptions import (
    GitError,
    GitPushRefusedError,
    GitRemoteError,
    GitRevisionNotFoundError,
    GitUnavailableError,
    MlciConfigError,
)

__all__ = ["DEFAULT_RETRY", "Git", "RetryPolicy", "check_rev", "remote_error_class"]

_ASKPASS = """#!/bin/sh
case "$1" in
  Username*) printf '%s\\n' "$MLCI_GIT_USERNAME" ;;
  *) printf '%s\\n' "$MLCI_GIT_PASSWORD" ;;
esac
"""

#: ssh with the key from ``$MLCI_GIT_SSH_KEY``, written for this one connection only.
_SSH_WITH_KEY = """#!/bin/sh
umask 077
key_dir=$(mktemp -d {folder}/ssh-$$-XXXXXX) || exit 255
trap 'rm -rf "$key_dir"' EXIT
trap 'exit 129' HUP
trap 'exit 130' INT
trap 'exit 143' TERM
printf '%s\\n' "$MLCI_GIT_SSH_KEY" >"$key_dir/id_key" || exit 255
ssh -i "$key_dir/id_key" -o IdentitiesOnly=yes "$@"
"""

#: What git prints when the remote refused us or has no such repository: not worth a retry.
_REFUSED = re.compile(
    r"authentication failed|could not read (username|password)|invalid username or password|"
    r"returned error: 40[1-4]|\bhttp 40[1-4]\b|permission denied|host key verification failed|"
    r"repository not found|repository '[^']*' not found|does not appear to be a git repository|access denied",
    re.IGNORECASE,
)
#: What git prints when the remote failed or could not be reached: worth another try.
_UNAVAILABLE = re.compile(
    r"returned error: (5[0-9][0-9]|429)|\bhttp (5[0-9][0-9]|429)\b|could not resolve (host|proxy)|"
    r"temporary failure in name resolution|connection (refused|reset|timed out|closed by)|timed out|"
    r"failed to connect to|couldn't connect to server|"
    r"network is unreachable|no route to host|early eof|the remote end hung up unexpectedly|rpc failed|"
    r"transfer closed with outstanding read data|unexpected disconnect|gnutls_handshake\(\) failed|"
    r"ssl_read|ssl_error_syscall|kex_exchange_identification|broken pipe",
    re.IGNORECASE,
)

_BAD_REV = re.compile(r"[\x00-\x20\x7f]|\.\.|^-|^$")

#: A ref's line in ``git push --porcelain`` output: flag, ``src:dst``, summary and ``(reason)``.
_PUSHED_REF = re.compile(r"^(?P<flag>[ +\-*=!])\t(?P<src>[^\t]*):(?P<dst>[^\t]+)\t(?P<summary>[^\t]*)$")
#: Reasons that mean another writer moved the ref first (the client or the remote saw it).
_RACE_REASONS = (
    "already exists",
    "fetch first",
    "non-fast-forward",
    "stale info",
    "cannot lock ref",
    "failed to update ref",
    "incorrect old value",
)
#: Reasons given to the other refs of an atomic push that one ref's refusal sank.
_KNOCK_ON_REASONS = ("atomic push failed", "atomic transaction failed")
_ANSI_CLEAR = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def check_rev(rev: str) -> str:
    """Return ``rev`` if it can be a git revision, else raise :class:`MlciConfigError`.

    Accepts branch and tag names, commit ids and expressions like ``main~1``; refuses what
    could be read as an option (a leading ``-``), ranges (``..``) and whitespace.

    :param rev: the revision as the user wrote it
    """
    if not isinstance(rev, str) or _BAD_REV.search(rev) or len(rev) > 250:
        raise MlciConfigError(f"{rev!r} is not a valid git revision.")
    return rev


@dataclass(frozen=True, kw_only=True)
class RetryPolicy:
    """How a remote git command that failed for a transient reason is tried again.

    :param attempts: tries in all (1: no second try)
    :param delay: seconds to wait before the second try
    :param factor: each later wait is this many times the one before
    """

    attempts: int = 3
    delay: float = 1.0
    factor: float = 2.0

    def wait_before(self, attempt: int) -> float:
        """Seconds to wait before try number ``attempt`` (2 is the first retry).

        :param attempt: the try about to start, counted from 1
        """
        return self.delay * self.factor ** max(attempt - 2, 0)


#: Three tries, 1 s and 2 s apart; Airflow's own retries take over after that.
DEFAULT_RETRY = RetryPolicy()


def remote_error_class(text: str) -> type[GitRemoteError]:
    """The error for a remote command that failed printing ``text``.

    :class:`GitUnavailableError` (retryable) for an outage or a network failure;
    :class:`GitRemoteError` for refused credentials, a missing repository and anything unknown.

    :param text: what the command printed (its last lines)
    """
    if _REFUSED.search(text):
        return GitRemoteError
    if _UNAVAILABLE.search(text):
        return GitUnavailableError
    return GitRemoteError


class Git:
    """Run git for one repository URL, with that URL's credentials.

    Use it as a context manager: on entry it writes the askpass helper (and, with an SSH key,
    the script that hands the key to ssh for one connection at a time) to a private temporary
    folder ``mlci-git-<pid>-*``; on exit it removes the folder. A folder that a killed task left
    behind is removed at the next task start on the worker
    (:func:`~airflow_provider_mlci.core.runtime.process.remove_abandoned_tempdirs`).

    :param access: the repository URL and credentials
    :param runner: runs and streams the commands
    :param retry: how remote commands that failed for a transient reason are tried again
        (default: :data:`DEFAULT_RETRY`)
    """

    def __init__(self, access: GitAccess, runner: CommandRunner, *, retry: RetryPolicy | None = None) -> None:
        self.access = access
        self.runner = runner
        self.retry = retry or DEFAULT_RETRY
        runner.add_secrets(access.secrets)
        self._folder: contextlib.ExitStack | None = None
        self._env: dict[str, str] | None = None

    def __enter__(self) -> Git:
        stack = contextlib.ExitStack()
        folder = stack.enter_context(private_tempdir("git"))
        self._folder = stack
        try:
            self._env = self._environment(folder)
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self._folder is not None:
            self._folder.close()
        self._folder = None
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
        program = "ssh"
        if access.private_key:
            # No key on disk yet: the script writes it for each connection and removes it after.
            wrapper = tmp / "ssh"
            wrapper.write_text(_SSH_WITH_KEY.format(folder=_quote(str(tmp))))
            wrapper.chmod(stat.S_IRWXU)
            program = _quote(str(wrapper))
            env["MLCI_GIT_SSH_KEY"] = access.private_key.strip()
            env["GIT_SSH_VARIANT"] = "ssh"
        if access.private_key or key_file or access.known_hosts_file or access.strict_host_key_checking != "accept-new":
            ssh = [program, "-o", "BatchMode=yes", "-o", f"StrictHostKeyChecking={access.strict_host_key_checking}"]
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
        :param remote: the command contacts the remote (fetch, clone, push, ls-remote): a
            transient failure is tried again as :attr:`retry` says
        :raises GitUnavailableError: the remote kept failing or could not be reached (retryable)
        :raises GitRemoteError: the remote refused us or has no such repository
        """
        attempts = max(self.retry.attempts, 1) if remote else 1
        for attempt in range(1, attempts + 1):
            result = self.run(args, cwd=cwd, capture=capture)
            if result.returncode == 0:
                return result.stdout
            error = self.error(result, remote=remote)
            if not isinstance(error, GitUnavailableError) or attempt == attempts:
                if attempt > 1:
                    error.args = (f"{error.args[0]} (tried {attempt} times)",)
                raise error
            wait = self.retry.wait_before(attempt + 1)
            self.runner.log.warning(
                "git %s from %s failed (try %d of %d); trying again in %.1f s",
                _subcommand(result.argv),
                self.access.display_url,
                attempt,
                attempts,
                wait,
            )
            self.runner.sleep(wait)
        raise AssertionError("unreachable")  # pragma: no cover

    def error(self, result: CommandResult, *, remote: bool) -> GitError:
        """Turn a failed command into the matching error.

        :param result: the failed command
        :param remote: whether it talked to the remote
        """
        detail = result.tail_text.strip() or f"exit status {result.returncode}"
        command = _subcommand(result.argv)
        if remote:
            cls = remote_error_class(detail)
            return cls(f"git {command} from {self.access.display_url} failed: {detail}")
        return GitError(f"git {command} failed: {detail}")

    def push_failure(self, result: CommandResult, *, what: str) -> GitError | None:
        """Tell why a ``git push --porcelain`` failed: ``None`` when another writer moved a ref
        first (a race: redo from the new state), else the error to raise at once.

        A ref the remote itself refused for any other reason (a pre-receive or update hook, a
        protected branch or tag, a permission) gives a :class:`GitPushRefusedError` naming the
        refs, the remote's reason and what the remote printed; a push that failed without
        reporting its refs (network, credentials) the error :meth:`error` gives.

        :param result: the failed push (run with ``--porcelain`` and captured output)
        :param what: what the push was for, to lead the message (``"Promotion of fraud to prod"``)
        """
        refused: list[tuple[str, str, str]] = []  # (ref, summary, reason)
        for line in result.stdout.splitlines():
            match = _PUSHED_REF.match(line)
            if match is None or match["flag"] != "!":
                continue
            summary, _, reason = match["summary"].partition(" (")
            refused.append((match["dst"], summary.strip(), reason.rstrip(")").strip()))
        decisive = [r for r in refused if not any(k in r[2] for k in _KNOCK_ON_REASONS)]
        if refused and not decisive:
            # The remote's atomic transaction failed for every ref; only its own message says why
            # ("cannot lock ref '...': reference already exists" when another writer won).
            said = result.tail_text
            return None if any(m in said for m in _RACE_REASONS) else self.error(result, remote=True)
        if not decisive:
            return self.error(result, remote=True)
        if any(summary == "[rejected]" or any(m in reason for m in _RACE_REASONS) for _, summary, reason in decisive):
            return None
        if not all(summary == "[remote rejected]" for _, summary, _ in decisive):
            return self.error(result, remote=True)
        refs = ", ".join(f"{ref} ({reason or 'no reason given'})" for ref, _, reason in decisive)
        said = [
            _ANSI_CLEAR.sub("", line[len("remote:") :]).strip() for line in result.tail if line.startswith("remote:")
        ]
        said = [line for line in said if line][-20:]
        told = "\n".join(f"  remote: {line}" for line in said) if said else "  (the remote printed nothing more)"
        return GitPushRefusedError(
            f"{what}: {self.access.display_url} refused the push of {refs}. The remote said:\n{told}\n"
            "This is a rule of the remote (a hook, a protected branch or tag, a permission), not a race with "
            "another writer: nothing was pushed, and the same push would be refused again."
        )

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


def _subcommand(argv: Sequence[str]) -> str:
    """The git subcommand of ``argv`` (``fetch`` in ``git -c a=b fetch origin``)."""
    words = list(argv[1:])
    while words and words[0] in ("-c", "-C"):
        words = words[2:]
    return words[0] if words else "?"


def _quote(path: str) -> str:
    if re.fullmatch(r"[A-Za-z0-9_./~@%+=:,-]+", path):
        return path
    return "'" + path.replace("'", "'\\''") + "'"
