"""The production topology, for real: PostgreSQL, Redis, the CeleryExecutor and two Celery workers
that stand in for two machines (each its own Unix user, home, caches and logs, none readable by the
other), DAGs from the git DAG bundle, task logs and reports on S3 (the moto server).

Started once for this module (:class:`airflow_provider_mlci.testing.deployment.Deployment`); these
tests run in ``make test``'s serial stage, after the parallel run. They need root (the workers are
users), PostgreSQL's server binaries and ``redis-server`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_provider_mlci.report_store import ReportKey, ReportStore
from airflow_provider_mlci.testing.deployment import Deployment
from tests.conftest import ARTIFACTS, ROOT
from tests.helpers import dvc_corpus
from tests.helpers.git_http import GitHttpServer
from tests.helpers.tools import require_tool

pytestmark = pytest.mark.deployment

TOKEN = "deploy-token-0123456789"
BUCKET = "mlci-deployment"

PIPELINE_DAG = """
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(dag_id="deploy_pipeline", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    @task
    def where(i):
        import os
        import time

        time.sleep(4)  # long enough that the four overlap: each worker takes one at a time
        return {"user": os.environ.get("USER"), "cache": os.environ.get("AIRFLOW__MLCI__CACHE_DIR")}

    fan = where.expand(i=[1, 2, 3, 4])
    pipeline = DvcPipelineTaskGroup(
        group_id="pipeline", project_dir="corpus_dvclive", rev="main", commit_to="mlci/deployed"
    )
    report = MetricsReportOperator(task_id="report", rev="mlci/deployed", baseline_rev="main")
    fan >> pipeline >> report
"""


def _git(*args: str, cwd: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def deployment(moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The deployment, with a DVCLive project (git over HTTP, DVC remote on S3) and a DAG of it."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the deployment tests need root (the workers are users of their own)")
        pytest.skip("the deployment tests need root (the workers are users of their own)")
    require_tool("redis-server", install="apt-get install -y redis-server")
    require_tool("runuser", install="util-linux")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    scratch = tmp_path_factory.mktemp("deployment")
    project = dvc_corpus.dvclive_project(
        scratch / "dvclive",
        dvc_remote_url=f"s3://{BUCKET}/dvc",
        dvc_remote_options={"endpointurl": moto_endpoint},
    )
    served = project.remote.parent  # serves remote.git (the project) and dags.git
    dags = scratch / "dags-work"
    _git("init", "-q", "-b", "main", str(dags), cwd=scratch)
    (dags / "dags").mkdir()
    (dags / "dags" / "deploy_pipeline.py").write_text(PIPELINE_DAG)
    shutil.copytree(project.work, dags / "dags" / "corpus_dvclive", ignore=shutil.ignore_patterns(".git", ".dvc"))
    _git("add", "-A", cwd=dags)
    _git("commit", "-q", "-m", "DAGs", cwd=dags)
    _git("clone", "-q", "--bare", str(dags), str(served / "dags.git"), cwd=scratch)
    root = Path(tempfile.mkdtemp(prefix="mlci-deployment-", dir="/var/tmp"))  # every worker user reaches it
    with GitHttpServer(served, username="mlci", token=TOKEN) as git:
        dvc = {
            "conn_type": "mlci_dvc",
            "host": git.url("remote.git"),
            "login": "mlci",
            "password": TOKEN,
            "extra": {
                "dvc_remote_url": f"s3://{BUCKET}/dvc",
                "endpoint_url": moto_endpoint,
                "aws_conn_id": "aws_deploy",
            },
        }
        deploy = Deployment(
            root=root,
            project_dir=ROOT,
            dags_url=git.url("dags.git"),
            dags_login=("mlci", TOKEN),
            s3_endpoint=moto_endpoint,
            bucket=BUCKET,
            env={"AIRFLOW_CONN_MLCI_DVC_DEFAULT": json.dumps(dvc)},
        )
        try:
            deploy.start()
            deploy.project = project
            yield deploy
        finally:
            deploy.stop()
            shutil.copytree(deploy.log_dir, ARTIFACTS / "deployment-logs", dirs_exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)


def failed_logs(endpoint: str, tis: list[dict[str, Any]]) -> str:
    """The states of a run's task instances and the S3 task logs of those that failed."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    lines = [f"{ti['task_id']}[{ti['map_index']}]: {ti['state']} on {ti['hostname']!r}" for ti in tis]
    failed = {ti["task_id"] for ti in tis if ti["state"] == "failed"}
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/").get("Contents", []):
        if any(f"task_id={task}/" in item["Key"] for task in failed):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode(errors="replace")
            lines += [f"--- {item['Key']}", body[-6000:]]
    return "\n".join(lines)


def test_a_pipeline_runs_across_two_workers_that_share_no_disk(deployment, moto_endpoint, monkeypatch):
    run_id = deployment.trigger("deploy_pipeline")
    state = deployment.wait_for_run("deploy_pipeline", run_id, timeout=420)
    tis = deployment.task_instances("deploy_pipeline", run_id)
    assert state == "success", failed_logs(moto_endpoint, tis)
    hosts = {ti["hostname"] for ti in tis}
    assert hosts == {"worker-a", "worker-b"}, hosts  # the run really ran on both "machines"
    # Each worker's folders are its own: owned by its user, mode 0700, and used.
    for worker in deployment.workers:
        for sub in ("", "cache", "tmp", "logs", "bundles", "airflow"):
            info = (worker.home / sub).stat()
            assert stat.S_IMODE(info.st_mode) == 0o700, (worker.user, sub)
            assert info.st_uid == pwd.getpwnam(worker.user).pw_uid
        assert any((worker.home / "cache").iterdir()), f"{worker.user} never used its cache"
    # Task logs and the report are on S3, where the api-server reads them.
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/").get("Contents", [])]
    assert any("task_id=pipeline.train" in key for key in keys), keys[:20]
    assert any("task_id=report" in key for key in keys), keys[:20]
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DEPLOY", deployment.environment()["AIRFLOW_CONN_AWS_DEPLOY"])
    store = ReportStore.open(f"s3://{BUCKET}/reports", "aws_deploy")
    outcome = store.outcome(ReportKey(dag_id="deploy_pipeline", run_id=run_id, task_id="report"))
    assert outcome is not None
    assert outcome["outcome"]["problems"] == []
    status, page = deployment.get(f"/mlci/task-report/deploy_pipeline/{run_id}/report?map_index=-1")
    assert status == 200, page[-2000:]
    assert "eval/metrics.json" in page
    # What the workers committed is on the git remote, equal to the by-hand run on the same commit.
    project = deployment.project
    scratch = Path(tempfile.mkdtemp(prefix="mlci-by-hand-"))
    hand = dvc_corpus.by_hand(project, scratch / "by-hand")
    sha = project.head()
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/deployed", scratch=scratch)
