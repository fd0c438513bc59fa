"""A tiny logistic regression, standard library only, shared by train and evaluate.

The trained model is a pickled :class:`LogisticModel` (``models/model.pkl``); loading it needs this
module importable as ``model`` (``src/`` on the path), as for any pickle of the team's own code.
"""

from __future__ import annotations

import csv
import math

FEATURES = ("amount", "hour", "merchant_risk", "distance_km")


def load(path: str) -> tuple[list[list[float]], list[int]]:
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))
    xs = [[float(row[name]) for name in FEATURES] for row in rows]
    ys = [int(row["fraud"]) for row in rows]
    return xs, ys


def standardise(xs: list[list[float]], means: list[float], scales: list[float]) -> list[list[float]]:
    return [[(v - m) / s for v, m, s in zip(row, means, scales, strict=True)] for row in xs]


def predict(weights: list[float], bias: float, row: list[float]) -> float:
    z = bias + sum(w * v for w, v in zip(weights, row, strict=True))
    return 1 / (1 + math.exp(-max(min(z, 30), -30)))


class LogisticModel:
    """A fitted model: feature scaling plus logistic regression weights."""

    def __init__(self, *, means: list[float], scales: list[float], weights: list[float], bias: float) -> None:
        self.features = list(FEATURES)
        self.means = means
        self.scales = scales
        self.weights = weights
        self.bias = bias

    def _rows(self, rows: object) -> list[list[float]]:
        if hasattr(rows, "to_numpy"):  # a pandas DataFrame
            rows = rows[self.features].to_numpy()
        return [[float(v) for v in row] for row in rows]  # type: ignore[union-attr]

    def predict_proba(self, rows: object) -> list[list[float]]:
        """Probability of [legitimate, fraud] per row."""
        scaled = standardise(self._rows(rows), self.means, self.scales)
        probs = [predict(self.weights, self.bias, row) for row in scaled]
        return [[1 - p, p] for p in probs]

    def predict(self, rows: object) -> list[int]:
        """1 for fraud, 0 otherwise, per row."""
        return [int(p >= 0.5) for _, p in self.predict_proba(rows)]
