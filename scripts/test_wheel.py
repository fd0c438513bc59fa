"""``make test-wheel``: the built wheel alone, installed into a clean virtualenv, runs the examples.

What a user gets from ``pip install airflow-provider-mlci -c constraints.txt``, checked outside
this repository:

1. build the sdist and, from it, the wheel (``python -m build``); the wheel holds ``py.typed``
   and the license, and none of ``tests/``, ``example_dags/`` or ``bench/``;
2. a new virtualenv (``uv venv``) on the interpreter this script runs on (or ``--python``), and
   into it ``uv pip install -c constraints.txt <wheel>``: only the package's own requirements, no
   ``dev`` extra; ``uv pip check`` finds them consistent;
3. from a folder outside the repository, with an environment built from nothing (no
   ``PYTHONPATH``, no user site; ``python -P``), ``import airflow_provider_mlci`` must come from
   the new virtualenv's site-packages;
4. ``airflow db migrate`` (SQLite), the demo DVC project (``example_dags/demo_project``, whose
   stages need only the standard library and PyYAML, which the provider brings) pushed to a local
   bare git remote and DVC remote, and three example DAGs with ``dag.test()`` in that virtualenv:
   ``example_dvc_repro`` (validate, reproduce the pipeline: every stage runs),
   ``example_data_validation`` (pandera, drift) and ``example_pr_report`` (metrics, params and
   plots of two trained revisions);
5. what a GPU instance's boot script installs (the agent's requirement list, then the worker's
   agent wheel with ``--no-deps``) in another new virtualenv: the agent's modules import there,
   Airflow is not installed, ``python -m airflow_provider_mlci.agent --help`` runs.

A runtime requirement missing from ``install_requires`` fails step 4 (the task that imports it
fails). ``--source`` builds another copy of the source tree (to see that: remove ``pyarrow``
from its ``setup.cfg``). Needs uv (``.venv/bin/uv``) and PyPI or uv's cache; exits non-zero on
any failure and prints the time of each step.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ("example_dvc_repro", "example_data_validation", "example_pr_report")


class WheelCheckError(Exception):
    """What the wheel or a DAG run did differs from what a user needs."""


def check(condition: Any, message: str) -> None:
    if not condition:
        raise WheelCheckError(message)


# ------------------------------------------------------------------------------------ outside


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=ROOT, help="the source tree to build (default: this one)")
    parser.add_argument("--python", default=_base_python(), help="the interpreter of the clean virtualenv")
    parser.add_argument("--constraints", type=Path, default=ROOT / "constraints.txt")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (printed)")
    parser.add_argument("--inside", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.inside:
        return _inside(args.inside)

    work = Path(tempfile.mkdtemp(prefix="mlci-wheel-"))
    timings: dict[str, float] = {}
    started = time.monotonic()
    try:
        wheel = _step(timings, "build", lambda: build(args.source.resolve(), work / "dist"))
        venv = _step(timings, "venv + install", lambda: install(wheel, work / "venv", args.python, args.constraints))
        env = environment(work, venv)
        _step(timings, "isolation", lambda: check_isolation(venv, env, work))
        _step(timings, "airflow db migrate", lambda: _run([str(venv / "bin" / "airflow"), "db", "migrate"], env, work))
        copy_examples(args.source.resolve() / "example_dags", work / "examples")
        shutil.copyfile(Path(__file__), work / "test_wheel.py")
        command = [str(venv / "bin" / "python"), "-P", str(work / "test_wheel.py"), "--inside", str(work)]
        _step(timings, "three example DAGs", lambda: _run(command, env, work, quiet=False))
        _step(timings, "agent without Airflow", lambda: check_agent(venv, work / "agent", env))
    except (WheelCheckError, subprocess.CalledProcessError) as exc:
        print(f"\nwheel check FAILED: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.keep:
            print(f"kept: {work}")
        else:
            _step(timings, "clean up", lambda: shutil.rmtree(work, ignore_errors=True))
        total = time.monotonic() - started
        print("  ".join(f"{name} {seconds:.0f} s" for name, seconds in timings.items()) + f"  total {total:.0f} s")
    print("wheel check passed: the wheel alone runs validation, a pipeline reproduction and a report")
    return 0


def copy_examples(source: Path, target: Path) -> None:
    """The three example DAG files and the demo project (DAG files are the user's, not the package's)."""
    shutil.copytree(source / "demo_project", target / "demo_project", ignore=shutil.ignore_patterns("__pycache__"))
    for dag_id in EXAMPLES:
        shutil.copyfile(source / f"{dag_id}.py", target / f"{dag_id}.py")


def _base_python() -> str:
    """The interpreter this virtualenv was made from (``.venv``'s base), else this one."""
    return getattr(sys, "_base_executable", "") or sys.executable


def _step(timings: dict[str, float], name: str, action: Callable[[], Any]) -> Any:
    print(f"== {name}", flush=True)
    started = time.monotonic()
    try:
        return action()
    finally:
        timings[name] = time.monotonic() - started


def _run(argv: list[str], env: dict[str, str] | None, cwd: Path, *, quiet: bool = True) -> str:
    """Run ``argv``; its output is returned (``quiet``) or streamed; a failure shows the output."""
    if not quiet:
        subprocess.run(argv, env=env, cwd=cwd, check=True)
        return ""
    proc = subprocess.run(argv, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        print(proc.stdout[-6000:], proc.stderr[-6000:], sep="\n", file=sys.stderr)
        raise subprocess.CalledProcessError(proc.returncode, argv[:3])
    return proc.stdout


def _uv() -> str:
    found = Path(sys.executable).parent / "uv"
    return str(found) if found.exists() else shutil.which("uv") or "uv"


def _clean_env() -> dict[str, str]:
    """This environment without what would point uv or Python at this repository's ``.venv``."""
    return {key: value for key, value in os.environ.items() if key not in ("VIRTUAL_ENV", "PYTHONPATH", "UV_PYTHON")}


def build(source: Path, outdir: Path) -> Path:
    """Build the sdist, then the wheel from it; check what the wheel holds; return its path."""
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(outdir), str(source)], None, source)
    (wheel,) = outdir.glob("airflow_provider_mlci-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        meta = next(name for name in names if name.endswith(".dist-info/METADATA"))
        metadata = archive.read(meta).decode()
    check("airflow_provider_mlci/py.typed" in names, f"{wheel.name} lacks airflow_provider_mlci/py.typed")
    missing = sorted(set(package_files(source)) - set(names))
    check(not missing, f"{wheel.name} lacks files of the package: {missing}")
    check(any(re.search(r"\.dist-info/licenses/LICENSE$", name) for name in names), f"{wheel.name} lacks LICENSE")
    stray = sorted({name.split("/")[0] for name in names} - {"airflow_provider_mlci", meta.split("/")[0]})
    check(not stray, f"{wheel.name} holds more than the package: {stray}")
    for label in ("Source", "Issues", "Documentation", "Changelog"):
        check(f"Project-URL: {label}, " in metadata, f"{wheel.name}'s metadata has no Project-URL {label}")
    print(f"built {wheel.name} ({wheel.stat().st_size // 1024} KiB)")
    return wheel


def package_files(source: Path) -> list[str]:
    """The package's files in the source tree (what git tracks or would add; any file outside git)."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "airflow_provider_mlci"],
        cwd=source,
        capture_output=True,
        text=True,
        check=False,
    )
    if listed.returncode == 0 and listed.stdout.strip():
        names = listed.stdout.splitlines()
    else:
        names = [
            str(path.relative_to(source)) for path in (source / "airflow_provider_mlci").rglob("*") if path.is_file()
        ]
    return [name for name in names if "__pycache__" not in name and (source / name).is_file()]


def install(wheel: Path, venv: Path, python: str, constraints: Path) -> Path:
    """A new virtualenv on ``python`` with ``wheel`` and its requirements only, pinned by ``constraints``."""
    uv = _uv()
    env = _clean_env()
    _run([uv, "venv", "--quiet", "--no-config", "--python", python, str(venv)], env, venv.parent)
    target = str(venv / "bin" / "python")
    # compiled, as pip compiles what it installs (and PYTHONDONTWRITEBYTECODE would make every process compile it)
    install_cmd = [uv, "pip", "install", "--quiet", "--compile-bytecode", "--no-config", "--python", target]
    install_cmd += ["-c", str(constraints)]
    _run([*install_cmd, str(wheel)], env, venv.parent)
    _run([uv, "pip", "check", "--quiet", "--no-config", "--python", target], env, venv.parent)
    listed = _run([uv, "pip", "list", "--no-config", "--python", target, "--format", "json"], env, venv.parent)
    names = {item["name"].lower() for item in json.loads(listed)}
    for dev_only in ("pytest", "moto", "scikit-learn", "apache-airflow-providers-github"):
        check(
            dev_only not in names,
            f"{dev_only} is installed: the clean virtualenv must hold the wheel's requirements only",
        )
    print(f"installed {len(names)} distributions")
    return venv


def environment(work: Path, venv: Path) -> dict[str, str]:
    """An environment from nothing: the new virtualenv first on PATH, Airflow and git in ``work``."""
    home = work / "home"
    home.mkdir()
    gitconfig = home / ".gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = mlci wheel check\n\temail = mlci-wheel@example.invalid\n[init]\n\tdefaultBranch = main\n"
    )
    others = [part for part in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep) if not _in_python_env(part)]
    airflow = work / "airflow"
    (airflow / "dags").mkdir(parents=True)
    return {
        "PATH": os.pathsep.join([str(venv / "bin"), *others]),
        "HOME": str(home),
        "LANG": "C.UTF-8",
        "TMPDIR": str(work),
        "PYTHONNOUSERSITE": "1",
        "AIRFLOW_HOME": str(airflow),
        "AIRFLOW__CORE__DAGS_FOLDER": str(airflow / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__MLCI__CACHE_DIR": str(work / "worker-cache"),
        "AIRFLOW__MLCI__REPORTS_DIR": str(work / "reports"),
        "AWS_CONFIG_FILE": str(home / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-absent"),
        "AWS_EC2_METADATA_DISABLED": "true",
        "DVC_NO_ANALYTICS": "1",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
    }


def _in_python_env(folder: str) -> bool:
    """Whether ``folder`` is the ``bin`` of a virtualenv (this repository's ``.venv`` above all)."""
    return bool(folder) and (Path(folder).parent / "pyvenv.cfg").exists()


def check_isolation(venv: Path, env: dict[str, str], cwd: Path) -> None:
    """``import airflow_provider_mlci`` resolves inside the new virtualenv, and nothing of the repository does."""
    probe = (
        "import json, sys, sysconfig, airflow_provider_mlci; "
        "print(json.dumps({'package': airflow_provider_mlci.__file__, 'site': sysconfig.get_paths()['purelib'], "
        "'path': sys.path}))"
    )
    found = json.loads(_run([str(venv / "bin" / "python"), "-P", "-c", probe], env, cwd).strip().splitlines()[-1])
    site = Path(found["site"]).resolve()
    check(site.is_relative_to(venv.resolve()), f"site-packages {site} is not in {venv}")
    check(Path(found["package"]).resolve().is_relative_to(site), f"airflow_provider_mlci came from {found['package']}")
    leaks = [entry for entry in found["path"] if entry and Path(entry).resolve().is_relative_to(ROOT)]
    check(not leaks, f"sys.path reaches into the repository: {leaks}")
    print(f"airflow_provider_mlci from {found['package']}")


#: What a GPU instance's agent runs: its entry point, the DVC child process it starts, and what they import.
AGENT_MODULES = (
    "airflow_provider_mlci.agent",
    "airflow_provider_mlci.core.dvc.child",
    "airflow_provider_mlci.core.dvc.ops",
    "airflow_provider_mlci.core.repo.access",
    "airflow_provider_mlci.core.runtime.sandbox",
    "airflow_provider_mlci.core.runtime.process",
    "airflow_provider_mlci.core.experiments.child",
    "dvc.repo",
    "dvc_s3",
    "boto3",
)


def check_agent(venv: Path, target: Path, env: dict[str, str]) -> None:
    """What the boot script installs on a GPU instance, in a virtualenv of its own: the agent's
    requirement list, then the worker's agent wheel with ``--no-deps``. The agent's modules import
    there, Airflow is not installed, and ``python -m airflow_provider_mlci.agent --help`` runs."""
    target.mkdir()
    made = (
        "import json, sys; from pathlib import Path; "
        "from airflow_provider_mlci.core.compute import agent_dist as a; "
        "wheel = Path(sys.argv[1]) / a.wheel_name(); wheel.write_bytes(a.package_wheel()); "
        "print(json.dumps({'wheel': str(wheel), 'requirements': a.agent_requirements()}))"
    )
    found = json.loads(
        _run([str(venv / "bin" / "python"), "-P", "-c", made, str(target)], env, target).splitlines()[-1]
    )
    uv = _uv()
    agent = target / "venv"
    clean = _clean_env()
    _run([uv, "venv", "--quiet", "--no-config", "--python", str(venv / "bin" / "python"), str(agent)], clean, target)
    python = str(agent / "bin" / "python")
    _run([uv, "pip", "install", "--quiet", "--no-config", "--python", python, *found["requirements"]], clean, target)
    _run(
        [uv, "pip", "install", "--quiet", "--no-config", "--no-deps", "--python", python, found["wheel"]], clean, target
    )
    probe = (
        "import importlib, importlib.util, json; "
        f"[importlib.import_module(name) for name in {AGENT_MODULES!r}]; "
        "print(json.dumps({'airflow': importlib.util.find_spec('airflow') is not None}))"
    )
    result = json.loads(_run([python, "-P", "-c", probe], env, target).splitlines()[-1])
    check(not result["airflow"], f"Airflow is installed beside the agent: {found['requirements']}")
    usage = _run([python, "-P", "-m", "airflow_provider_mlci.agent", "--help"], env, target)
    check("--mailbox" in usage, f"the agent's --help: {usage[:500]}")
    print(f"agent: {len(found['requirements'])} requirements ({', '.join(found['requirements'])}), no Airflow")


# ------------------------------------------------------------------------------------ inside


def _inside(work: Path) -> int:
    """In the clean virtualenv: the demo project, then the three example DAGs with ``dag.test()``."""
    import sysconfig

    import airflow_provider_mlci
    from airflow_provider_mlci.testing import create_demo_project

    site = Path(sysconfig.get_paths()["purelib"]).resolve()
    check(Path(airflow_provider_mlci.__file__).resolve().is_relative_to(site), "not the installed package")
    examples = work / "examples"
    project = create_demo_project(examples / "demo_project", work / "project", rows=600)
    connection = {
        "conn_type": "mlci_dvc",
        "host": str(project.remote),
        "extra": {"dvc_remote_url": project.dvc_remote_url},
    }
    os.environ["AIRFLOW_CONN_MLCI_DVC_DEFAULT"] = json.dumps(connection)
    try:
        _repro(work, project)
        _validation(work, project)
        _report(work, project)
    except WheelCheckError as exc:
        print(f"\nFAILED: {exc}", file=sys.stderr)
        return 1
    return 0


def _dag_test(work: Path, dag_id: str, conf: dict[str, Any]) -> Any:
    """Put the example in the DAGs folder, parse it as the dag-processor does, ``dag.test()`` it."""
    from airflow_provider_mlci.testing.airflow import dag_bag, latest_run

    target = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]) / f"{dag_id}.py"
    shutil.copyfile(work / "examples" / f"{dag_id}.py", target)
    bag = dag_bag(target)
    check(not bag.import_errors, f"{dag_id} does not import: {bag.import_errors}")
    print(f"\n== dag.test() {dag_id} {json.dumps(conf)}", flush=True)
    dag_run = bag.dags[dag_id].test(run_conf=conf)
    record = latest_run(dag_id, dag_run.run_id)
    check(record is not None, f"{dag_id}: no run in the database")
    print(f"== {dag_id}: {record.state} {record.task_states}", flush=True)
    return record


