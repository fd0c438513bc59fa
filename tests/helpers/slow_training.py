"""A training stage that writes its per-step accuracy as DVCLive does, slowly, for pruning tests.

A good learning rate climbs (``accuracy = 0.5 + (0.5 - lr) * step / 10``), a bad one falls; each
step is appended to ``dvclive/plots/metrics/accuracy.tsv`` and, with the process id at the start,
to a trace file outside the repository, so a test can tell which steps a stopped stage wrote.
"""

from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Any

_TRAIN = textwrap.dedent(
    """
    import json, os, time
    import yaml

    lr = yaml.safe_load(open("params.yaml"))["train"]["learning_rate"]
    os.makedirs("dvclive/plots/metrics", exist_ok=True)
    trace = {trace!r}
    if trace:
        with open(trace, "a") as out:
            out.write(f"start {{lr}} {{os.getpid()}}\\n")
    with open("dvclive/plots/metrics/accuracy.tsv", "w") as tsv:
        tsv.write("timestamp\\tstep\\taccuracy\\n")
        for step in range({steps}):
            accuracy = 0.5 + (0.5 - lr) * step / 10
            tsv.write(f"{{int(time.time() * 1000)}}\\t{{step}}\\t{{accuracy}}\\n")
            tsv.flush()
            if trace:
                with open(trace, "a") as out:
                    out.write(f"step {{lr}} {{step}}\\n")
            time.sleep({pause})
    json.dump({{"accuracy": accuracy}}, open("metrics.json", "w"))
    """
)


def install_slow_training(
    project: Any, trace: Path | None, *, steps: int = 8, pause: float = 0.7, push: bool = False
) -> None:
    """Make the project one ``train`` stage running the slow training; commit and push it.

    :param project: the test project (``work``, ``commit_and_push``)
    :param trace: the file the stage appends ``start <lr> <pid>`` and ``step <lr> <step>`` lines to
        (``None``: none, for a stage in a sandbox that hides the test's folders)
    :param steps: steps per run
    :param pause: seconds per step
    :param push: also push the DVC cache (a remote the trials pull from)
    """
    source = _TRAIN.format(trace=str(trace) if trace else "", steps=steps, pause=pause)
    (project.work / "src" / "train.py").write_text(source)
    (project.work / "dvc.yaml").write_text(
        "stages:\n  train:\n    cmd: python src/train.py\n    params: [train.learning_rate]\n"
        "    metrics:\n      - metrics.json:\n          cache: false\n"
    )
    (project.work / "dvc.lock").unlink(missing_ok=True)
    with (project.work / ".gitignore").open("a") as ignore:
        ignore.write("dvclive/\n")
    project.commit_and_push("One slow stage that logs its accuracy per step", dvc_push=push)


def trace_of(trace: Path, learning_rate: float) -> tuple[int, list[int]]:
    """The process id and the steps the run with ``learning_rate`` wrote, from the trace file.

    :param trace: the trace file
    :param learning_rate: the run's learning rate
    """
    lines = [line.split() for line in trace.read_text().splitlines()]
    (pid,) = [int(p) for kind, lr, p in lines if kind == "start" and float(lr) == learning_rate]
    return pid, [int(s) for kind, lr, s in lines if kind == "step" and float(lr) == learning_rate]
