"""A second checkout of another revision on a warm worker (mirror and DVC cache already there)
against a cold ``git clone`` + ``dvc pull`` of that revision. Goal: <= 0.3x. The baseline is what
a CI runner without our worker cache does for every job; the row shows what the warm worker saves.
Checked: ours fetches only the changed objects (fewer than the files), the cold clone's
files hold the new revision's content.

Also the price of verifying what a release decision reads: the pull of a model check's and a
gate's inputs (a model and its evaluation data, from an S3 remote into a cold worker cache) with
object verification on, as the release operators do by default, against the same pull without.
Goal: <= 1.25x. The baseline is the identical pull with verification off, interleaved. Checked:
both arms leave the model and the evaluation data in the workspace with the bytes of the remote.
"""

from __future__ import annotations

import dataclasses
import os
import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from bench._common import Comparison, check, interleave, samples, timed
from bench._projects import Cli, data_project, moto_s3, s3_remote, use_connection
from bench.bench_operators import _Quiet


def run(quick: bool) -> Iterator[Comparison]:
    yield _second_checkout(quick)
    yield _verified_gate_inputs(quick)


def _second_checkout(quick: bool) -> Comparison:
    files, big = (300, 8 << 20) if quick else (10_000, 256 << 20)
    repeats = samples(quick, full=5)
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
            result: dict = {}
            with _Quiet():
                seconds = timed(lambda: result.update(op.execute({})))
            check(result.get("sha") == project.head(), "bench_checkout", f"the checkout is not of main: {result}")
            check(result.get("fetched", files) < files, "bench_checkout", f"a warm checkout fetched {result}")
            return seconds

        def cold() -> float:
            base = scratch / "cold"
            shutil.rmtree(base, ignore_errors=True)
            base.mkdir()
            cli = Cli(project, base, remote, base / "cache")

            def job() -> None:
                cli.clone()
                cli.dvc("pull", "--quiet")

            seconds = timed(job)
            changed = (cli.work / "data" / "many" / "00100.txt").read_text()
            check(changed == "changed 100\n", "bench_checkout", f"the cold pull's data/many/00100.txt: {changed!r}")
            return seconds

        mine, base = interleave(ours, cold, repeats)
        return Comparison(
            name=f"second checkout, warm worker [{files} files]",
            ours=mine,
            baseline=base,
            baseline_name="cold git clone + dvc pull",
            max_ratio=0.3,
        )


#: What a model check and a gate pull: the model and the evaluation data.
_GATE_INPUTS = ["models/model.bin", "data/eval.csv"]


def _verified_gate_inputs(quick: bool) -> Comparison:
    model_bytes, eval_rows = (16 << 20, 100_000) if quick else (256 << 20, 2_000_000)
    repeats = samples(quick, full=5)
    from airflow_provider_mlci.core.dvc import ops as dvc_ops
    from airflow_provider_mlci.core.repo.access import RepoAccess
    from airflow_provider_mlci.core.repo.workspace import Workspace
    from airflow_provider_mlci.testing import create_dvc_project

    def make_inputs(work: Path) -> None:
        (work / "models").mkdir()
        with (work / "models" / "model.bin").open("wb") as fh:
            block = os.urandom(1 << 20)
            for _ in range(model_bytes >> 20):
                fh.write(block)
        rng = random.Random(7)
        lines = ["amount,hour,label"] + [
            f"{rng.uniform(1, 5000):.2f},{rng.randrange(24)},{rng.randrange(2)}" for _ in range(eval_rows)
        ]
        (work / "data").mkdir()
        (work / "data" / "eval.csv").write_text("\n".join(lines) + "\n")

    with tempfile.TemporaryDirectory(prefix="mlci-bench-verify-") as tmp, moto_s3() as endpoint:
        scratch = Path(tmp)
        remote = s3_remote(endpoint, "mlci-bench-verify")
        template = scratch / "template"
        template.mkdir()
        (template / "README.md").write_text("A model and its evaluation data.\n")
        project = create_dvc_project(
            template,
            scratch / "project",
            track=_GATE_INPUTS,
            prepare=make_inputs,
            dvc_remote_url=remote["url"],
            dvc_remote_options={"endpointurl": endpoint},
        )
        plain = RepoAccess.local(
            str(project.remote),
            url=remote["url"],
            endpoint_url=endpoint,
            aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
            region_name="us-east-1",
            verify_objects=False,
        )
        # As the release operators get it: the connection leaves verify_objects unset.
        verifying = RepoAccess(git=plain.git, dvc=dataclasses.replace(plain.dvc, verify_objects=None).verifying())
        runs = iter(range(1_000_000))

        def pull(access: RepoAccess) -> float:
            cache = scratch / f"worker-{next(runs)}"  # a cold worker: every object comes from the remote
            with _Quiet(), Workspace.open(access, "main", cache_dir=cache) as workspace:
                took = timed(lambda: dvc_ops.pull(workspace, _GATE_INPUTS))
                for name in _GATE_INPUTS:
                    got = (Path(workspace.path) / name).read_bytes()
                    same = got == (project.work / name).read_bytes()
                    check(same, "bench_checkout", f"the pulled {name} differs from the committed one")
            shutil.rmtree(cache, ignore_errors=True)
            return took

        mine, base = interleave(lambda: pull(verifying), lambda: pull(plain), repeats)
        size = (model_bytes >> 20) + (project.work / "data" / "eval.csv").stat().st_size / (1 << 20)
    return Comparison(
        name=f"pull of the gate's inputs, verified [{size:.0f} MiB, S3]",
        ours=mine,
        baseline=base,
        baseline_name="the same pull, verify_objects=false",
        max_ratio=1.25,
    )
