"""``make smoke``: the smoke set of the suite on other supported Airflow and Python versions.

The whole suite runs on the main combination (``constraints.txt``: the newest Airflow on Python
3.11). Each other combination named here has its own committed pins,
``constraints/airflow-<A.B>-python-<X.Y>.txt`` (``make constraints`` writes them all with ``uv pip
compile``), and gets a virtualenv of its own under ``.venv-smoke/`` with the package (editable) and
its ``dev`` extra installed from those pins. There ``pytest -m smoke`` runs the tests marked
``smoke``: the parse-cost guard, the example DAGs in a DagBag, one ``dag.test()`` each of a
pipeline reproduction, data validation and a report, ``airflow providers get`` and ``airflow
plugins``, and page requests to the reports plugin in a real ``airflow api-server``.

The interpreters come from ``PATH`` (``python3.13``), else from pyenv's versions; uv cannot
download one here. A missing interpreter fails the run under CI (``CI`` set) and is skipped otherwise. Exits
non-zero when a combination fails; prints the time of each.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from test_wheel import _clean_env, _uv  # scripts/ is this script's first sys.path entry

ROOT = Path(__file__).resolve().parent.parent
CONSTRAINTS = ROOT / "constraints"
VENVS = ROOT / ".venv-smoke"
#: What ``.ci/run`` checks besides the main combination: each supported Airflow and Python once.
DEFAULT = ("airflow-3.1-python-3.11", "airflow-3.2-python-3.12", "airflow-3.3-python-3.13")


@dataclass(frozen=True)
class Combination:
    """One Airflow minor version on one Python minor version.

    :param airflow: ``3.1``
    :param python: ``3.11``
    """

    airflow: str
    python: str

    @classmethod
    def parse(cls, name: str) -> Combination:
        match = re.fullmatch(r"airflow-(\d+\.\d+)-python-(\d+\.\d+)", name)
        if match is None:
            raise SystemExit(f"not a combination: {name!r} (expected airflow-<A.B>-python-<X.Y>)")
        return cls(airflow=match[1], python=match[2])

    @property
    def name(self) -> str:
        return f"airflow-{self.airflow}-python-{self.python}"

    @property
    def constraints(self) -> Path:
        return CONSTRAINTS / f"{self.name}.txt"


def interpreter(python: str) -> str | None:
    """The interpreter for Python ``python`` (``3.13``) on ``PATH``, else pyenv's, else ``None``."""
    pyenv = Path(os.environ.get("PYENV_ROOT") or Path.home() / ".pyenv") / "versions"
    candidates = [shutil.which(f"python{python}")]
    candidates += [str(path) for path in sorted(pyenv.glob(f"{python}.*/bin/python{python}"), reverse=True)]
    for found in filter(None, candidates):
        probe = subprocess.run(
            [found, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
            capture_output=True,
            text=True,
            check=False,
        )
        if probe.returncode == 0 and probe.stdout.strip() == python:
            return found
    return None


#: What Airflow's api-server and in-process execution API are built on. A release of Airflow works
#: with these as they were when it came out, not always with later ones (Airflow 3.2.2's
#: ``dag.test()`` fails with today's Cadwyn and FastAPI), so they are resolved as of its release.
WEB_STACK = ("a2wsgi", "cadwyn", "fastapi", "pydantic", "pydantic-core", "starlette", "svcs", "uvicorn")


def release_time(airflow: str) -> tuple[str, str]:
    """The newest final release of Airflow ``airflow`` (``3.2``) on PyPI and when its wheel was uploaded."""
    import json
    import urllib.request

    from packaging.version import Version

    request = urllib.request.Request(
        "https://pypi.org/simple/apache-airflow/", headers={"Accept": "application/vnd.pypi.simple.v1+json"}
    )
    with urllib.request.urlopen(request, timeout=60) as response:  # noqa: S310 (PyPI)
        index = json.load(response)
    uploaded: dict[Version, str] = {}
    for entry in index["files"]:
        match = re.fullmatch(r"apache_airflow-([^-]+)-py3-none-any\.whl", entry["filename"])
        if match and not entry.get("yanked"):
            version = Version(match[1])
            if not version.is_prerelease and f"{version.major}.{version.minor}" == airflow:
                uploaded[version] = entry["upload-time"]
    newest = max(uploaded)
    return str(newest), uploaded[newest]


def compile_constraints(combo: Combination) -> None:
    """Write the combination's pins: the package with its ``dev`` extra, on the newest Airflow of the
    minor version, with Airflow's web stack as of that release."""
    version, uploaded = release_time(combo.airflow)
    pin = combo.constraints.with_suffix(".in")
    pin.write_text(f"apache-airflow=={version}\n")
    as_of = [arg for name in WEB_STACK for arg in ("--exclude-newer-package", f"{name}={uploaded}")]
    try:
        out = subprocess.run(
            [
                _uv(),
                "pip",
                "compile",
                "--quiet",
                "--no-config",
                "-p",
                combo.python,
                "setup.cfg",
                "--extra",
                "dev",
                "-c",
                str(pin),
                "--no-annotate",
                "--no-header",
                *as_of,
            ],
            cwd=ROOT,
            env=_clean_env(),
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        pin.unlink()
    header = (
        f"# Pins that install together for Airflow {version} on Python {combo.python} (Linux x86_64), the\n"
        f"# package's dev extra included, Airflow's web stack as of its release ({uploaded[:10]}).\n"
        "# Regenerate with: make constraints\n"
    )
    combo.constraints.write_text(header + out)
    print(f"wrote {combo.constraints.relative_to(ROOT)}")


def prepare(combo: Combination, python: str) -> Path:
    """The combination's virtualenv with the package and its dev extra, made again when its pins change."""
    venv = VENVS / combo.name
    stamp = venv / ".mlci-installed"
    digest = hashlib.sha256(combo.constraints.read_bytes() + (ROOT / "setup.cfg").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    uv = _uv()
    subprocess.run([uv, "venv", "--quiet", "--no-config", "--python", python, str(venv)], env=_clean_env(), check=True)
    subprocess.run(
        [
            uv,
            "pip",
            "install",
            "--quiet",
            "--compile-bytecode",  # as `make install` (see the Makefile)
            "--no-config",
            "--python",
            str(venv / "bin" / "python"),
            "-c",
            str(combo.constraints),
            "-e",
            ".[dev]",
        ],
        cwd=ROOT,
        env=_clean_env(),
        check=True,
    )
    stamp.write_text(digest)
    return venv


def run(combo: Combination, venv: Path, pytest_args: list[str]) -> int:
    """``pytest -m smoke`` in the combination's virtualenv; its exit code."""
    python = str(venv / "bin" / "python")
    version = subprocess.run(
        [python, "-c", "import airflow, sys; print(airflow.__version__, sys.version.split()[0])"],
        capture_output=True,
        text=True,
        env=_clean_env(),
        check=True,
    ).stdout.split()
    print(f"== {combo.name}: Airflow {version[0]} on Python {version[1]}", flush=True)
    if not version[0].startswith(combo.airflow + ".") or not version[1].startswith(combo.python + "."):
        print(f"{venv} does not hold Airflow {combo.airflow} on Python {combo.python}", file=sys.stderr)
        return 1
    env = {**_clean_env(), "PATH": f"{venv / 'bin'}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = [python, "-m", "pytest", "-m", "smoke", "-p", "no:cacheprovider", "--durations=5", *pytest_args]
    return subprocess.run(argv, cwd=ROOT, env=env, check=False).returncode


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("combinations", nargs="*", default=list(DEFAULT), help="airflow-<A.B>-python-<X.Y> ...")
    parser.add_argument("--compile", action="store_true", help="write the combinations' constraints, run nothing")
    parser.add_argument("--pytest", default="-n 2 --dist loadfile", help="more pytest arguments (default: %(default)s)")
    args = parser.parse_args()
    combos = [Combination.parse(name) for name in args.combinations]
    if args.compile:
        CONSTRAINTS.mkdir(exist_ok=True)
        for combo in combos:
            compile_constraints(combo)
        return 0
    failed: list[str] = []
    timings: list[str] = []
    for combo in combos:
        started = time.monotonic()
        python = interpreter(combo.python)
        if python is None:
            message = f"no python{combo.python} on PATH: {combo.name} not checked"
            if os.environ.get("CI"):
                print(f"FAILED: {message}", file=sys.stderr)
                failed.append(combo.name)
            else:
                print(f"SKIPPED: {message}")
            continue
        if not combo.constraints.exists():
            print(f"FAILED: {combo.constraints.relative_to(ROOT)} is missing (make constraints)", file=sys.stderr)
            failed.append(combo.name)
            continue
        code = run(combo, prepare(combo, python), args.pytest.split())
        if code != 0:
            failed.append(combo.name)
        timings.append(f"{combo.name} {time.monotonic() - started:.0f} s")
    print("smoke: " + "  ".join(timings))
    if failed:
        print(f"smoke FAILED on: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
