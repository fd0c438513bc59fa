"""What a promotion may write after a gate's decision (the decision itself: tests/unit/operators/test_model.py)."""

from __future__ import annotations

import pytest

from airflow_provider_mlci.core.model.registry import Champion
from airflow_provider_mlci.core.model.release import promotion_terms
from airflow_provider_mlci.exceptions import GateRefusedError, MlciConfigError, PromotionConflictError

CHAMPION = {"name": "fraud", "stage": "prod", "version": "v1.0.0", "sha": "c" * 40, "tag": "fraud#prod#1"}
DECISION = {
    "promote": True,
    "reasons": [],
    "candidate": {"sha": "a" * 40, "metrics": {"m.json": {"auc": 0.9}}},
    "champion": {**CHAMPION, "metrics": {"m.json": {"auc": 0.8}}},
    "metrics": [{"metric": "auc", "candidate": 0.9, "champion": 0.8, "delta": 0.1, "passed": True}],
    "evaluation": {"same": True, "fingerprint": {"data/eval.csv": "md5"}},
}


def test_a_passing_decision_names_the_model_it_replaces_and_the_evidence():
    expected, evidence = promotion_terms(DECISION, sha="a" * 40, rev="main", gate="gate")
    assert expected == Champion(**CHAMPION)
    assert evidence == {
        "metrics": {"m.json": {"auc": 0.9}},
        "gate": [{"metric": "auc", "candidate": 0.9, "champion": 0.8, "delta": 0.1}],
        "evaluation": {"data/eval.csv": "md5"},
    }
    assert promotion_terms({**DECISION, "champion": None}, sha="a" * 40, rev="main", gate="gate")[0] is None


@pytest.mark.parametrize(
    ("decision", "sha", "error", "message"),
    [
        (None, "a" * 40, MlciConfigError, "Task 'gate' left no gate decision"),
        ({**DECISION, "promote": False, "reasons": ["auc: below the floor"]}, "a" * 40, GateRefusedError, "auc: below"),
        (DECISION, "b" * 40, PromotionConflictError, "The gate judged aaaaaaaaaaaa but 'main' is bbbbbbbbbbbb now"),
    ],
)
def test_a_missing_refused_or_moved_candidate_is_refused(decision, sha, error, message):
    with pytest.raises(error, match=message):
        promotion_terms(decision, sha=sha, rev="main", gate="gate")
