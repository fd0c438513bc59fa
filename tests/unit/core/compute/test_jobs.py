"""The S3 mailbox protocol, against moto's S3 server."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import boto3
import pytest

from airflow_provider_mlci.core.compute.jobs import (
    JobSpec,
    JobStatus,
    JobStore,
    job_id_for,
    make_bundle,
    parse_s3_url,
)
from airflow_provider_mlci.exceptions import MlciConfigError, RemoteJobError, WorkspaceError


@pytest.fixture
def s3(moto_endpoint):
    return boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")


@pytest.fixture
def store(s3, s3_bucket) -> JobStore:
    return JobStore(s3, f"s3://{s3_bucket}/mlci/jobs/run-key-1")


def spec(job_id: str, created: float = 0.0, **kwargs) -> JobSpec:
    return JobSpec(
        job_id=job_id,
        sha="a" * 40,
        rev="main",
        repo="https://example.invalid/repo.git",
        request={"targets": ["train"], "force": False, "single_stage": False, "pull": True, "push": True},
        dvc={"url": "s3://bucket/store", "endpoint_url": "http://127.0.0.1:1"},
        created=created,
        **kwargs,
    )


@pytest.fixture
def bundle(tmp_path) -> Path:
    path = tmp_path / "bundle.git"
    path.write_bytes(b"# v2 git bundle\nnot really one\n")
    return path


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("s3://bucket/prefix/key", ("bucket", "prefix/key")),
        ("s3://bucket/prefix/", ("bucket", "prefix")),
        ("s3://my.bucket-1", ("my.bucket-1", "")),
    ],
)
def test_parse_s3_url(url, expected):
    assert parse_s3_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "https://bucket/x",
        "bucket/x",
        "s3://",
        "s3://UPPER/x",
        "s3://a/x",
        "s3://bucket/a/../b",
        "s3://bucket/a//b",
        None,
    ],
)
def test_a_bad_s3_url_is_a_config_error_naming_it(url):
    with pytest.raises(MlciConfigError) as info:
        parse_s3_url(url)
    assert repr(url) in str(info.value)


def test_a_store_on_a_bad_mailbox_is_refused_without_io():
    with pytest.raises(MlciConfigError, match="ftp://x"):
        JobStore(object(), "ftp://x")


def test_job_ids_sort_by_attempt():
    ids = [job_id_for("abc123", n) for n in (10, 2, 1)]
    assert sorted(ids) == ["abc123-001", "abc123-002", "abc123-010"]
    with pytest.raises(MlciConfigError):
        job_id_for("abc", 0)
    with pytest.raises(MlciConfigError):
        job_id_for("a/b", 1)


def test_spec_round_trips_through_json():
    original = spec("k-001", created=12.5, heartbeat_interval=2.0)
    assert JobSpec.from_json({**original.to_json(), "from_a_newer_worker": 1}) == original
    with pytest.raises(MlciConfigError, match="sha"):
        JobSpec.from_json({"job_id": "x", "rev": "main", "repo": "r"})


def test_submit_claim_status_heartbeat_logs_result(store, bundle, s3, s3_bucket, tmp_path):
    assert store.claim_next() is None
    assert store.status("k-001") is None
    store.submit(spec("k-001", created=time.time()), bundle)
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=s3_bucket)["Contents"]}
    assert keys == {
        "mlci/jobs/run-key-1/inbox/k-001.json",
        "mlci/jobs/run-key-1/jobs/k-001/bundle.git",
        "mlci/jobs/run-key-1/jobs/k-001/job.json",
    }
    assert store.jobs() == ["k-001"]
    assert store.job("k-001") == spec("k-001", created=store.job("k-001").created)

    claimed = store.claim_next()
    assert claimed is not None
    assert claimed.job_id == "k-001"
    status = store.status("k-001")
    assert status.state == "claimed"
    assert status.heartbeat is None
    assert not status.finished
    assert store.claim_next() is None, "a claimed job is not handed out twice"

    out = store.download_bundle("k-001", tmp_path / "dl" / "bundle.git")
    assert out.read_bytes() == bundle.read_bytes()

    store.set_status("k-001", "running", "on the instance", host="i-1")
    store.beat("k-001")
    status = store.status("k-001")
    assert status.state == "running"
    assert status.extra == {"host": "i-1"}
    assert status.heartbeat == pytest.approx(time.time(), abs=5)

    assert store.append_log("k-001", "") == 0
    assert store.append_log("k-001", "line 1\n") == 1
    assert store.append_log("k-001", "line 2\nline 3\n") == 2
    assert store.log_chunks("k-001") == [(1, "line 1\n"), (2, "line 2\nline 3\n")]
    # A reader resumes after the last chunk it saw.
    assert store.log_chunks("k-001", start=2) == [(2, "line 2\nline 3\n")]
    assert store.log_chunks("k-001", start=3) == []
    # Another writer (a restarted agent) goes on numbering after what is there.
    assert JobStore(s3, store.mailbox).append_log("k-001", "line 4\n") == 3

    assert store.result("k-001") is None
    store.put_result("k-001", {"stages": {"train": "ran"}, "metrics": {}})
    store.set_status("k-001", "succeeded", "done")
    assert store.result("k-001") == {"stages": {"train": "ran"}, "metrics": {}}
    assert store.status("k-001").finished


def test_many_log_chunks_sort_by_number(store):
    for n in range(1, 13):
        store.append_log("k-001", f"chunk {n}\n")
    chunks = store.log_chunks("k-001", start=9)
    assert [n for n, _ in chunks] == [9, 10, 11, 12]
    assert store.log_chunk_numbers("k-001") == list(range(1, 13))


def test_the_inbox_hands_out_the_oldest_job_first(store, bundle):
    now = time.time()
    store.submit(spec("b-001", created=now + 2), bundle)
    store.submit(spec("c-001", created=now), bundle)
    store.submit(spec("a-001", created=now + 1), bundle)
    assert store.jobs() == ["a-001", "b-001", "c-001"]
    assert store.jobs(prefix="b-") == ["b-001"]
    order = [store.claim_next().job_id for _ in range(3)]
    assert order == ["c-001", "a-001", "b-001"]
    assert store.claim_next() is None


def test_a_job_is_invisible_until_its_inbox_entry_is_written(store, bundle, s3):
    job = spec("k-001")
    s3.upload_file(str(bundle), store.bucket, store.key("jobs", "k-001", "bundle.git"))
    s3.put_object(Bucket=store.bucket, Key=store.key("jobs", "k-001", "job.json"), Body=b"{}")
    assert store.jobs() == []
    assert store.claim_next() is None
    store.submit(job, bundle)
    assert store.claim_next() == job


def test_agent_state(store):
    assert store.agent() is None
    store.set_agent("busy", job_id="k-001")
    agent = store.agent()
    assert agent["state"] == "busy"
    assert agent["job_id"] == "k-001"
    assert agent["time"] == pytest.approx(time.time(), abs=5)
    with pytest.raises(MlciConfigError):
        store.set_agent("sleeping")
    with pytest.raises(MlciConfigError):
        store.set_status("k-001", "done")


def test_status_shape_and_finished():
    assert JobStatus(state="interrupted").finished
    assert not JobStatus(state="running").finished


def test_a_missing_bucket_is_a_typed_error_naming_it(s3, bundle):
    store = JobStore(s3, "s3://no-such-bucket-mlci/x")
    with pytest.raises(RemoteJobError, match="no-such-bucket-mlci"):
        store.submit(spec("k-001"), bundle)
    with pytest.raises(RemoteJobError, match="no-such-bucket-mlci"):
        store.status("k-001")


def test_make_bundle_clones_at_the_commit(dvc_project, tmp_path):
    sha = dvc_project.head()
    out = make_bundle(dvc_project.work, sha, tmp_path / "b" / "bundle.git")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(out), str(clone)], check=True)
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    assert head == sha
    with pytest.raises(WorkspaceError, match="not at the job's commit"):
        make_bundle(dvc_project.work, "b" * 40, tmp_path / "other.git")


def test_an_unreadable_job_fails_instead_of_blocking_the_inbox(store, bundle, s3):
    now = time.time()
    store.submit(spec("bad-001", created=now), bundle)
    store.submit(spec("good-001", created=now + 1), bundle)
    s3.put_object(Bucket=store.bucket, Key=store.key("jobs", "bad-001", "job.json"), Body=b'{"job_id": "bad-001"}')
    assert store.claim_next().job_id == "good-001"
    status = store.status("bad-001")
    assert status.state == "failed"
    assert status.extra["error_type"] == "MlciConfigError"
    assert "sha" in status.message


@pytest.mark.parametrize(
    ("progress", "message"),
    [
        ({"file": "../outside.tsv", "interval": 1}, r"progress file '../outside.tsv' must be a path inside"),
        ({"file": "/etc/passwd", "interval": 1}, r"progress file '/etc/passwd' must be a path inside"),
        ({"file": "dvclive/plots/metrics/acc.tsv", "interval": 0}, r"progress interval must be positive"),
    ],
)
def test_a_progress_file_outside_the_repository_or_no_interval_is_refused(progress, message):
    with pytest.raises(MlciConfigError, match=message):
        spec("job-001", progress=progress)


def test_the_progress_table_round_trips_through_the_mailbox(store):
    assert store.progress("job-001") is None
    store.put_progress("job-001", b"step\taccuracy\n0\t0.5\n")
    assert store.progress("job-001") == "step\taccuracy\n0\t0.5\n"
    progress = {"file": "dvclive/plots/metrics/accuracy.tsv", "interval": 2.0}
    assert JobSpec.from_json(spec("job-001", progress=progress).to_json()).progress == progress
