"""Projects the benchmarks run on, built in a scratch folder (real git + DVC, local or S3 remotes)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEMO_PROJECT = ROOT / "example_dags" / "demo_project"


def data_project(root: Path, *, files: int, big_bytes: int) -> Any:
    """A project tracking ``data/many`` (``files`` files of 1 KiB) and ``data/big.bin``, and a
    pipeline over them, committed and pushed to a local DVC remote."""
    from airflow_provider_mlci.testing import create_dvc_project

    template = root / "data-template"
    template.mkdir(parents=True)
    (template / "count.py").write_text(
        "import json, os\njson.dump({'files': len(os.listdir('data/many'))}, open('count.json', 'w'))\n"
    )
    (template / "dvc.yaml").write_text(
        "stages:\n"
        "  count:\n"
        "    cmd: python count.py\n"
        "    deps:\n      - count.py\n      - data/many\n"
        "    metrics:\n      - count.json:\n          cache: false\n"
    )

    def make_data(work: Path) -> None:
        many = work / "data" / "many"
        many.mkdir(parents=True)
        for index in range(files):
            (many / f"{index:05d}.txt").write_bytes(index.to_bytes(4, "big") * 256)
        with (work / "data" / "big.bin").open("wb") as fh:
            block = os.urandom(1 << 20)
            for _ in range(max(1, big_bytes >> 20)):
                fh.write(block)

    project = create_dvc_project(
        template, root / "data-project", track=["data/many", "data/big.bin"], prepare=make_data
    )
    project.dvc("repro", "--quiet")
    project.commit_and_push("Reproduce")
    return project


def pipeline_project(root: Path, *, stage_seconds: float) -> Any:
    """The demo project with a training stage that takes ``stage_seconds`` (CPU-bound)."""
    from airflow_provider_mlci.testing import create_demo_project

    template = root / "slow-template"
    shutil.copytree(DEMO_PROJECT, template)
    train = template / "src" / "train.py"
    train.write_text(
        train.read_text() + "\nimport time\n"
        f"_deadline = time.perf_counter() + {stage_seconds}\n"
        "while time.perf_counter() < _deadline:\n"
        "    sum(i * i for i in range(10000))\n"
    )

    return create_demo_project(template, root / "slow-project", rows=800)


def demo_project(root: Path, rows: int = 600) -> Any:
    """The demo project as it ships."""
    from airflow_provider_mlci.testing import create_demo_project

    return create_demo_project(DEMO_PROJECT, root / "demo-project", rows=rows)


@contextmanager
def moto_s3():
    """moto's S3 server on 127.0.0.1, with test credentials in the environment; yields its endpoint URL."""
    import logging

    from airflow_provider_mlci.testing.moto import moto_server

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # one line per request otherwise
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with moto_server() as endpoint:
        yield endpoint


def s3_remote(endpoint: str, bucket: str) -> dict[str, str]:
    """Create ``bucket`` and return DVC remote settings for it."""
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    return {"url": f"s3://{bucket}/store", "endpointurl": endpoint}


def use_connection(project: Any, remote: dict[str, str]) -> None:
    """Point ``mlci_dvc_default`` at ``project`` and the DVC remote ``remote``."""
    extra = {"dvc_remote_url": remote["url"]}
    if "endpointurl" in remote:
        extra["endpoint_url"] = remote["endpointurl"]
    os.environ["AIRFLOW_CONN_MLCI_DVC_DEFAULT"] = json.dumps(
        {"conn_type": "mlci_dvc", "host": str(project.remote), "extra": extra}
    )


class Cli:
    """The DVC command line in a fresh clone, as a CI job would use it (the baseline arm)."""

    def __init__(self, project: Any, scratch: Path, remote: dict[str, str], cache: Path) -> None:
        self.project = project
        self.work = scratch / "clone"
        self.remote = remote
        self.cache = cache
        self.env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
        self.env["PATH"] = os.pathsep.join([os.path.dirname(sys.executable), self.env.get("PATH", "")])

    def run(self, *argv: str) -> str:
        proc = subprocess.run(argv, cwd=self.work, env=self.env, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)}: {proc.stdout}{proc.stderr}")
        return proc.stdout

    def dvc(self, *args: str) -> str:
        return self.run(sys.executable, "-m", "dvc", *args)

    def clone(self) -> None:
        """``git clone``, then the local DVC config written directly (no CLI start counted)."""
        subprocess.run(["git", "clone", "--quiet", str(self.project.remote), str(self.work)], check=True)
        lines = ["['remote \"storage\"']", f"    url = {self.remote['url']}"]
        if "endpointurl" in self.remote:
            lines.append(f"    endpointurl = {self.remote['endpointurl']}")
        lines += ["[cache]", f"    dir = {self.cache}"]
        (self.work / ".dvc" / "config.local").write_text("\n".join(lines) + "\n")


