"""A second checkout of another revision on a warm worker (mirror and DVC cache already there)
against a cold ``git clone`` + ``dvc pull`` of that revision. Goal: <= 0.3x."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench._common import Comparison, interleave, timed
from bench._projects import Cli, data_project, use_connection
from bench.bench_operators import _Quiet


def run(quick: bool) -> Iterator[Comparison]:
    files, big = (300, 8 << 20) if quick else (10_000, 256 << 20)
    repeats = 1 if quick else 5
    with tempfile.TemporaryDirectory(prefix="mlci-bench-checkout-") as tmp:
        scratch = Path(tmp)
        project = data_project(scratch, files=files, big_bytes=big)
        first = project.head()
        # The next revision changes 1 % of the files.
        for index in range(0, files, 100):
            (project.work / "data" / "many" / f"{index:05d}.txt").write_text(f"changed {index}\n")
        project.dvc("add", "--quiet", "data/many")
        project.commit_and_push("Change a few files")
        remote = {"url": project.dvc_remote_url}
        use_connection(project, remote)
        from airflow_provider_mlci.operators.dvc import DvcCheckoutOperator

        warm = scratch / "warm-worker"
        with _Quiet():
            DvcCheckoutOperator(task_id="warm", rev=first, cache_dir=str(warm)).execute({})

        def ours() -> float:
            op = DvcCheckoutOperator(task_id="bench", rev="main", cache_dir=str(warm))
            with _Quiet():
                return timed(lambda: op.execute({}))

        def cold() -> float:
            base = scratch / "cold"
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            cli = Cli(project, base, remote, base / "cache")

            def job() -> None:
                cli.clone()
                cli.dvc("pull", "--quiet")

            return timed(job)

        mine, base = interleave(ours, cold, repeats)
        yield Comparison(
            name=f"second checkout, warm worker [{files} files]",
            ours=mine,
            baseline=base,
            baseline_name="cold git clone + dvc pull",
            goal="<= 0.3",
        )
