"""Which model is on prod, in a registry with many tags: our registry read against GTO's.

GTO rebuilds its whole registry state on every command (iterative/gto#156: 6-12 s at ~1,500
tags). Ours is one ``git for-each-ref`` plus a fetch of the tags. Both arms answer the same
question on the same repository (a fresh clone of the remote, all tags present), interleaved,
and must give the same answer (the last version registered). Goal: <= 0.2x.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench._common import Comparison, check, interleave, samples, timed
from bench.bench_operators import _Quiet

_ENV = {
    **os.environ,
    "GIT_AUTHOR_NAME": "bench",
    "GIT_AUTHOR_EMAIL": "bench@example.invalid",
    "GIT_COMMITTER_NAME": "bench",
    "GIT_COMMITTER_EMAIL": "bench@example.invalid",
}


def _git(cwd: Path, *args: str, env: dict[str, str] | None = None) -> str:
    return subprocess.run(["git", *args], cwd=cwd, env=env or _ENV, check=True, capture_output=True, text=True).stdout


def _registry(root: Path, versions: int) -> Path:
    """A bare remote whose model ``churn`` has ``versions`` versions, each promoted to staging and prod."""
    remote, work = root / "remote.git", root / "work"
    _git(root, "init", "--quiet", "--bare", "-b", "main", str(remote))
    _git(root, "init", "--quiet", "-b", "main", str(work))
    counter = 0
    for index in range(versions):
        _git(work, "commit", "--quiet", "--allow-empty", "-m", f"model {index}")
        when = {**_ENV, "GIT_COMMITTER_DATE": f"{1_700_000_000 + index * 10} +0000"}
        _git(work, "tag", "-a", "-m", "register", f"churn@v0.{index}.0", env=when)
        for stage in ("staging", "prod"):
            counter += 1
            _git(work, "tag", "-a", "-m", "assign", f"churn#{stage}#{counter}", env=when)
    _git(work, "push", "--quiet", "--tags", str(remote), "main")
    return remote


def run(quick: bool) -> Iterator[Comparison]:
    versions = 50 if quick else 500
    repeats = samples(quick, full=5)
    from airflow_provider_mlci.core.model.registry import GitRegistry
    from airflow_provider_mlci.core.repo.access import RepoAccess
    from airflow_provider_mlci.core.repo.workspace import Workspace

    with tempfile.TemporaryDirectory(prefix="mlci-bench-registry-") as tmp:
        scratch = Path(tmp)
        remote = _registry(scratch, versions)
        clone = scratch / "clone"
        _git(scratch, "clone", "--quiet", str(remote), str(clone))
        expected = f"v0.{versions - 1}.0"
        with _Quiet(), Workspace.open(RepoAccess.local(str(remote)), "main", cache_dir=scratch / "worker") as workspace:
            registry = GitRegistry(workspace=workspace)

            def ours() -> float:
                def job() -> None:
                    champion = registry.refresh().champion("churn", "prod")
                    found = champion.version if champion else None
                    check(found == expected, "bench_registry", f"ours: prod is {found}, not {expected}")

                return timed(job)

            def gto() -> float:
                import gto.api

                def job() -> None:
                    found = gto.api.show(str(clone))["churn"]["stage"]["prod"]
                    check(found == expected, "bench_registry", f"gto: prod is {found}, not {expected}")

                return timed(job)

            mine, base = interleave(ours, gto, repeats)
        yield Comparison(
            name=f"model on prod, {versions * 3} registry tags",
            ours=mine,
            baseline=base,
            baseline_name="gto.api.show on a local clone",
            max_ratio=0.2,
        )
