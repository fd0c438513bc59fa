"""Write deterministic synthetic transactions: `python src/generate.py data/raw.csv [--rows N] [--seed S]`."""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

FEATURES = ("amount", "hour", "merchant_risk", "distance_km")


def rows(count: int, seed: int) -> list[dict[str, object]]:
    rng = random.Random(seed)
    out = []
    for index in range(count):
        amount = round(rng.lognormvariate(3.5, 1.0), 2)
        hour = rng.randrange(24)
        merchant_risk = round(rng.random(), 4)
        distance_km = round(rng.expovariate(1 / 20), 2)
        score = 0.015 * amount + 2.5 * merchant_risk + 0.02 * distance_km + (1.2 if hour < 6 else 0) - 4.0
        fraud = int(rng.random() < 1 / (1 + math.exp(-score)))
        out.append(
            {
                "id": f"t{seed}-{index:06d}",
                **dict(zip(FEATURES, (amount, hour, merchant_risk, distance_km), strict=True)),
                "fraud": fraud,
            }
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("path", type=Path)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    args.path.parent.mkdir(parents=True, exist_ok=True)
    data = rows(args.rows, args.seed)
    with args.path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        writer.writeheader()
        writer.writerows(data)


if __name__ == "__main__":
    main()
