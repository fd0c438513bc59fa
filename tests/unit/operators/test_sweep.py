"""The sweep operators and task group: what they store, and what they refuse before any work."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_mlci.operators.sweep import SweepLeaderboardOperator, SweepTrialOperator, SweepTrialsOperator

CONTEXT = {"ti": SimpleNamespace(dag_id="d", run_id="manual__1", map_index=-1)}


@pytest.fixture
def study_home(tmp_path, monkeypatch):
    """An Airflow home of the test's own: the default study journal lives under it."""
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.setattr("airflow.configuration.AIRFLOW_HOME", str(tmp_path))
    return tmp_path


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
    assert gen.template_fields == ("space", "max_trials", "seed", "name_suffix", "rev", "promotion", "study")
    trial = SweepTrialOperator(task_id="t", trial={"name": "x"}, dvc_conn_id="absent", cache_dir=str(cache))
    assert trial.template_fields == ("trial", "rev", "targets", "ec2")
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
    from airflow_provider_mlci.core.experiments.sweep import Objective

    objective = Objective.of({"metric": "accuracy", "goal": goal, "target": "0.9"})
    assert objective.to_json() == {"metric": "accuracy", "goal": expected, "target": 0.9}
    assert Objective.of({"metric": "accuracy", "target": ""}).target is None
    with pytest.raises(Exception, match="target='high' is not a number"):
        Objective.of({"metric": "accuracy", "target": "high"})


RULES = {"accuracy": {"direction": "higher", "floor": 0.6}}


