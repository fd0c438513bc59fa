from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from airflow_provider_mlci.core.data.drift import DriftThresholds, compare_profiles, profile_chunks
from airflow_provider_mlci.core.data.tabular import TableFormat, TableReader
from airflow_provider_mlci.exceptions import MlciConfigError

ROWS = 5000


def population(seed: int, *, mean: float = 0.0, shares: tuple[float, ...] = (0.5, 0.3, 0.2), rows: int = ROWS):
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.normal(mean, 1.0, rows),
            "k": rng.integers(0, 10, rows),
            "color": rng.choice(["red", "green", "blue"], rows, p=list(shares)),
        }
    )


def compare(baseline: pd.DataFrame, current: pd.DataFrame, **thresholds):
    return compare_profiles(profile_chunks([baseline]), profile_chunks([current]), DriftThresholds(**thresholds))


def test_a_shifted_numeric_column_is_drift_by_psi_and_ks():
    report = compare(population(0), population(1, mean=1.0))
    assert report.drifted
    assert report.columns["x"]["drifted"] is True
    assert report.columns["x"]["psi"] > 0.2
    assert report.columns["x"]["ks"] > 0.3
    assert report.failures == [
        f"column 'x' shifted: PSI {report.columns['x']['psi']:.3f} > 0.2, KS {report.columns['x']['ks']:.3f} > 0.1"
    ]
    assert report.columns["k"]["drifted"] is False
    assert report.columns["color"]["drifted"] is False


def test_a_shifted_category_frequency_is_drift_by_psi():
    report = compare(population(0), population(1, shares=(0.2, 0.3, 0.5)))
    assert report.drifted
    assert report.columns["color"]["psi"] > 0.2
    assert "ks" not in report.columns["color"], "categories have no order to compare by KS"
    assert report.failures == [f"column 'color' shifted: PSI {report.columns['color']['psi']:.3f} > 0.2"]


@pytest.mark.parametrize("seed", [1, 2, 3, 4, 5])
def test_an_independent_resample_of_the_same_distribution_is_no_drift(seed):
    report = compare(population(0), population(seed))
    assert not report.drifted, report.failures
    assert report.failures == []
    for name in ("x", "k"):
        assert report.columns[name]["psi"] < 0.05
        assert report.columns[name]["ks"] < 0.05
    assert report.columns["color"]["psi"] < 0.05


