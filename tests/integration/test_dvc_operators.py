"""The DVC operators for real (dag.test()) against a bare git remote and a local DVC remote.

Each result is checked whole against what the project's own files, git and the DVC command line
(run by hand in a clone of the same commit) say, and so is each effect: what the worker cache
holds afterwards, what the DVC remote gained (a push) or did not (everything else), that the git
remote's refs did not move (but for the branch a reproduction commits to), and that no checkout
is left on the worker.
"""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
import yaml

from airflow_provider_mlci.testing.repos import REMOTE_NAME, LocalDvcProject
from tests.helpers.demo_project import new_data, private_copy, train
from tests.helpers.dvc_remote import remote_files
from tests.helpers.log_lines import OPERATORS, logged

DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.operators.dvc import (
        DvcCheckoutOperator, DvcCommitOperator, DvcMetricsOperator, DvcPushOperator, DvcReproOperator,
        DvcWillItRunOperator,
    )

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             default_args={{"retries": 2, "retry_delay": 0}}):
        {tasks}
    """
)

#: The demo pipeline (example_dags/demo_project/dvc.yaml): each stage and the stages below it.
DOWNSTREAM = {"prepare": ["train", "evaluate"], "train": ["evaluate"], "evaluate": []}


def dag(dag_id: str, *tasks: str) -> str:
    """A DAG file with ``tasks`` (one statement each)."""
    return DAG_SOURCE.format(dag_id=dag_id, tasks="\n    ".join(tasks))


@pytest.fixture(scope="module")
def template(demo_project_template, tmp_path_factory):
    """Built once per module: ``fresh`` (day 0, never reproduced: no dvc.lock), ``trained`` (10
    epochs, reproduced and pushed), ``stale`` (``train.l2`` changed, not reproduced) and ``worse``
    (2 epochs, reproduced and pushed; ``main``)."""
    template = demo_project_template.copy_to(tmp_path_factory.mktemp("dvc-operators") / "project")
    template.fresh = template.head()
    template.trained = train(template, 10)
    params = template.work / "params.yaml"
    params.write_text(params.read_text().replace("l2: 0.001", "l2: 0.01"))
    template.stale = template.commit_and_push("Stronger regularisation, not reproduced")
    template.worse = train(template, 2)
    return template


@pytest.fixture
def project(template, dvc_connection, worker_cache, monkeypatch, tmp_path):
    """A private copy of the template behind the default connection, with this test's worker cache."""
    copy = private_copy(template, tmp_path / "project", ("fresh", "trained", "stale", "worse"))
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(str(copy.remote), extra={"dvc_remote_url": copy.dvc_remote_url})
    return copy


def by_hand(project, tmp_path: Path, sha: str) -> LocalDvcProject:
    """A fresh clone of the git remote at ``sha``, on the project's DVC remote, with a DVC cache of its own."""
    clone = tmp_path / f"by-hand-{sha[:12]}"
    project.git("clone", "--quiet", str(project.remote), str(clone))
    hand = LocalDvcProject(work=clone, remote=project.remote, dvc_remote_url=project.dvc_remote_url)
    hand.git("checkout", "--quiet", "--detach", sha)
    (clone / ".dvc" / "config.local").write_text(f"['remote \"{REMOTE_NAME}\"']\n    url = {project.dvc_remote_url}\n")
    return hand


def data_objects(dvc_cache: Path) -> set[str]:
    """The data objects in a DVC cache or remote (``files/md5/xx/...``), without run-cache or state."""
    return {f for f in remote_files(dvc_cache) if f.startswith("files/")}


def object_of(md5: str) -> str:
    """Where DVC 3 keeps the object ``md5`` in a cache or remote."""
    return f"files/md5/{md5[:2]}/{md5[2:]}"


def git_file(project, sha: str, path: str) -> str:
    """``path`` as commit ``sha`` of the git remote holds it."""
    return project.git("show", f"{sha}:{path}", cwd=project.remote)


