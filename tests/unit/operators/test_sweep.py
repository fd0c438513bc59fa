"""The sweep operators and task group: what they store, and what they refuse before any work."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_provider_mlci.operators.sweep import SweepLeaderboardOperator, SweepTrialOperator, SweepTrialsOperator

CONTEXT = {"ti": SimpleNamespace(dag_id="d", run_id="manual__1", map_index=-1)}


def test_the_constructors_only_store(tmp_path):
    cache = tmp_path / "never-created"
    gen = SweepTrialsOperator(
        task_id="g",
        space={"lr": {"gaussian": [0, 1]}},
        max_trials="{{ params.n }}",
        dvc_conn_id="absent",
        cache_dir=str(cache),
    )
    assert gen.space == {"lr": {"gaussian": [0, 1]}}
    assert gen.max_trials == "{{ params.n }}"
    assert gen.template_fields == ("space", "max_trials", "seed", "name_suffix", "rev")
    trial = SweepTrialOperator(task_id="t", trial={"name": "x"}, dvc_conn_id="absent", cache_dir=str(cache))
    assert trial.template_fields == ("trial", "rev", "targets")
    board = SweepLeaderboardOperator(task_id="b", generate_task_id="g", trial_task_id="t", objective={"metric": "m"})
    assert board.template_fields == ("max_failed_trials", "title")
    assert not cache.exists()


def test_a_sweep_too_large_for_airflow_fails_at_generation_naming_max_map_length():
    op = SweepTrialsOperator(task_id="g", space={"a": list(range(41)), "b": list(range(25))}, dvc_conn_id="absent")
    with pytest.raises(AirflowFailException, match=r"1025 trials.*\[core\] max_map_length = 1024"):
        op.execute(CONTEXT)


def test_the_map_limit_is_airflows_setting(monkeypatch):
    monkeypatch.setenv("AIRFLOW__CORE__MAX_MAP_LENGTH", "4")
    op = SweepTrialsOperator(task_id="g", space={"a": [1, 2, 3, 4, 5]}, dvc_conn_id="absent")
    with pytest.raises(AirflowFailException, match=r"5 trials.*max_map_length = 4"):
        op.execute(CONTEXT)


@pytest.mark.parametrize(
    ("space", "message"),
    [
        ({"train.lr": {"gaussian": [0, 1]}}, "Param 'train.lr': unknown distribution 'gaussian'"),
        (["train.epochs=normal(1,2)"], "Param 'train.epochs': unknown distribution 'normal'"),
    ],
)
def test_an_unknown_distribution_fails_naming_the_param(space, message):
    op = SweepTrialsOperator(task_id="g", space=space, max_trials=2, dvc_conn_id="absent")
    with pytest.raises(AirflowFailException, match=re.escape(message)):
        op.execute(CONTEXT)


def test_trials_are_named_uniquely_per_run_and_templated_budgets_are_numbers():
    op = SweepTrialsOperator(task_id="g", space={"lr": {"uniform": [0.1, 0.2]}}, max_trials="3", seed="5")
    first = op.expand_space(CONTEXT)
    other = op.expand_space({"ti": SimpleNamespace(dag_id="d", run_id="manual__2")})
    assert len(first) == 3
    assert re.fullmatch(r"trial-001-[0-9a-f]{7}", first[0]["name"])
    assert first[0]["name"] != other[0]["name"]
    assert [t["params"] for t in first] == [t["params"] for t in other]
    assert first[0]["overrides"] == [f"lr={first[0]['params']['lr']!r}"]
    op.name_suffix = ""
    assert op.expand_space(CONTEXT)[0]["name"] == "trial-001"
    op.max_trials = "many"
    with pytest.raises(Exception, match="max_trials='many' is not a whole number"):
        op.expand_space(CONTEXT)


def test_the_task_group_maps_the_trials_with_the_parallelism_asked():
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with DAG("sweep_shape", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        SweepTaskGroup(
            group_id="sweep",
            space=["train.epochs=10,20"],
            objective="accuracy",
            goal="min",
            target=0.5,
            max_trials=2,
            parallel_trials=3,
            max_failed_trials=1,
        )
    assert set(dag.task_dict) == {"sweep.generate", "sweep.trial", "sweep.leaderboard"}
    trial = dag.task_dict["sweep.trial"]
    assert trial.max_active_tis_per_dagrun == 3
    assert trial.partial_kwargs["objective"] == {"metric": "accuracy", "goal": "min", "target": 0.5}
    board = dag.task_dict["sweep.leaderboard"]
    assert board.trigger_rule == "all_done"
    assert board.trial_task_id == "sweep.trial"
    assert dag.task_dict["sweep.generate"].downstream_task_ids == {"sweep.trial"}
    assert trial.downstream_task_ids == {"sweep.leaderboard"}


@pytest.mark.parametrize(("goal", "expected"), [("max", "maximize"), ("MIN", "minimize"), (None, "maximize")])
def test_goals_are_written_as_max_or_min_and_targets_as_numbers(goal, expected):
    from airflow_provider_mlci.core.sweep import Objective

    objective = Objective.of({"metric": "accuracy", "goal": goal, "target": "0.9"})
    assert objective.to_json() == {"metric": "accuracy", "goal": expected, "target": 0.9}
    assert Objective.of({"metric": "accuracy", "target": ""}).target is None
    with pytest.raises(Exception, match="target='high' is not a number"):
        Objective.of({"metric": "accuracy", "target": "high"})
