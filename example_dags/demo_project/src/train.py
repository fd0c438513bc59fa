"""Fit the model on data/prepared/train.csv; write models/model.pkl and the per-epoch values under dvclive/.

With ``train.warm_start`` true and a model in ``models/base.pkl`` (the nightly refinement points
that DVC-tracked file at the deployed model), training starts from that model's weights and
feature scaling and runs ``train.refine_epochs`` epochs: a fine-tune on the data so far. An empty
``models/base.pkl`` (no model deployed yet) means training from scratch for ``train.epochs``.

Each epoch's training ``accuracy`` and ``logloss`` (of the predictions the gradient step makes,
before that epoch's update) are logged with DVCLive: ``dvclive/plots/metrics/<name>.tsv``, one row
per epoch as it ends, which a sweep's pruner reads while the stage runs. DVCLive neither rewrites
``dvc.yaml`` nor makes experiments here (``dvclive/`` is git-ignored, no stage output). Where
DVCLive is not installed the same tables are written by :class:`StepLog`, in DVCLive's layout.
"""

from __future__ import annotations

import json
import math
import pickle
import statistics
from pathlib import Path

import yaml
from model import FEATURES, LogisticModel, load, predict, standardise

try:
    from dvclive import Live
except ImportError:  # the project's requirements do not need it: write DVCLive's tables by hand
    Live = None


class StepLog:
    """DVCLive's per-step layout without DVCLive: ``<dir>/plots/metrics/<name>.tsv`` and ``<dir>/metrics.json``.

    :param directory: the folder, DVCLive's default ``dvclive``
    """

    def __init__(self, directory: str = "dvclive") -> None:
        self.dir = Path(directory)
        self.step = 0
        self.summary: dict[str, float | int] = {}
        for table in (self.dir / "plots" / "metrics").glob("*.tsv"):
            table.unlink()  # a new run starts new tables, as DVCLive's does

    def __enter__(self) -> StepLog:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def log_metric(self, name: str, val: float) -> None:
        """Append ``val`` as this step's ``name``.

        :param name: the metric
        :param val: its value at this step
        """
        table = self.dir / "plots" / "metrics" / f"{name}.tsv"
        table.parent.mkdir(parents=True, exist_ok=True)
        with table.open("a") as fh:
            fh.write((f"step\t{name}\n" if self.step == 0 else "") + f"{self.step}\t{val}\n")
        self.summary[name] = val

    def next_step(self) -> None:
        """Close the step: write the summary, count on."""
        (self.dir / "metrics.json").write_text(json.dumps({**self.summary, "step": self.step}, indent=4) + "\n")
        self.step += 1


params = yaml.safe_load(Path("params.yaml").read_text())["train"]
xs, ys = load("data/prepared/train.csv")
base_path = Path("models/base.pkl")
base = pickle.loads(base_path.read_bytes()) if params.get("warm_start") and base_path.stat().st_size else None
if base is not None:  # fine-tune: keep the deployed model's scaling so its weights keep their meaning
    means, scales = base.means, base.scales
    weights, bias, epochs = list(base.weights), base.bias, params["refine_epochs"]
else:
    columns = list(zip(*xs, strict=True))
    means = [statistics.fmean(col) for col in columns]
    scales = [statistics.pstdev(col) or 1.0 for col in columns]
    weights, bias, epochs = [0.0] * len(FEATURES), 0.0, params["epochs"]
xs = standardise(xs, means, scales)
eps = 1e-12
live = Live(dvcyaml=None, save_dvc_exp=False, report=None) if Live is not None else StepLog()
with live:
    for _ in range(epochs):
        grad_w, grad_b = [0.0] * len(weights), 0.0
        correct, loss = 0, 0.0
        for row, y in zip(xs, ys, strict=True):
            p = predict(weights, bias, row)
            err = p - y
            grad_b += err
            grad_w = [g + err * v for g, v in zip(grad_w, row, strict=True)]
            correct += (p >= 0.5) == y
            loss -= math.log(p + eps) if y else math.log(1 - p + eps)
        n = len(xs)
        weights = [
            w - params["learning_rate"] * (g / n + params["l2"] * w) for w, g in zip(weights, grad_w, strict=True)
        ]
        bias -= params["learning_rate"] * grad_b / n
        live.log_metric("accuracy", round(correct / n, 4))
        live.log_metric("logloss", round(loss / n, 4))
        live.next_step()
Path("models").mkdir(exist_ok=True)
model = LogisticModel(means=means, scales=scales, weights=weights, bias=bias)
Path("models/model.pkl").write_bytes(pickle.dumps(model, protocol=5))
start = "warm start from models/base.pkl" if base is not None else "from scratch"
print(f"train: fitted on {len(xs)} rows, {epochs} epochs, {start}")
