"""Where a revision's own code runs: stage commands and model loading, treated as untrusted.

Whatever a revision contains (stage commands, model pickles) may come from someone we do not
trust, a pull request from a fork for instance. Two levels:

* **Always**: stage commands and the model-loading child get an allow-listed environment
  (:data:`STAGE_ENV_NAMES`, :data:`STAGE_ENV_PREFIXES`, plus the names the user lists); no
  ``AIRFLOW__*`` setting, connection, Fernet or JWT key, or cloud credential reaches them. DVC
  runs stage commands through ``$SHELL -c``; :class:`StageShell` is that shell.
* **Sandbox on** (``[mlci] sandbox``, or ``sandbox=True`` on an operator or task group): the
  code also runs under bubblewrap in new user, PID, mount, IPC, UTS and network namespaces:
  no network, a root made of the system's read-only folders (``/usr``, a few files of
  ``/etc``), the interpreter's folders, the checkout (writable for stage commands) and empty
  ``/tmp`` and home folders. The worker's home, ``airflow.cfg``, ``~/.aws``, key files, the
  DVC cache and ``/proc`` of every other process are not there to read. A sandboxed run is
  also *untrusted* for caching: it uses a DVC cache of its own, beside its checkout and out of
  the sandbox's sight, and never pushes run-cache entries to the shared remote, so nothing it
  wrote is restored into a trusted run. A sandboxed stage that leaves a link leading out of the
  checkout (for DVC to read and push) fails. Where the kernel refuses namespaces (or bubblewrap is missing) a
  :class:`~airflow_provider_mlci.exceptions.SandboxUnavailableError` names the setting; code is
  never run unsandboxed when the sandbox was asked for.

DVC's own pull and push run outside the sandbox, in the DVC child, which gets the remote's
credentials on its standard input and keeps them in memory.
"""

from __future__ import annotations

import functools
import glob
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from airflow_provider_mlci.core.runtime import sandbox_shell
from airflow_provider_mlci.exceptions import MlciConfigError, SandboxUnavailableError

__all__ = [
    "STAGE_ENV_NAMES",
    "STAGE_ENV_PREFIXES",
    "SandboxConfig",
    "StageShell",
    "bwrap_argv",
    "check_available",
    "child_environment",
    "confine",
    "stage_environment",
]

#: Variables a stage command sees when the worker has them.
STAGE_ENV_NAMES = (
    "PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TERM", "USER", "LOGNAME", "TMPDIR",
    "VIRTUAL_ENV", "CONDA_PREFIX", "LD_LIBRARY_PATH", "CUDA_HOME", "CUDA_VISIBLE_DEVICES",
    "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "SOURCE_DATE_EPOCH",
    "PYTHONUNBUFFERED", "PYTHONHASHSEED", "PYTHONDONTWRITEBYTECODE", "PYTHONIOENCODING",
)  # fmt: skip
#: Prefixes of variables a stage command sees (DVC sets ``DVC_ROOT``, ``DVC_STAGE``, ``DVC_EXP_*``).
STAGE_ENV_PREFIXES = ("LC_", "DVC_", "DVCLIVE_", "NVIDIA_")
#: A variable matched by prefix only is still dropped when its name contains one of these.
_DENY_PARTS = ("TOKEN", "SECRET", "PASSWORD", "PASSWD", "CREDENTIAL", "KEY")
#: Prefixes of the worker's own settings, which no child of ours needs.
_WORKER_ONLY_PREFIXES = ("AIRFLOW_", "AIRFLOW__", "_AIRFLOW", "MLCI_GIT_")
#: Files of /etc a program needs to run (users, hosts, libraries, time zone, certificates).
_ETC = (
    "passwd", "group", "hosts", "nsswitch.conf", "ld.so.cache", "ld.so.conf", "ld.so.conf.d", "localtime",
    "timezone", "alternatives", "ssl", "ca-certificates", "mime.types", "os-release", "fonts",
)  # fmt: skip
_SYSTEM = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
_HOME = "/home/mlci-sandbox"
#: The sandbox's own /tmp: an empty tmpfs in its mount namespace, not the worker's.
_TMP = "/tmp"  # noqa: S108