def rev_parse(project, rev: str) -> str:
    return project.git("rev-parse", rev, cwd=project.remote).strip()


def no_checkout_left(*caches: Path) -> bool:
    return all(list((cache / "checkouts").iterdir()) == [] for cache in caches)


def test_checkout_fetches_what_dvc_fetch_fetches_into_the_worker_cache_and_writes_no_remote(
    run_dag, project, worker_cache, tmp_path
):
    other_worker = tmp_path / "other-worker"
    remote_before, refs_before = remote_files(project.dvc_remote_url), project.remote_refs()
    record = run_dag(
        "dvc_checkout",
        source=dag(
            "dvc_checkout",
            f'DvcCheckoutOperator(task_id="everything", rev="{project.trained}")',
            'DvcCheckoutOperator(task_id="eval_only", rev="main", targets="data/eval.csv", '
            f'cache_dir="{other_worker}")',
        ),
    )
    assert record.task_states == {"everything": "success", "eval_only": "success"}

    hand = by_hand(project, tmp_path, project.trained)
    said = hand.dvc("fetch")  # "6 files fetched"
    count = int(re.fullmatch(r"(\d+) files? fetched\n", said).group(1))
    assert record.xcom["everything"] == {
        "repo": str(project.remote),
        "rev": project.trained,
        "sha": project.trained,
        "targets": [],
        "fetched": count,
    }
    # Exactly what `dvc fetch` by hand brought: the revision's data, nothing else.
    assert data_objects(worker_cache / "dvc" / "cache") == data_objects(hand.work / ".dvc" / "cache")

    eval_md5 = yaml.safe_load(git_file(project, project.worse, "data/eval.csv.dvc"))["outs"][0]["md5"]
    assert record.xcom["eval_only"] == {
        "repo": str(project.remote),
        "rev": "main",
        "sha": rev_parse(project, "main"),
        "targets": ["data/eval.csv"],
        "fetched": 1,
    }
    assert data_objects(other_worker / "dvc" / "cache") == {object_of(eval_md5)}

    assert remote_files(project.dvc_remote_url) == remote_before
    assert project.remote_refs() == refs_before
    assert no_checkout_left(worker_cache, other_worker)


def test_push_sends_what_the_worker_cache_holds_and_the_remote_lacks(run_dag, project, worker_cache, tmp_path):
    """A reproduction that pushes nothing, then the push: the remote gains exactly the new model
    the committed dvc.lock names and this worker's run-cache entries."""
    remote_before, refs_before = remote_files(project.dvc_remote_url), project.remote_refs()
    record = run_dag(
        "dvc_push",
        source=dag(
            "dvc_push",
            f'repro = DvcReproOperator(task_id="repro", rev="{project.stale}", push=False, hand_off=True)',
            f'commit = DvcCommitOperator(task_id="commit", rev="{project.stale}", handoff_from=["repro"], '
            'branch="retrained")',
            'push = DvcPushOperator(task_id="push", rev="retrained")',
            "repro >> commit >> push",
        ),
    )
    assert record.task_states == {"repro": "success", "commit": "success", "push": "success"}
    retrained = rev_parse(project, "retrained")
    assert project.remote_refs() == {**refs_before, "refs/heads/retrained": retrained}
    assert rev_parse(project, "retrained~1") == project.stale

    lock = yaml.safe_load(git_file(project, retrained, "dvc.lock"))
    model_md5 = next(o["md5"] for o in lock["stages"]["train"]["outs"] if o["path"] == "models/model.pkl")
    assert object_of(model_md5) not in remote_before
    run_cache = {f for f in remote_files(worker_cache / "dvc" / "cache") if f.startswith("runs/")}
    assert len(run_cache) == 2  # one entry each for train and evaluate, the stages that ran
    gained = remote_files(project.dvc_remote_url) - remote_before
    assert gained == {object_of(model_md5), *run_cache}
    assert remote_files(project.dvc_remote_url) >= remote_before
    assert record.xcom["push"] == {
        "repo": str(project.remote),
        "rev": "retrained",
        "sha": retrained,
        "pushed": len(gained),
        "missing": [],
    }
    # By hand on the same commit: everything it names comes from the remote, and is up to date.
    hand = by_hand(project, tmp_path, retrained)
    hand.dvc("pull", "--quiet")
    assert json.loads(hand.dvc("status", "--json")) == {}
    assert no_checkout_left(worker_cache)


