"""Starting a refinement on the demo project: real git (a bare remote), real DVC (a local remote), GTO tags."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from airflow_provider_mlci.core.model.refine import RefinementSpec, model_entry, start_refinement, yaml_at
from airflow_provider_mlci.core.model.registry import GitRegistry
from airflow_provider_mlci.core.repo.commit import CommitSpec
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.exceptions import DvcFileError, MlciConfigError
from airflow_provider_mlci.testing.repos import REMOTE_NAME
from tests.helpers.dvc_remote import access_for

MODEL = "fraud-detector"
BRANCH = "mlci/refine/test"


def spec(**changes) -> RefinementSpec:
    fields = {"model": MODEL, "stage": "prod", "base_model": "models/base.pkl", "commit": CommitSpec(branch=BRANCH)}
    return RefinementSpec(**{**fields, **changes})


def refine(project, cache: Path, rev: str = "main", **changes) -> dict:
    with Workspace.open(access_for(project), rev, cache_dir=cache) as ws:
        return start_refinement(ws, spec(**changes))


def promote(project, cache: Path, sha: str, name: str = MODEL) -> None:
    with Workspace.open(access_for(project), "main", cache_dir=cache) as ws:
        GitRegistry(workspace=ws).promote(name=name, sha=sha, stage="prod")


def lock_entry(project, sha: str, path: str) -> dict:
    """The entry of ``path`` in ``dvc.lock`` at ``sha``, read from the bare remote."""
    lock = yaml.safe_load(project.git("show", f"{sha}:dvc.lock", cwd=project.remote))
    return next(out for stage in lock["stages"].values() for out in stage.get("outs", []) if out["path"] == path)


@pytest.fixture(scope="module")
def deployed_template(demo_project_template, tmp_path_factory):
    """The demo project reproduced once (``dvc repro``, pushed) with that commit on ``prod``."""
    project = demo_project_template.copy_to(tmp_path_factory.mktemp("refine") / "project")
    project.dvc("repro", "--quiet")
    sha = project.commit_and_push("Train the first model")
    promote(project, tmp_path_factory.mktemp("promoter-cache"), sha)
    return project, sha


@pytest.fixture
def deployed(deployed_template, tmp_path):
    """A private copy of the reproduced project and the commit on ``prod``."""
    project, sha = deployed_template
    return project.copy_to(tmp_path / "project"), sha


def test_with_nothing_deployed_nothing_is_written_and_the_checkout_is_the_commit_to_reproduce(
    dvc_project, worker_cache
):
    before = dvc_project.remote_refs()
    result = refine(dvc_project, worker_cache)
    head = dvc_project.head()
    assert result == {
        "model": MODEL,
        "stage": "prod",
        "deployed": None,
        "from_scratch": True,
        "base_model": "models/base.pkl",
        "refine_sha": head,
        "commit": None,
    }
    assert dvc_project.remote_refs() == before
    assert f"refs/heads/{BRANCH}" not in before


def test_the_deployed_model_becomes_the_base_model_in_one_commit_on_the_branch(deployed, worker_cache, tmp_path):
    project, deployed_sha = deployed
    head = project.head()
    result = refine(project, worker_cache)
    commit = result["commit"]
    assert result["from_scratch"] is False
    assert result["deployed"]["sha"] == deployed_sha
    assert result["deployed"]["version"] == "v0.1.0"
    assert commit["branch"] == BRANCH
    assert commit["created"] is True
    assert result["refine_sha"] == commit["commit"] == project.remote_refs()[f"refs/heads/{BRANCH}"]

    on_remote = ["-C", str(project.remote)]
    assert project.git(*on_remote, "rev-parse", f"{commit['commit']}^").strip() == head
    changed = project.git(*on_remote, "diff", "--name-only", head, commit["commit"]).split()
    assert changed == ["models/base.pkl.dvc"]
    written = yaml.safe_load(project.git(*on_remote, "show", f"{commit['commit']}:models/base.pkl.dvc"))
    model = lock_entry(project, deployed_sha, "models/model.pkl")
    assert written["outs"][0]["md5"] == model["md5"]
    assert written["outs"][0]["size"] == model["size"]
    assert written["outs"][0]["path"] == "base.pkl"

    # A fresh clone of the branch, with nothing but the DVC remote, gets the deployed model as its base.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", "-b", BRANCH, str(project.remote), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "remote", "modify", "--local", REMOTE_NAME, "url", project.dvc_remote_url], cwd=clone)
    subprocess.run([*dvc, "pull", "--quiet", "models/base.pkl"], cwd=clone, check=True)
    assert (clone / "models" / "base.pkl").read_bytes() == (project.work / "models" / "model.pkl").read_bytes()

    again = refine(project, worker_cache)
    assert again["commit"] == {**commit, "created": False}
    assert again["refine_sha"] == commit["commit"]
    assert project.remote_refs()[f"refs/heads/{BRANCH}"] == commit["commit"]


def test_a_base_model_not_tracked_by_dvc_is_named_and_nothing_is_pushed(deployed, worker_cache):
    project, _ = deployed
    project.git("rm", "--quiet", "models/base.pkl.dvc")
    project.commit_and_push("Stop tracking the base model", dvc_push=False)
    before = project.remote_refs()
    with pytest.raises(MlciConfigError, match=r"models/base\.pkl\.dvc is not in the repository"):
        refine(project, worker_cache)
    assert project.remote_refs() == before


def test_a_stage_that_gto_does_not_allow_is_refused(deployed, worker_cache):
    project, _ = deployed
    before = project.remote_refs()
    with pytest.raises(MlciConfigError, match="Unknown stage 'production'"):
        refine(project, worker_cache, stage="production")
    assert project.remote_refs() == before


def test_a_deployed_commit_without_the_models_entry_cannot_be_refined(dvc_project, worker_cache):
    # The first commit has no dvc.lock: nothing records the model's content there.
    first = dvc_project.head()
    promote(dvc_project, worker_cache, first)
    with pytest.raises(DvcFileError, match=rf"commit {first[:12]}\) records no DVC entry for models/model\.pkl"):
        refine(dvc_project, worker_cache)
    assert f"refs/heads/{BRANCH}" not in dvc_project.remote_refs()


def test_a_model_that_dvc_yaml_does_not_declare_is_named(dvc_project, worker_cache):
    promote(dvc_project, worker_cache, dvc_project.head(), name="other-model")
    with pytest.raises(MlciConfigError, match="declares no artifact 'other-model'"):
        refine(dvc_project, worker_cache, model="other-model")
    assert f"refs/heads/{BRANCH}" not in dvc_project.remote_refs()


def test_entries_are_read_from_the_lock_file_then_from_dot_dvc_files(deployed, worker_cache):
    project, sha = deployed
    first = project.git("rev-list", "--max-parents=0", "HEAD").strip()
    with Workspace.open(access_for(project), "main", cache_dir=worker_cache) as ws:
        assert model_entry(ws, sha, "models/model.pkl") == lock_entry(project, sha, "models/model.pkl")
        assert model_entry(ws, sha, "./models/model.pkl")["md5"] == lock_entry(project, sha, "models/model.pkl")["md5"]
        tracked = yaml.safe_load((project.work / "data" / "raw.csv.dvc").read_text())["outs"][0]
        assert model_entry(ws, sha, "data/raw.csv") == tracked
        assert model_entry(ws, first, "models/model.pkl") is None  # no dvc.lock yet
        assert model_entry(ws, sha, "models/nothing.pkl") is None
        assert (
            yaml_at(ws, sha, "params.yaml")["train"]
            == yaml.safe_load((project.work / "params.yaml").read_text())["train"]
        )
        assert yaml_at(ws, sha, "no/such.yaml") is None
        assert yaml_at(ws, "0" * 40, "params.yaml") is None


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"base_model": "/abs/base.pkl"}, "'/abs/base.pkl' is not a path inside the repository"),
        ({"base_model": "../x"}, "'../x' is not a path inside the repository"),
        ({"base_model": "models/../../x"}, "is not a path inside the repository"),
        ({"base_model": ""}, "base_model='' is not a path inside the repository"),
        ({"model": "-fraud"}, "'-fraud' is not a valid model name"),
        ({"model": "a b"}, "'a b' is not a valid model name"),
        ({"model": ""}, "'' is not a valid model name"),
    ],
)
def test_bad_specs_are_refused_naming_what_is_wrong(changes, named):
    with pytest.raises(MlciConfigError, match=re.escape(named)):
        spec(**changes)
