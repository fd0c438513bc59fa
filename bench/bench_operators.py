"""Each DVC operator's whole ``execute`` (opening the workspace included) against the DVC command
line doing the same in a fresh clone, from the same starting state, on the same repository.

Fixtures: a directory of many 1 KiB files and one large file (10,000 files and 1 GiB in full
mode), with a local and an S3 (moto) remote. The baseline is what a CI job runs by hand: ``git
clone`` (DVC pointed at the remote and an empty cache by writing ``config.local``, no CLI start
counted) and the same DVC commands; fair because both arms start from the same state (empty
cache, or the same warm cache copied in; the same remote contents) and are interleaved. The goal
is ours <= 1.10x the CLI + 1 s, so each row's ``max_ratio`` is computed from the CLI's median.

Each sample is checked, in every mode: what the operator returned (every object fetched, in
sync, every object pushed, the metric's change) and what the CLI left (the objects in its cache,
an empty ``dvc status``, the objects on the remote, the same metric diff).
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench._common import Comparison, check, interleave, samples, timed
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

    objects = _on_remote(remote)  # what _seed_remote pushed: the project's data at main

    def ours(
        op_class: type, verify: Callable[[dict[str, Any], Path], None], *, warm_cache: bool = False, **kwargs: Any
    ) -> Callable[[], float]:
        def run() -> float:
            cache = _fresh(scratch, "ours")
            if warm_cache:
                shutil.copytree(warm, cache / "dvc" / "cache")
            op = op_class(task_id="bench", rev="main", cache_dir=str(cache), **kwargs)
            result: dict[str, Any] = {}
            with _Quiet():
                seconds = timed(lambda: result.update(op.execute({})))
            verify(result, cache / "dvc" / "cache")
            return seconds

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

    def fetched_all(result: dict[str, Any], cache: Path) -> None:
        check(result.get("fetched"), "bench_operators", f"checkout fetched nothing: {result}")
        check(_objects(cache) >= objects, "bench_operators", f"checkout left objects out of the cache: {result}")

    def in_sync(result: dict[str, Any], cache: Path) -> None:
        check(result.get("in_sync") is True, "bench_operators", f"the sync check said {result}")

    def pushed_all(result: dict[str, Any], cache: Path) -> None:
        check(not result.get("missing"), "bench_operators", f"push missed objects: {result}")
        check(_on_remote(remote) >= objects, "bench_operators", f"push left objects off the remote: {result}")

    def checkout_cli(cli: Cli) -> None:
        cli.dvc("fetch", "--quiet")
        check(_objects(cli.cache) >= objects, "bench_operators", "dvc fetch left objects out of the cache")

    def sync_cli(cli: Cli) -> None:
        cli.dvc("pull", "--quiet", "--allow-missing")
        local = json.loads(cli.dvc("status", "--json") or "{}")
        cloud = json.loads(cli.dvc("status", "--cloud", "--json") or "{}")
        check(local == {} and cloud == {}, "bench_operators", f"dvc status: {local}, --cloud: {cloud}")

    def push_cli(cli: Cli) -> None:
        cli.dvc("push", "--quiet", "--run-cache")
        check(_on_remote(remote) >= objects, "bench_operators", "dvc push left objects off the remote")

    push_ours = ours(DvcPushOperator, pushed_all, warm_cache=True)

    def push_ours_fresh_remote() -> float:
        _empty_remote(remote)
        return push_ours()

    def push_cli_fresh_remote() -> float:
        _empty_remote(remote)
        return cli(push_cli, warm_cache=True)()

    return [
        (f"checkout (fetch all) {label}", ours(DvcCheckoutOperator, fetched_all), cli(checkout_cli)),
        (f"sync check {label}", ours(DvcPipelineSyncCheckOperator, in_sync), cli(sync_cli)),
        (f"push from a warm cache {label}", push_ours_fresh_remote, push_cli_fresh_remote),
    ]


def _objects(cache: Path) -> set[str]:
    """The object names (``xx/yyyy...``, ``.dir`` included) in a DVC cache folder."""
    files = cache / "files" / "md5"
    return {f"{path.parent.name}/{path.name}" for path in files.glob("*/*")}


def _on_remote(remote: dict[str, str]) -> set[str]:
    """The object names on a DVC remote (local folder or S3 prefix)."""
    if remote["url"].startswith("s3://"):
        import boto3

        bucket, _, prefix = remote["url"][5:].partition("/")
        s3 = boto3.resource("s3", endpoint_url=remote["endpointurl"], region_name="us-east-1")
        keys = [item.key for item in s3.Bucket(bucket).objects.filter(Prefix=f"{prefix}/files/md5/")]
        return {"/".join(key.split("/")[-2:]) for key in keys}
    return _objects(Path(remote["url"]))


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
        result: dict[str, Any] = {}
        with _Quiet():
            seconds = timed(lambda: result.update(op.execute({})))
        epochs = result["params_diff"]["params.yaml"]["train.epochs"]
        check((epochs["old"], epochs["new"]) == (150, 60), "bench_operators", f"params_diff: {result['params_diff']}")
        diffs.append(("ours", result["metrics_diff"]))
        return seconds

    def cli() -> float:
        base = _fresh(scratch, "cli-metrics")
        runner = Cli(project, base, remote, base / "cache")
        found: dict[str, Any] = {}

        def job() -> None:
            runner.clone()
            found["metrics"] = json.loads(runner.dvc("metrics", "diff", "--json", "HEAD~1"))
            found["params"] = json.loads(runner.dvc("params", "diff", "--json", "HEAD~1"))

        seconds = timed(job)
        epochs = found["params"]["params.yaml"]["train.epochs"]
        check((epochs["old"], epochs["new"]) == (150, 60), "bench_operators", f"dvc params diff: {found['params']}")
        diffs.append(("cli", found["metrics"]))
        return seconds

    diffs: list[tuple[str, Any]] = []
    mine, base = interleave(ours, cli, repeats)
    first = diffs[0][1]
    check(first.get("metrics.json"), "bench_operators", f"no metrics diff: {diffs[0]}")
    for arm, diff in diffs:
        check(diff == first, "bench_operators", f"the metrics diffs differ: {diffs[0]} against {arm}'s {diff}")
    return [_row("metrics + params diff (git only)", mine, base)]


def _row(name: str, ours: list[float], cli: list[float]) -> Comparison:
    limit = (1.10 * statistics.median(cli) + 1.0) / statistics.median(cli)  # ours <= 1.10x the CLI + 1 s
    return Comparison(
        name=name, ours=ours, baseline=cli, baseline_name="git clone + the same dvc commands", max_ratio=limit
    )


def run(quick: bool) -> Iterator[Comparison]:
    files, big = (100, 2 << 20) if quick else (10_000, 1 << 30)
    repeats = samples(quick, full=3)
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
