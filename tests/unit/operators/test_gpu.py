"""GPU lifecycle operators against moto's EC2 server.

The operators run outside a DAG run here: :class:`TaskInstanceStandIn` (named as such) gives
them the task instance's identity and an XCom store. ``tests/integration/test_gpu_lifecycle.py``
runs them in real DAG runs.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException, TaskDeferred
from botocore.exceptions import WaiterError

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.exceptions import GpuProvisioningError, MlciConfigError
from airflow_provider_mlci.links.gpu import GPU_INSTANCE_LINK_KEY, console_url
from airflow_provider_mlci.operators.gpu import (
    GpuCreateInstanceOperator,
    GpuReaperOperator,
    GpuTerminateInstanceOperator,
)
from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger
from tests.helpers.moto_ec2 import (
    AMI,
    FAKE_ACCESS_KEY,
    FAKE_SECRET_KEY,
    ClientTokenStub,
    ErrorInjection,
    live_instances,
    state,
    user_data_of,
)
from tests.helpers.task_instance import TaskInstanceStandIn

SPEC = {"gpu": "t4", "ami": AMI, "max_lifetime": 3600}


def create(**kwargs: Any) -> GpuCreateInstanceOperator:
    args = {"task_id": "launch", "spec": SPEC, "aws_conn_id": "aws_moto", "poll_interval": 0.1, "timeout": 10}
    return GpuCreateInstanceOperator(**{**args, **kwargs})


# ---------------------------------------------------------------------------------- construction


def test_the_constructors_only_store():
    op = create(job_base="s3://{{ params.bucket }}/jobs")
    assert op.spec == GpuInstanceSpec.from_mapping(SPEC)
    assert op.job_base == "s3://{{ params.bucket }}/jobs"
    assert tuple(op.template_fields) == ("job_base", "region_name", "group")
    assert "hook" not in op.__dict__
    term = GpuTerminateInstanceOperator(task_id="terminate", create_task_id="launch", aws_conn_id="absent")
    assert tuple(term.template_fields) == ("create_task_id", "instance_ids", "region_name")
    reaper = GpuReaperOperator(task_id="reap", aws_conn_id="absent")
    assert reaper.dry_run is True
    assert reaper.fail_on_leaks is True
    assert [link.name for link in GpuCreateInstanceOperator.operator_extra_links] == ["GPU instance"]


def test_a_bad_spec_fails_when_the_dag_is_parsed():
    with pytest.raises(MlciConfigError, match="'cloud_type'"):
        create(spec={"cloud_type": "g4dn.xlarge"})


def test_on_kill_before_execute_is_harmless():
    op = create(aws_conn_id="absent")
    op.on_kill()
    assert op._instance_ids == []  # nothing to terminate
    assert "hook" not in op.__dict__  # and no AWS client was made for it


# ---------------------------------------------------------------------------------- create


def test_create_launches_pushes_the_instance_and_waits_for_it(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("launch")
    op = create(deferrable=False, job_base="s3://jobs/base")
    result = op.execute({"ti": ti})
    try:
        assert ti.xcom["launch", "instance"] == result
        # ec2.run_key("gpu_dag", "manual__1", "launch", -1), pinned in tests/unit/core/compute/test_ec2.py
        assert result["mailbox"] == "s3://jobs/base/cdcc6ed58fe1bf2c1f99b203a272dbb9"
        assert state(ec2c, result["instance_id"]) == "running"
        assert ti.xcom["launch", GPU_INSTANCE_LINK_KEY] == {
            "instance_id": result["instance_id"],
            "region_name": "us-east-1",
        }
        assert console_url(result["instance_id"], "us-east-1") == (
            "https://console.aws.amazon.com/ec2/home?region=us-east-1#InstanceDetails:instanceId="
            + result["instance_id"]
        )
    finally:
        ec2c.terminate_instances(InstanceIds=[result["instance_id"]])


def test_a_retry_adopts_the_instance_of_the_first_try(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("launch", run_id="retry_run")
    first = create(deferrable=False).execute({"ti": ti})
    second = create(deferrable=False).execute({"ti": ti})  # the same task instance, its next try
    try:
        assert second["instance_id"] == first["instance_id"]
        assert second["adopted"] is True
        assert len(live_instances(ec2c, **{"mlci:run_key": first["run_key"]})) == 1
    finally:
        ec2c.terminate_instances(InstanceIds=[first["instance_id"]])


def test_a_retry_30_s_later_sends_the_same_run_instances_call_and_gets_the_same_instance(
    aws_moto_connection, moto_endpoint, ec2c, monkeypatch
):
    """Try 1's RunInstances starts an instance but its answer is lost; try 2 comes 30 s later (a
    fake clock) while DescribeInstances does not list the instance yet, so the tag lookup cannot
    find it and only the ClientToken can. Stub (ClientTokenStub, named as such): moto has no
    ClientToken idempotency nor EC2's listing delay; the instances themselves are moto's.
    (test_ec2.py's Stubber test of the token sends one user data twice, so it missed this.)"""
    import datetime as dt

    from botocore.exceptions import ConnectionClosedError

    from airflow_provider_mlci.hooks import gpu as gpu_hook

    clock = [dt.datetime(2026, 5, 1, 12, 0, 0, 250_000, tzinfo=dt.UTC)]

    class FakeClock(dt.datetime):
        @classmethod
        def now(cls, tz=None):
            return clock[0].astimezone(tz) if tz else clock[0].replace(tzinfo=None)

    monkeypatch.setattr(gpu_hook, "datetime", FakeClock)
    stub = ClientTokenStub(moto_endpoint)
    stub.lagging = True
    ti = TaskInstanceStandIn("launch", run_id="lost_answer_run")
    # ec2.run_key("gpu_dag", "lost_answer_run", "launch", -1), derived as in test_ec2.py:
    # printf 'gpu_dag\x1flost_answer_run\x1flaunch\x1f-1' | sha256sum | cut -c1-32
    run_key = "467a46fb91af83b35954d364c7398085"
    try:
        first_try = create(wait_for_running=False, job_base="s3://jobs/base")
        stub.attach(first_try.hook.conn)
        stub.lose_next_response()
        with pytest.raises(ConnectionClosedError):
            first_try.execute({"ti": ti})
        clock[0] += dt.timedelta(seconds=30)
        second_try = create(wait_for_running=False, job_base="s3://jobs/base")
        stub.attach(second_try.hook.conn)
        instance = second_try.execute({"ti": ti})

        first, second = stub.calls[0], stub.calls[1]
        for name in ("ClientToken", "UserData", "TagSpecification.1.Tag.1.Key", "MetadataOptions.HttpTokens"):
            assert name in first
        assert first == second  # byte for byte: token, boot script, tags, everything
        assert len(stub.calls) == 2
        started = live_instances(ec2c, **{"mlci:run_key": run_key})
        assert [i["InstanceId"] for i in started] == [instance["instance_id"]]
        launched = started[0]["LaunchTime"].astimezone(dt.UTC).replace(microsecond=0)
        assert instance["expires_at"] == (launched + dt.timedelta(seconds=3600)).isoformat().replace("+00:00", "Z")
    finally:
        stub.remove()
        left = [i["InstanceId"] for i in live_instances(ec2c, **{"mlci:run_key": run_key})]
        if left:
            ec2c.terminate_instances(InstanceIds=left)


def test_a_deferrable_create_pushes_the_instance_then_defers(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("launch")
    op = create()
    with pytest.raises(TaskDeferred) as info:
        op.execute({"ti": ti})
    instance = ti.xcom["launch", "instance"]
    try:
        deferred = info.value
        assert isinstance(deferred.trigger, GpuInstanceStateTrigger)
        assert deferred.trigger.instance_id == instance["instance_id"]
        assert deferred.trigger.target_state == "running"
        assert deferred.trigger.timeout == 10
        assert deferred.method_name == "execute_complete"
        event = {"status": "success", "instance_id": instance["instance_id"], "state": "running", "message": ""}
        assert op.execute_complete({"ti": ti}, event) == instance  # the instance comes back from XCom
        assert state(ec2c, instance["instance_id"]) == "running"
    finally:
        ec2c.terminate_instances(InstanceIds=[instance["instance_id"]])


def test_a_failed_deferred_wait_terminates_the_instance_and_fails_for_a_retry(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("launch")
    op = create()
    with pytest.raises(TaskDeferred):
        op.execute({"ti": ti})
    instance = ti.xcom["launch", "instance"]
    event = {"status": "timeout", "instance_id": instance["instance_id"], "state": "pending", "message": "too slow"}
    with pytest.raises(GpuProvisioningError, match=re.escape("did not become running: too slow. It was terminated")):
        op.execute_complete({"ti": ti}, event)
    assert state(ec2c, instance["instance_id"]) in ("shutting-down", "terminated")


def test_a_waiter_failure_terminates_the_instance_and_re_raises(aws_moto_connection, ec2c):
    """Injection: DescribeInstances is refused once the instance exists (the missing-permission case)."""
    ti = TaskInstanceStandIn("launch", run_id="waiter_run")
    op = create(deferrable=False)
    launched = ErrorInjection(op.hook.conn, lambda call: None)
    terminations = ErrorInjection(op.hook.conn, lambda call: None, operation="TerminateInstances")
    refused = ErrorInjection(
        op.hook.conn, lambda call: "UnauthorizedOperation" if launched.calls else None, operation="DescribeInstances"
    )
    try:
        with pytest.raises(WaiterError):
            op.execute({"ti": ti})
    finally:
        for injection in (launched, terminations, refused):
            injection.remove()
    instance = ti.xcom["launch", "instance"]  # pushed before the wait
    assert refused.refused, "the wait never looked"
    assert len(terminations.calls) == 1
    assert state(ec2c, instance["instance_id"]) in ("shutting-down", "terminated")


def test_a_launch_task_that_fails_after_the_launch_terminates_its_instance(aws_moto_connection, ec2c):
    """A teardown runs only after its setup succeeded: the launch task ends what it started."""

    class RefusingStore(TaskInstanceStandIn):
        def xcom_push(self, key: str, value: Any) -> None:
            raise OSError("the XCom backend is down")

    ti = RefusingStore("launch", run_id="xcom_down_run")
    with pytest.raises(OSError, match="XCom backend is down"):
        create().execute({"ti": ti})
    ours = live_instances(ec2c, **{"mlci:run_id": "xcom_down_run"})
    assert ours == [], [i["InstanceId"] for i in ours]


def test_a_resumed_launch_without_its_xcom_terminates_the_instance_the_event_names(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("launch", run_id="xcom_lost_run")
    op = create()
    with pytest.raises(TaskDeferred):
        op.execute({"ti": ti})
    instance_id = ti.xcom.pop(("launch", "instance"))["instance_id"]
    event = {"status": "success", "instance_id": instance_id, "state": "running", "message": ""}
    with pytest.raises(GpuProvisioningError, match=f"without the XCom .* {instance_id} was terminated"):
        op.execute_complete({"ti": ti}, event)
    assert state(ec2c, instance_id) in ("shutting-down", "terminated")


def test_on_kill_terminates_once_without_waiting(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("launch", run_id="kill_run")
    op = create(wait_for_running=False)
    instance = op.execute({"ti": ti})
    terminations = ErrorInjection(op.hook.conn, lambda call: None, operation="TerminateInstances")
    describes = ErrorInjection(op.hook.conn, lambda call: None, operation="DescribeInstances")
    try:
        op.on_kill()
        op.on_kill()
    finally:
        terminations.remove()
        describes.remove()
    assert len(terminations.calls) == 1
    assert describes.calls == []  # no waiting
    assert state(ec2c, instance["instance_id"]) in ("shutting-down", "terminated")


def test_no_credential_reaches_user_data_xcom_rendered_fields_or_logs(monkeypatch, moto_endpoint, ec2c, capfd, caplog):
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    value = {"conn_type": "aws", "login": FAKE_ACCESS_KEY, "password": FAKE_SECRET_KEY, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_SECRETS", json.dumps(value))
    caplog.set_level("INFO")  # the task log's level (botocore's DEBUG lines carry the access key id in headers)
    ti = TaskInstanceStandIn("launch", run_id="secret_run")
    op = create(aws_conn_id="aws_secrets", deferrable=False, job_base="s3://jobs/secret")
    instance = op.execute({"ti": ti})
    try:
        assert op.hook.get_credentials().secret_key == FAKE_SECRET_KEY  # they were used
        seen = "\n".join(
            [
                user_data_of(ec2c, instance["instance_id"]),
                json.dumps({f"{k[0]}/{k[1]}": v for k, v in ti.xcom.items()}),
                json.dumps({name: getattr(op, name) for name in op.template_fields}),
                caplog.text,
                *capfd.readouterr(),
            ]
        )
        assert FAKE_ACCESS_KEY not in seen
        assert FAKE_SECRET_KEY not in seen
    finally:
        ec2c.terminate_instances(InstanceIds=[instance["instance_id"]])


# ---------------------------------------------------------------------------------- terminate


def test_terminate_ends_the_xcom_instance_and_every_instance_of_the_group(aws_moto_connection, ec2c):
    ti = TaskInstanceStandIn("gpu.launch", run_id="teardown_run")
    instance = create(task_id="gpu.launch", wait_for_running=False).execute({"ti": ti})
    hook = create().hook
    # A replacement launched by the work task after a spot reclaim: same group, other run key.
    replacement = hook.launch_replacement(instance, dag_id="gpu_dag", run_id="teardown_run", task_id="gpu.train")
    # Another setup's instance in the same run, and the same setup in another run: not ours to end.
    other_group = create(task_id="other.launch", wait_for_running=False).execute({"ti": ti.as_task("other.launch")})
    other_run = create(task_id="gpu.launch", wait_for_running=False).execute(
        {"ti": TaskInstanceStandIn("gpu.launch", run_id="another_run")}
    )
    try:
        op = GpuTerminateInstanceOperator(task_id="gpu.terminate", create_task_id="gpu.launch", aws_conn_id="aws_moto")
        ended = op.execute({"ti": ti.as_task("gpu.terminate")})
        assert sorted(ended) == sorted([instance["instance_id"], replacement["instance_id"]])
        for instance_id in ended:
            assert state(ec2c, instance_id) in ("shutting-down", "terminated")
        assert state(ec2c, other_group["instance_id"]) == "running"
        assert state(ec2c, other_run["instance_id"]) == "running"
        again = GpuTerminateInstanceOperator(
            task_id="gpu.terminate", create_task_id="gpu.launch", aws_conn_id="aws_moto"
        )
        assert again.execute({"ti": ti.as_task("gpu.terminate")}) == [instance["instance_id"]]  # idempotent
    finally:
        ec2c.terminate_instances(InstanceIds=[other_group["instance_id"], other_run["instance_id"]])


def test_terminate_finds_an_instance_whose_id_never_reached_xcom(aws_moto_connection, ec2c):
    """The worker was SIGKILLed right after RunInstances: no XCom, only the tags."""
    hook = create().hook
    instance = hook.launch_for_task(
        GpuInstanceSpec.from_mapping(SPEC), dag_id="gpu_dag", run_id="killed_run", task_id="launch", job_base=""
    )
    ti = TaskInstanceStandIn("terminate", run_id="killed_run")
    op = GpuTerminateInstanceOperator(
        task_id="terminate",
        create_task_id="launch",
        aws_conn_id="aws_moto",
        wait_for_completion=True,
        poll_interval=0.1,
    )
    assert op.execute({"ti": ti}) == [instance["instance_id"]]
    assert state(ec2c, instance["instance_id"]) == "terminated"


def test_terminate_with_nothing_to_do_succeeds(aws_moto_connection):
    op = GpuTerminateInstanceOperator(task_id="terminate", create_task_id="launch", aws_conn_id="aws_moto")
    assert op.execute({"ti": TaskInstanceStandIn("terminate", run_id="empty_run")}) == []
    op = GpuTerminateInstanceOperator(task_id="t", instance_ids="i-0123456789abcdef0", aws_conn_id="aws_moto")
    assert op.execute({"ti": TaskInstanceStandIn("t")}) == ["i-0123456789abcdef0"]


# ---------------------------------------------------------------------------------- reaper


def test_the_reaper_reports_in_a_dry_run_and_fails_loudly(aws_moto_connection, ec2c):
    from datetime import UTC, datetime, timedelta

    hook = create().hook
    spec = GpuInstanceSpec.from_mapping(SPEC)
    past = datetime.now(UTC) - timedelta(hours=3)
    expired = hook.launch_for_task(spec, dag_id="gpu_dag", run_id="old_run", task_id="launch", job_base="", now=past)
    fresh = hook.launch_for_task(spec, dag_id="gpu_dag", run_id="new_run", task_id="launch", job_base="")
    try:
        ti = TaskInstanceStandIn("reap", dag_id="reaper")
        dry = GpuReaperOperator(task_id="reap", aws_conn_id="aws_moto")
        with pytest.raises(AirflowFailException, match="dry run: nothing was terminated") as info:
            dry.execute({"ti": ti})
        assert expired["instance_id"] in str(info.value)
        assert "has passed" in str(info.value)
        assert fresh["instance_id"] not in str(info.value)  # its run's state is unknown here: left to its deadline
        assert [leak["instance_id"] for leak in ti.xcom["reap", "report"]["leaks"]] == [expired["instance_id"]]
        assert state(ec2c, expired["instance_id"]) == "running"

        quiet = GpuReaperOperator(task_id="reap", aws_conn_id="aws_moto", dry_run="False", fail_on_leaks=False)
        report = quiet.execute({"ti": ti})
        assert report["terminated"] == [expired["instance_id"]]
        assert report["dry_run"] is False
        assert state(ec2c, expired["instance_id"]) in ("shutting-down", "terminated")
        assert state(ec2c, fresh["instance_id"]) == "running"
        assert GpuReaperOperator(task_id="reap", aws_conn_id="aws_moto").execute({"ti": ti})["leaks"] == []
    finally:
        ec2c.terminate_instances(InstanceIds=[expired["instance_id"], fresh["instance_id"]])


def test_a_dry_run_flag_that_is_no_boolean_is_refused(aws_moto_connection):
    with pytest.raises(AirflowFailException, match="dry_run='maybe'"):
        GpuReaperOperator(task_id="reap", aws_conn_id="aws_moto", dry_run="maybe").execute(
            {"ti": TaskInstanceStandIn("reap")}
        )
