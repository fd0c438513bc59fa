"""A tiny logistic regression, standard library only, shared by train and evaluate."""

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
