"""The Optuna study behind adaptive sweeps: the space as distributions, storage, ask/tell across processes, retries."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from airflow_provider_mlci.core.experiments.study import (
    KEY_ATTR,
    Pruner,
    Search,
    StudyConfig,
    ask,
    distributions,
    fail_abandoned,
    open_study,
    prune_studies,
    storage_url,
    tell,
)
from airflow_provider_mlci.core.experiments.sweep import SearchSpace
from airflow_provider_mlci.exceptions import MlciConfigError

SPACE = SearchSpace.of({"train.lr": {"loguniform": [1e-4, 1e-1]}, "train.epochs": [10, 20, 40]})


def test_the_space_becomes_optuna_distributions():
    space = SearchSpace.of(
        ["train.lr=loguniform(0.001,0.1)", "train.l2=uniform(0,0.5)", "model.kind=choice(linear,tree)",
         "train.batch=range(16,65,16)", "train.epochs=10,20"]
    )  # fmt: skip
    assert distributions(space) == {
        "train.lr": FloatDistribution(0.001, 0.1, log=True),
        "train.l2": FloatDistribution(0.0, 0.5),
        "model.kind": CategoricalDistribution(("linear", "tree")),
        "train.batch": CategoricalDistribution((16, 32, 48, 64)),
        "train.epochs": CategoricalDistribution((10, 20)),
    }


def test_a_space_optuna_cannot_express_is_refused_naming_the_param():
    with pytest.raises(MlciConfigError, match=r"train.layers: Optuna takes only strings, numbers"):
        distributions(SearchSpace.of({"train.layers": [[32, 32], [64]]}))


@pytest.mark.parametrize(
    ("fields", "url"),
    [
        ({"conn_type": "postgres", "host": "db", "port": 5432, "login": "u", "password": "p@ss/w", "schema": "optuna"},
         "postgresql+psycopg2://u:p%40ss%2Fw@db:5432/optuna"),
        ({"conn_type": "mysql", "host": "db", "port": None, "login": "u", "password": None, "schema": "s"},
         "mysql+mysqldb://u@db/s"),
        ({"conn_type": "sqlite", "host": "/data/studies.db", "port": None, "login": None, "password": None,
          "schema": None}, "sqlite:////data/studies.db"),
    ],
)  # fmt: skip
def test_an_airflow_connection_becomes_an_sqlalchemy_url(fields, url):
    assert storage_url(**fields) == url


def test_bad_choices_are_refused_naming_the_option(tmp_path):
    with pytest.raises(MlciConfigError, match=r"search='bayes' is not one of 'tpe', 'random', 'grid'"):
        StudyConfig(search="bayes")
    with pytest.raises(MlciConfigError, match=r"pruner='aggressive' is not one of 'median', 'hyperband', None"):
        StudyConfig(pruner="aggressive")
    with pytest.raises(MlciConfigError, match=r"search=.grid. needs a grid: train\.lr is sampled"):
        open_study(f"journal://{tmp_path / 'j.log'}", "s", StudyConfig(search="grid"), SPACE)
    with pytest.raises(MlciConfigError, match=r"Optuna refuses an option: .*n_startup"):
        open_study(f"journal://{tmp_path / 'j.log'}", "s", StudyConfig(sampler_options={"n_startup": 3}), SPACE)
    with pytest.raises(MlciConfigError, match=r"must be one of mysql, postgres"):
        storage_url(conn_type="http", host="x", port=None, login=None, password=None, schema=None)
    assert (Search.of("tpe"), Pruner.of("median"), Pruner.of(None)) == (Search.TPE, Pruner.MEDIAN, None)


def test_a_retried_trial_gets_the_point_its_first_try_asked_for(tmp_path):
    storage = f"journal://{tmp_path / 'study.log'}"
    config = StudyConfig(search="random", seed=7)
    first = ask(open_study(storage, "sweep", config, SPACE), "d/r/sweep.trial/3", SPACE)
    assert first.retried is False
    # The retry runs in another process: it opens the study anew and asks with the same key.
    again = ask(open_study(storage, "sweep", config, SPACE), "d/r/sweep.trial/3", SPACE)
    assert (again.retried, again.number, again.params) == (True, first.number, first.params)
    other = ask(open_study(storage, "sweep", config, SPACE), "d/r/sweep.trial/4", SPACE)
    assert other.number != first.number
    study = open_study(storage, "sweep", config, SPACE)
    tell(study, first.number, 0.9)
    after = ask(study, "d/r/sweep.trial/3", SPACE)  # that trial is over: a new one (a new run's task)
    assert after.number not in (first.number, other.number)
    assert {t.number: t.user_attrs[KEY_ATTR] for t in study.get_trials()} == {
        first.number: "d/r/sweep.trial/3", other.number: "d/r/sweep.trial/4", after.number: "d/r/sweep.trial/3"
    }  # fmt: skip


def test_random_search_draws_what_today_s_random_sweep_draws_for_the_seed(tmp_path):
    study = open_study(
        f"journal://{tmp_path / 'r.log'}", "r", StudyConfig(search="random", seed=3), SPACE, max_trials=5
    )
    asked = [ask(study, f"k{n}", SPACE).params for n in range(6)]
    assert asked[:5] == [t.params for t in SPACE.trials(max_trials=5, seed=3)]
    assert asked[5] not in asked[:5]  # beyond the budget: the sampler's own draw


def test_a_grid_runs_in_the_order_it_always_did(tmp_path):
    space = SearchSpace.of({"a": [1, 2], "b": ["x", "y"]})
    study = open_study(f"journal://{tmp_path / 'g.log'}", "grid", StudyConfig(search="grid"), space)
    asked = [ask(study, f"k{n}", space).params for n in range(4)]
    assert asked == [t.params for t in space.trials()]
    assert asked == [{"a": 1, "b": "x"}, {"a": 1, "b": "y"}, {"a": 2, "b": "x"}, {"a": 2, "b": "y"}]
    # Resuming the study does not enqueue the grid again.
    again = open_study(f"journal://{tmp_path / 'g.log'}", "grid", StudyConfig(search="grid"), space)
    assert len(again.trials) == 4


def test_trials_end_complete_failed_or_pruned_and_resume_sees_them(tmp_path):
    storage = f"journal://{tmp_path / 's.log'}"
    config = StudyConfig(search="tpe", pruner="median", goal="maximize", seed=1)
    study = open_study(storage, "nightly", config, SPACE)
    done, broken, pruned, lost = (ask(study, f"k{n}", SPACE) for n in range(4))
    tell(study, done.number, 0.8)
    tell(study, broken.number, None, state="fail")
    pruned.trial.report(0.1, step=3)
    tell(study, pruned.number, 0.1, state="pruned")
    tell(study, lost.number, None)  # no objective: a failure, not a zero
    resumed = open_study(storage, "nightly", config, SPACE)
    assert [t.state for t in resumed.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.PRUNED,
        TrialState.FAIL,
    ]
    assert resumed.best_value == 0.8
    assert resumed.trials[2].intermediate_values == {3: 0.1}
    with pytest.raises(MlciConfigError, match="complete, fail or pruned, not 'lost'"):
        tell(resumed, 9, 1.0, state="lost")


WORKER = textwrap.dedent(
    """
    import json, sys
    from airflow_provider_mlci.core.experiments.study import StudyConfig, ask, open_study, tell
    from airflow_provider_mlci.core.experiments.sweep import SearchSpace

    storage, worker = sys.argv[1], sys.argv[2]  # both workers share the sweep's seed, as trial tasks do
    space = SearchSpace.of({"x": {"uniform": [-5, 5]}, "y": {"uniform": [-5, 5]}})
    config = StudyConfig(search="tpe", goal="minimize", seed=1, sampler_options={"n_startup_trials": 3})
    seen = []
    for n in range(6):
        key = f"dag/run/trial/{worker}-{n}"
        study = open_study(storage, "shared", config, space, key=key)
        asked = ask(study, key, space)
        tell(study, asked.number, (asked.params["x"] - 1) ** 2 + (asked.params["y"] + 2) ** 2)
        seen.append(asked.number)
    print(json.dumps(seen))
    """
)


def test_two_worker_processes_ask_and_tell_on_one_study(tmp_path):
    storage = f"journal://{tmp_path / 'shared.log'}"
    procs = [
        subprocess.Popen([sys.executable, "-c", WORKER, storage, str(w)], stdout=subprocess.PIPE, text=True)
        for w in (1, 2)
    ]
    numbers = [json.loads(p.communicate(timeout=120)[0]) for p in procs]
    assert [p.returncode for p in procs] == [0, 0]
    assert sorted(numbers[0] + numbers[1]) == list(range(12))  # every trial asked once, by one worker
    study = open_study(storage, "shared", StudyConfig(goal="minimize"), SearchSpace.of({"x": [0]}))
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 12
    points = {(round(t.params["x"], 9), round(t.params["y"], 9)) for t in study.trials}
    assert len(points) == 12  # no two trials got the same point
    assert {t.user_attrs[KEY_ATTR].split("/")[-1][0] for t in study.trials} == {"1", "2"}


def test_the_study_s_charts_draw_with_dotted_param_names(tmp_path):
    import vl_convert

    from airflow_provider_mlci.core.experiments.study import study_charts

    study = open_study(
        f"journal://{tmp_path / 'c.log'}", "c", StudyConfig(search="random", seed=2), SPACE, max_trials=6
    )
    for n in range(6):
        asked = ask(study, f"k{n}", SPACE)
        if n == 5:
            asked.trial.report(0.1, 3)
            tell(study, asked.number, None, state="pruned")
        else:
            tell(study, asked.number, asked.params["train.lr"] * asked.params["train.epochs"])
    charts = study_charts(study)
    assert set(charts) == {"history", "parallel", "importance"}
    states = {row["state"] for row in charts["history"]["data"]["values"]}
    assert states == {"complete", "pruned at step 3"}
    for name, spec in charts.items():
        svg = vl_convert.vegalite_to_svg(vl_spec=spec)
        assert svg.startswith("<svg"), name
        if name != "history":  # the axes are the params, named as params.yaml names them
            assert "train.epochs" in svg, name
    assert {row["axis"] for row in charts["parallel"]["data"]["values"]} == {"train.lr", "train.epochs", "objective"}


def test_trials_abandoned_by_failed_tasks_of_a_run_are_told_fail_and_no_other(tmp_path):
    study = open_study(f"journal://{tmp_path / 'a.log'}", "a", StudyConfig(search="random", seed=1), SPACE)
    mine = ask(study, "d/run-1/sweep.trial/0", SPACE)
    ask(study, "d/run-2/sweep.trial/0", SPACE)  # another run's: not ours to close
    told = ask(study, "d/run-1/sweep.trial/1", SPACE)
    tell(study, told.trial, 0.5)
    assert fail_abandoned(study, "d/run-1/sweep.trial/") == [mine.number]
    states = [t.state for t in study.get_trials(deepcopy=False)]  # in the order asked
    assert states == [TrialState.FAIL, TrialState.RUNNING, TrialState.COMPLETE]
    assert fail_abandoned(study, "d/run-1/sweep.trial/") == []  # once


def test_tpe_lies_about_running_trials_so_two_tasks_alike_do_not_pick_the_same_point(tmp_path):
    """Two tasks whose samplers draw alike (the same key, so the same seed): without the constant
    liar the second would ask for the first one's point, which is still running."""
    storage = f"journal://{tmp_path / 'liar.log'}"
    space = SearchSpace.of({"train.lr": {"uniform": [0.0, 1.0]}})
    config = StudyConfig(search="tpe", seed=4, sampler_options={"n_startup_trials": 3})
    study = open_study(storage, "liar", config, space, key="k")
    for n, lr in enumerate([0.1, 0.5, 0.9]):
        done = ask(study, f"d/r/t/{n}", space)
        tell(study, done.trial, 1.0 - abs(lr - done.params["train.lr"]))
    first = ask(open_study(storage, "liar", config, space, key="same"), "d/r/t/3", space)
    second = ask(open_study(storage, "liar", config, space, key="same"), "d/r/t/4", space)
    assert first.params != second.params