def test_push_of_data_neither_the_cache_nor_the_remote_holds_fails_unless_allowed(
    run_dag, project, worker_cache, tmp_path, capfd
):
    new_data(project, seed=11, commit=False)
    unpushed = project.commit_and_push("New data, never pushed", dvc_push=False)
    raw_md5 = yaml.safe_load(git_file(project, unpushed, "data/raw.csv.dvc"))["outs"][0]["md5"]
    remote_before, refs_before = remote_files(project.dvc_remote_url), project.remote_refs()
    assert object_of(raw_md5) not in remote_before
    capfd.readouterr()
    record = run_dag(
        "dvc_push_missing",
        source=dag(
            "dvc_push_missing",
            f'allowed = DvcPushOperator(task_id="allowed", rev="{unpushed}", allow_missing=True)',
            f'refused = DvcPushOperator(task_id="refused", rev="{unpushed}")',
            "allowed >> refused",
        ),
    )
    out = capfd.readouterr().out
    # Failed for good: AirflowFailException (below), so the retries=2 are not used.
    assert record.task_states == {"allowed": "success", "refused": "failed"}
    assert record.xcom["allowed"] == {
        "repo": str(project.remote),
        "rev": unpushed,
        "sha": unpushed,
        "pushed": 0,
        "missing": ["data/raw.csv"],
    }
    message = "Neither this worker's cache nor the remote holds: data/raw.csv"
    # The allowed push warns; the refused one fails, typed, not retryable.
    assert logged(out, "warning", message, f"{OPERATORS}dvc.DvcPushOperator") == 1
    assert [line for line in out.splitlines() if line.endswith(message) and not line[:1].isdigit()] == [
        f"airflow_provider_mlci.exceptions.DvcMissingObjectError: {message}",
        f"airflow.sdk.exceptions.AirflowFailException: DvcMissingObjectError: {message}",
    ]
    # By hand on the same commit, DVC finds the same object missing.
    hand = by_hand(project, tmp_path, unpushed)
    status = json.loads(hand.dvc("status", "--cloud", "--json"))
    assert sorted(path for path, state in status.items() if state == "missing") == ["data/raw.csv"]
    assert remote_files(project.dvc_remote_url) == remote_before
    assert project.remote_refs() == refs_before
    assert no_checkout_left(worker_cache)


def flat(params: dict, prefix: str = "") -> dict[str, object]:
    """``{"train": {"epochs": 2}}`` as ``{"train.epochs": 2}``, as DVC names params."""
    out: dict[str, object] = {}
    for key, value in params.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def changes(old: dict, new: dict) -> dict[str, dict[str, object]]:
    """What ``dvc metrics diff``/``dvc params diff`` report: each changed value, old, new and new - old."""
    return {key: {"old": old[key], "new": new[key], "diff": new[key] - old[key]} for key in new if new[key] != old[key]}


