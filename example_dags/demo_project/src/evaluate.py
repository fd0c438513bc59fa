"""Score models/model.pkl on data/prepared/test.csv; write metrics.json and eval/predictions.csv."""

from __future__ import annotations

import csv
import json
import math
import pickle
from pathlib import Path

from model import load

model = pickle.loads(Path("models/model.pkl").read_bytes())  # the team's own model, from its own pipeline
xs, ys = load("data/prepared/test.csv")
probs = [p for _, p in model.predict_proba(xs)]
preds = [int(p >= 0.5) for p in probs]
tp = sum(1 for p, y in zip(preds, ys, strict=True) if p and y)
fp = sum(1 for p, y in zip(preds, ys, strict=True) if p and not y)
fn = sum(1 for p, y in zip(preds, ys, strict=True) if not p and y)
eps = 1e-12
metrics = {
    "accuracy": round(sum(p == y for p, y in zip(preds, ys, strict=True)) / len(ys), 4),
    "precision": round(tp / (tp + fp) if tp + fp else 0.0, 4),
    "recall": round(tp / (tp + fn) if tp + fn else 0.0, 4),
    "logloss": round(
        -sum(y * math.log(p + eps) + (1 - y) * math.log(1 - p + eps) for p, y in zip(probs, ys, strict=True)) / len(ys),
        4,
    ),
    "rows": len(ys),
}
Path("metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
Path("eval").mkdir(exist_ok=True)
with open("eval/predictions.csv", "w", newline="") as fh:
    writer = csv.writer(fh)
    writer.writerow(["actual", "predicted"])
    writer.writerows(zip(ys, preds, strict=True))
print("evaluate:", json.dumps(metrics))
