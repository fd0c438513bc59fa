"""Search spaces, trials, the map limit, and ranking results by the objective."""

from __future__ import annotations

import pytest

from airflow_provider_mlci.core.experiments.sweep import Objective, SearchSpace, best_trial, leaderboard, target_met
from airflow_provider_mlci.exceptions import MlciConfigError


def test_a_discrete_space_expands_as_a_grid_with_dvc_overrides():
    space = SearchSpace.of({"train.epochs": [10, 20], "train.lr": {"choice": [0.1, 0.3]}, "k": {"range": [1, 6, 2]}})
    trials = space.trials()
    assert len(trials) == 2 * 2 * 3
    assert trials[0].name == "trial-001"
    assert trials[0].params == {"train.epochs": 10, "train.lr": 0.1, "k": 1}
    assert trials[-1].overrides == ["train.epochs=20", "train.lr=0.3", "k=5"]
    assert len(space.trials(max_trials=5)) == 5


def test_dvc_set_strings_are_accepted():
    space = SearchSpace.of(["train.lr=0.01,0.1", "train.epochs=range(50,150,50)", "model=choice(linear,tree)"])
    assert [p.values for p in space.params] == [(0.01, 0.1), (50, 100), ("linear", "tree")]
    assert space.grid_size() == 8


def test_sampled_params_draw_a_seeded_budget_within_bounds():
    space = SearchSpace.of({"lr": {"loguniform": [1e-4, 1e-1]}, "l2": {"uniform": [0, 0.01]}, "e": [1, 2]})
    first = space.trials(max_trials=20, seed=3)
    assert [t.params for t in first] == [t.params for t in space.trials(max_trials=20, seed=3)]
    assert all(1e-4 <= t.params["lr"] <= 1e-1 and 0 <= t.params["l2"] <= 0.01 for t in first)
    assert {t.params["e"] for t in first} == {1, 2}
    with pytest.raises(MlciConfigError, match="max_trials is needed: lr, l2 are sampled"):
        space.trials()


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"lr": {"gaussian": [0, 1]}}, "unknown distribution 'gaussian'"),
        (["lr=normal(0,1)"], "unknown distribution 'normal'"),
        ({"lr": {"uniform": [1, 0]}}, "needs 0 < low < high"),
        ({"lr": {"loguniform": [0, 1]}}, "needs 0 < low < high"),
        ({"lr": {"range": [1, 5, 0]}}, "range step is 0"),
        ({"lr": {"uniform": [0, "1"]}}, "uniform takes 2 numbers"),
        ({"lr": []}, "no values"),
        ({"lr": 0.1}, "give a list of values"),
        (["lr"], "not a `-S` param string"),
        ({}, "empty"),
        ({"bad name": [1]}, "not a param name"),
    ],
)
def test_bad_spaces_are_refused_naming_the_param(spec, message):
    with pytest.raises(MlciConfigError, match=message):
        SearchSpace.of(spec)


def test_a_sweep_too_large_for_airflow_fails_when_generated():
    space = SearchSpace.of({"a": list(range(41)), "b": list(range(25))})  # 1,025 points
    with pytest.raises(MlciConfigError, match=r"1025 trials.*max_map_length = 1024"):
        space.trials()
    assert len(space.trials(max_trials=1024)) == 1024


def test_results_rank_by_the_objective_and_the_target_stops_early():
    results = [
        {"name": "t1", "params": {"lr": 0.1}, "metrics": {"m.json": {"acc": 0.8}}, "status": "success"},
        {"name": "t2", "params": {"lr": 0.3}, "metrics": {"m.json": {"acc": 0.9}}, "status": "success"},
        {"name": "t3", "params": {"lr": 0.5}, "metrics": {}, "status": "failed"},
        {"name": "t4", "params": {"lr": 0.7}, "metrics": {"m.json": {"acc": None}}, "status": "success"},
    ]
    up = Objective.of({"metric": "acc", "goal": "maximize", "target": 0.9})
    board = leaderboard(results, up)
    assert [t["name"] for t in board["trials"]] == ["t2", "t1", "t3", "t4"]
    assert board["objective"] == "acc"
    assert best_trial(results, up)["name"] == "t2"
    assert target_met(results, up) is True
    down = Objective.of({"metric": "acc", "goal": "minimize"})
    assert best_trial(results, down)["name"] == "t1"
    assert target_met(results, down) is False
    assert best_trial(results[2:], up) is None
    with pytest.raises(MlciConfigError, match="goal='up'"):
        Objective.of({"metric": "acc", "goal": "up"})


def test_a_sweep_ranks_every_planned_trial_and_counts_the_missing_as_skipped_or_failed():
    from airflow_provider_mlci.core.experiments.sweep import check_sweep, rank_sweep
    from airflow_provider_mlci.exceptions import MlciError

    planned = [{"name": f"t{i}", "params": {"lr": i}} for i in range(4)]
    results = [
        {"name": "t0", "params": {"lr": 0}, "status": "success", "metrics": {"m.json": {"acc": 0.7}}, "sha": "a"},
        {"name": "t1", "params": {"lr": 1}, "status": "success", "metrics": {"m.json": {"acc": 0.9}}, "sha": "b"},
        None,  # a task that pushed nothing
    ]
    objective = Objective.of({"metric": "acc", "goal": "max", "target": 0.8})
    summary = rank_sweep(planned, results, objective, skipped=[3])
    assert [row["name"] for row in summary["leaderboard"]["trials"]] == ["t1", "t0", "t2", "t3"]
    assert summary["best"]["name"] == "t1"
    assert summary["best"]["sha"] == "b"
    assert (summary["succeeded"], summary["failed"], summary["skipped"]) == (2, 1, 1)
    assert summary["target_met"] is True
    assert summary["leaderboard"]["trials"][2]["error"] == "the trial's task did not finish (see its log)"
    check_sweep(summary, max_failed=1)
    with pytest.raises(MlciError, match=r"1 of 4 trials failed, more than max_failed_trials=0: t2: the trial's task"):
        check_sweep(summary, max_failed=0)
    nothing = rank_sweep(planned, [], objective)
    with pytest.raises(MlciError, match=r"No trial of 4 produced a usable 'acc' \(4 failed, 0 skipped\)"):
        check_sweep(nothing)
