"""Show that tests catch a deliberate break: ``python scripts/break.py FILE OLD NEW -- PYTEST_ARGS...``.

Copies the working tree (what git tracks or would track, uncommitted changes included) to a
temporary folder, replaces the one occurrence of ``OLD`` in ``FILE`` with ``NEW`` there, and runs
pytest with ``PYTEST_ARGS`` on that copy (``PYTHONPATH`` puts the copy's package first, for the
tests and every process they start). The checkout itself is never edited, so tests running beside
it are not disturbed.

Exit status: 0 when the tests failed (the break was caught), 1 when they passed (it was not), 2
when the break could not be made or pytest did not run the tests (a collection or usage error).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def copy_tree(destination: Path) -> None:
    """The files git tracks or would track (not ignored) under ``ROOT``, copied to ``destination``."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = ROOT / name
        if not source.is_file():  # deleted in the working tree
            continue
        target = destination / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)


def main(argv: list[str]) -> int:
    if "--" not in argv or argv.index("--") != 3:
        print(__doc__, file=sys.stderr)
        return 2
    file, old, new = argv[:3]
    pytest_args = argv[4:]
    with tempfile.TemporaryDirectory(prefix="mlci-break-") as scratch:
        copy = Path(scratch) / "tree"
        copy_tree(copy)
        target = copy / file
        text = target.read_text()
        if text.count(old) != 1:
            print(f"break: {file} holds {text.count(old)} occurrences of {old!r}, not one", file=sys.stderr)
            return 2
        target.write_text(text.replace(old, new))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(copy), os.environ.get("PYTHONPATH")]))}
        where = subprocess.run(
            [sys.executable, "-c", "import airflow_provider_mlci as p; print(p.__file__)"],
            cwd=copy,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        if not where.startswith(str(copy)):
            print(f"break: the package imports from {where}, not from the broken copy", file=sys.stderr)
            return 2
        print(f"break: {file}: {old!r} -> {new!r}; pytest {' '.join(pytest_args)}", flush=True)
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *pytest_args]
        rc = subprocess.run(command, cwd=copy, env=env).returncode
    if rc == 1:
        print("break: CAUGHT (the tests failed against the broken copy)")
        return 0
    if rc == 0:
        print("break: NOT CAUGHT (the tests passed against the broken copy)")
        return 1
    print(f"break: pytest exited {rc}: the tests did not run as asked", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
