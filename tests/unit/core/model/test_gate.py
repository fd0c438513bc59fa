"""Gate rules: floors, improvements, tolerated regressions, fail-closed cases, bad specs, and the
same-evaluation evidence read from dvc.lock."""

from __future__ import annotations

import pytest

from airflow_provider_mlci.core.model.gate import (
    Direction,
    GateSpec,
    MetricRule,
    compare_evaluations,
    decide,
    evaluation_fingerprint,
)
from airflow_provider_mlci.exceptions import MlciConfigError

SPEC = GateSpec.of(
    {
        "accuracy": {"direction": "higher", "floor": 0.8, "min_improvement": 0.01},
        "logloss": {"direction": "lower", "max_regression": 0.02},
    }
)


def m(**values):
    return {"metrics.json": values}


def test_a_better_candidate_passes_with_every_delta_recorded():
    promote, verdicts = decide(SPEC, m(accuracy=0.9, logloss=0.31), m(accuracy=0.85, logloss=0.3))
    assert promote is True
    acc, loss = verdicts
    assert acc.passed
    assert loss.passed
    assert acc.delta == pytest.approx(0.05)
    assert acc.relative_delta == pytest.approx(0.05 / 0.85)
    assert loss.delta == pytest.approx(0.01)


@pytest.mark.parametrize(
    ("candidate", "champion", "reason"),
    [
        (
            m(accuracy=0.855, logloss=0.3),
            m(accuracy=0.85, logloss=0.3),
            "improved by only 0.005 (from 0.85 to 0.855); an improvement of at least 0.01 is required",
        ),
        (m(accuracy=0.79, logloss=0.3), None, "below the floor 0.8"),
        (m(accuracy=0.95, logloss=0.35), m(accuracy=0.85, logloss=0.3), "at most 0.02 tolerated"),
        (m(logloss=0.3), m(accuracy=0.85, logloss=0.3), "metric 'accuracy' not found"),
        (m(accuracy=None, logloss=0.3), m(accuracy=0.85, logloss=0.3), "is None"),
        (m(accuracy=float("nan"), logloss=0.3), None, "is nan"),
        (m(accuracy="high", logloss=0.3), None, "not a number"),
        (m(accuracy=0.95, logloss=0.3), m(logloss=0.3), "deployed model: metric 'accuracy' not found"),
    ],
)
def test_failing_and_fail_closed_cases(candidate, champion, reason):
    promote, verdicts = decide(SPEC, candidate, champion)
    assert promote is False
    assert any(reason in r for v in verdicts for r in v.reasons), [v.reasons for v in verdicts]


def test_no_deployed_model_means_the_floors_alone_decide():
    assert decide(SPEC, m(accuracy=0.81, logloss=9.0), None)[0] is True


def test_a_change_exactly_at_the_tolerance_passes_despite_float_rounding():
    # 0.781 - 0.791 is -0.010000000000000009 in floats: still a regression of exactly 0.01.
    spec = GateSpec.of({"accuracy": {"direction": "higher", "max_regression": 0.01}})
    assert decide(spec, m(accuracy=0.781), m(accuracy=0.791))[0] is True
    assert decide(spec, m(accuracy=0.7809), m(accuracy=0.791))[0] is False
    improve = GateSpec.of({"accuracy": {"direction": "higher", "min_improvement": 0.01}})
    assert decide(improve, m(accuracy=0.801), m(accuracy=0.791))[0] is True
    assert decide(improve, m(accuracy=0.8009), m(accuracy=0.791))[0] is False


def test_relative_improvement():
    spec = GateSpec.of({"auc": {"direction": "maximize", "min_relative_improvement": 0.1}})
    assert decide(spec, m(auc=0.55), m(auc=0.5))[0] is True
    ok, (verdict,) = decide(spec, m(auc=0.54), m(auc=0.5))
    assert not ok
    assert "less than 10.00% of 0.5" in verdict.reasons[0]


def test_metrics_named_by_file_and_dotted_path():
    spec = GateSpec.of({"eval.json:scores.f1": {"direction": "higher"}})
    candidate = {"eval.json": {"scores": {"f1": 0.7}}, "train.json": {"scores": {"f1": 0.9}}}
    assert decide(spec, candidate, {"eval.json": {"scores": {"f1": 0.6}}})[0] is True
    ambiguous = GateSpec.of({"scores.f1": {"direction": "higher"}})
    with pytest.raises(MlciConfigError, match="in several files"):
        decide(ambiguous, candidate, None)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"accuracy": {"direction": "up"}}, "direction='up' is not one of higher, lower"),
        ({"accuracy": {"floor": 0.8}}, "needs a direction"),
        ({"accuracy": {"direction": "higher", "flor": 0.8}}, "unknown setting"),
        ({"accuracy": {"direction": "higher", "floor": "0.8"}}, "floor='0.8' is not a number"),
        (
            {"accuracy": {"direction": "higher", "min_improvement": 0.1, "max_regression": 0.1}},
            "max_regression and min_improvement",
        ),
        ({"accuracy": "higher"}, "must be a mapping"),
        ({}, "at least one metric rule"),
    ],
)
def test_bad_gate_specs_are_refused_naming_the_metric(spec, message):
    with pytest.raises(MlciConfigError, match=message):
        GateSpec.of(spec)


def test_direction_enum_accepts_aliases():
    assert Direction.of("minimize", "x") is Direction.LOWER
    assert MetricRule(metric="x", direction=Direction.HIGHER).to_json()["direction"] == "higher"


LOCK = {
    "schema": "2.0",
    "stages": {
        "train": {
            "deps": [{"path": "data/prepared/train.csv", "md5": "a" * 32}],
            "outs": [{"path": "models/model.pkl"}],
        },
        "evaluate": {
            "deps": [
                {"path": "data/prepared/test.csv", "md5": "b" * 32},
                {"path": "models/model.pkl", "md5": "c" * 32},
                {"path": "src/evaluate.py", "md5": "d" * 32},
            ],
            "params": {"params.yaml": {"evaluate.threshold": 0.5}},
            "outs": [{"path": "metrics.json", "md5": "e" * 32}],
        },
    },
}


def test_the_evaluation_fingerprint_leaves_out_the_model():
    fp = evaluation_fingerprint(LOCK, ["metrics.json"], exclude=["models/model.pkl"])
    assert fp == {
        "data/prepared/test.csv": "b" * 32,
        "src/evaluate.py": "d" * 32,
        "params:params.yaml:evaluate.threshold": 0.5,
    }
    assert evaluation_fingerprint(LOCK, ["metrics.json"], include=["data/prepared/test.csv"]) == {
        "data/prepared/test.csv": "b" * 32
    }
    assert evaluation_fingerprint(None, ["metrics.json"]) == {}


def test_different_evaluation_data_is_named():
    ours = evaluation_fingerprint(LOCK, ["metrics.json"], exclude=["models"])
    theirs = dict(ours, **{"data/prepared/test.csv": "f" * 32})
    diffs = compare_evaluations(ours, theirs)
    assert diffs == ["data/prepared/test.csv: ffffffffffff for the deployed model, bbbbbbbbbbbb for the candidate"]
    assert compare_evaluations(ours, ours) == []
    assert "does not say which stage wrote the metrics" in compare_evaluations({}, ours)[0]