@dataclass(frozen=True, kw_only=True)
class SandboxConfig:
    """How a revision's own code runs.

    :param enabled: run it under bubblewrap, and treat the run as untrusted for caching
    :param env: more environment variables stage commands may see (names, taken from the worker)
    :param network: let sandboxed code reach the network (default: no network at all)
    :param timeout_s: kill a stage command that runs longer (``None``: no limit)
    :param memory_mb: address-space limit of a stage command in MiB (``None``: no limit)
    :param readable: more folders sandboxed code may read (absolute paths)
    :param trusted: whether the run's cache entries may be reused by other runs (``None``: only
        when the sandbox is off; a GPU instance sandboxes every job yet trusts the worker's word)
    """

    enabled: bool = False
    env: tuple[str, ...] = ()
    network: bool = False
    timeout_s: float | None = None
    memory_mb: int | None = None
    readable: tuple[str, ...] = field(default=())
    trusted: bool | None = None

    def __post_init__(self) -> None:
        if isinstance(self.env, str) or not all(isinstance(n, str) and n.isidentifier() for n in self.env):
            raise MlciConfigError(f"sandbox env must be a list of variable names, not {self.env!r}.")
        for name, value in (("timeout_s", self.timeout_s), ("memory_mb", self.memory_mb)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float) or value <= 0):
                raise MlciConfigError(f"sandbox {name} must be a number > 0, not {value!r}.")
        relative = [p for p in self.readable if not os.path.isabs(p)]
        if relative:
            raise MlciConfigError(f"sandbox readable folders must be absolute paths, not {', '.join(relative)}.")

    @classmethod
    def of(cls, value: bool | SandboxConfig | Mapping[str, object] | None, default: SandboxConfig) -> SandboxConfig:
        """The configuration an operator's ``sandbox`` argument asks for.

        :param value: ``None`` (the provider settings), a bool (on or off, other fields from the
            settings), a mapping of fields, or a configuration
        :param default: the configuration from the provider settings
        """
        if value is None:
            return default
        if isinstance(value, SandboxConfig):
            return value
        if isinstance(value, bool):
            return cls(**{**default.__dict__, "enabled": value})
        if isinstance(value, Mapping):
            fields = {**default.__dict__, "enabled": True, **value}
            for name in ("env", "readable"):
                fields[name] = tuple(fields[name])  # type: ignore[arg-type]
            try:
                return cls(**fields)  # type: ignore[arg-type]
            except TypeError as exc:
                raise MlciConfigError(f"sandbox={dict(value)!r}: {exc}") from exc
        raise MlciConfigError(f"sandbox must be true, false or a mapping of options, not {value!r}.")

    @property
    def untrusted(self) -> bool:
        """Whether the run's cache entries must stay out of what trusted runs reuse."""
        return not self.trusted if self.trusted is not None else self.enabled

    def for_instance(self) -> dict[str, object]:
        """The options a GPU instance's agent applies to the job (it always sandboxes it)."""
        return {
            "env": list(self.env),
            "network": self.network,
            "timeout_s": self.timeout_s,
            "memory_mb": self.memory_mb,
            "trusted": not self.untrusted,
        }


def stage_environment(environ: Mapping[str, str], extra: Iterable[str] = ()) -> dict[str, str]:
    """The allow-listed part of ``environ`` that a revision's own code may see.

    :param environ: an environment (the worker's)
    :param extra: more variable names to keep
    """
    config = _shell_config(SandboxConfig(env=tuple(extra)), bwrap=None)
    return sandbox_shell.environment(dict(environ), config)


def child_environment(environ: Mapping[str, str]) -> dict[str, str]:
    """``environ`` without the worker's own settings and secrets (``AIRFLOW*``, git credentials).

    For our children that need more than a stage command (DVC itself: proxies, CA bundles, the
    cloud SDKs' ambient configuration), yet never Airflow's database, keys or connections.

    :param environ: an environment (the worker's)
    """
    return {k: v for k, v in environ.items() if not k.startswith(_WORKER_ONLY_PREFIXES)}