def test_metrics_and_their_diff_against_a_baseline_are_what_git_and_the_dvc_command_line_say(
    run_dag, project, worker_cache, tmp_path
):
    remote_before, refs_before = remote_files(project.dvc_remote_url), project.remote_refs()
    record = run_dag(
        "dvc_metrics",
        source=dag(
            "dvc_metrics",
            f'DvcMetricsOperator(task_id="alone", rev="{project.trained}")',
            'DvcMetricsOperator(task_id="against_baseline", rev="main", baseline_rev="main~2")',
        ),
    )
    assert record.task_states == {"alone": "success", "against_baseline": "success"}
    assert rev_parse(project, "main") == project.worse
    assert rev_parse(project, "main~2") == project.trained

    def metrics_at(sha):
        return json.loads(git_file(project, sha, "metrics.json"))

    def params_at(sha):
        return yaml.safe_load(git_file(project, sha, "params.yaml"))

    assert metrics_at(project.trained) != metrics_at(project.worse)
    assert record.xcom["alone"] == {
        "repo": str(project.remote),
        "rev": project.trained,
        "sha": project.trained,
        "baseline_rev": None,
        "baseline_sha": None,
        "metrics": {"metrics.json": metrics_at(project.trained)},
        "params": {"params.yaml": params_at(project.trained)},
        "metrics_diff": {},
        "params_diff": {},
        "baseline_metrics": {},
    }
    metrics_diff = {"metrics.json": changes(metrics_at(project.trained), metrics_at(project.worse))}
    params_diff = {"params.yaml": changes(flat(params_at(project.trained)), flat(params_at(project.worse)))}
    assert record.xcom["against_baseline"] == {
        "repo": str(project.remote),
        "rev": "main",
        "sha": project.worse,
        "baseline_rev": "main~2",
        "baseline_sha": project.trained,
        "metrics": {"metrics.json": metrics_at(project.worse)},
        "params": {"params.yaml": params_at(project.worse)},
        "metrics_diff": metrics_diff,
        "params_diff": params_diff,
        "baseline_metrics": {"metrics.json": metrics_at(project.trained)},
    }
    # The DVC command line by hand says the same.
    hand = by_hand(project, tmp_path, project.worse)
    assert json.loads(hand.dvc("metrics", "diff", "--json", project.trained, project.worse)) == metrics_diff
    assert json.loads(hand.dvc("params", "diff", "--json", project.trained, project.worse)) == params_diff

    assert data_objects(worker_cache / "dvc" / "cache") == set()  # read from git: no data pulled
    assert remote_files(project.dvc_remote_url) == remote_before
    assert project.remote_refs() == refs_before
    assert no_checkout_left(worker_cache)


def test_will_it_run_names_the_stages_dvc_status_finds_changed_and_those_below_them(
    run_dag, project, worker_cache, tmp_path
):
    remote_before, refs_before = remote_files(project.dvc_remote_url), project.remote_refs()
    commits = {"fresh": project.fresh, "stale": project.stale, "trained": project.trained}
    record = run_dag(
        "dvc_will_it_run",
        source=dag(
            "dvc_will_it_run",
            *(f'DvcWillItRunOperator(task_id="{name}", rev="{sha}")' for name, sha in commits.items()),
        ),
    )
    assert record.task_states == dict.fromkeys(commits, "success")

    statuses = {}
    for name, sha in commits.items():
        hand = by_hand(project, tmp_path, sha)
        hand.dvc("pull", "--quiet", "--allow-missing")  # a stage never run has no outputs to pull
        statuses[name] = json.loads(hand.dvc("status", "--json"))
    # What DVC says by hand: never reproduced, every stage changed; the train params (l2) changed;
    # up to date.
    assert set(statuses["fresh"]) == set(DOWNSTREAM)
    assert statuses["stale"] == {"train": [{"changed deps": {"params.yaml": {"train": "modified"}}}]}
    assert statuses["trained"] == {}

    for name, sha in commits.items():
        changed = {stage for stage in DOWNSTREAM if stage in statuses[name]}
        would_run = changed | {below for stage in changed for below in DOWNSTREAM[stage]}
        assert record.xcom[name] == {
            "repo": str(project.remote),
            "rev": sha,
            "sha": sha,
            "stages": {stage: "run" if stage in would_run else "skip" for stage in DOWNSTREAM},
            "will_run": [stage for stage in DOWNSTREAM if stage in would_run],
        }, name
    assert record.xcom["stale"]["will_run"] == ["train", "evaluate"]

    assert remote_files(project.dvc_remote_url) == remote_before
    assert project.remote_refs() == refs_before
    assert no_checkout_left(worker_cache)
