"""The git-tag registry against a real bare remote: GTO and DVC read what it writes; compare-and-swap,
the promotion race, rollback and bad input."""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from airflow_provider_mlci.core.model.registry import (
    UNCHECKED,
    Bump,
    GitRegistry,
    parse_tag,
    parse_version,
    read_evidence,
)
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.exceptions import (
    GitPushRefusedError,
    MlciConfigError,
    PromotionConflictError,
    StageOrderError,
)

ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}
DVC_YAML = "artifacts:\n  fraud:\n    path: models/model.pkl\n    type: model\n"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, env={**os.environ, **ENV}, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture
def repo(tmp_path: Path) -> dict:
    """A bare remote with three commits on main: c1, c2, c3 (each a different model)."""
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    git(tmp_path, "init", "--quiet", "--bare", "-b", "main", str(remote))
    git(tmp_path, "init", "--quiet", "-b", "main", str(work))
    git(work, "remote", "add", "origin", str(remote))
    (work / "dvc.yaml").write_text(DVC_YAML)
    (work / ".gto").write_text("stages: [staging, prod]\n")
    (work / ".dvc").mkdir()
    (work / ".dvc" / "config").write_text("[core]\n    no_scm = false\n")
    (work / "models").mkdir()
    shas = []
    for n in range(3):
        (work / "models" / "model.pkl").write_text(f"model {n}\n")
        git(work, "add", "-A")
        git(work, "commit", "--quiet", "-m", f"model {n}")
        shas.append(git(work, "rev-parse", "HEAD").strip())
    git(work, "push", "--quiet", "origin", "main")
    return {"remote": remote, "work": work, "shas": shas, "tmp": tmp_path}


def open_registry(repo: dict, worker: str = "w1"):
    cache = repo["tmp"] / worker
    return Workspace.open(RepoAccess.local(str(repo["remote"])), "main", cache_dir=cache)


def remote_tags(repo: dict) -> dict[str, str]:
    out = git(repo["remote"], "for-each-ref", "--format=%(refname:lstrip=2) %(*objectname)", "refs/tags")
    return dict(line.split(" ") for line in out.splitlines())


def tag_message(repo: dict, tag: str) -> str:
    return git(repo["remote"], "tag", "-l", "--format=%(contents)", tag)


def fresh_clone(repo: dict, name: str) -> Path:
    path = repo["tmp"] / name
    git(repo["tmp"], "clone", "--quiet", str(repo["remote"]), str(path))
    return path


@pytest.mark.parametrize(
    ("tag", "expected"),
    [
        ("fraud@v1.2.3", ("fraud", "register", "v1.2.3", None, 0)),
        ("fraud@v1.2.3!", ("fraud", "deregister", "v1.2.3", None, 0)),
        ("fraud#prod#7", ("fraud", "assign", None, "prod", 7)),
        ("fraud#prod!#8", ("fraud", "unassign", None, "prod", 8)),
        ("fraud@deprecated", ("fraud", "deprecate", None, None, 0)),
        ("models=fraud#prod#2", ("models:fraud", "assign", None, "prod", 2)),
        ("v1.0.0", None),
        ("fraud@1.2.3", None),
        ("-x#prod#1", None),
    ],
)
def test_tags_parse_in_gto_grammar(tag, expected):
    parsed = parse_tag(tag)
    if expected is None:
        assert parsed is None
    else:
        assert (parsed.name, parsed.action, parsed.version, parsed.stage, parsed.counter) == expected


@pytest.mark.parametrize("version", ["1.x", "v1", "latest", "v01.2.3", ""])
def test_non_semver_versions_are_refused(version):
    with pytest.raises(MlciConfigError, match="not a semantic version"):
        parse_version(version)


def test_promotions_are_read_by_gto_and_dvc_and_rollback_puts_the_previous_model_back(repo):
    import dvc.api
    import gto.api

    c1, c2, _ = repo["shas"]
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        first = registry.promote(name="fraud", sha=c1, stage="prod", expected=None, evidence={"metrics": {"acc": 0.8}})
        assert first.version == "v0.1.0"
        assert first.tags == ("fraud@v0.1.0", "fraud#prod#1")
        assert first.replaced is None
        second = registry.promote(
            name="fraud", sha=c2, stage="prod", expected=registry.refresh().champion("fraud", "prod")
        )
        assert second.version == "v0.2.0"
        assert second.replaced.version == "v0.1.0"
        again = registry.promote(name="fraud", sha=c2, stage="prod")
        assert again.tags == ()  # a retry after a successful push writes nothing

    tags = remote_tags(repo)
    assert tags == {"fraud@v0.1.0": c1, "fraud#prod#1": c1, "fraud@v0.2.0": c2, "fraud#prod#2": c2}
    evidence = read_evidence(tag_message(repo, "fraud#prod#2"))
    assert evidence["replaced"]["version"] == "v0.1.0"
    assert evidence["version"] == "v0.2.0"
    assert read_evidence(tag_message(repo, "fraud#prod#1"))["metrics"] == {"acc": 0.8}

    clone = fresh_clone(repo, "reader")
    assert gto.api.show(str(clone))["fraud"]["stage"]["prod"] == "v0.2.0"
    assert dvc.api.artifacts_show("fraud", stage="prod", repo=str(clone)) == {"rev": c2, "path": "models/model.pkl"}

    with open_registry(repo) as ws:
        back = GitRegistry(workspace=ws).rollback(name="fraud", stage="prod")
    assert (back.version, back.sha, back.tags) == ("v0.1.0", c1, ("fraud#prod#3",))
    assert len(remote_tags(repo)) == 5  # one write
    clone = fresh_clone(repo, "reader2")
    assert gto.api.show(str(clone))["fraud"]["stage"]["prod"] == "v0.1.0"
    assert dvc.api.artifacts_show("fraud", stage="prod", repo=str(clone))["rev"] == c1
    assert dvc.api.artifacts_show("fraud", version="v0.2.0", repo=str(clone))["rev"] == c2