@functools.cache
def _probe(bwrap: str) -> str | None:
    argv = [bwrap, *_base_args(network=False), "--", "/bin/true"]
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=30, env={"PATH": "/usr/bin:/bin"})
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    return None if done.returncode == 0 else (done.stderr.strip() or f"exit status {done.returncode}")


def check_available() -> str:
    """Return bubblewrap's path once it has run a command in new namespaces here; else raise.

    :raises SandboxUnavailableError: bubblewrap is missing, or the kernel refuses namespaces
    """
    bwrap = shutil.which("bwrap")
    if bwrap is None:
        raise SandboxUnavailableError(
            "[mlci] sandbox is on but bubblewrap (bwrap) is not installed on this worker: install it "
            "(Debian/Ubuntu: apt-get install bubblewrap) or run only trusted revisions with the sandbox off."
        )
    problem = _probe(bwrap)
    if problem:
        raise SandboxUnavailableError(
            f"[mlci] sandbox is on but this worker cannot create namespaces for it ({bwrap}: {problem}). "
            "Allow unprivileged user namespaces (sysctl kernel.unprivileged_userns_clone=1, or the AppArmor "
            "profile for bwrap on Ubuntu 24.04), or run only trusted revisions with the sandbox off."
        )
    return bwrap


def _base_args(*, network: bool) -> list[str]:
    args = ["--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL"]
    if network:
        args.append("--share-net")
    for folder in _SYSTEM:
        if os.path.islink(folder):
            args += ["--symlink", os.readlink(folder), folder]
        elif os.path.isdir(folder):
            args += ["--ro-bind", folder, folder]
    for name in _ETC:
        path = os.path.join("/etc", name)
        if os.path.lexists(path):
            args += ["--ro-bind", path, path]
    if os.path.exists("/etc/resolv.conf") and network:
        args += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
    args += ["--proc", "/proc", "--dev", "/dev", "--tmpfs", _TMP, "--tmpfs", _HOME]
    gpus = sorted(glob.glob("/dev/nvidia*")) + sorted(glob.glob("/dev/dri/*"))
    for device in gpus:  # CUDA needs its device nodes, and reads the driver's state under /sys
        args += ["--dev-bind", device, device]
    if gpus:
        args += ["--ro-bind", "/sys", "/sys"]
    return args


def _interpreter_folders(python: str | None) -> list[str]:
    folders = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    if python:
        venv = Path(python).parent.parent
        folders |= {str(venv), os.path.dirname(os.path.realpath(python))}
        cfg = venv / "pyvenv.cfg"
        if cfg.is_file():
            for line in cfg.read_text().splitlines():
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    folders.add(str(Path(value.strip()).parent))
    return sorted(f for f in folders if f and f != "/" and os.path.isdir(f))


def bwrap_argv(
    config: SandboxConfig,
    *,
    writable: Sequence[str | os.PathLike[str]] = (),
    readable: Sequence[str | os.PathLike[str]] = (),
    masked: Sequence[str | os.PathLike[str]] = (),
    python: str | None = None,
) -> list[str]:
    """The bubblewrap command line (up to ``--``) that runs code as ``config`` says.

    :param config: the sandbox configuration (must be enabled)
    :param writable: folders the code may write (the checkout)
    :param readable: more folders or files it may read
    :param masked: folders inside ``writable`` it must not see (replaced by empty ones)
    :param python: the interpreter it runs with, if not this one (its folders become readable)
    :raises SandboxUnavailableError: bubblewrap cannot run here
    """
    bwrap = check_available()
    args = [bwrap, *_base_args(network=config.network)]
    for folder in [*_interpreter_folders(python), *config.readable, *map(str, readable)]:
        if os.path.exists(folder):
            args += ["--ro-bind", folder, folder]
    for folder in map(str, writable):
        args += ["--bind", folder, folder]
    for folder in map(str, masked):
        if os.path.isdir(folder):
            args += ["--tmpfs", folder]
    return args