def test_a_promotion_adds_branch_gate_promote_and_outcome_after_the_leaderboard():
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepPromotion, SweepTaskGroup

    with DAG("sweep_release", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        group = SweepTaskGroup(
            group_id="sweep",
            space=["train.epochs=10,20"],
            objective="accuracy",
            promote=SweepPromotion(model="fraud-detector", stage="{{ params.stage }}", rules=RULES, bump="patch"),
            dvc_conn_id="repo",
        )
    assert set(dag.task_dict) == {
        "sweep.generate",
        "sweep.trial",
        "sweep.leaderboard",
        "sweep.branch",
        "sweep.gate",
        "sweep.promote",
        "sweep.outcome",
    }
    assert group.leaderboard.downstream_task_ids == {"sweep.branch"}
    assert group.branch.downstream_task_ids == {"sweep.gate"}
    assert group.gate.downstream_task_ids == {"sweep.promote", "sweep.outcome"}
    assert group.gate.if_promote == ["sweep.promote", "sweep.outcome"]
    assert group.gate.if_skip == "sweep.outcome"
    assert group.promote.downstream_task_ids == {"sweep.outcome"}
    assert group.outcome.trigger_rule == "none_failed_min_one_success"
    assert group.gate.rev == group.promote.rev == "{{ ti.xcom_pull(task_ids='sweep.branch')['sha'] }}"
    assert (group.gate.model, group.gate.stage, group.gate.rules) == ("fraud-detector", "{{ params.stage }}", RULES)
    assert (group.promote.gate_task_id, group.promote.bump) == ("sweep.gate", "patch")
    assert {t.dvc_conn_id for t in (group.branch, group.gate, group.promote)} == {"repo"}
    assert group.generate.promotion == {"model": "fraud-detector", "stage": "{{ params.stage }}"}
    assert "promotion" in group.generate.template_fields
    assert group.branch.branch is None  # sweep/<best trial's name>, decided when the best is known


def test_a_sweep_promotion_with_an_approval_asks_before_it_promotes():
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    promote = {"model": "fraud-detector", "rules": RULES, "approval": True, "stage_order": ["staging", "prod"]}
    with DAG("sweep_approval", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        group = SweepTaskGroup(group_id="sweep", space=["train.epochs=10,20"], objective="accuracy", promote=promote)
    approve = dag.get_task("sweep.approve")
    assert group.gate.if_promote == ["sweep.approve", "sweep.outcome"]
    assert approve.downstream_task_ids == {"sweep.promote"}  # a reject skips the promotion, not the outcome
    assert group.outcome.approval_task_id == "sweep.approve"
    assert group.promote.stage_order == ("staging", "prod")
    assert [asset.uri for asset in group.promote.outlets] == ["x-mlci-model://fraud-detector/prod"]


@pytest.mark.parametrize(
    ("promote", "message"),
    [
        ({"model": "x y", "rules": RULES}, "'x y' is not a valid model name"),
        ({"model": "fraud", "stage": "pr od", "rules": RULES}, "'pr od' is not a valid stage name"),
        ({"model": "fraud", "rules": {"accuracy": {"direction": "up"}}}, "direction='up' is not one of higher"),
        ({"model": "fraud", "rules": {}}, "A gate needs at least one metric rule"),
        ({"model": "fraud", "rules": RULES, "bump": "huge"}, "bump='huge' is not one of major"),
        ({"model": "fraud", "rules": RULES, "stages": "prod"}, "unknown key(s) stages"),
        ({"model": "fraud"}, "promote: rules missing"),
        ({"model": "fraud", "rules": RULES, "approval": "yes"}, "approval='yes' is not True"),
        ({"model": "fraud", "rules": RULES, "stage_order": ["staging", "p rod"]}, "'p rod' is not a valid stage name"),
    ],
)
def test_a_bad_promotion_fails_when_the_dag_is_parsed_naming_it(promote, message):
    from airflow_provider_mlci.exceptions import MlciConfigError
    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with pytest.raises(MlciConfigError, match=re.escape(message)):
        SweepTaskGroup(group_id="sweep", space=["train.epochs=10"], objective="accuracy", promote=promote)


def test_the_promotion_target_is_checked_before_any_trial_runs():
    op = SweepTrialsOperator(
        task_id="g", space={"a": [1]}, promotion={"model": "-bad-", "stage": "prod"}, dvc_conn_id="absent"
    )
    with pytest.raises(AirflowFailException, match="'-bad-' is not a valid model name"):
        op.execute(CONTEXT)  # before the repository is even reached


def test_a_stage_the_repository_does_not_allow_fails_before_any_trial_runs(dvc_project, dvc_connection, worker_cache):
    conn = dvc_connection(str(dvc_project.remote), conn_id="sweep_repo")
    op = SweepTrialsOperator(
        task_id="g",
        space={"a": [1]},
        rev="main",
        promotion={"model": "fraud-detector", "stage": "qa"},
        dvc_conn_id=conn,
        cache_dir=str(worker_cache),
    )
    with pytest.raises(AirflowFailException, match=r"Unknown stage 'qa': the repository's \.gto allows staging, prod"):
        op.execute(CONTEXT)


def test_branching_without_a_best_trial_fails_without_retry():
    from airflow_provider_mlci.operators.sweep import SweepBestBranchOperator

    op = SweepBestBranchOperator(task_id="b", leaderboard_task_id="board", dvc_conn_id="absent")
    ti = SimpleNamespace(xcom_pull=lambda **_: {"best": None, "leaderboard": {"trials": []}})
    with pytest.raises(AirflowFailException, match="No best trial to branch: task board ranked none"):
        op.execute({"ti": ti})


def test_the_outcome_says_what_was_promoted_or_why_not():
    from airflow_provider_mlci.operators.sweep import SweepPromotionOutcomeOperator

    op = SweepPromotionOutcomeOperator(task_id="o", branch_task_id="b", gate_task_id="g", promote_task_id="p")
    branched = {"branch": "sweep/trial-001-x", "sha": "a" * 40, "trial": {"name": "trial-001-x"}}
    decision = {"model": "fraud", "stage": "prod", "promote": False, "reasons": ["accuracy: below the floor 0.99"]}
    values = {("b", None): branched, ("g", "decision"): decision, ("p", None): None}
    ti = SimpleNamespace(xcom_pull=lambda task_ids, key=None: values[(task_ids, key)])
    refused = op.execute({"ti": ti})
    assert refused == {
        "promoted": False,
        "decision": "kept",
        "approval": None,
        "model": "fraud",
        "stage": "prod",
        "trial": "trial-001-x",
        "branch": "sweep/trial-001-x",
        "sha": "a" * 40,
        "version": None,
        "tags": [],
        "replaced": None,
        "reasons": ["accuracy: below the floor 0.99"],
        "champion": None,
        "metrics": [],
    }
    values[("g", "decision")] = {**decision, "promote": True, "reasons": []}
    values[("p", None)] = {"version": "v0.1.0", "tags": ["fraud@v0.1.0", "fraud#prod#1"], "replaced": None}
    promoted = op.execute({"ti": ti})
    assert (promoted["promoted"], promoted["version"], promoted["tags"]) == (
        True,
        "v0.1.0",
        ["fraud@v0.1.0", "fraud#prod#1"],
    )


def test_a_sweep_summary_renders_as_a_report_section():
    from airflow_provider_mlci.core.reports.html import section_for

    summary = {
        "leaderboard": {
            "objective": "accuracy",
            "goal": "maximize",
            "trials": [
                {"name": "trial-002", "params": {"lr": 0.1}, "value": 0.91, "status": "success"},
                {"name": "trial-001", "params": {"lr": 1.0}, "value": None, "status": "failed"},
            ],
        },
        "best": {"name": "trial-002", "params": {"lr": 0.1}, "value": 0.91, "exp_ref": "refs/exps/x", "sha": "b" * 40},
        "target": 0.95,
        "target_met": False,
        "succeeded": 1,
        "failed": 1,
        "skipped": 0,
        "pruned": 0,
    }
    section = section_for("sweep.leaderboard", summary)
    assert "- Objective: maximize accuracy, target 0.95." in section.markdown
    assert "- Trials: 1 succeeded, 1 failed, 0 skipped." in section.markdown
    assert "- Target met: no." in section.markdown
    best = f"- Best trial: trial-002 (accuracy = 0.91; lr=0.1), experiment refs/exps/x at {'b' * 12}."
    assert best in section.markdown
    assert "| 1 | trial-002 | 0.1 | 0.91 | success |" in section.markdown
    assert "<li>Trials: 1 succeeded, 1 failed, 0 skipped.</li>" in section.html
    assert section_for("x", {**summary, "best": None}).markdown.count("Best trial: none.") == 1


def test_an_adaptive_slot_asks_once_and_its_retry_gets_the_same_point(study_home):
    from types import SimpleNamespace

    from airflow_provider_mlci.operators.sweep import SweepTrialOperator

    space = {"train.lr": {"loguniform": [0.001, 0.1]}, "train.epochs": [10, 20]}
    slot = {"name": "trial-001-x", "params": {}, "overrides": [], "rev": "c" * 40,
            "study": {"name": "d.sweep.x", "search": "tpe", "goal": "maximize", "seed": 3, "space": space}}  # fmt: skip

    def ask_as(try_number):
        op = SweepTrialOperator(task_id="trial", trial=slot, objective={"metric": "accuracy"})
        ti = SimpleNamespace(dag_id="d", run_id="r", task_id="sweep.trial", map_index=4, try_number=try_number)
        _, asked = op._ask({"ti": ti})
        return op.trial, asked

    first, asked = ask_as(1)
    again, retried = ask_as(2)
    assert (asked.retried, retried.retried) == (False, True)
    assert again == first  # the same params, overrides and study trial
    assert first["overrides"] == [
        f"train.lr={first['params']['train.lr']!r}",
        f"train.epochs={first['params']['train.epochs']}",
    ]
    assert first["study_trial"] == 0


def test_a_grid_larger_than_max_trials_is_refused_before_any_trial(tmp_path, monkeypatch):
    from types import SimpleNamespace

    from airflow_provider_mlci.exceptions import MlciConfigError
    from airflow_provider_mlci.operators.sweep import SweepTrialsOperator

    op = SweepTrialsOperator(
        task_id="sweep.generate", space=["a=1,2,3", "b=x,y"], max_trials=4, study={"search": "grid"}
    )
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="sweep.generate")
    with pytest.raises(MlciConfigError, match=r"search='grid': the grid has 6 points, more than max_trials=4"):
        op.open_study({"ti": ti})


def test_a_trial_after_the_sweep_s_time_budget_is_skipped_before_any_work(tmp_path):
    import time

    from airflow.providers.common.compat.sdk import AirflowSkipException

    cache = tmp_path / "never-created"
    late = {"name": "trial-002", "params": {"lr": 0.1}, "deadline": time.time() - 30}
    op = SweepTrialOperator(task_id="t", trial=late, dvc_conn_id="absent", cache_dir=str(cache))
    with pytest.raises(AirflowSkipException, match=r"trial-002 skipped: the sweep's time budget ran out 3\d s ago"):
        op.execute(CONTEXT)
    assert not cache.exists()


def test_the_group_s_timeout_becomes_generate_s_time_budget_and_a_bad_one_is_refused():
    from datetime import timedelta

    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.exceptions import MlciConfigError
    from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

    with DAG(dag_id="budget", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        group = SweepTaskGroup(group_id="s", space={"lr": [0.1, 0.2]}, objective="acc", timeout=timedelta(minutes=5))
        assert group.generate.time_budget == 300
        for bad in (0, -1, "5m", True):
            with pytest.raises(MlciConfigError, match=r"SweepTaskGroup 'x': timeout=.* is not a positive duration"):
                SweepTaskGroup(group_id="x", space={"lr": [0.1]}, objective="acc", timeout=bad)


@pytest.mark.parametrize(
    ("space", "enqueue", "expected"),
    [
        ({"train.learning_rate": {"uniform": [0.1, 0.5]}, "train.epochs": [100, 150]}, None,
         [{"train.learning_rate": 0.3, "train.epochs": 150}]),  # the deployed model's params go first
        ({"train.learning_rate": {"uniform": [0.1, 0.5]}, "train.epochs": [10, 20]}, None, []),  # 150: outside
        ({"train.learning_rate": {"uniform": [0.1, 0.5]}, "train.missing": [1, 2]}, None, []),  # not in params.yaml
        ({"train.learning_rate": {"uniform": [0.1, 0.5]}}, [{"train.learning_rate": 0.2}],
         [{"train.learning_rate": 0.2}]),  # the sweep's own known-good points win
    ],
)  # fmt: skip
def test_an_adaptive_sweep_tries_the_deployed_model_s_params_first_by_default(
    dvc_project, dvc_connection, worker_cache, study_home, space, enqueue, expected
):
    from optuna.trial import TrialState

    from airflow_provider_mlci.core.experiments.study import StudyConfig, open_study
    from airflow_provider_mlci.core.experiments.sweep import SearchSpace
    from airflow_provider_mlci.hooks.study import StudyHook

    dvc_project.git("tag", "-a", "fraud-detector#prod#1", "-m", "Promote", dvc_project.head())
    dvc_project.git("push", "--quiet", "origin", "refs/tags/fraud-detector#prod#1")
    conn = dvc_connection(str(dvc_project.remote), conn_id="sweep_repo")
    op = SweepTrialsOperator(
        task_id="g",
        space=space,
        max_trials=3,
        rev="main",
        promotion={"model": "fraud-detector", "stage": "prod"},
        study={"search": "tpe", "goal": "maximize", "name": "deployed-first", "enqueue": enqueue},
        dvc_conn_id=conn,
        cache_dir=str(worker_cache),
    )
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="g", xcom_push=lambda **_: None)
    assert len(op.execute({"ti": ti})) == 3
    study = open_study(StudyHook().storage(), "deployed-first", StudyConfig(), SearchSpace.of(space))
    waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
    assert [t.system_attrs["fixed_params"] for t in waiting] == expected  # how Optuna keeps enqueued points


def test_generate_deletes_the_sweep_s_studies_older_than_the_retention(
    dvc_project, dvc_connection, worker_cache, study_home, monkeypatch
):
    from datetime import datetime, timedelta

    import optuna
    from optuna.distributions import FloatDistribution

    from airflow_provider_mlci.core.experiments.study import _storage
    from airflow_provider_mlci.hooks.study import StudyHook

    monkeypatch.setenv("AIRFLOW__MLCI__STUDY_RETENTION_DAYS", "30")
    space = {"train.lr": {"uniform": [0.0, 1.0]}}
    storage = _storage(StudyHook().storage())
    for name, age in (("d.sweep.0123abc", 40), ("d.sweep.4567def", 10), ("d.sweep", 400), ("e.sweep.0123abc", 40)):
        trial = optuna.trial.create_trial(
            params={"train.lr": 0.5}, value=0.5, distributions={"train.lr": FloatDistribution(0.0, 1.0)}
        )
        trial.datetime_start = trial.datetime_complete = datetime.now() - timedelta(days=age)
        optuna.create_study(study_name=name, storage=storage).add_trial(trial)
    conn = dvc_connection(str(dvc_project.remote), conn_id="sweep_repo")
    op = SweepTrialsOperator(
        task_id="sweep.generate",
        space=space,
        max_trials=2,
        rev="main",
        study={"search": "tpe", "goal": "maximize"},
        dvc_conn_id=conn,
        cache_dir=str(worker_cache),
    )
    ti = SimpleNamespace(dag_id="d", run_id="manual__2", task_id="sweep.generate", xcom_push=lambda **_: None)
    op.execute({"ti": ti})
    left = sorted(s.study_name for s in optuna.get_all_study_summaries(storage))
    # The 40-day-old run's study of this sweep is gone; the recent one, the study every run continues,
    # another Dag's, and this run's new one stay.
    assert left == ["d.sweep", "d.sweep.4567def", f"d.sweep.{study_name_hash('manual__2')}", "e.sweep.0123abc"]


def study_name_hash(run_id: str) -> str:
    import hashlib

    return hashlib.sha1(run_id.encode()).hexdigest()[:7]
