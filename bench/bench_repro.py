"""Reproducing pipelines.

1. From a fresh checkout: our path (what DvcReproOperator runs) against the DVC command line
   doing the same by hand (git clone, dvc pull of the data, dvc repro, dvc push with the
   run-cache); every sample starts from fresh copies of the remotes and an empty cache. Both
   arms must run every stage. Goal: <= 1.10x.
2. An unchanged pipeline (its training takes >= 30 s), already run and pushed with its run-cache
   by a developer (``dvc repro`` + ``dvc push --run-cache``, untimed), reproduced on an empty
   worker. Ours: what DvcReproOperator runs, which restores every cached stage from the
   run-cache. Two baselines, each a fresh clone with an empty cache, interleaved with ours:

   - what a CI job runs by hand on a fresh runner: ``git clone`` + ``dvc pull`` of the data +
     ``dvc repro``. A fresh runner has no run-cache (``dvc pull`` does not fetch it), so the
     stages run again: the cost our restore saves. Goal: <= 0.1x.
   - the best the DVC CLI does by hand: the same with ``dvc fetch --run-cache`` and
     ``dvc repro --pull``, which restores from the same run-cache. The fair same-job
     comparison: goal <= 1.10x, as for every "the same by hand" row.

   Each arm is checked: ours reports ``train`` restored, the CI job's ``dvc repro`` ran
   ``train``, the CLI's best restored it (its "is cached - skipping run" line).
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
from bench._common import Comparison, check, interleave, rotate, samples, timed
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
        check(set(stages.values()) == {"ran"}, "bench_repro", f"our repro did not run every stage: {stages}")

    try:
        return timed(work)
    finally:
        shutil.rmtree(scratch)


def by_hand(template, scratch: Path, pull: tuple[str, ...] = tuple(f"{path}.dvc" for path in DEMO_DATA)) -> float:
    """git clone (DVC pointed at the remote and an empty cache by writing ``config.local``, no CLI
    start counted, as :class:`bench._projects.Cli` does), pull ``pull``, repro, push with the
    run-cache; checked: every stage locked with its outputs present."""
    project = template.copy_to(scratch / "p")
    work = scratch / "clone"

    def steps() -> None:
        _clone(project, work, scratch / "cache")
        _dvc(work, "pull", "--quiet", *pull)
        _dvc(work, "repro", "--quiet")
        _dvc(work, "push", "--quiet", "--run-cache")

    try:
        seconds = timed(steps)
        _check_locked(work)
        return seconds
    finally:
        shutil.rmtree(scratch)


def _env() -> dict[str, str]:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), env.get("PATH", "")])
    return env


def _clone(project, work: Path, cache: Path) -> None:
    """``git clone``, then the local DVC config written directly (no CLI start counted)."""
    subprocess.run(["git", "clone", "--quiet", str(project.remote), str(work)], check=True, capture_output=True)
    (work / ".dvc" / "config.local").write_text(
        f"['remote \"storage\"']\n    url = {project.dvc_remote_url}\n[cache]\n    dir = {cache}\n"
    )


def _dvc(work: Path, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=work, env=_env(), capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"dvc {' '.join(args)} failed: {proc.stdout}{proc.stderr}")
    return proc.stdout


def _ci_by_hand(project, scratch: Path, *, run_cache: bool) -> float:
    """A fresh clone and an empty cache: pull the data and ``dvc repro``; with ``run_cache``, fetch
    the run-cache first and ``dvc repro --pull`` (which restores cached stages' outputs)."""
    work, cache = scratch / "clone", scratch / "cache"
    data = [f"{path}.dvc" for path in DEMO_DATA]
    out: list[str] = []

    def steps() -> None:
        _clone(project, work, cache)
        _dvc(work, "pull", "--quiet", *data)
        if run_cache:
            _dvc(work, "fetch", "--quiet", "--run-cache")
            out.append(_dvc(work, "repro", "--pull"))
        else:
            out.append(_dvc(work, "repro"))

    try:
        seconds = timed(steps)
        if run_cache:
            restored = "Stage 'train' is cached - skipping run, checking out outputs" in out[0].splitlines()
            check(restored, "bench_repro", f"dvc repro --pull did not restore train from the run-cache:\n{out[0]}")
        else:
            ran = "Running stage 'train':" in out[0].splitlines()
            check(ran, "bench_repro", f"dvc repro on a fresh clone did not run train:\n{out[0]}")
        _check_locked(work)
        return seconds
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _restore(project, scratch: Path) -> float:
    """Our path on an empty worker cache; checked to restore ``train`` from the run-cache."""
    found: dict[str, str] = {}
    try:
        seconds = timed(lambda: found.update(_repro(project, scratch / "cache")))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    check(found.get("train") == "restored", "bench_repro", f"our repro did not restore train: {found}")
    return seconds


def _unchanged(root: Path, quick: bool) -> Iterator[Comparison]:
    seconds = 3.0 if quick else 30.0
    project = pipeline_project(root / "slow", stage_seconds=seconds)
    seed = root / "seed"
    _clone(project, seed, root / "seed-cache")
    _dvc(seed, "pull", "--quiet", *[f"{path}.dvc" for path in DEMO_DATA])
    _dvc(seed, "repro", "--quiet")
    _dvc(seed, "push", "--quiet", "--run-cache")
    counter = iter(range(1000))
    ours, ci_job, cli_best = rotate(
        [
            lambda: _restore(project, root / f"ours-{next(counter)}"),
            lambda: _ci_by_hand(project, root / f"ci-{next(counter)}", run_cache=False),
            lambda: _ci_by_hand(project, root / f"cli-{next(counter)}", run_cache=True),
        ],
        samples(quick, full=3),
    )
    name = f"unchanged pipeline (train {seconds:.0f} s)"
    yield Comparison(
        name=f"{name}: restore vs CI job",
        ours=ours,
        baseline=ci_job,
        baseline_name="CI job by hand: git clone + dvc pull + dvc repro (stages run)",
        max_ratio=0.1,
    )
    yield Comparison(
        name=f"{name}: restore vs the CLI's",
        ours=ours,
        baseline=cli_best,
        baseline_name="git clone + dvc pull + dvc fetch --run-cache + dvc repro --pull",
        max_ratio=1.10,
    )


def _check_locked(work: Path) -> None:
    """Every stage of ``dvc.yaml`` is in ``dvc.lock`` with its outputs present: the repro ran."""
    import yaml

    stages = yaml.safe_load((work / "dvc.yaml").read_text())["stages"]
    lock = work / "dvc.lock"
    locked = yaml.safe_load(lock.read_text())["stages"] if lock.is_file() else {}
    check(set(stages) <= set(locked), "bench_repro", f"dvc repro by hand locked {sorted(locked)}, not {sorted(stages)}")
    for name, entry in locked.items():
        for out in entry.get("outs", []):
            check((work / out["path"]).exists(), "bench_repro", f"stage {name} left no {out['path']}")


def run(quick: bool) -> Iterator[Comparison]:
    repeats = samples(quick, full=5)
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
            max_ratio=1.10,
        )
        yield from _unchanged(root, quick)