def confine(
    config: SandboxConfig,
    argv: Sequence[str],
    *,
    cwd: str | os.PathLike[str],
    environ: Mapping[str, str],
    writable: Sequence[str | os.PathLike[str]] = (),
    readable: Sequence[str | os.PathLike[str]] = (),
    python: str | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that run ``argv`` as a revision's own code.

    The environment is always the allow-listed one; with the sandbox on, the command runs under
    bubblewrap, seeing ``cwd`` and ``readable`` read-only and ``writable`` read-write.

    :param config: the sandbox configuration
    :param argv: the command
    :param cwd: its working directory
    :param environ: the environment to take the allow-listed variables from
    :param writable: folders it may write
    :param readable: more folders or files it may read
    :param python: the interpreter it runs with, if not this one
    :raises SandboxUnavailableError: the sandbox is on and cannot run here
    """
    env = stage_environment(environ, config.env)
    if not config.enabled:
        return list(argv), env
    env.update({"HOME": _HOME, "TMPDIR": _TMP})
    prefix = bwrap_argv(config, writable=writable, readable=[cwd, *readable], python=python)
    return [*prefix, "--chdir", str(cwd), "--", *argv], env


def _shell_config(
    config: SandboxConfig, *, bwrap: list[str] | None, path: str | None = None, checkout: str | None = None
) -> dict:
    fixed = {"SHELL": "/bin/sh", "DVC_NO_ANALYTICS": "1"}
    if bwrap:
        fixed.update({"HOME": _HOME, "TMPDIR": _TMP})
    if path:
        fixed["PATH"] = path
    return {
        "names": [*STAGE_ENV_NAMES, *config.env],
        "prefixes": list(STAGE_ENV_PREFIXES),
        "deny": list(_DENY_PARTS),
        "set": fixed,
        "timeout_s": config.timeout_s,
        "memory_bytes": int(config.memory_mb * 1024 * 1024) if config.memory_mb else None,
        "bwrap": bwrap,
        "checkout": checkout,
    }


@dataclass(frozen=True, kw_only=True)
class StageShell:
    """The ``SHELL`` a DVC child runs stage commands with, written into a private folder.

    :param path: the script to put in ``SHELL``
    """

    path: str

    @classmethod
    def write(
        cls,
        folder: str | os.PathLike[str],
        config: SandboxConfig,
        *,
        checkout: str | os.PathLike[str],
        python: str | None = None,
        path: str | None = None,
        readable: Sequence[str | os.PathLike[str]] = (),
    ) -> StageShell:
        """Write the shell and its configuration into ``folder`` (which must be private to the task).

        :param folder: a private folder that outlives the DVC child
        :param config: the sandbox configuration
        :param checkout: the checkout stage commands run in (writable when sandboxed)
        :param python: the interpreter stage commands use, if not this one
        :param path: the ``PATH`` stage commands get (default: the worker's, as DVC passes it)
        :param readable: more folders sandboxed commands may read (the repository's mirror, so
            that git works in the checkout)
        :raises SandboxUnavailableError: the sandbox is on and cannot run here
        """
        folder = Path(folder)
        bwrap = None
        if config.enabled:
            dvc_tmp = Path(checkout) / ".dvc" / "tmp"  # DVC's locks and state: not the stage's business
            dvc_tmp.mkdir(parents=True, exist_ok=True)
            bwrap = bwrap_argv(config, writable=[checkout], readable=readable, masked=[dvc_tmp], python=python)
        settings = folder / "stage-shell.json"
        shell = _shell_config(config, bwrap=bwrap, path=path, checkout=str(checkout))
        settings.write_text(json.dumps(shell), encoding="utf-8")
        script = folder / "mlci-stage-shell"
        script.write_text(
            "#!/bin/sh\n"
            f'exec {_quote(sys.executable)} -I -S {_quote(sandbox_shell.__file__)} {_quote(str(settings))} "$@"\n',
            encoding="utf-8",
        )
        script.chmod(0o700)
        return cls(path=str(script))


def _quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"