def _repro(work: Path, project: Any) -> None:
    record = _dag_test(work, "example_dvc_repro", {"rev": "main"})
    check(record.state == "success", f"example_dvc_repro: {record.state}, tasks {record.task_states}")
    result = record.xcom["reproduce"]
    check(result["sha"] == project.head(), f"reproduced {result['sha']}, not main's {project.head()}")
    ran = {"prepare": "ran", "train": "ran", "evaluate": "ran"}
    check(result["stages"] == ran, f"stages {result['stages']}, expected {ran}")
    accuracy = result["metrics"]["metrics.json"]["accuracy"]
    check(0.5 < accuracy <= 1, f"accuracy {accuracy}")


def _validation(work: Path, project: Any) -> None:
    record = _dag_test(work, "example_data_validation", {"rev": "main", "baseline_rev": "main"})
    check(record.state == "success", f"example_data_validation: {record.state}, tasks {record.task_states}")
    validation, drift = record.xcom["validate"], record.xcom["drift"]
    rows = len((project.work / "data" / "raw.csv").read_text().splitlines()) - 1
    check(validation["valid"] is True, f"validation: {validation}")
    check(validation["rows_checked"] == rows, f"checked {validation['rows_checked']} rows of {rows}")
    check(drift["drifted"] is False, f"the data drifted from itself: {drift}")
    check({"amount", "hour", "fraud"} <= set(drift["columns"]), f"drift columns {sorted(drift['columns'])}")


