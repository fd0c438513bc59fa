"""Turn data/raw.csv (every batch so far) into data/prepared/train.csv: one row per id, shuffled."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import yaml

params = yaml.safe_load(Path("params.yaml").read_text())["prepare"]
with open("data/raw.csv", newline="") as fh:
    rows = list({row["id"]: row for row in csv.DictReader(fh)}.values())  # a batch sent twice counts once
if not rows:
    raise SystemExit("data/raw.csv has no rows")
random.Random(params["seed"]).shuffle(rows)
out = Path("data/prepared")
out.mkdir(parents=True, exist_ok=True)
with (out / "train.csv").open("w", newline="") as fh:
    writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
print(f"prepare: {len(rows)} training rows")