def test_the_champion_changing_after_the_gate_aborts_the_promotion(repo):
    c1, c2, c3 = repo["shas"]
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        registry.promote(name="fraud", sha=c1, stage="prod")
        seen_by_gate = registry.refresh().champion("fraud", "prod")
        registry.promote(name="fraud", sha=c2, stage="prod")  # someone else promotes meanwhile
        before = remote_tags(repo)
        with pytest.raises(PromotionConflictError, match="changed since the gate"):
            registry.promote(name="fraud", sha=c3, stage="prod", expected=seen_by_gate)
        with pytest.raises(PromotionConflictError, match="held no model"):
            registry.promote(name="fraud", sha=c3, stage="prod", expected=None)
    assert remote_tags(repo) == before


class _SlowReader(GitRegistry):
    """Holds every writer between reading the registry and writing, so both read the same state."""

    barrier: threading.Barrier

    def refresh(self):
        state = super().refresh()
        if not getattr(self, "_waited", False):
            self._waited = True
            self.barrier.wait(timeout=30)
        return state


def test_two_promotions_racing_exactly_one_wins(repo):
    c1, c2, c3 = repo["shas"]
    with open_registry(repo) as ws:
        GitRegistry(workspace=ws).promote(name="fraud", sha=c1, stage="prod")
    barrier = threading.Barrier(2)
    outcomes: dict[str, object] = {}

    def promote(worker: str, sha: str) -> None:
        try:
            with open_registry(repo, worker) as ws:
                registry = _SlowReader(workspace=ws)
                registry.barrier = barrier
                expected = registry.read().champion("fraud", "prod")
                outcomes[worker] = registry.promote(name="fraud", sha=sha, stage="prod", expected=expected)
        except Exception as exc:
            outcomes[worker] = exc

    threads = [threading.Thread(target=promote, args=(w, s)) for w, s in (("a", c2), ("b", c3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    errors = [o for o in outcomes.values() if isinstance(o, Exception)]
    wins = [o for o in outcomes.values() if not isinstance(o, Exception)]
    assert len(wins) == 1, outcomes
    assert len(errors) == 1
    assert isinstance(errors[0], PromotionConflictError), errors
    tags = remote_tags(repo)
    assert sorted(t for t in tags if "#prod#" in t) == ["fraud#prod#1", "fraud#prod#2"]
    assert tags["fraud#prod#2"] == wins[0].sha
    assert sorted(t for t in tags if "@" in t) == ["fraud@v0.1.0", "fraud@v0.2.0"]  # the loser registered nothing


def test_bumps_and_explicit_versions(repo):
    c1, c2, c3 = repo["shas"]
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        assert registry.promote(name="fraud", sha=c1, stage="staging", bump="major").version == "v1.0.0"
        assert registry.promote(name="fraud", sha=c2, stage="staging", bump=Bump.PATCH).version == "v1.0.1"
        with pytest.raises(MlciConfigError, match="already registered"):
            registry.promote(name="fraud", sha=c3, stage="staging", version="v1.0.1")
        assert registry.promote(name="fraud", sha=c3, stage="staging", version="2.0.0").version == "v2.0.0"
        # a commit that already has a version keeps it when it goes to another stage
        assert registry.promote(name="fraud", sha=c1, stage="prod").version == "v1.0.0"


def test_bad_input_writes_no_tag(repo):
    c1, _, _ = repo["shas"]
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        with pytest.raises(MlciConfigError, match="Unknown stage 'production'"):
            registry.promote(name="fraud", sha=c1, stage="production")
        with pytest.raises(MlciConfigError, match="not a semantic version"):
            registry.promote(name="fraud", sha=c1, stage="prod", version="1.x")
        with pytest.raises(MlciConfigError, match="bump="):
            registry.promote(name="fraud", sha=c1, stage="prod", bump="huge")
        with pytest.raises(MlciConfigError, match="not a valid model name"):
            registry.promote(name="-fraud", sha=c1, stage="prod")
        with pytest.raises(MlciConfigError, match="never been on stage 'prod'"):
            registry.rollback(name="fraud", stage="prod")
        assert remote_tags(repo) == {}
        registry.promote(name="fraud", sha=c1, stage="prod")
        with pytest.raises(MlciConfigError, match="no earlier model"):
            registry.rollback(name="fraud", stage="prod")
        with pytest.raises(MlciConfigError, match=r"v9.0.0 of 'fraud' is not registered \(versions: v0.1.0\)"):
            registry.rollback(name="fraud", stage="prod", to_version="v9.0.0")
    assert set(remote_tags(repo)) == {"fraud@v0.1.0", "fraud#prod#1"}


def test_a_stage_emptied_by_gto_reads_as_no_champion_and_rollback_refills_it(repo):
    c1, _, _ = repo["shas"]
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        registry.promote(name="fraud", sha=c1, stage="prod")
    clone = fresh_clone(repo, "gto-user")
    subprocess.run(
        ["git", "tag", "-a", "-m", "unassign", "fraud#prod!#2", c1],
        cwd=clone,
        check=True,
        env={**os.environ, **ENV, "GIT_COMMITTER_DATE": f"{int(time.time()) + 5} +0000"},
    )
    git(clone, "push", "--quiet", "origin", "fraud#prod!#2")
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        assert registry.refresh().champion("fraud", "prod") is None
        result = registry.rollback(name="fraud", stage="prod", expected=UNCHECKED)
    assert result.sha == c1
    assert result.tags == ("fraud#prod#3",)
    assert json.loads(json.dumps(result.to_json()))["replaced"] is None


PROTECTING_HOOK = """#!/bin/sh
# A protected-tag rule, as GitLab or a server-side hook enforces it: stage tags of prod are refused.
echo run >> hook-runs
while read old new ref; do
  case "$ref" in
    refs/tags/*'#prod#'*)
      echo "GL-HOOK-ERR: tag ${ref#refs/tags/} is protected: only release managers may create it (bot:__TOKEN__)"
      exit 1 ;;
  esac
done
exit 0
"""


def test_a_tag_push_refused_by_the_remote_fails_at_once_naming_the_refusal(repo):
    from airflow_provider_mlci.core.repo.access import GitAccess
    from airflow_provider_mlci.testing.git_http import GitHttpServer

    token = "tok-9b2e4f7a1c"
    hook = repo["remote"] / "hooks" / "pre-receive"
    hook.write_text(PROTECTING_HOOK.replace("__TOKEN__", token))  # a careless hook that echoes the token
    hook.chmod(0o755)
    c1, _, _ = repo["shas"]
    with GitHttpServer(repo["tmp"], username="bot", token=token) as server:
        url = server.url("remote.git")
        access = RepoAccess(git=GitAccess(url=url, username="bot", password=token))
        with Workspace.open(access, "main", cache_dir=repo["tmp"] / "w-http") as ws:
            registry = GitRegistry(workspace=ws)
            registry.promote(name="fraud", sha=c1, stage="staging")  # the hook lets staging through
            runs_before = (repo["remote"] / "hook-runs").read_text().count("run")
            with pytest.raises(GitPushRefusedError) as info:
                registry.promote(name="fraud", sha=c1, stage="prod")
            local_tags = git(ws.path, "tag", "--list").split()
    error = info.value
    assert not error.retryable
    message = str(error)
    assert "fraud#prod#2" in message
    assert "is protected: only release managers may create it" in message  # the remote's own words
    assert "pre-receive hook declined" in message
    assert url in message
    assert token not in message
    assert (repo["remote"] / "hook-runs").read_text().count("run") - runs_before == 1, "a refusal is not retried"
    assert set(remote_tags(repo)) == {"fraud@v0.1.0", "fraud#staging#1"}
    assert "fraud#prod#2" not in local_tags


def test_a_version_may_enter_prod_only_after_staging_when_the_stage_order_says_so(repo):
    c1, c2, _ = repo["shas"]
    order = ("staging", "prod")
    with open_registry(repo) as ws:
        registry = GitRegistry(workspace=ws)
        with pytest.raises(StageOrderError) as refused:
            registry.promote(name="fraud", sha=c1, stage="prod", stage_order=order)
        assert str(refused.value) == (
            f"fraud at {c1[:12]} cannot go to prod: it was never on staging (stage order staging -> prod). "
            "Nothing was written; promote it to staging first."
        )
        assert remote_tags(repo) == {}
        registry.promote(name="fraud", sha=c1, stage="staging", stage_order=order)  # the first stage: no condition
        registry.promote(name="fraud", sha=c1, stage="prod", stage_order=order)
        registry.promote(name="fraud", sha=c2, stage="staging", stage_order=order)
        # c3 was never on staging: that another commit was does not count.
        with pytest.raises(StageOrderError, match="never on staging"):
            registry.promote(name="fraud", sha=repo["shas"][2], stage="prod", stage_order=order)
        registry.promote(name="fraud", sha=c2, stage="prod", stage_order=order)
    assert remote_tags(repo) == {
        "fraud@v0.1.0": c1,
        "fraud#staging#1": c1,
        "fraud#prod#2": c1,
        "fraud@v0.2.0": c2,
        "fraud#staging#3": c2,
        "fraud#prod#4": c2,
    }
