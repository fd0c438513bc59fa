from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from airflow_provider_mlci.core.dvc import child as dvc_child
from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.dvc.ops import ReproRequest, check_targets, json_safe
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.exceptions import (
    DvcFileError,
    DvcLockError,
    DvcMissingObjectError,
    DvcStageFailedError,
    DvcStageNotFoundError,
    DvcTransferError,
    MlciConfigError,
)
from tests.conftest import EVAL_ROWS
from tests.helpers.dvc_remote import access_for, remote_files

STAGES = ("prepare", "train", "evaluate")


def repro(project, cache: Path, rev: str = "main", **request) -> dvc_ops.ReproOutcome:
    with Workspace.open(access_for(project), rev, cache_dir=cache) as ws:
        return dvc_ops.repro(ws, ReproRequest(**request))


def test_a_fresh_pipeline_runs_every_stage_and_pushes_outputs_and_run_cache(dvc_project, worker_cache):
    before = remote_files(dvc_project.dvc_remote_url)
    outcome = repro(dvc_project, worker_cache)
    assert outcome.stages == dict.fromkeys(STAGES, "ran")
    assert list(outcome.stages) == list(STAGES)
    metrics = outcome.metrics["metrics.json"]
    assert 0.5 < metrics["accuracy"] <= 1
    assert metrics["rows"] == EVAL_ROWS
    after = remote_files(dvc_project.dvc_remote_url)
    added = after - before
    assert any(name.startswith("runs/") for name in added), "run-cache was not pushed"
    assert any(name.startswith("files/md5/") for name in added), "outputs were not pushed"
    assert outcome.pushed


def test_two_repros_at_once_on_one_worker_cache_both_run_without_a_lock_conflict(dvc_project, worker_cache):
    """Two tasks of one worker reproduce the same revision at the same moment (mapped tasks do):
    each has its own checkout and DVC lock, both share the worker's cache; neither waits for or
    breaks the other. Their spans are measured: the test fails if they did not overlap."""
    import threading
    import time

    barrier = threading.Barrier(2)
    results: list[tuple[float, float, dvc_ops.ReproOutcome]] = []
    errors: list[BaseException] = []

    def task() -> None:
        try:
            with Workspace.open(access_for(dvc_project), "main", cache_dir=worker_cache) as ws:
                barrier.wait(timeout=60)
                started = time.monotonic()
                outcome = dvc_ops.repro(ws, ReproRequest(force=True))
                results.append((started, time.monotonic(), outcome))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=task) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert errors == []
    (_, e1, first), (s2, _, second) = sorted(results, key=lambda r: r[0])
    assert s2 < e1, "the two repros did not run at once"
    assert first.stages == second.stages == dict.fromkeys(STAGES, "ran")
    assert first.metrics == second.metrics


def test_another_worker_restores_from_the_run_cache_instead_of_running(dvc_project, tmp_path):
    repro(dvc_project, tmp_path / "worker-a")
    outcome = repro(dvc_project, tmp_path / "worker-b")
    assert outcome.stages["prepare"] == "restored"
    assert outcome.stages["train"] == "restored"
    assert outcome.metrics["metrics.json"]["rows"] == EVAL_ROWS


def test_a_committed_lock_means_nothing_runs(dvc_project, tmp_path):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Reproduce and commit the lock")
    outcome = repro(dvc_project, tmp_path / "fresh-worker")
    assert outcome.stages == dict.fromkeys(STAGES, "skipped")
    assert outcome.metrics["metrics.json"]["rows"] == EVAL_ROWS


def test_a_changed_param_reruns_only_what_depends_on_it(dvc_project, tmp_path):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Baseline")
    params = dvc_project.work / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 150", "epochs: 40"))
    dvc_project.commit_and_push("Fewer epochs", dvc_push=False)
    outcome = repro(dvc_project, tmp_path / "worker")
    assert outcome.stages == {"prepare": "skipped", "train": "ran", "evaluate": "ran"}


