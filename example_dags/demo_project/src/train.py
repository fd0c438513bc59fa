"""Fit the model on data/prepared/train.csv; write models/model.pkl."""

from __future__ import annotations

import pickle
import statistics
from pathlib import Path

import yaml
from model import FEATURES, LogisticModel, load, predict, standardise

params = yaml.safe_load(Path("params.yaml").read_text())["train"]
xs, ys = load("data/prepared/train.csv")
columns = list(zip(*xs, strict=True))
means = [statistics.fmean(col) for col in columns]
scales = [statistics.pstdev(col) or 1.0 for col in columns]
xs = standardise(xs, means, scales)
weights, bias = [0.0] * len(FEATURES), 0.0
for _ in range(params["epochs"]):
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
print(f"train: fitted on {len(xs)} rows")
