"""The remote job trigger's pruning: per-step tables from the mailbox reported to a real Optuna study."""

from __future__ import annotations

import pytest

from airflow_provider_mlci.core.compute.jobs import JobStatus
from airflow_provider_mlci.core.experiments.study import ask, open_study, study_config, tell
from airflow_provider_mlci.core.experiments.sweep import SearchSpace
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.hooks.study import StudyHook
from airflow_provider_mlci.triggers.compute import RemoteJobTrigger

SPACE = {"train.lr": {"uniform": [0.0, 1.0]}}


def table(values: list[float]) -> str:
    rows = "".join(f"{1000 + step}\t{step}\t{value}\n" for step, value in enumerate(values))
    return f"timestamp\tstep\taccuracy\n{rows}"


def study_spec(name: str) -> dict:
    return {
        "search": "random",
        "goal": "maximize",
        "pruner": "median",
        "pruner_options": {"n_startup_trials": 1, "n_warmup_steps": 0},
        "prune_on": None,
        "sampler_options": {},
        "optuna_conn_id": None,
        "name": name,
        "seed": 0,
        "space": SPACE,
    }


def trigger_for(name: str, number: int) -> RemoteJobTrigger:
    prune = {"study": study_spec(name), "number": number, "metric": "accuracy"}
    return RemoteJobTrigger(mailbox="s3://jobs-bucket/box", job_id="job-001", prune=prune)


def test_prune_round_trips_through_serialize_and_holds_no_secret():
    trigger = trigger_for("s", 1)
    path, kwargs = trigger.serialize()
    assert path == "airflow_provider_mlci.triggers.compute.RemoteJobTrigger"
    again = RemoteJobTrigger(**kwargs)
    assert again.prune == trigger.prune == {"study": study_spec("s"), "number": 1, "metric": "accuracy"}
    assert RemoteJobTrigger(mailbox="s3://jobs-bucket/box", job_id="j").serialize()[1]["prune"] is None


def test_the_trigger_reports_new_steps_and_fires_pruned_when_the_pruner_says_so(request):
    name = f"unit.{request.node.name}"
    study = open_study(StudyHook().storage(), name, study_config(study_spec(name)), SearchSpace.of(SPACE), key="t")
    good = ask(study, "t/0", SearchSpace.of(SPACE))
    for step, value in enumerate([0.6, 0.7, 0.8, 0.9]):
        good.trial.report(value, step)
    tell(study, good.trial, 0.9)
    bad = ask(study, "t/1", SearchSpace.of(SPACE))

    trigger = trigger_for(name, bad.number)
    assert trigger.prune_from(None) is None  # the agent copied nothing yet
    assert trigger.prune_from(table([0.65])) is None  # above the good trial's 0.6 at step 0
    assert trigger.prune_from(table([0.65, 0.2])) == (1, 0.2)  # its best, 0.65, is below 0.7 at step 1
    event = trigger.verdict(JobStatus(state="running", time=0.0), "running", 1.0, pruned=(1, 0.2))
    assert event == {
        "status": "pruned",
        "message": "pruned at step 1 (accuracy = 0.2)",
        "extra": {"step": 1, "value": 0.2, "column": "accuracy"},
    }
    # A trigger that starts again (a triggerer restart) reports only what the study has not seen.
    again = trigger_for(name, bad.number)
    assert again.prune_from(table([0.65, 0.2, 0.1])) == (2, 0.1)
    frozen = study.get_trials(deepcopy=False)[bad.number]
    assert frozen.intermediate_values == {0: 0.65, 1: 0.2, 2: 0.1}
    # A finished job wins over a prune seen in the same look.
    done = JobStatus(state="succeeded", message="ok", time=0.0)
    assert trigger.verdict(done, None, 1.0, pruned=(1, 0.2))["status"] == "succeeded"


def test_a_table_without_the_column_is_a_config_error_naming_the_file(request):
    name = f"unit.{request.node.name}"
    study = open_study(StudyHook().storage(), name, study_config(study_spec(name)), SearchSpace.of(SPACE), key="t")
    trial = ask(study, "t/0", SearchSpace.of(SPACE))
    trigger = trigger_for(name, trial.number)
    with pytest.raises(MlciConfigError, match=r"accuracy.tsv: no column 'accuracy' \(columns: timestamp, step, loss\)"):
        trigger.prune_from("timestamp\tstep\tloss\n1\t0\t0.5\n")
    event = trigger.verdict(JobStatus(state="running", time=0.0), None, 1.0, bad_progress="accuracy.tsv: no column")
    assert event == {"status": "bad_progress", "message": "accuracy.tsv: no column"}
