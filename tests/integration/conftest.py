"""Fixtures shared by the integration tests.

- ``gpu_setup``: connections, settings, pool and instance profile for a GPU DAG run against moto.
- ``two_revisions_template`` / ``two_revisions``: the demo project trained at two revisions
  (main: 10 epochs, branch ``experiment``: 150), for the report and pull-request tests.
- After every test on the moto server, what it left running of ours is terminated (the tests
  themselves assert that nothing is left): one leak fails one test, not every later one.
"""

from __future__ import annotations

import json

import pytest

from tests.helpers.demo_project import train
from tests.helpers.gpu_runs import ACCESS_KEY, SECRET_KEY

# ------------------------------------------------------------------------------------ GPU runs


@pytest.fixture(autouse=True)
def _no_instance_outlives_its_test(request):
    yield
    if "moto_endpoint" not in request.fixturenames:
        return
    import boto3

    from tests.helpers.gpu_runs import ours_alive

    endpoint = request.getfixturevalue("moto_endpoint")
    left = ours_alive(endpoint)
    if left:
        boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1").terminate_instances(InstanceIds=left)


@pytest.fixture
def gpu_setup(monkeypatch, moto_endpoint, s3_dvc_project, s3_bucket, dvc_connection, worker_cache, airflow_db):
    """Connections, settings and pool for the GPU DAG; the DLAMI the spec looks up."""
    import boto3
    from airflow.models.pool import Pool

    aws = {
        "conn_type": "aws",
        "login": ACCESS_KEY,
        "password": SECRET_KEY,
        "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"},
    }
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEFAULT", json.dumps(aws))
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_JOB_BASE", f"s3://{s3_bucket}/jobs")
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    dvc_connection(
        str(s3_dvc_project.remote),
        extra={
            "dvc_remote_url": s3_dvc_project.dvc_remote_url,
            "endpoint_url": moto_endpoint,
            "aws_conn_id": "aws_default",
        },
    )
    Pool.create_or_update_pool("mlci_gpu", slots=2, description="GPU instances", include_deferred=True)
    iam = boto3.client("iam", endpoint_url=moto_endpoint, region_name="us-east-1")
    profiles = {p["InstanceProfileName"] for p in iam.list_instance_profiles()["InstanceProfiles"]}
    if "mlci-gpu-runner" not in profiles:
        iam.create_instance_profile(InstanceProfileName="mlci-gpu-runner")
    return s3_dvc_project


# ------------------------------------------------------------------------------------ two revisions


@pytest.fixture(scope="module")
def two_revisions_template(demo_project_template, tmp_path_factory):
    """Trained once per module: main with a model of 10 epochs, branch experiment with one of 150."""
    template = demo_project_template.copy_to(tmp_path_factory.mktemp("two-revisions") / "project")
    template.base = train(template, 10)
    template.git("checkout", "--quiet", "-b", "experiment")
    template.head_sha = train(template, 150, "experiment")
    return template


@pytest.fixture
def two_revisions(two_revisions_template, dvc_connection, worker_cache, monkeypatch, tmp_path):
    """A private copy of the two-revision project behind the default connection."""
    project = two_revisions_template.copy_to(tmp_path / "project")
    project.base, project.head_sha = two_revisions_template.base, two_revisions_template.head_sha
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url})
    return project
