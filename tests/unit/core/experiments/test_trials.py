"""One sweep trial as a real DVC experiment, pushed to a real bare git remote and a local DVC remote."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from airflow_provider_mlci.core.experiments.sweep import Trial
from airflow_provider_mlci.core.experiments.trials import (
    branch_experiment,
    check_experiment_name,
    experiment_ref,
    run_trial,
)
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.exceptions import GitConflictError, GitRevisionNotFoundError, MlciConfigError
from airflow_provider_mlci.testing.repos import REMOTE_NAME
from tests.helpers.dvc_remote import access_for, remote_files

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


def pushed_experiment(project, name: str) -> tuple[str, str]:
    """An experiment commit on the git remote, laid out as DVC lays it out (``refs/exps/...``).

    Made with git alone: branching an experiment needs nothing of DVC but the ref's layout
    (the sweep's integration test branches experiments that ``dvc exp run`` made).
    """
    base = project.head()
    project.git("checkout", "--quiet", "--detach")
    params = project.work / "params.yaml"
    params.write_text(params.read_text() + f"# {name}\n")
    project.git("commit", "--quiet", "-am", f"Experiment {name}")
    sha = project.head()
    ref = experiment_ref(base, name)
    project.git("push", "--quiet", "origin", f"HEAD:{ref}")
    project.git("checkout", "--quiet", "main")
    return ref, sha


def branch_in(project, cache, exp_ref: str, branch: str) -> dict:
    with Workspace.open(access_for(project), "main", cache_dir=cache) as ws:
        return branch_experiment(ws, exp_ref, branch)


def test_an_experiment_becomes_a_branch_on_the_remote_once(dvc_project, worker_cache):
    ref, sha = pushed_experiment(dvc_project, "trial-002-abc1234")
    created = branch_in(dvc_project, worker_cache, ref, "sweep/trial-002-abc1234")
    assert created == {
        "branch": "sweep/trial-002-abc1234",
        "sha": sha,
        "exp_ref": ref,
        "experiment": "trial-002-abc1234",
        "created": True,
    }
    assert ls_remote(dvc_project)["refs/heads/sweep/trial-002-abc1234"] == sha
    refs = ls_remote(dvc_project)
    again = branch_in(dvc_project, worker_cache, ref, "sweep/trial-002-abc1234")  # a retried task
    assert again == {**created, "created": False}
    assert ls_remote(dvc_project) == refs


def test_a_branch_that_holds_another_commit_is_a_conflict_naming_it(dvc_project, worker_cache):
    ref, _ = pushed_experiment(dvc_project, "trial-001-abc1234")
    main = dvc_project.head()
    dvc_project.git("push", "--quiet", "origin", "main:refs/heads/release")
    refs = ls_remote(dvc_project)
    with pytest.raises(GitConflictError, match=rf"Branch 'release' of .* already exists at {main[:12]}.*nothing was"):
        branch_in(dvc_project, worker_cache, ref, "release")
    assert ls_remote(dvc_project) == refs  # not moved, no force


def test_what_cannot_be_branched_is_refused_naming_it(dvc_project, worker_cache):
    ref, _ = pushed_experiment(dvc_project, "trial-001-abc1234")
    with pytest.raises(MlciConfigError, match=r"'bad\.\.name' is not a valid branch name"):
        branch_in(dvc_project, worker_cache, ref, "bad..name")
    with pytest.raises(MlciConfigError, match="'refs/heads/main' is not an experiment ref"):
        branch_in(dvc_project, worker_cache, "refs/heads/main", "x")
    missing = experiment_ref(dvc_project.head(), "trial-009-gone")
    with pytest.raises(GitRevisionNotFoundError, match=f"The experiment {missing} is not on"):
        branch_in(dvc_project, worker_cache, missing, "x")