def _train(project: Any, epochs: int, branch: str) -> str:
    """Reproduce the pipeline with ``epochs`` by hand (DVC of the clean virtualenv), commit and push."""
    params = project.work / "params.yaml"
    params.write_text(re.sub(r"epochs: \d+", f"epochs: {epochs}", params.read_text()))
    project.dvc("repro", "--quiet")
    return project.commit_and_push(f"Train for {epochs} epochs", branch=branch)


def _report(work: Path, project: Any) -> None:
    _train(project, 10, "main")
    project.git("checkout", "--quiet", "-b", "experiment")
    _train(project, 150, "experiment")
    record = _dag_test(work, "example_pr_report", {"rev": "experiment", "baseline_rev": "main"})
    check(record.state == "success", f"example_pr_report: {record.state}, tasks {record.task_states}")
    check(record.task_states.get("comment") == "skipped", f"comment: {record.task_states.get('comment')}")
    result = record.xcom["report"]
    check(result["problems"] == [], f"report problems: {result['problems']}")
    check("metrics.json:logloss" in result["metrics_changed"], f"metrics changed: {result['metrics_changed']}")
    folder = Path(result["report_uri"].removeprefix("file://"))
    page = (folder / "report.html").read_text()
    images = sorted(path.name for path in (folder / "images").iterdir())
    check(len(images) >= 5, f"plots rendered: {images}")
    for name in images:
        check((folder / "images" / name).read_text().lstrip().startswith("<svg"), f"{name} is not an SVG")
    check(page.count("<img ") == len(images), f"report.html shows {page.count('<img ')} of {len(images)} images")


if __name__ == "__main__":
    sys.exit(main())