def test_a_new_category_is_drift():
    baseline = population(0)
    current = population(1)
    current.loc[: ROWS // 2, "color"] = "purple"
    report = compare(baseline, current)
    assert report.columns["color"]["drifted"] is True


def test_added_removed_and_retyped_columns_are_reported():
    baseline = population(0)
    current = population(1).drop(columns=["color"]).assign(weight=1.0, k=lambda f: f["k"] + 0.5)
    report = compare(baseline, current)
    assert report.added == ["weight"]
    assert report.removed == ["color"]
    assert report.retyped == {"k": ["int64", "float64"]}
    assert "k" not in report.columns, "a retyped column is not compared by distribution"
    assert report.failures == [
        "column 'weight' added",
        "column 'color' removed",
        "column 'k' retyped int64 -> float64",
    ]


@pytest.mark.parametrize(
    ("current_rows", "ratio", "drifted"),
    [(ROWS, 1.0, False), (ROWS // 2, 0.5, False), (2 * ROWS, 2.0, False), (2400, 0.48, True), (10_100, 2.02, True)],
)
def test_row_count_ratio_outside_the_bounds_is_drift(current_rows, ratio, drifted):
    report = compare(population(0), population(1, rows=current_rows))
    assert report.rows == {"baseline": ROWS, "current": current_rows, "ratio": ratio}
    row_failures = [f for f in report.failures if f.startswith("row count")]
    assert bool(row_failures) is drifted
    if drifted:
        assert row_failures == [f"row count {ROWS} -> {current_rows} (ratio {ratio:.3g}) outside [0.5, 2.0]"]


def test_rows_appearing_in_an_empty_baseline_are_drift():
    empty = population(0, rows=0)
    report = compare(empty, population(1, rows=10))
    assert report.rows == {"baseline": 0, "current": 10, "ratio": None}
    assert report.drifted
    assert report.failures[0].startswith("row count 0 -> 10")
    assert compare(empty, empty).rows["ratio"] == 1.0


def test_the_row_ratio_bounds_are_the_thresholds_given():
    report = compare(population(0), population(1, rows=2400), min_row_ratio=0.4)
    assert not report.drifted
    report = compare(population(0), population(1, rows=4000), min_row_ratio=0.9)
    assert report.failures == [f"row count {ROWS} -> 4000 (ratio 0.8) outside [0.9, 2.0]"]


def test_profiling_in_chunks_equals_profiling_in_one_chunk(tmp_path):
    path = tmp_path / "data.csv"
    frame = population(0)
    frame.loc[::97, "color"] = None
    frame.to_csv(path, index=False)
    reader = TableReader(path=str(path), format=TableFormat.CSV, chunk_bytes=2048)
    chunked = profile_chunks(reader.chunks())
    whole = profile_chunks(TableReader(path=str(path), format=TableFormat.CSV).chunks())
    in_memory = profile_chunks([frame])
    assert sum(1 for _ in reader.chunks()) > 20
    assert chunked.rows == whole.rows == ROWS
    assert chunked.dtypes == whole.dtypes == {"x": "float64", "k": "int64", "color": "str"}
    assert chunked.categories == whole.categories == in_memory.categories
    assert chunked.categories["color"]["<null>"] == len(frame.loc[::97])
    assert sum(chunked.categories["color"].values()) == ROWS
    for name in ("x", "k"):  # the sample holds every value while there are fewer than sample_size
        assert np.array_equal(np.sort(chunked.samples[name]), np.sort(whole.samples[name]))
        assert len(chunked.samples[name]) == ROWS
    drift = compare_profiles(whole, chunked, DriftThresholds())
    assert not drift.drifted
    assert all(stats["psi"] == 0 for stats in drift.columns.values())


def test_numeric_sample_is_capped_and_drawn_from_every_chunk():
    frame = pd.DataFrame({"v": np.arange(20_000, dtype=np.float64)})
    chunks = [frame.iloc[i : i + 1000] for i in range(0, len(frame), 1000)]
    profile = profile_chunks(chunks, sample_size=500, seed=3)
    sample = profile.samples["v"]
    assert len(sample) == 500
    assert len(np.unique(sample)) == 500
    assert set(sample) <= set(frame["v"])
    assert sample.max() > 15_000, "later chunks are sampled, not only the first values"
    assert np.array_equal(sample, profile_chunks(chunks, sample_size=500, seed=3).samples["v"])


def test_only_the_columns_asked_for_are_profiled():
    profile = profile_chunks([population(0)], columns=["x"])
    assert profile.dtypes == {"x": "float64"}
    assert profile.categories == {}
    assert profile.rows == ROWS


def test_a_column_with_too_many_categories_is_not_compared():
    ids = pd.DataFrame({"uid": [f"u{i}" for i in range(10_500)]})
    report = compare(ids, ids)
    assert report.columns["uid"]["psi"] is None
    assert "more than 10000 categories" in report.columns["uid"]["note"]
    assert not report.drifted


def test_the_report_is_strict_json():
    baseline = population(0)
    current = population(1, mean=1.0).assign(extra=1)
    current["k"] = np.nan
    report = compare(baseline, current)
    summary = json.loads(json.dumps(report.to_json(), allow_nan=False))
    assert summary["drifted"] is True
    assert summary["added"] == ["extra"]
    assert summary["retyped"] == {"k": ["int64", "float64"]}
    assert summary["columns"]["x"]["drifted"] is True


def test_a_numeric_column_without_values_is_noted_not_compared():
    baseline = pd.DataFrame({"v": [np.nan] * 10})
    report = compare(baseline, pd.DataFrame({"v": np.arange(10, dtype=np.float64)}))
    assert report.columns["v"] == {"psi": None, "ks": None, "note": "no values to compare", "drifted": False}


@pytest.mark.parametrize(
    "bad",
    [
        {"psi": 0},
        {"psi": -0.1},
        {"psi": float("nan")},
        {"ks": 0},
        {"ks": 1.5},
        {"ks": float("nan")},
        {"min_row_ratio": -0.1},
        {"min_row_ratio": 1.1},
        {"max_row_ratio": 0.9},
        {"max_row_ratio": float("nan")},
        {"sample_size": 99},
    ],
)
def test_bad_thresholds_are_refused(bad):
    with pytest.raises(MlciConfigError):
        DriftThresholds(**bad)


def test_the_default_thresholds_are_the_usual_significant_shift_levels():
    thresholds = DriftThresholds()
    assert (thresholds.psi, thresholds.ks, thresholds.min_row_ratio, thresholds.max_row_ratio) == (0.2, 0.1, 0.5, 2.0)
    assert DriftThresholds(psi=0.5, ks=1, min_row_ratio=0, max_row_ratio=1).ks == 1
