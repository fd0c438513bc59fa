"""Split data/raw.csv into data/prepared/{train,test}.csv, reproducibly."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import yaml

params = yaml.safe_load(Path("params.yaml").read_text())["prepare"]
with open("data/raw.csv", newline="") as fh:
    rows = list(csv.DictReader(fh))
if not rows:
    raise SystemExit("data/raw.csv has no rows")
random.Random(params["seed"]).shuffle(rows)
cut = int(len(rows) * (1 - params["test_fraction"]))
out = Path("data/prepared")
out.mkdir(parents=True, exist_ok=True)
for name, part in (("train", rows[:cut]), ("test", rows[cut:])):
    with (out / f"{name}.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(part)
print(f"prepare: {cut} training rows, {len(rows) - cut} test rows")
