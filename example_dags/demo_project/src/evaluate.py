"""Score models/model.pkl on the frozen data/eval.csv; write metrics.json and the plot data under eval/.

The evaluation set never changes (see src/generate.py), so the scores of models trained on
different days compare: the release gate checks that both were scored on the same file.
"""

from __future__ import annotations

import csv
import json
import math
import pickle
from pathlib import Path

from model import load

model = pickle.loads(Path("models/model.pkl").read_bytes())  # the team's own model, from its own pipeline
xs, ys = load("data/eval.csv")
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
with open("eval/roc.csv", "w", newline="") as fh:  # the ROC curve: a linear plot
    writer = csv.writer(fh)
    writer.writerow(["fpr", "tpr", "threshold"])
    positives, negatives = sum(ys) or 1, (len(ys) - sum(ys)) or 1
    for step in range(21):
        cut = 1 - step / 20
        tp_at = sum(1 for p, y in zip(probs, ys, strict=True) if p >= cut and y)
        fp_at = sum(1 for p, y in zip(probs, ys, strict=True) if p >= cut and not y)
        writer.writerow([round(fp_at / negatives, 4), round(tp_at / positives, 4), round(cut, 2)])
with open("eval/scores.csv", "w", newline="") as fh:  # fraud probability against the amount: a scatter plot
    writer = csv.writer(fh)
    writer.writerow(["amount", "probability"])
    writer.writerows((round(row[0], 2), round(p, 4)) for row, p in zip(xs, probs, strict=True))
# Feature weights as a bar chart: an image output, written as SVG with the standard library.
bars = sorted(zip(model.features, model.weights, strict=True), key=lambda item: -abs(item[1]))
top = max(abs(w) for _, w in bars) or 1.0
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="420" height="150" font-family="sans-serif" font-size="12">']
for index, (name, weight) in enumerate(bars):
    width = 260 * abs(weight) / top
    colour = "#cf222e" if weight > 0 else "#1a7f37"
    svg.append(f'<text x="0" y="{index * 34 + 22}">{name}</text>')
    svg.append(f'<rect x="110" y="{index * 34 + 8}" width="{width:.1f}" height="20" fill="{colour}"/>')
    svg.append(f'<text x="{115 + width:.1f}" y="{index * 34 + 22}">{weight:+.3f}</text>')
svg.append("</svg>")
Path("eval/importance.svg").write_text("\n".join(svg) + "\n")
print("evaluate:", json.dumps(metrics))