def test_old_per_run_studies_of_a_sweep_are_deleted_and_nothing_else(tmp_path):
    import time

    import optuna

    storage = f"journal://{tmp_path / 'old.log'}"
    config = StudyConfig(search="random", seed=1)
    for name in ("d.sweep.abc1234", "d.sweep", "other.sweep.abc1234", "d.sweep.abc12345", "d.sweep2.abc1234"):
        study = open_study(storage, name, config, SPACE)
        tell(study, ask(study, f"{name}/0", SPACE).trial, 0.5)
    open_study(storage, "d.sweep.def5678", config, SPACE)  # no trial: its age is unknown

    def names():
        return sorted(s.study_name for s in optuna.get_all_study_summaries(storage_of(storage)))

    assert prune_studies(storage, "d.sweep", older_than=86400) == []  # all of today
    later = time.time() + 10 * 86400
    assert prune_studies(storage, "d.sweep", older_than=86400, now=later) == ["d.sweep.abc1234"]
    assert names() == ["d.sweep", "d.sweep.abc12345", "d.sweep.def5678", "d.sweep2.abc1234", "other.sweep.abc1234"]


def storage_of(url: str):
    from airflow_provider_mlci.core.experiments.study import _storage

    return _storage(url)


def test_one_param_has_all_the_importance_without_a_forest(tmp_path):
    import sys

    from airflow_provider_mlci.core.experiments.study import study_charts

    space = SearchSpace.of({"train.lr": {"uniform": [0.0, 1.0]}})
    config = StudyConfig(search="random", seed=2)
    study = open_study(f"journal://{tmp_path / 'o.log'}", "o", config, space, max_trials=3)
    for n in range(3):
        asked = ask(study, f"k{n}", space)
        tell(study, asked.number, asked.params["train.lr"])
    already = "optuna.importance" in sys.modules
    rows = study_charts(study)["importance"]["data"]["values"]
    assert [(row["param"], row["importance"]) for row in rows] == [("train.lr", 1.0)]
    assert already or "optuna.importance" not in sys.modules  # seconds of scikit-learn's import saved
