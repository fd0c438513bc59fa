"""Every DVC failure a DAG can meet ends its task with a typed error from exceptions.py that
names the file, stage, revision, object or URL at fault, before expensive work where it can.
Each case is a real DAG run (dag.test()) on a real project."""

from __future__ import annotations

import hashlib
import json
import textwrap

import pytest
import yaml

from tests.helpers.log_lines import OPERATORS, error_lines, logged, raised_lines

DAG_TEMPLATE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, Param

    from airflow_provider_mlci.operators.dvc import DvcPipelineSyncCheckOperator, DvcReproOperator

    with DAG(
        dag_id="{dag_id}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        render_template_as_native_obj=True,
        params={{"rev": Param("main"), "targets": Param(None, type=["null", "array"])}},
    ):
        {task}
    """
)
DAGS = {
    "reproduce": (
        "mlci_dvc_errors_repro",
        'DvcReproOperator(task_id="reproduce", rev="{{ params.rev }}", targets="{{ params.targets }}")',
    ),
    "sync_check": (
        "mlci_dvc_errors_sync",
        'DvcPipelineSyncCheckOperator(task_id="sync_check", rev="{{ params.rev }}")',
    ),
}
REPRO_LOGGER = OPERATORS + "repro.DvcReproOperator"


def where(project, sha: str) -> str:
    """How an error names the repository and revision it met: ``[in <url> at main (<sha>)]``."""
    return f"[in {project.remote} at main ({sha[:12]})]"


def md5(project, dvc_file: str) -> str:
    return yaml.safe_load((project.work / dvc_file).read_text())["outs"][0]["md5"]


@pytest.fixture
def run_errors_dag(run_dag, dvc_connection, worker_cache, monkeypatch, capfd):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))

    def _run(project, *, task="reproduce", conf=None, remote_url=None, extra=None):
        dvc_connection(
            str(project.remote), extra={"dvc_remote_url": remote_url or project.dvc_remote_url, **(extra or {})}
        )
        dag_id, task_source = DAGS[task]
        source = DAG_TEMPLATE.format(dag_id=dag_id, task=task_source)
        capfd.readouterr()
        record = run_dag(dag_id, source=source, conf={"rev": "main", **(conf or {})})
        return record, capfd.readouterr().out

    return _run


def test_a_malformed_dvc_yaml_names_the_file(run_errors_dag, dvc_project):
    (dvc_project.work / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: [unclosed\n")
    sha = dvc_project.commit_and_push("Break dvc.yaml", dvc_push=False)
    record, out = run_errors_dag(dvc_project)
    assert record.task_states["reproduce"] == "failed"
    assert error_lines(out, "DvcFileError") == [
        "airflow.sdk.exceptions.AirflowFailException: DvcFileError: unable to read: 'dvc.yaml', "
        f"YAML file structure is corrupted {where(dvc_project, sha)}"
    ]


def test_a_malformed_dvc_file_names_it(run_errors_dag, dvc_project):
    (dvc_project.work / "data" / "raw.csv.dvc").write_text("outs:\n- md5: [not, a, hash]\n  path: raw.csv\n")
    sha = dvc_project.commit_and_push("Break the .dvc file", dvc_push=False)
    record, out = run_errors_dag(dvc_project)
    assert record.task_states["reproduce"] == "failed"
    assert error_lines(out, "DvcFileError") == [
        "airflow.sdk.exceptions.AirflowFailException: DvcFileError: './data/raw.csv.dvc' validation failed "
        f"{where(dvc_project, sha)}"
    ]


def test_data_missing_from_the_remote_names_it(run_errors_dag, dvc_project, tmp_path):
    empty = tmp_path / "empty-remote"
    empty.mkdir()
    record, out = run_errors_dag(dvc_project, remote_url=str(empty))
    assert record.task_states["reproduce"] == "failed"
    raw, base, evaluation = (
        md5(dvc_project, f) for f in ("data/raw.csv.dvc", "models/base.pkl.dvc", "data/eval.csv.dvc")
    )
    [message] = error_lines(out, "DvcMissingObjectError")
    lines = message.split("\n")
    assert (
        lines[0]
        == "airflow.sdk.exceptions.AirflowFailException: DvcMissingObjectError: Checkout failed for following targets:"
    )
    # DVC lists the targets it could not check out in no fixed order.
    assert sorted(lines[1:4]) == ["data/eval.csv", "data/raw.csv", "models/base.pkl"]
    assert lines[4:7] == [
        "Is your cache up to date?",
        "<https://error.dvc.org/missing-files>",
        "The data is missing from the cache and the remote, or the remote's copy is corrupted (it failed "
        f"verification). Objects: data/eval.csv (md5 {evaluation}), data/raw.csv (md5 {raw}), models/base.pkl "
        f"(md5 {base}). DVC said: Some of the cache files do not exist neither locally nor on remote. Missing "
        "cache files:",
    ]
    # ... and the missing objects in no fixed order either; the repository and revision end the last.
    suffix = f" {where(dvc_project, dvc_project.head())}"
    assert len(lines) == 10
    assert lines[-1].endswith(suffix)
    assert sorted([*lines[7:9], lines[9].removesuffix(suffix)]) == sorted(f"md5: {h}" for h in (raw, base, evaluation))
    assert list(empty.iterdir()) == [], "nothing may be pushed after a failed pull"


def test_a_corrupted_remote_object_is_refused_with_verify_on(
    run_errors_dag, s3_dvc_project, moto_endpoint, s3_bucket, monkeypatch
):
    import boto3

    raw, corrupt = md5(s3_dvc_project, "data/raw.csv.dvc"), b"not the data\n"
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key=f"store/files/md5/{raw[:2]}/{raw[2:]}", Body=corrupt)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_MOTO",
        json.dumps(
            {"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"endpoint_url": moto_endpoint}}
        ),
    )
    record, out = run_errors_dag(
        s3_dvc_project,
        remote_url=f"s3://{s3_bucket}/store",
        extra={"aws_conn_id": "aws_moto", "verify_objects": True},
    )
    assert record.task_states["reproduce"] == "failed"
    # A subclass of DvcMissingObjectError: the remote's bytes no longer hash to the name.
    assert error_lines(out, "DvcCorruptObjectError") == [
        "airflow.sdk.exceptions.AirflowFailException: DvcCorruptObjectError: The DVC remote's copy of data/raw.csv "
        f"(md5 {raw}; the remote's bytes hash to {hashlib.md5(corrupt).hexdigest()}) failed "
        "verification: its bytes were changed or truncated after it was pushed, so it was not used. Push the right "
        "bytes again from a cache that holds them (dvc push), or restore the object on the remote. "
        f"{where(s3_dvc_project, s3_dvc_project.head())}"
    ]


def test_a_failing_stage_names_it_with_its_exit_code_and_output(run_errors_dag, dvc_project):
    train = dvc_project.work / "src" / "train.py"
    train.write_text("import sys\nprint('training blew up: matrix is singular')\nsys.exit(3)\n")
    sha = dvc_project.commit_and_push("Break training", dvc_push=False)
    record, out = run_errors_dag(dvc_project)
    assert record.task_states["reproduce"] == "failed"
    assert error_lines(out, "DvcStageFailedError") == [
        "airflow.sdk.exceptions.AirflowFailException: DvcStageFailedError: failed to reproduce 'train': failed to "
        f"run: python src/train.py, exited with 3 {where(dvc_project, sha)}"
    ]
    assert logged(out, "info", "training blew up: matrix is singular", REPRO_LOGGER) == 1


def test_a_lock_held_by_another_process_is_retryable(run_errors_dag, dvc_project):
    """The stage starts a process that takes DVC's repository lock and keeps it after the stage
    returns, so DVC cannot take it back to record the stage: a real lock conflict."""
    train = dvc_project.work / "src" / "train.py"
    train.write_text(
        "import subprocess, sys, time\n"
        "holder = subprocess.Popen([sys.executable, '-c', 'import time; from dvc.repo import Repo; "
        'r = Repo("."); r.lock.lock(); print("holding", flush=True); time.sleep(30)\'], stdout=subprocess.PIPE)\n'
        "holder.stdout.readline()\n"
    )
    sha = dvc_project.commit_and_push("A stage that leaves the lock taken", dvc_push=False)
    record, out = run_errors_dag(dvc_project)
    assert record.task_states["reproduce"] in ("failed", "up_for_retry")
    assert raised_lines(out, "DvcLockError") == [
        "airflow_provider_mlci.exceptions.DvcLockError: failed to reproduce 'train': Unable to acquire lock. Most "
        "likely another DVC process is running or was terminated abruptly. Check the page "
        "<https://dvc.org/doc/user-guide/troubleshooting#lock-issue> for other possible reasons and to learn how to "
        f"resolve this. {where(dvc_project, sha)}"
    ]
    assert error_lines(out, "DvcLockError") == [], "a lock conflict must stay retryable"


def test_a_stale_lock_fails_the_sync_check_listing_what_changed(run_errors_dag, dvc_project):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Reproduce and commit")
    params = dvc_project.work / "params.yaml"
    params.write_text(params.read_text().replace("epochs: 150", "epochs: 10"))
    evaluate = dvc_project.work / "src" / "evaluate.py"
    evaluate.write_text(evaluate.read_text() + "\n# changed\n")
    sha = dvc_project.commit_and_push("Change params and code, forget dvc repro", dvc_push=False)
    record, out = run_errors_dag(dvc_project, task="sync_check")
    assert record.task_states["sync_check"] == "failed"
    assert error_lines(out, "DvcOutOfSyncError") == [
        "\n".join(
            [
                f"airflow.sdk.exceptions.AirflowFailException: DvcOutOfSyncError: dvc.lock at main ({sha[:12]}) "
                "is out of sync:",
                "  stage train:",
                "    changed deps: params.yaml:train (modified)",
                "  stage evaluate:",
                "    changed deps: src/evaluate.py (modified)",
            ]
        )
    ]


def test_a_target_that_could_be_an_option_is_refused_before_any_work(run_errors_dag, dvc_project, worker_cache):
    record, out = run_errors_dag(dvc_project, conf={"targets": ["--force"]})
    assert record.task_states["reproduce"] == "failed"
    assert error_lines(out, "MlciConfigError") == [
        "airflow.sdk.exceptions.AirflowFailException: MlciConfigError: '--force' is not a valid DVC target (a stage "
        "name or a path inside the repository)."
    ]
    assert not any((worker_cache / "mirrors").glob("*.git")), "the repository was fetched before the check"
