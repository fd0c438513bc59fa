"""A job's life on an instance, worker side: submit or resume, its log, its outcome (moto's S3 server)."""

from __future__ import annotations

import logging

import boto3
import pytest

from airflow_provider_mlci.core.compute.jobs import JobSpec, JobStore
from airflow_provider_mlci.core.compute.remote import RemoteJob, copy_job_log, job_outcome, submit_or_resume
from airflow_provider_mlci.exceptions import DvcStageFailedError, RemoteJobFailedError, RemoteJobInterruptedError

TASK_KEY = "dag.run-1.train.-1"
log = logging.getLogger("test-remote")


@pytest.fixture
def store(moto_endpoint, s3_bucket) -> JobStore:
    client = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    return JobStore(client, f"s3://{s3_bucket}/mlci/jobs/{TASK_KEY}")


@pytest.fixture
def submit(store, tmp_path):
    bundle = tmp_path / "bundle.git"
    bundle.write_bytes(b"not a real bundle\n")
    made: list[str] = []

    def submit(job_id: str) -> JobSpec:
        made.append(job_id)
        job = JobSpec(job_id=job_id, sha="b" * 40, rev="main", repo="r", request={}, dvc={}, created=1.0)
        store.submit(job, bundle)
        return job

    submit.made = made
    return submit


def test_a_job_round_trips_through_its_event_and_an_older_event_keeps_its_extra_values():
    job = RemoteJob(job_id="j-001", mailbox="s3://b/m", instance_id="i-1", sha="c" * 40, extra={"baseline": "d"})
    assert RemoteJob.from_json(job.to_json()) == job
    # what a task deferred by the previous release carries: the operator's values beside the job's
    old = {"job_id": "j-001", "mailbox": "s3://b/m", "instance_id": "i-1", "region": None, "baseline": "d"}
    assert RemoteJob.from_json(old).extra == {"baseline": "d"}
    assert job.compute_record() == {"backend": "ec2", "instance_id": "i-1", "job_id": "j-001"}


def test_a_first_try_submits_a_retry_waits_for_a_live_job_and_replaces_a_failed_one(store, submit):
    first, spec = submit_or_resume(store, TASK_KEY, submit, heartbeat_timeout=60, log=log)
    assert submit.made == [first]
    assert first.endswith("-001")
    assert spec.sha == "b" * 40

    store.set_status(first, "running")
    store.beat(first)
    again, spec = submit_or_resume(store, TASK_KEY, submit, heartbeat_timeout=60, log=log)
    assert (again, submit.made) == (first, [first])  # the running job is waited for, not started twice
    assert spec is not None
    assert spec.job_id == first

    store.set_status(first, "failed", "stage failed")
    replaced, _ = submit_or_resume(store, TASK_KEY, submit, heartbeat_timeout=60, log=log)
    assert replaced.endswith("-002")
    assert submit.made == [first, replaced]


def test_the_log_is_copied_from_the_first_chunk_the_trigger_did_not(store, submit, caplog):
    job_id, _ = submit_or_resume(store, TASK_KEY, submit, heartbeat_timeout=60, log=log)
    for text in ("one\n", "two\nthree\n"):
        store.append_log(job_id, text)
    with caplog.at_level(logging.INFO, logger="test-remote"):
        copy_job_log(store, job_id, 2, log)  # chunks number from 1: the trigger copied chunk 1
    copied = [r.getMessage() for r in caplog.records if r.name == "test-remote"]
    assert copied == ["[instance] two", "[instance] three"]


def test_an_ended_job_gives_its_outcome_or_the_error_its_end_means(store, submit):
    job_id, _ = submit_or_resume(store, TASK_KEY, submit, heartbeat_timeout=60, log=log)
    job = RemoteJob(job_id=job_id, mailbox=store.mailbox, instance_id="i-9")
    with pytest.raises(RemoteJobFailedError, match=f"left no result.json \\[job {job_id} on instance i-9\\]"):
        job_outcome(store, job, {"status": "succeeded"})
    failed = {"status": "failed", "message": "stage train failed", "extra": {"error_type": "DvcStageFailedError"}}
    with pytest.raises(DvcStageFailedError, match="stage train failed"):
        job_outcome(store, job, failed)
    with pytest.raises(RemoteJobInterruptedError):
        job_outcome(store, job, {"status": "instance_gone"})
    store.put_result(job_id, {"stages": {"train": "ran"}, "metrics": {"m.json": {"acc": 0.9}}, "pushed": True})
    outcome = job_outcome(store, job, {"status": "succeeded"})
    assert (outcome.stages, outcome.pushed) == ({"train": "ran"}, True)
    assert outcome.metrics == {"m.json": {"acc": 0.9}}