def sweep_project(root: Path, *, trial_seconds: float, steps: int = 10) -> Any:
    """A one-stage project for sweeps: ``train`` reads ``train.lr``, takes ``trial_seconds`` in
    ``steps`` equal sleeps (``time.sleep``, so parallel trials cost no CPU) and writes ``metrics.json``.

    After each step it appends the step's accuracy to ``dvclive/plots/metrics/accuracy.tsv`` (DVCLive's
    per-step table: tab-separated, ``step`` and ``accuracy`` columns; git-ignored, not an output),
    what a sweep's pruner reads as the stage runs. The accuracy climbs linearly to the final one, which
    depends on ``lr`` (best at 10^-1.5), so a trial with a worse ``lr`` is behind at every step.

    :param root: an empty folder to build in
    :param trial_seconds: how long the stage's command takes (its ``train.seconds`` param)
    :param steps: how many per-step values it writes (its ``train.steps`` param), one every
        ``trial_seconds / steps`` seconds
    """
    files = {"params.yaml": f"train:\n  lr: 0.1\n  seconds: {trial_seconds}\n  steps: {steps}\n"}
    files[".gitignore"] = "dvclive/\n"
    files["train.py"] = (
        "import json, math, os, time\n"
        "import yaml\n"
        "params = yaml.safe_load(open('params.yaml'))['train']\n"
        "rows = open('data/raw.csv').read().splitlines()\n"
        "accuracy = 1 - abs(math.log10(float(params['lr'])) + 1.5) / 10\n"
        "steps = int(params['steps'])\n"
        "os.makedirs('dvclive/plots/metrics', exist_ok=True)\n"
        "with open('dvclive/plots/metrics/accuracy.tsv', 'w') as tsv:\n"
        "    tsv.write('step\\taccuracy\\n')\n"
        "    for step in range(steps):\n"
        "        time.sleep(float(params['seconds']) / steps)\n"
        "        tsv.write(f'{step}\\t{accuracy * (step + 1) / steps:.4f}\\n')\n"
        "        tsv.flush()\n"
        "json.dump({'lr': params['lr'], 'rows': len(rows)}, open('model.json', 'w'))\n"
        "json.dump({'accuracy': round(accuracy, 4)}, open('metrics.json', 'w'))\n"
    )
    files["dvc.yaml"] = (
        "stages:\n"
        "  train:\n"
        "    cmd: python train.py\n"
        "    deps:\n      - train.py\n      - data/raw.csv\n"
        "    params:\n      - train\n"
        "    outs:\n      - model.json\n"
        "    metrics:\n      - metrics.json:\n          cache: false\n"
    )
    raw = "x,y\n" + "".join(f"{i},{i % 2}\n" for i in range(500))
    return _raw_data_project(root, "sweep", files, raw)


def chain_project(root: Path, *, stages: int = 4, stage_seconds: float) -> Any:
    """A chain of ``stages`` stages (``a -> b -> c -> d`` for four) over ``data/raw.csv`` (tracked
    by DVC): each runs ``stage.py``, which sleeps ``stage_seconds`` (``time.sleep``: no CPU) and
    writes a small output that the next stage reads. Committed and pushed with no ``dvc.lock``, so
    every stage runs on a first reproduction.

    :param root: an empty folder to build in
    :param stages: how many stages (at most 26)
    :param stage_seconds: how long each stage's command takes (the ``work.seconds`` param)
    """
    files = {"params.yaml": f"work:\n  seconds: {stage_seconds}\n", "out/.gitkeep": ""}
    files["stage.py"] = (
        "import sys, time\n"
        "import yaml\n"
        "source, target = sys.argv[1:3]\n"
        "time.sleep(float(yaml.safe_load(open('params.yaml'))['work']['seconds']))\n"
        "rows = open(source).read().splitlines()\n"
        "with open(target, 'w') as fh:\n"
        "    fh.write(f'{target}: {len(rows)} rows in {source}\\n')\n"
        "    fh.writelines(row + '\\n' for row in rows[:50])\n"
    )
    names = [chr(ord("a") + index) for index in range(stages)]
    lines = ["stages:"]
    source = "data/raw.csv"
    for name in names:
        target = f"out/{name}.txt"
        lines += [
            f"  {name}:",
            f"    cmd: python stage.py {source} {target}",
            f"    deps:\n      - stage.py\n      - {source}",
            "    params:\n      - work.seconds",
            f"    outs:\n      - {target}",
        ]
        source = target
    files["dvc.yaml"] = "\n".join(lines) + "\n"
    return _raw_data_project(root, "chain", files, "x,y\n" + "".join(f"{i},{i % 3}\n" for i in range(2000)))


def _raw_data_project(root: Path, name: str, files: dict[str, str], raw_csv: str) -> Any:
    """A project of ``files`` (relative path -> text) whose ``data/raw.csv`` (``raw_csv``) DVC
    tracks, built in ``root/<name>-template`` and ``root/<name>-project``, committed and pushed."""
    from airflow_provider_mlci.testing import create_dvc_project

    template = root / f"{name}-template"
    for relative, text in files.items():
        (template / relative).parent.mkdir(parents=True, exist_ok=True)
        (template / relative).write_text(text)

    def make_data(work: Path) -> None:
        (work / "data").mkdir()
        (work / "data" / "raw.csv").write_text(raw_csv)

    return create_dvc_project(template, root / f"{name}-project", track=["data/raw.csv"], prepare=make_data)
