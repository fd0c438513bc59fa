from __future__ import annotations

import re
import threading
import time

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_mlci.core.runtime.process import CommandStoppedError
from airflow_provider_mlci.exceptions import DvcLockError, GitRevisionNotFoundError
from airflow_provider_mlci.operators.base import airflow_failures
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.testing.procs import wait_dead


def test_the_constructor_only_stores(tmp_path):
    cache = tmp_path / "never-created"
    op = DvcReproOperator(task_id="t", rev="v1", targets="train", dvc_conn_id="absent", cache_dir=str(cache))
    assert not cache.exists()
    assert op.targets == "train"
    assert op.rev == "v1"
    assert set(op.template_fields) == {"rev", "targets", "commit_to", "commit_message", "ec2"}


def test_a_compute_backend_is_checked_before_any_work():
    from airflow_provider_mlci.config import Ec2Compute
    from airflow_provider_mlci.exceptions import MlciConfigError

    with pytest.raises(MlciConfigError, match=re.escape("compute='gpu' is not one of 'local', 'ec2'")):
        DvcReproOperator(task_id="t", dvc_conn_id="absent", compute="gpu")
    for compute in ("ec2", Ec2Compute()):
        op = DvcReproOperator(task_id="t", dvc_conn_id="absent", compute=compute)
        with pytest.raises(MlciConfigError, match=re.escape("compute=Ec2Compute(...) needs instance_task_id")):
            op.check_arguments()


def test_deterministic_errors_are_not_retried_and_transient_ones_are():
    expected = "GitRevisionNotFoundError: Revision 'x'"
    with pytest.raises(AirflowFailException, match=expected) as info, airflow_failures():
        raise GitRevisionNotFoundError("Revision 'x' does not exist")
    assert isinstance(info.value.__cause__, GitRevisionNotFoundError)
    with pytest.raises(DvcLockError), airflow_failures():
        raise DvcLockError("lock held")


def test_on_kill_before_execute_is_harmless():
    op = DvcReproOperator(task_id="t", dvc_conn_id="absent")
    op.on_kill()
    assert op._runner is None  # nothing was started to stop
    assert "hook" not in op.__dict__  # and no connection was looked up


def test_on_kill_stops_the_running_stage(dvc_project, dvc_connection, worker_cache, tmp_path):
    pidfile = tmp_path / "stage.pid"
    train = dvc_project.work / "src" / "train.py"
    train.write_text(f"import os, time\nopen({str(pidfile)!r}, 'w').write(str(os.getpid()))\ntime.sleep(300)\n")
    dvc_project.commit_and_push("A training that hangs", dvc_push=False)
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    op = DvcReproOperator(task_id="repro", rev="main", cache_dir=str(worker_cache))
    errors: list[BaseException] = []

    def _execute():
        try:
            op.execute({})
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=_execute)
    thread.start()
    deadline = time.monotonic() + 120
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pidfile.exists(), "the stage never started"
    stage_pid = int(pidfile.read_text())
    op.on_kill()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1
    assert isinstance(errors[0], CommandStoppedError)
    assert wait_dead(stage_pid), "the stage command outlived on_kill"
    assert list((worker_cache / "checkouts").iterdir()) == []


def test_every_operator_only_stores_and_templates_its_revision(tmp_path):
    from airflow_provider_mlci.operators.dvc import (
        DvcCheckoutOperator,
        DvcCommitOperator,
        DvcMetricsOperator,
        DvcPipelineResolveOperator,
        DvcPipelineSyncCheckOperator,
        DvcPushOperator,
        DvcWillItRunBranchOperator,
        DvcWillItRunOperator,
    )

    cache = tmp_path / "never"
    ops = [
        DvcCheckoutOperator(task_id="a", cache_dir=str(cache)),
        DvcCommitOperator(task_id="b", rev="x", handoff_from=["a"], branch="main", cache_dir=str(cache)),
        DvcMetricsOperator(task_id="c", baseline_rev="main~1", cache_dir=str(cache)),
        DvcPipelineResolveOperator(task_id="d", expected_stages={}, cache_dir=str(cache)),
        DvcPipelineSyncCheckOperator(task_id="e", cache_dir=str(cache)),
        DvcPushOperator(task_id="f", cache_dir=str(cache)),
        DvcWillItRunOperator(task_id="g", cache_dir=str(cache)),
        DvcWillItRunBranchOperator(task_id="h", if_run="x", if_nothing="y", cache_dir=str(cache)),
    ]
    assert not cache.exists()
    for op in ops:
        assert "rev" in op.template_fields
        op.on_kill()  # nothing running: nothing to do


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"targets": ["-f"]}, "not a valid DVC target"),
        ({"commit_to": "main", "push": False}, "commit_to needs push=True"),
        ({"commit_to": "bad name", "commit_author": "nobody"}, "Name <email>"),
    ],
)
def test_repro_arguments_are_checked_before_any_work(kwargs, message):
    from airflow_provider_mlci.exceptions import MlciConfigError

    op = DvcReproOperator(task_id="t", **kwargs)
    with pytest.raises(MlciConfigError, match=message):
        op.check_arguments()
