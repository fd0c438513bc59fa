"""Reproducing pipelines.

1. From a fresh checkout: our path (what DvcReproOperator runs) against the DVC command line
   doing the same by hand (git clone, dvc pull of the data, dvc repro, dvc push with the
   run-cache); every sample starts from fresh copies of the remotes and an empty cache.
2. An unchanged pipeline: the first run of a pipeline whose training takes >= 30 s, against a
   second run of the same commit on another (empty) worker, which restores from the run-cache.
   Goal: <= 0.1x.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from airflow_provider_mlci.testing import DEMO_DATA
from bench._common import Comparison, interleave, timed
from bench._projects import demo_project, pipeline_project


def _quiet() -> logging.Logger:
    log = logging.getLogger("bench.quiet")
    log.propagate = False
    log.addHandler(logging.NullHandler())
    return log


def _repro(project, cache: Path) -> dict[str, str]:
    from airflow_provider_mlci.core.dvc import ops as dvc_ops
    from airflow_provider_mlci.core.repo.access import RepoAccess
    from airflow_provider_mlci.core.repo.workspace import Workspace
    from airflow_provider_mlci.core.runtime.process import CommandRunner

    access = RepoAccess.local(str(project.remote), url=project.dvc_remote_url)
    with Workspace.open(access, "main", cache_dir=cache, runner=CommandRunner(log=_quiet())) as ws:
        return dvc_ops.repro(ws, dvc_ops.ReproRequest()).stages


def _ours(template, scratch: Path) -> float:
    project = template.copy_to(scratch / "p")

    def work() -> None:
        stages = _repro(project, scratch / "cache")
        assert set(stages.values()) == {"ran"}, stages

    try:
        return timed(work)
    finally:
        shutil.rmtree(scratch)


def by_hand(template, scratch: Path, pull: tuple[str, ...] = tuple(f"{path}.dvc" for path in DEMO_DATA)) -> float:
    """git clone, point DVC at the remote and an empty cache, pull ``pull``, repro, push with the run-cache."""
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
        run(*dvc, "pull", "--quiet", *pull, cwd=work)
        run(*dvc, "repro", "--quiet", cwd=work)
        run(*dvc, "push", "--quiet", "--run-cache", cwd=work)

    try:
        return timed(steps)
    finally:
        shutil.rmtree(scratch)


def run(quick: bool) -> Iterator[Comparison]:
    repeats = 1 if quick else 5
    with tempfile.TemporaryDirectory(prefix="mlci-bench-") as tmp:
        root = Path(tmp)
        template = demo_project(root / "template", rows=600 if quick else 4000)
        counter = iter(range(1000))
        ours, base = interleave(
            lambda: _ours(template, root / f"ours-{next(counter)}"),
            lambda: by_hand(template, root / f"base-{next(counter)}"),
            repeats,
        )
        yield Comparison(
            name="repro from a fresh checkout (3 stages)",
            ours=ours,
            baseline=base,
            baseline_name="git clone + dvc pull + dvc repro + dvc push --run-cache",
            goal="<= 1.10",
        )

        seconds = 3.0 if quick else 30.0
        firsts, seconds_runs = [], []
        for index in range(1 if quick else 3):
            project = pipeline_project(root / f"slow-{index}", stage_seconds=seconds)
            first = timed(lambda p=project, i=index: _check(_repro(p, root / f"first-{i}"), "ran"))
            second = timed(lambda p=project, i=index: _check(_repro(p, root / f"second-{i}"), "restored"))
            firsts.append(first)
            seconds_runs.append(second)
        yield Comparison(
            name=f"unchanged pipeline: run-cache restore (train {seconds:.0f} s)",
            ours=seconds_runs,
            baseline=firsts,
            baseline_name="the first run of the same commit",
            goal="<= 0.1",
        )


def _check(stages: dict[str, str], expected: str) -> None:
    assert stages["train"] == expected, stages
