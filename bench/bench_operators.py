"""Each DVC operator's whole ``execute`` (opening the workspace included) against the DVC command
line doing the same in a fresh clone, from the same starting state, on the same repository.

Fixtures: a directory of many 1 KiB files and one large file (10,000 files and 1 GiB in full
mode), with a local and an S3 (moto) remote. The goal is ours <= 1.10x the CLI + 1 s, so the
printed goal is computed per row from the CLI's median.
"""

from __future__ import annotations

import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._common import Comparison, interleave, timed
from bench._projects import Cli, data_project, demo_project, moto_s3, s3_remote, use_connection


class _Quiet:
    """Run operators without their log lines on the console."""

    def __enter__(self) -> None:
        import logging

        logging.disable(logging.WARNING)  # also "execute cannot be called outside of the Task Runner"

    def __exit__(self, *exc: object) -> None:
        import logging

        logging.disable(logging.NOTSET)


def _fresh(scratch: Path, name: str) -> Path:
    path = scratch / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def _arms(
    project: Any, remote: dict[str, str], scratch: Path, label: str
) -> list[tuple[str, Callable[[], float], Callable[[], float]]]:
    from airflow_provider_mlci.operators.dvc import (
        DvcCheckoutOperator,
        DvcPipelineSyncCheckOperator,
        DvcPushOperator,
    )

    warm = scratch / "warm-cache"  # the project's data, as a worker that produced it holds it

    def ours(op_class: type, *, warm_cache: bool = False, **kwargs: Any) -> Callable[[], float]:
        def run() -> float:
            cache = _fresh(scratch, "ours")
            if warm_cache:
                shutil.copytree(warm, cache / "dvc" / "cache")
            op = op_class(task_id="bench", rev="main", cache_dir=str(cache), **kwargs)
            with _Quiet():
                return timed(lambda: op.execute({}))

        return run

    def cli(steps: Callable[[Cli], None], *, warm_cache: bool = False) -> Callable[[], float]:
        def run() -> float:
            base = _fresh(scratch, "cli")
            cache = base / "cache"
            if warm_cache:
                shutil.copytree(warm, cache)
            cli = Cli(project, base, remote, cache)

            def job() -> None:
                cli.clone()
                steps(cli)

            return timed(job)

        return run

    def checkout_cli(cli: Cli) -> None:
        cli.dvc("fetch", "--quiet")

    def sync_cli(cli: Cli) -> None:
        cli.dvc("pull", "--quiet", "--allow-missing")
        cli.dvc("status", "--json")
        cli.dvc("status", "--cloud", "--json")

    def push_cli(cli: Cli) -> None:
        cli.dvc("push", "--quiet", "--run-cache")

    push_ours = ours(DvcPushOperator, warm_cache=True)

    def push_ours_fresh_remote() -> float:
        _empty_remote(remote)
        return push_ours()

    def push_cli_fresh_remote() -> float:
        _empty_remote(remote)
        return cli(push_cli, warm_cache=True)()

    return [
        (f"checkout (fetch all) {label}", ours(DvcCheckoutOperator), cli(checkout_cli)),
        (f"sync check {label}", ours(DvcPipelineSyncCheckOperator), cli(sync_cli)),
        (f"push from a warm cache {label}", push_ours_fresh_remote, push_cli_fresh_remote),
    ]


def _empty_remote(remote: dict[str, str]) -> None:
    """Push starts from a remote without the data (the pushes under test refill it)."""
    if remote["url"].startswith("s3://"):
        import boto3

        bucket, _, prefix = remote["url"][5:].partition("/")
        s3 = boto3.resource("s3", endpoint_url=remote["endpointurl"], region_name="us-east-1")
        s3.Bucket(bucket).objects.filter(Prefix=f"{prefix}/").delete()
    else:
        shutil.rmtree(remote["url"], ignore_errors=True)
        Path(remote["url"]).mkdir(parents=True)


def _seed_remote(project: Any, remote: dict[str, str], scratch: Path) -> None:
    """Fill ``remote`` with the project's data and run-cache, and keep a warm cache copy."""
    base = _fresh(scratch, "seed")
    cache = scratch / "warm-cache"
    shutil.rmtree(cache, ignore_errors=True)
    shutil.copytree(project.work / ".dvc" / "cache", cache)
    cli = Cli(project, base, remote, cache)
    cli.clone()
    cli.dvc("push", "--quiet", "--run-cache")


def _metrics_rows(scratch: Path, repeats: int) -> list[Comparison]:
    from airflow_provider_mlci.operators.dvc import DvcMetricsOperator

    project = demo_project(scratch / "metrics")
    project.dvc("repro", "--quiet")
    project.commit_and_push("Baseline")
    params = project.work / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 150", "epochs: 60"))
    project.dvc("repro", "--quiet")
    project.commit_and_push("Fewer epochs")
    remote = {"url": project.dvc_remote_url}
    use_connection(project, remote)

    def ours() -> float:
        cache = _fresh(scratch, "ours-metrics")
        op = DvcMetricsOperator(task_id="bench", rev="main", baseline_rev="main~1", cache_dir=str(cache))
        with _Quiet():
            return timed(lambda: op.execute({}))

    def cli() -> float:
        base = _fresh(scratch, "cli-metrics")
        runner = Cli(project, base, remote, base / "cache")

        def job() -> None:
            runner.clone()
            runner.dvc("metrics", "diff", "--json", "HEAD~1")
            runner.dvc("params", "diff", "--json", "HEAD~1")

        return timed(job)

    mine, base = interleave(ours, cli, repeats)
    return [_row("metrics + params diff (git only)", mine, base)]


def _row(name: str, ours: list[float], cli: list[float]) -> Comparison:
    limit = (1.10 * statistics.median(cli) + 1.0) / statistics.median(cli)
    return Comparison(
        name=name, ours=ours, baseline=cli, baseline_name="git clone + the same dvc commands", goal=f"<= {limit:.2f}"
    )


def run(quick: bool) -> Iterator[Comparison]:
    files, big = (100, 2 << 20) if quick else (10_000, 1 << 30)
    repeats = 1 if quick else 3
    with tempfile.TemporaryDirectory(prefix="mlci-bench-ops-") as tmp:
        scratch = Path(tmp)
        project = data_project(scratch, files=files, big_bytes=big)
        label = f"[{files} x 1 KiB + {big >> 20} MiB]"
        with moto_s3() as endpoint:
            for kind, remote in (("local", {"url": project.dvc_remote_url}), ("s3", s3_remote(endpoint, "bench"))):
                _seed_remote(project, remote, scratch)
                use_connection(project, remote)
                arms = _arms(project, remote, scratch, f"{label} {kind}")
                if quick and kind == "s3":
                    arms = arms[:1]  # quick mode only keeps the code running: one S3 arm is enough
                for name, mine, cli in arms:
                    yield _row(name, *interleave(mine, cli, repeats))
        yield from _metrics_rows(scratch, repeats)
    os.environ.pop("AIRFLOW_CONN_MLCI_DVC_DEFAULT", None)