def test_single_stage_and_targets(dvc_project, worker_cache):
    outcome = repro(dvc_project, worker_cache, targets=("train",))
    assert outcome.stages == {"prepare": "ran", "train": "ran"}
    outcome = repro(dvc_project, worker_cache, targets=("prepare",), single_stage=True, force=True)
    assert outcome.stages == {"prepare": "ran"}


def test_push_can_be_skipped(dvc_project, worker_cache):
    before = remote_files(dvc_project.dvc_remote_url)
    outcome = repro(dvc_project, worker_cache, push=False)
    assert not outcome.pushed
    assert remote_files(dvc_project.dvc_remote_url) == before


def test_data_missing_from_the_remote_fails_naming_it_and_runs_nothing(dvc_project, worker_cache, tmp_path):
    empty_remote = tmp_path / "empty-remote"
    empty_remote.mkdir()
    access = RepoAccess.local(str(dvc_project.remote), url=str(empty_remote))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws, pytest.raises(DvcMissingObjectError) as info:
        dvc_ops.repro(ws, ReproRequest())
    assert "data/raw.csv" in str(info.value)
    assert remote_files(empty_remote) == set()


def test_a_failing_stage_names_the_stage(dvc_project, worker_cache):
    train = dvc_project.work / "src" / "train.py"
    train.write_text("raise SystemExit('out of memory, pretend')\n" + train.read_text())
    dvc_project.commit_and_push("Break training", dvc_push=False)
    with pytest.raises(DvcStageFailedError, match="'train'"):
        repro(dvc_project, worker_cache)


