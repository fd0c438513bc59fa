from __future__ import annotations

import json

import pytest
import yaml

from airflow_provider_mlci.core.data.watch import DataFingerprint, fingerprint
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.exceptions import DvcFileError, DvcStageNotFoundError, MlciConfigError
from tests.helpers.demo_project import new_data


def test_tracked_data_is_fingerprinted_from_the_dvc_file_without_any_download(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    fp = fingerprint(access, ["data/raw.csv"], rev="main", cache_dir=str(worker_cache))
    md5 = yaml.safe_load((dvc_project.work / "data" / "raw.csv.dvc").read_text())["outs"][0]["md5"]
    assert fp.items == {"data/raw.csv": f"md5:{md5}"}
    assert fp.sha == dvc_project.head()
    assert not (worker_cache / "dvc" / "cache" / "files").exists(), "no data may be downloaded"
    same = fingerprint(access, ["data/raw.csv.dvc"], rev="main", cache_dir=str(worker_cache))
    assert same.items["data/raw.csv.dvc"] == fp.items["data/raw.csv"]


def test_a_touch_keeps_the_digest_and_a_change_does_not(dvc_project, worker_cache):
    access = RepoAccess.local(str(dvc_project.remote))
    before = fingerprint(access, ["data/raw.csv"], cache_dir=str(worker_cache))
    (dvc_project.work / "data" / "raw.csv").touch()
    dvc_project.dvc("add", "--quiet", "data/raw.csv")
    dvc_project.commit_and_push("Touch")
    touched = fingerprint(access, ["data/raw.csv"], cache_dir=str(worker_cache))
    assert touched.sha != before.sha
    assert touched.digest == before.digest
    new_data(dvc_project, seed=5, rows=300, commit=False)
    dvc_project.commit_and_push("New data")
    changed = fingerprint(access, ["data/raw.csv"], cache_dir=str(worker_cache))
    assert changed.digest != before.digest


def test_a_stage_output_is_fingerprinted_from_dvc_lock(dvc_project, worker_cache):
    dvc_project.dvc("repro", "--quiet")
    dvc_project.commit_and_push("Reproduce")
    lock = yaml.safe_load((dvc_project.work / "dvc.lock").read_text())
    model_md5 = lock["stages"]["train"]["outs"][0]["md5"]
    fp = fingerprint(RepoAccess.local(str(dvc_project.remote)), ["models/model.pkl"], cache_dir=str(worker_cache))
    assert fp.items == {"models/model.pkl": f"md5:{model_md5}"}


def test_untracked_targets_are_named(dvc_project, worker_cache):
    with pytest.raises(DvcStageNotFoundError, match=r"src/train\.py"):
        fingerprint(RepoAccess.local(str(dvc_project.remote)), ["src/train.py"], cache_dir=str(worker_cache))
    with pytest.raises(MlciConfigError):
        fingerprint(RepoAccess.local(str(dvc_project.remote)), ["../etc/passwd"], cache_dir=str(worker_cache))
    with pytest.raises(MlciConfigError):
        fingerprint(RepoAccess.local(str(dvc_project.remote)), [], cache_dir=str(worker_cache))


def test_the_source_of_an_import_url_is_watched(dvc_project, worker_cache, tmp_path):
    source = tmp_path / "external.csv"
    source.write_text("a,b\n1,2\n")
    dvc_project.dvc("import-url", "--quiet", str(source), "data/external.csv")
    dvc_project.commit_and_push("Import an external file")
    access = RepoAccess.local(str(dvc_project.remote))
    first = fingerprint(access, ["data/external.csv"], watch="source", cache_dir=str(worker_cache))
    source.touch()
    assert fingerprint(access, ["data/external.csv"], watch="source", cache_dir=str(worker_cache)) == first
    source.write_text("a,b\n1,3\n")
    changed = fingerprint(access, ["data/external.csv"], watch="source", cache_dir=str(worker_cache))
    assert changed.digest != first.digest
    assert changed.sha == first.sha, "the repository did not change; the source did"
    with pytest.raises(DvcFileError, match="import-url"):
        fingerprint(access, ["data/raw.csv"], watch="source", cache_dir=str(worker_cache))


def test_an_s3_source_is_watched_by_its_etag(dvc_project, worker_cache, moto_endpoint, s3_bucket):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.put_object(Bucket=s3_bucket, Key="feeds/today.csv", Body=b"x,y\n1,2\n")
    dvc_file = dvc_project.work / "data" / "feed.csv.dvc"
    dvc_file.write_text(
        yaml.safe_dump(
            {
                "md5": "0" * 32,
                "frozen": True,
                "deps": [{"path": f"s3://{s3_bucket}/feeds/today.csv", "etag": "x"}],
                "outs": [{"md5": "1" * 32, "path": "feed.csv"}],
            }
        )
    )
    dvc_project.commit_and_push("Import from S3", dvc_push=False)
    access = RepoAccess.local(
        str(dvc_project.remote),
        endpoint_url=moto_endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    )
    first = fingerprint(access, ["data/feed.csv"], watch="source", cache_dir=str(worker_cache))
    assert first.items["data/feed.csv"].startswith("etag:")
    s3.put_object(Bucket=s3_bucket, Key="feeds/today.csv", Body=b"x,y\n1,3\n")
    assert fingerprint(access, ["data/feed.csv"], watch="source", cache_dir=str(worker_cache)) != first


def test_the_digest_covers_every_item():
    a = DataFingerprint.of("s", {"x": "md5:1", "y": "md5:2"})
    assert a.digest == DataFingerprint.of("other", {"y": "md5:2", "x": "md5:1"}).digest
    assert a.digest != DataFingerprint.of("s", {"x": "md5:1", "y": "md5:3"}).digest
    json.dumps(a.to_json())
