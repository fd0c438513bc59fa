"""Reproducing a pipeline from a fresh checkout: our path (Workspace + dvc_ops.repro, what
DvcReproOperator runs) against the DVC command line doing the same by hand (git clone, dvc pull
of the data, dvc repro, dvc push with the run-cache). Each sample starts from fresh copies of the
remotes and an empty cache, so both arms do the full work every time.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench._common import Comparison, interleave, timed

ROOT = Path(__file__).resolve().parent.parent


def _template(root: Path, rows: int):
    from airflow_provider_mlci.testing import create_dvc_project

    def prepare(work: Path) -> None:
        subprocess.run([sys.executable, "src/generate.py", "data/raw.csv", "--rows", str(rows)], cwd=work, check=True)

    return create_dvc_project(ROOT / "example_dags" / "demo_project", root, track=["data/raw.csv"], prepare=prepare)


def _ours(template, scratch: Path) -> float:
    from airflow_provider_mlci.core import dvc_ops
    from airflow_provider_mlci.core.access import RepoAccess
    from airflow_provider_mlci.core.process import CommandRunner
    from airflow_provider_mlci.core.workspace import Workspace

    project = template.copy_to(scratch / "p")
    access = RepoAccess.local(str(project.remote), url=project.dvc_remote_url)

    def work() -> None:
        runner = CommandRunner(log=_quiet())
        with Workspace.open(access, "main", cache_dir=scratch / "cache", runner=runner) as ws:
            outcome = dvc_ops.repro(ws, dvc_ops.ReproRequest())
        assert set(outcome.stages.values()) == {"ran"}, outcome.stages

    try:
        return timed(work)
    finally:
        shutil.rmtree(scratch)


def _baseline(template, scratch: Path) -> float:
    project = template.copy_to(scratch / "p")
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    dvc = [sys.executable, "-m", "dvc"]
    work = scratch / "clone"

    def run(*argv: str, cwd: Path | None = None) -> None:
        subprocess.run(argv, cwd=cwd, env=env, check=True, capture_output=True)

    def steps() -> None:
        run("git", "clone", "--quiet", str(project.remote), str(work))
        run(*dvc, "remote", "modify", "--local", "storage", "url", project.dvc_remote_url, cwd=work)
        run(*dvc, "config", "--local", "cache.dir", str(scratch / "cache"), cwd=work)
        run(*dvc, "pull", "--quiet", "data/raw.csv.dvc", cwd=work)
        run(*dvc, "repro", "--quiet", cwd=work)
        run(*dvc, "push", "--quiet", "--run-cache", cwd=work)

    try:
        return timed(steps)
    finally:
        shutil.rmtree(scratch)


def _quiet():
    import logging

    log = logging.getLogger("bench.quiet")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


def run(quick: bool) -> list[Comparison]:
    repeats = 1 if quick else 5
    with tempfile.TemporaryDirectory(prefix="mlci-bench-") as tmp:
        root = Path(tmp)
        template = _template(root / "template", rows=600 if quick else 4000)
        counter = iter(range(1000))
        ours, base = interleave(
            lambda: _ours(template, root / f"ours-{next(counter)}"),
            lambda: _baseline(template, root / f"base-{next(counter)}"),
            repeats,
        )
    return [
        Comparison(
            name="repro from a fresh checkout (3 stages)",
            ours=ours,
            baseline=base,
            baseline_name="git clone + dvc pull + dvc repro + dvc push --run-cache",
            goal="<= 1.10",
        )
    ]