def test_a_malformed_dvc_yaml_names_the_file(dvc_project, worker_cache):
    (dvc_project.work / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: [unclosed\n")
    dvc_project.commit_and_push("Break dvc.yaml", dvc_push=False)
    with pytest.raises(DvcFileError, match=r"dvc\.yaml"):
        repro(dvc_project, worker_cache)


def test_an_unknown_target_names_it(dvc_project, worker_cache):
    with pytest.raises(DvcStageNotFoundError, match="nonexistent"):
        repro(dvc_project, worker_cache, targets=("nonexistent",))


def test_no_remote_at_all_is_a_config_error(dvc_project, worker_cache):
    dvc_project.dvc("remote", "remove", "storage")
    (dvc_project.work / ".dvc" / "config.local").unlink(missing_ok=True)
    dvc_project.commit_and_push("Forget the remote", dvc_push=False)
    access = RepoAccess.local(str(dvc_project.remote))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws, pytest.raises(MlciConfigError, match="remote"):
        dvc_ops.repro(ws, ReproRequest())


def test_an_s3_remote_on_the_moto_server(s3_dvc_project, moto_endpoint, s3_bucket, worker_cache):
    import boto3

    access = RepoAccess.local(
        str(s3_dvc_project.remote),
        url=f"s3://{s3_bucket}/store",
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws:
        outcome = dvc_ops.repro(ws, ReproRequest())
    assert outcome.stages == dict.fromkeys(STAGES, "ran")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = [obj["Key"] for obj in s3.list_objects_v2(Bucket=s3_bucket, Prefix="store/")["Contents"]]
    assert any(key.startswith("store/runs/") for key in keys)


def test_dvc_errors_map_to_ours():
    from dvc.exceptions import CheckoutError, DownloadError, ReproductionError
    from dvc.lock import LockError
    from dvc.stage.exceptions import StageCmdFailedError

    assert isinstance(dvc_child.translate(LockError("Unable to acquire lock")), DvcLockError)
    assert isinstance(dvc_child.translate(DownloadError(3)), DvcTransferError)
    assert isinstance(dvc_child.translate(CheckoutError(["data/raw.csv"], {})), DvcMissingObjectError)
    try:
        try:
            raise StageCmdFailedError("python train.py", 1)
        except StageCmdFailedError as cause:
            raise ReproductionError("train") from cause
    except ReproductionError as exc:
        translated = dvc_child.translate(exc)
    assert isinstance(translated, DvcStageFailedError)
    assert "train" in str(translated)


def test_json_safe_drops_non_finite_floats():
    value = {"a": float("nan"), "b": [1.0, float("inf"), {"c": -float("inf")}], "d": "x", "e": 2}
    assert json_safe(value) == {"a": None, "b": [1.0, None, {"c": None}], "d": "x", "e": 2}
    json.dumps(json_safe(value), allow_nan=False)


@pytest.mark.parametrize("bad", ["-f", "--force", "/etc/passwd", "../outside", "a/../../b", "x\ny", ""])
def test_invalid_targets_are_refused(bad):
    with pytest.raises(MlciConfigError, match="not a valid DVC target"):
        check_targets([bad])


def test_targets_are_normalised():
    assert check_targets(None) == ()
    assert check_targets("train") == ("train",)
    assert check_targets(["sub/dvc.yaml:train", "prepare"]) == ("sub/dvc.yaml:train", "prepare")


def test_a_revision_without_dvc_is_named(dvc_project, worker_cache):
    dvc_project.git("rm", "-r", "--quiet", ".dvc")
    shutil.rmtree(dvc_project.work / ".dvc")
    dvc_project.commit_and_push("Drop DVC", dvc_push=False)
    with pytest.raises(DvcFileError, match=r"Not a DVC project.*\[in .*remote\.git at main \("):
        repro(dvc_project, worker_cache)


# ------------------------------------------------------------------ per-stage handoff and planning


def open_ws(project, cache: Path, rev: str = "main"):
    return Workspace.open(access_for(project), rev, cache_dir=cache)


def test_stages_run_in_separate_workspaces_hand_their_results_on(dvc_project, tmp_path):
    """Each stage on its own 'worker': the next one sees the previous one's new outputs."""
    handoffs = []
    outcomes = {}
    for index, stage in enumerate(STAGES):
        handoff = dvc_ops.StageHandoff.merged(handoffs)
        with open_ws(dvc_project, tmp_path / f"worker-{index}") as ws:
            outcome = dvc_ops.repro(ws, ReproRequest(targets=(stage,), single_stage=True, handoff=handoff))
        outcomes.update(outcome.stages)
        assert set(outcome.handoff.lock["dvc.lock"]) == {stage}
        handoffs.append(outcome.handoff)
    assert outcomes == dict.fromkeys(STAGES, "ran")
    final = dvc_ops.StageHandoff.merged(handoffs)
    assert set(final.lock["dvc.lock"]) == set(STAGES)
    assert [bundle["stages"] for bundle in final.bundles] == [["prepare"], ["train"], ["evaluate"]]
    assert final.bundles[2]["seen"] == ["prepare", "train"]
    # A last worker, given the whole handoff, finds everything in sync with the remote.
    with open_ws(dvc_project, tmp_path / "worker-check") as ws:
        again = dvc_ops.repro(ws, ReproRequest(handoff=final))
    assert again.stages == dict.fromkeys(STAGES, "skipped")


def test_a_repro_reports_the_git_files_it_changed(dvc_project, worker_cache):
    with open_ws(dvc_project, worker_cache) as ws:
        outcome = dvc_ops.repro(ws, ReproRequest())
    assert "dvc.lock" in outcome.changed_files
    assert "metrics.json" in outcome.changed_files
    assert not any(name.startswith(("data/prepared", "models/model.pkl")) for name in outcome.changed_files)


def test_plan_on_a_new_pipeline_runs_everything(dvc_project, worker_cache):
    with open_ws(dvc_project, worker_cache) as ws:
        outcome = dvc_ops.plan(ws)
    assert outcome.stages == dict.fromkeys(STAGES, "run")
    assert outcome.will_run == list(STAGES)


def test_plan_sees_the_lock_and_the_run_cache_without_running_anything(dvc_project, tmp_path):
    repro(dvc_project, tmp_path / "worker-a")  # pushes outputs and run-cache; the lock stays uncommitted
    marker = dvc_project.work / "src" / "train.py"
    with open_ws(dvc_project, tmp_path / "worker-b") as ws:
        outcome = dvc_ops.plan(ws, ["train"])
        assert outcome.stages == {"prepare": "restore", "train": "restore"}
        assert outcome.will_run == []
    assert marker.exists()


def test_plan_after_a_param_change(dvc_project, tmp_path):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Baseline")
    params = dvc_project.work / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 150", "epochs: 30"))
    dvc_project.commit_and_push("Fewer epochs", dvc_push=False)
    with open_ws(dvc_project, tmp_path / "worker") as ws:
        outcome = dvc_ops.plan(ws)
    assert outcome.stages == {"prepare": "skip", "train": "run", "evaluate": "run"}


def test_sync_status_lists_what_the_lock_does_not_match(dvc_project, worker_cache):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Reproduce and commit")
    with open_ws(dvc_project, worker_cache) as ws:
        assert dvc_ops.sync_status(ws).in_sync
    train = dvc_project.work / "src" / "train.py"
    train.write_text(train.read_text() + "\n# tweak\n")
    params = dvc_project.work / "params.yaml"
    params.write_text(params.read_text().replace("seed: 7", "seed: 8"))
    dvc_project.commit_and_push("Change code and params, forget to reproduce", dvc_push=False)
    with open_ws(dvc_project, worker_cache) as ws:
        status = dvc_ops.sync_status(ws)
    assert not status.in_sync
    assert any("src/train.py" in item and "modified" in item for item in status.changed["train"])
    assert status.changed["prepare"] == ["changed deps: params.yaml:prepare (modified)"]
    assert "evaluate" not in status.changed
    assert status.not_in_remote == []


def test_sync_status_lists_data_the_remote_lacks(dvc_project, worker_cache, tmp_path):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Reproduce but push only git", dvc_push=False)
    with open_ws(dvc_project, tmp_path / "fresh") as ws:
        status = dvc_ops.sync_status(ws)
    assert status.not_in_remote == ["data/prepared", "models/model.pkl"]
    assert status.changed == {}, "missing data is reported once, as missing, not as changes"


def test_pull_and_push(dvc_project, worker_cache, tmp_path):
    with open_ws(dvc_project, worker_cache) as ws:
        pulled = dvc_ops.pull(ws, ["data/raw.csv.dvc"])
        assert (ws.path / "data" / "raw.csv").is_file()
    assert pulled["fetched"] >= 1
    before = remote_files(dvc_project.dvc_remote_url)
    with open_ws(dvc_project, worker_cache) as ws:
        dvc_ops.repro(ws, ReproRequest(push=False))
    assert remote_files(dvc_project.dvc_remote_url) == before
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Commit the lock, keep data local", dvc_push=False)
    with open_ws(dvc_project, worker_cache) as ws:
        pushed = dvc_ops.push(ws)
    assert pushed["missing"] == []
    assert any(name.startswith("runs/") for name in remote_files(dvc_project.dvc_remote_url) - before)
    with open_ws(dvc_project, tmp_path / "other-worker") as ws:
        dvc_ops.pull(ws)
        assert (ws.path / "models" / "model.pkl").is_file()


def test_pull_of_missing_data_names_it(dvc_project, worker_cache, tmp_path):
    empty = tmp_path / "empty-remote"
    empty.mkdir()
    access = RepoAccess.local(str(dvc_project.remote), url=str(empty))
    with Workspace.open(access, "main", cache_dir=worker_cache) as ws, pytest.raises(DvcMissingObjectError) as info:
        dvc_ops.pull(ws)
    assert "data/raw.csv" in str(info.value)


def test_metrics_and_params_against_a_baseline(dvc_project, worker_cache):
    dvc_project.dvc("repro", "--quiet")
    baseline = dvc_project.commit_and_push("Baseline")
    params = dvc_project.work / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 150", "epochs: 20"))
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Fewer epochs")
    with open_ws(dvc_project, worker_cache) as ws:
        report = dvc_ops.metrics(ws, baseline)
    assert report.metrics["metrics.json"]["rows"] == EVAL_ROWS
    assert report.params["params.yaml"]["train"]["epochs"] == 20
    assert report.params_diff["params.yaml"]["train.epochs"] == {"old": 150, "new": 20, "diff": -130}
    logloss = report.metrics_diff["metrics.json"]["logloss"]
    assert logloss["old"] != logloss["new"]
    with open_ws(dvc_project, worker_cache) as ws:
        alone = dvc_ops.metrics(ws)
    assert alone.metrics_diff == {}
    assert alone.metrics == report.metrics


def test_the_stage_graph_as_dvc_sees_it(dvc_project, worker_cache):
    with open_ws(dvc_project, worker_cache) as ws:
        graph = dvc_ops.stage_graph(ws)
    assert graph == {"prepare": [], "train": ["prepare"], "evaluate": ["train"]}


def s3_access(project, endpoint: str, bucket: str, **fields) -> RepoAccess:
    return RepoAccess.local(
        str(project.remote),
        url=f"s3://{bucket}/store",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
        **fields,
    )


def test_a_corrupted_object_is_refused_with_verify_objects_on(s3_dvc_project, moto_endpoint, s3_bucket, tmp_path):
    import boto3
    import yaml

    md5 = yaml.safe_load((s3_dvc_project.work / "data" / "raw.csv.dvc").read_text())["outs"][0]["md5"]
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key=f"store/files/md5/{md5[:2]}/{md5[2:]}", Body=b"garbage\n")
    access = s3_access(s3_dvc_project, moto_endpoint, s3_bucket, verify_objects=True)
    with Workspace.open(access, "main", cache_dir=tmp_path / "verifying") as ws:
        with pytest.raises(DvcMissingObjectError) as info:
            dvc_ops.pull(ws, ["data/raw.csv.dvc"])
        assert not (ws.path / "data" / "raw.csv").exists()
    assert "data/raw.csv" in str(info.value)
    assert md5 in str(info.value)
    assert not info.value.retryable


def test_a_dvc_lock_held_by_another_process_is_a_retryable_lock_error(dvc_project, worker_cache):
    import subprocess
    import sys
    import time

    with open_ws(dvc_project, worker_cache) as ws:
        holder = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, time; from dvc.repo import Repo; r = Repo(sys.argv[1]); r.lock.lock(); "
                "print('locked', flush=True); time.sleep(60)",
                str(ws.path),
            ],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert holder.stdout.readline().strip() == "locked"
            started = time.monotonic()
            with pytest.raises(DvcLockError) as info:
                dvc_ops.repro(ws, ReproRequest())
            assert time.monotonic() - started < 30
        finally:
            holder.kill()
            holder.wait()
    assert info.value.retryable
    assert "lock" in str(info.value).lower()


def test_fetch_fills_the_worker_cache_without_writing_the_checkout(dvc_project, worker_cache, tmp_path):
    with open_ws(dvc_project, worker_cache) as ws:
        fetched = dvc_ops.fetch(ws)
        assert not (ws.path / "data" / "raw.csv").exists()
    assert fetched["fetched"] >= 1
    md5 = dvc_project.work.joinpath("data", "raw.csv.dvc").read_text().split("md5: ")[1].split()[0]
    assert (worker_cache / "dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]).is_file()
    empty = tmp_path / "empty-remote"
    empty.mkdir()
    access = RepoAccess.local(str(dvc_project.remote), url=str(empty))
    with (
        Workspace.open(access, "main", cache_dir=tmp_path / "other") as ws,
        pytest.raises(DvcMissingObjectError) as info,
    ):
        dvc_ops.fetch(ws)
    assert "data/raw.csv" in str(info.value)


def test_data_is_linked_where_no_stage_runs_and_copied_where_stages_run(dvc_project, worker_cache):
    md5 = dvc_project.work.joinpath("data", "raw.csv.dvc").read_text().split("md5: ")[1].split()[0]
    cached = worker_cache / "dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]
    with open_ws(dvc_project, worker_cache) as ws:
        dvc_ops.pull(ws, ["data/raw.csv.dvc"])
        assert (ws.path / "data" / "raw.csv").stat().st_ino == cached.stat().st_ino, "a hard link: free"
    with open_ws(dvc_project, worker_cache) as ws:
        dvc_ops.repro(ws, ReproRequest(push=False))
        raw = ws.path / "data" / "raw.csv"
        assert raw.stat().st_ino != cached.stat().st_ino, "a stage could write through a link (root ignores modes)"
        raw.chmod(0o644)
        raw.write_text("a stage that scribbles on its input\n")
    assert cached.read_text() != "a stage that scribbles on its input\n"


PARALLEL = {
    "dvc.yaml": """
        stages:
          left:
            cmd: python side.py left
            deps: [side.py]
            outs: [left.txt]
          right:
            cmd: python side.py right
            deps: [side.py]
            outs: [right.txt]
    """,
    "side.py": """
        import os
        import sys

        side = sys.argv[1]
        open(f"{side}.txt", "w").write(side)
        open("notes.txt", "a").write(f"{side} was here\\n")  # a git-tracked file both change
        if os.path.lexists("latest"):
            os.unlink("latest")
        os.symlink(f"{side}.txt", "latest")
    """,
    "notes.txt": "notes\n",
}


def test_two_parallel_stages_that_change_one_git_file_differently_fail_naming_both(tmp_path):
    from airflow_provider_mlci.testing import create_dvc_project
    from tests.helpers.dvc_corpus import write

    write(tmp_path / "template", PARALLEL)
    project = create_dvc_project(tmp_path / "template", tmp_path / "project")
    handoffs = []
    for stage in ("left", "right"):  # neither sees the other's result, as on two workers at once
        with open_ws(project, tmp_path / f"worker-{stage}") as ws:
            outcome = dvc_ops.repro(ws, ReproRequest(targets=(stage,), single_stage=True))
        handoffs.append(outcome.handoff)
    with (
        open_ws(project, tmp_path / "worker-commit") as ws,
        pytest.raises(DvcFileError, match=r"latest was changed both by stage left and by stage right"),
    ):
        dvc_ops.apply_handoff(ws, dvc_ops.StageHandoff.merged(handoffs))
    side = project.work / "side.py"
    side.write_text(side.read_text().replace('os.symlink(f"{side}.txt", "latest")', ""))
    project.commit_and_push("Only notes.txt is shared now")
    handoffs = []
    for stage in ("left", "right"):
        with open_ws(project, tmp_path / f"worker2-{stage}") as ws:
            handoffs.append(dvc_ops.repro(ws, ReproRequest(targets=(stage,), single_stage=True)).handoff)
    with (
        open_ws(project, tmp_path / "worker2-commit") as ws,
        pytest.raises(DvcFileError, match=r"notes.txt was changed both by stage left and by stage right"),
    ):
        dvc_ops.apply_handoff(ws, dvc_ops.StageHandoff.merged(handoffs))


def test_verification_asked_for_on_a_project_without_any_remote_reads_its_metrics(tmp_path):
    """The release operators turn verification on by default: a project with no DVC remote at all
    (metrics in git) must still be read, not refused for a remote setting without a remote."""
    import subprocess

    remote, work = tmp_path / "remote.git", tmp_path / "work"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(work)], check=True)
    (work / ".dvc").mkdir()
    (work / ".dvc" / "config").write_text("")  # what `dvc init` leaves: no remote
    (work / "dvc.yaml").write_text("metrics:\n  - metrics.json\n")
    (work / "metrics.json").write_text('{"acc": 0.75}\n')
    for args in (["add", "-A"], ["commit", "--quiet", "-m", "metrics"], ["push", "--quiet", str(remote), "main"]):
        subprocess.run(["git", *args], cwd=work, check=True)
    access = RepoAccess.local(str(remote))
    access = RepoAccess(git=access.git, dvc=access.dvc.verifying())  # as the release operators get it
    with Workspace.open(access, "main", cache_dir=tmp_path / "w") as ws:
        assert dvc_ops.metrics(ws).metrics == {"metrics.json": {"acc": 0.75}}
