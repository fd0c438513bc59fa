"""The multi-node deployment files. No Docker engine runs here: the compose file is validated
with ``docker-compose config`` where that tool is installed (Debian package ``docker-compose``),
and its structure is checked in any case. Nothing is built or started."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from tests.conftest import ROOT
from tests.helpers.tools import require_tool

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "docker-compose.yaml"
AIRFLOW_PARTS = {
    "airflow-scheduler": "scheduler",
    "airflow-dag-processor": "dag-processor",
    "airflow-api-server": "api-server",
    "airflow-triggerer": "triggerer",
}


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def test_docker_compose_config_accepts_the_file():
    tool = require_tool("docker-compose", install="apt-get install -y docker-compose; structure checked below")
    proc = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr


def test_every_part_of_a_multi_node_deployment_is_there(compose):
    services = compose["services"]
    for name, command in AIRFLOW_PARTS.items():
        assert services[name]["command"] == [command]
    workers = [name for name, svc in services.items() if svc.get("command", [None])[0] == "celery"]
    assert len(workers) == 2
    for needed in ("postgres", "redis", "minio", "git-server", "airflow-init"):
        assert needed in services
    env = services["airflow-scheduler"]["environment"]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "CeleryExecutor"
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql")
    assert env["AIRFLOW__CELERY__BROKER_URL"].startswith("redis://")


def test_workers_have_separate_caches(compose):
    services = compose["services"]
    caches = set()
    for name in ("airflow-worker-1", "airflow-worker-2"):
        (cache,) = [v for v in services[name]["volumes"] if v.endswith(":/opt/airflow/mlci-cache")]
        caches.add(cache)
    assert len(caches) == 2


def test_the_dvc_connection_uses_the_s3_service_and_the_git_server(compose):
    import json

    env = compose["services"]["airflow-worker-1"]["environment"]
    conn = json.loads(env["AIRFLOW_CONN_MLCI_DVC_DEFAULT"])
    assert conn["conn_type"] == "mlci_dvc"
    assert conn["host"].startswith("git://git-server/")
    assert conn["extra"]["aws_conn_id"] == "minio"
    aws = json.loads(
        env["AIRFLOW_CONN_MINIO"]
        .replace("${MINIO_ROOT_USER:-minioadmin}", "u")
        .replace("${MINIO_ROOT_PASSWORD:-minioadmin}", "p")
    )
    assert aws["extra"]["endpoint_url"] == "http://minio:9000"


def test_the_image_is_the_official_one_plus_our_wheel_and_missing_pins_only():
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "apache/airflow:3.3.2-python3.11" in dockerfile
    assert "airflow_provider_mlci-*.whl" in dockerfile
    pins = [line for line in (DOCKER / "image-pins.txt").read_text().splitlines() if line and not line.startswith("#")]
    names = {re.split("==", line)[0] for line in pins}
    assert {"dvc", "dvc-s3", "pandera", "boto3", "botocore", "aiobotocore"} <= names
    assert "apache-airflow" not in names
    assert not any(name.startswith("apache-airflow") for name in names)
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    for pin in pins:
        assert pin in constraints, f"{pin} differs from constraints.txt: run make docker-pins"
