"""Fit the model on data/prepared/train.csv; write models/model.pkl.

With ``train.warm_start`` true and a model in ``models/base.pkl`` (the nightly refinement points
that DVC-tracked file at the deployed model), training starts from that model's weights and
feature scaling and runs ``train.refine_epochs`` epochs: a fine-tune on the data so far. An empty
``models/base.pkl`` (no model deployed yet) means training from scratch for ``train.epochs``.
"""

from __future__ import annotations

import pickle
import statistics
from pathlib import Path

import yaml
from model import FEATURES, LogisticModel, load, predict, standardise

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
for _ in range(epochs):
    grad_w, grad_b = [0.0] * len(weights), 0.0
    for row, y in zip(xs, ys, strict=True):
        err = predict(weights, bias, row) - y
        grad_b += err
        grad_w = [g + err * v for g, v in zip(grad_w, row, strict=True)]
    n = len(xs)
    weights = [w - params["learning_rate"] * (g / n + params["l2"] * w) for w, g in zip(weights, grad_w, strict=True)]
    bias -= params["learning_rate"] * grad_b / n
Path("models").mkdir(exist_ok=True)
model = LogisticModel(means=means, scales=scales, weights=weights, bias=bias)
Path("models/model.pkl").write_bytes(pickle.dumps(model, protocol=5))
start = "warm start from models/base.pkl" if base is not None else "from scratch"
print(f"train: fitted on {len(xs)} rows, {epochs} epochs, {start}")
