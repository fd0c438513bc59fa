"""Write deterministic synthetic card transactions, the way new data would arrive.

::

    python src/generate.py --init [--rows N]         # day 0: data/raw.csv, the frozen data/eval.csv,
                                                     # and an empty models/base.pkl (no model yet)
    python src/generate.py --day N [--rows R]        # append day N's batch to data/raw.csv
    python src/generate.py data/x.csv --rows N --seed S   # one file of N rows

Each day's batch has its own seed, so day N is the same everywhere; amounts grow a little from
day to day (a mild drift for the drift check to see). The evaluation set never changes, so
models trained on different days are scored on the same rows.
"""

from __future__ import annotations

import argparse
import csv
import math
import random
from pathlib import Path

FEATURES = ("amount", "hour", "merchant_risk", "distance_km")
RAW, EVAL, BASE_MODEL = Path("data/raw.csv"), Path("data/eval.csv"), Path("models/base.pkl")
EVAL_SEED, EVAL_ROWS = 424242, 1000


def rows(count: int, seed: int, *, day: int = 0) -> list[dict[str, object]]:
    """``count`` transactions drawn with ``seed``; ``day`` shifts the amounts up by 4 % a day."""
    rng = random.Random(seed)
    out = []
    for index in range(count):
        amount = round(rng.lognormvariate(3.5 + 0.04 * day, 1.0), 2)
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


def write(path: Path, data: list[dict[str, object]], *, append: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    header = not (append and path.exists() and path.stat().st_size)
    with path.open("a" if append else "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(data[0]))
        if header:
            writer.writeheader()
        writer.writerows(data)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("path", type=Path, nargs="?", help="write one file of --rows rows drawn with --seed")
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--init", action="store_true", help="day 0: raw data, frozen evaluation set, no base model")
    parser.add_argument("--day", type=int, help="append day N's batch (N >= 1) to data/raw.csv")
    args = parser.parse_args()
    if args.init:
        write(RAW, rows(args.rows, args.seed))
        write(EVAL, rows(EVAL_ROWS, EVAL_SEED))
        BASE_MODEL.parent.mkdir(parents=True, exist_ok=True)
        BASE_MODEL.write_bytes(b"")  # no deployed model yet: training starts from scratch
    elif args.day is not None:
        if args.day < 1:
            parser.error("--day counts from 1 (day 0 is --init)")
        write(RAW, rows(args.rows, 1000 + args.day, day=args.day), append=True)
    elif args.path is not None:
        write(args.path, rows(args.rows, args.seed))
    else:
        parser.error("give --init, --day N or a path")


if __name__ == "__main__":
    main()
