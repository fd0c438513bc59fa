"""Report locations as stored for the Report link: no connection id inside the URI."""

from __future__ import annotations

from airflow.sdk import ObjectStoragePath

from airflow_provider_mlci.links.report import storage_uri


def test_the_connection_id_does_not_reach_the_stored_uri(tmp_path):
    s3 = ObjectStoragePath("s3://reports-bucket/mlci", conn_id="aws_reports") / "dag" / "run" / "task"
    assert str(s3).startswith("s3://aws_reports@")
    assert storage_uri(s3) == "s3://reports-bucket/mlci/dag/run/task"
    local = ObjectStoragePath(f"file://{tmp_path}") / "dag"
    assert storage_uri(local) == f"file://{tmp_path}/dag"
