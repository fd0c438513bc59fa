"""The shell DVC runs stage commands with (``$SHELL -c <command>``): standard library only.

Started as ``python -I -S sandbox_shell.py <config.json> -c <command>`` by the small script that
:class:`airflow_provider_mlci.core.runtime.sandbox.StageShell` writes and puts in ``SHELL``. It keeps
only the allow-listed environment variables, applies the memory limit, and replaces itself with
``/bin/sh -c <command>``, inside bubblewrap when the sandbox is on. It imports nothing of the
provider (``-S`` leaves site-packages out), so it starts in a few milliseconds.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys

_TIMEOUT_NOTE = 'echo "mlci: the stage command ran past the sandbox time limit of $0 s and was killed" >&2'


def environment(environ: dict[str, str], config: dict) -> dict[str, str]:
    """The variables a stage command may see: allow-listed names and prefixes, then the fixed ones.

    :param environ: the environment DVC gave the shell
    :param config: the shell's configuration (``names``, ``prefixes``, ``deny``, ``set``)
    """
    names, prefixes, deny = set(config["names"]), tuple(config["prefixes"]), tuple(config["deny"])
    kept = {}
    for name, value in environ.items():
        if name in names or (name.startswith(prefixes) and not any(part in name.upper() for part in deny)):
            kept[name] = value
    kept.update(config["set"])
    return kept


def command(config: dict, text: str) -> list[str]:
    """The argv that runs ``text``: ``/bin/sh -c``, under ``timeout`` and bubblewrap when configured.

    :param config: the shell's configuration (``timeout_s``, ``bwrap``)
    :param text: the stage command
    """
    argv = ["/bin/sh", "-c", text]
    timeout_s = config.get("timeout_s")
    if timeout_s:
        limit = str(float(timeout_s))
        runner = f'timeout -s KILL "$0" /bin/sh -c "$1"; s=$?; [ $s -eq 137 ] && {_TIMEOUT_NOTE}; exit $s'
        argv = ["/bin/sh", "-c", runner, limit, text]
    if config.get("bwrap"):
        argv = [*config["bwrap"], "--chdir", os.getcwd(), "--", *argv]
    return argv


def main(argv: list[str]) -> int:
    """Run one stage command as configured (does not return when the command starts)."""
    if len(argv) != 4 or argv[2] != "-c":
        sys.stderr.write(f"mlci stage shell: expected <config> -c <command>, got {argv[1:]!r}\n")
        return 2
    with open(argv[1], encoding="utf-8") as fh:
        config = json.load(fh)
    memory = config.get("memory_bytes")
    if memory:
        resource.setrlimit(resource.RLIMIT_AS, (int(memory), int(memory)))
    run = command(config, argv[3])
    env = environment(dict(os.environ), config)
    if not config.get("bwrap"):
        os.execve(run[0], run, env)  # noqa: S606 (the stage command is run as DVC would run it)
    status = subprocess.run(run, env=env, check=False).returncode
    escapes = list(escaping_links(config["checkout"]))
    if escapes:
        shown = ", ".join(f"{link} -> {target}" for link, target in escapes[:5])
        sys.stderr.write(f"mlci: the stage command left links that lead out of the checkout: {shown}\n")
        return 1
    return status


def escaping_links(root: str):
    """Yield ``(link, target)`` for every symbolic link under ``root`` that leads out of it.

    A sandboxed command cannot read the worker's files, but it can leave a link to one among
    its outputs for DVC (outside the sandbox) to read and push; such a run fails instead.

    :param root: the checkout
    """
    real_root = os.path.realpath(root)
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d != ".git"]
        for name in [*dirs, *files]:
            path = os.path.join(folder, name)
            if os.path.islink(path):
                target = os.path.realpath(path)
                if target != real_root and not target.startswith(real_root + os.sep):
                    yield os.path.relpath(path, root), os.readlink(path)


if __name__ == "__main__":
    sys.exit(main(sys.argv))
