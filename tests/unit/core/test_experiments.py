"""One sweep trial as a real DVC experiment, pushed to a real bare git remote and a local DVC remote."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_provider_mlci.core.experiments import check_experiment_name, experiment_ref, run_trial
from airflow_provider_mlci.core.sweep import Trial
from airflow_provider_mlci.core.workspace import Workspace
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.testing.repos import REMOTE_NAME
from tests.unit.core.test_dvc_ops import access_for, remote_files

OBJECTIVE = {"metric": "accuracy", "goal": "max"}


def trial_in(project, cache, trial, **kwargs):
    with Workspace.open(access_for(project), "main", cache_dir=cache) as ws:
        return run_trial(ws, trial, **kwargs)


def ls_remote(project) -> dict[str, str]:
    out = subprocess.run(["git", "ls-remote", str(project.remote)], check=True, capture_output=True, text=True).stdout
    return {ref: sha for sha, ref in (line.split("\t") for line in out.splitlines())}


def test_a_trial_is_an_experiment_on_both_remotes_that_a_fresh_clone_lists(dvc_project, worker_cache, tmp_path):
    before = remote_files(dvc_project.dvc_remote_url)
    trial = Trial(name="trial-001-test", params={"train.learning_rate": 0.5, "train.epochs": 10})
    result = trial_in(dvc_project, worker_cache, trial, objective=OBJECTIVE)
    head = dvc_project.head()
    assert result["status"] == "success"
    assert result["error"] is None
    assert (
        result["exp_ref"] == experiment_ref(head, "trial-001-test") == f"refs/exps/{head[:2]}/{head[2:]}/trial-001-test"
    )
    assert result["baseline_sha"] == head
    assert result["overrides"] == ["train.learning_rate=0.5", "train.epochs=10"]
    assert result["value"] == result["metrics"]["metrics.json"]["accuracy"]
    assert 0 < result["value"] <= 1
    json.dumps(result, allow_nan=False)
    assert ls_remote(dvc_project)[result["exp_ref"]] == result["sha"]
    added = remote_files(dvc_project.dvc_remote_url) - before
    assert any(name.startswith("runs/") for name in added), "the run-cache was not pushed"
    assert any(name.startswith("files/") for name in added), "the outputs were not pushed"

    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(dvc_project.remote), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run(
        [*dvc, "remote", "modify", "--local", REMOTE_NAME, "url", dvc_project.dvc_remote_url], cwd=clone, check=True
    )
    subprocess.run([*dvc, "exp", "pull", "origin", "trial-001-test"], cwd=clone, check=True)
    shown = json.loads(
        subprocess.run([*dvc, "exp", "show", "--json"], cwd=clone, check=True, capture_output=True, text=True).stdout
    )
    exps = {exp["name"]: exp for entry in shown for exp in entry.get("experiments") or []}
    revs = exps["trial-001-test"]["revs"][0]
    assert revs["rev"] == result["sha"]
    assert revs["data"]["params"]["params.yaml"]["data"]["train"]["learning_rate"] == 0.5
    assert revs["data"]["metrics"]["metrics.json"]["data"]["accuracy"] == result["value"]
    # The experiment's model came back from the DVC remote with it.
    subprocess.run([*dvc, "exp", "apply", "trial-001-test"], cwd=clone, check=True)
    assert (clone / "models" / "model.pkl").stat().st_size > 0


def test_a_retried_trial_reads_the_experiment_already_pushed(dvc_project, worker_cache):
    trial = {"name": "trial-002-test", "params": {"train.learning_rate": 0.2, "train.epochs": 10}}
    first = trial_in(dvc_project, worker_cache, trial, objective=OBJECTIVE)
    again = trial_in(dvc_project, worker_cache, trial, objective=OBJECTIVE)
    assert again["reused"] is True
    assert first["reused"] is False
    assert again["sha"] == first["sha"]
    assert again["value"] == first["value"]


def test_a_failing_stage_is_a_failed_trial_not_an_error(dvc_project, worker_cache):
    refs = ls_remote(dvc_project)
    result = trial_in(
        dvc_project, worker_cache, {"name": "broken", "params": {"train.epochs": "many"}}, objective=OBJECTIVE
    )
    assert result["status"] == "failed"
    assert "train" in result["error"]
    assert result["value"] is None
    assert result["sha"] is None
    assert ls_remote(dvc_project) == refs


def test_an_objective_the_pipeline_does_not_produce_is_a_config_error_naming_it(dvc_project, worker_cache):
    trial = {"name": "trial-003-test", "params": {"train.epochs": 10}}
    with pytest.raises(MlciConfigError, match=r"'f1_score' is not produced.*metrics\.json.*metrics\.json:accuracy"):
        trial_in(dvc_project, worker_cache, trial, objective={"metric": "f1_score"})


@pytest.mark.parametrize("name", ["", "-x", "a..b", "a b", "a/b", "x.lock", "é"])
def test_bad_experiment_names_are_refused(name):
    with pytest.raises(MlciConfigError, match="not a valid experiment name"):
        check_experiment_name(name)
