"""The container files describe exactly the topology the deployment tests run.

No Docker engine runs here: the compose file is validated with ``docker-compose config`` (Debian's
``docker-compose``, which ``.ci/run`` installs), and its settings are compared with those of
:class:`airflow_provider_mlci.testing.deployment.Deployment` (both come from ``topology()``).
Nothing is built or started.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from airflow_provider_mlci import __version__
from airflow_provider_mlci.testing.deployment import DAGS_CONN_ID, S3_CONN_ID, Deployment, topology
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
DATABASE = "postgresql+psycopg2://airflow:${POSTGRES_PASSWORD:?set it in docker/.env}@postgres/airflow"
#: Settings of the test deployment that a production one leaves at Airflow's defaults or sets per
#: machine: ports and addresses, the workers' hostnames, the short timings of a test.
TEST_ONLY = {
    "AIRFLOW__API__PORT",
    "AIRFLOW__API__HOST",
    "AIRFLOW__CELERY__WORKER_CONCURRENCY",
    "AIRFLOW__CORE__HOSTNAME_CALLABLE",
    "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL",
    "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC",
    "DVC_NO_ANALYTICS",
    "LANG",
}
SECRETS = ("AIRFLOW__CORE__FERNET_KEY", "AIRFLOW__API_AUTH__JWT_SECRET", "AIRFLOW__API__SECRET_KEY")


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text())


def _env_example() -> dict[str, str]:
    """docker/.env.example's variables, each given a value (what a user's docker/.env holds)."""
    names = re.findall(r"^([A-Z0-9_]+)=", (DOCKER / ".env.example").read_text(), flags=re.MULTILINE)
    return {name: f"value-of-{name.lower()}" for name in names}


def _same(value: str, expected: str) -> bool:
    if expected.startswith(("{", "[")):
        return json.loads(value) == json.loads(expected)
    return value == expected


def test_docker_compose_config_accepts_the_file_with_the_env_example():
    tool = require_tool("docker-compose", install="apt-get install -y docker-compose")
    env = {**os.environ, **_env_example()}
    proc = subprocess.run(
        [tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, check=False, env=env
    )
    assert proc.returncode == 0, proc.stderr
    # Without docker/.env the secrets are missing, and compose says which instead of using defaults.
    bare = {k: v for k, v in os.environ.items() if k not in _env_example()}
    proc = subprocess.run([tool, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=bare)
    assert proc.returncode != 0
    assert "set it in docker/.env" in proc.stderr


def test_the_compose_settings_are_the_tested_topology(compose):
    expected = topology(
        database=DATABASE,
        broker="redis://redis:6379/0",
        api_url="http://airflow-api-server:8080/execution/",
        bucket="mlci",
        dags_refresh_interval=60,
    )
    tested = Deployment(
        root=Path("/nonexistent"), project_dir=ROOT, dags_url="http://git", s3_endpoint="http://s3", bucket="b"
    ).environment()
    for name, command in AIRFLOW_PARTS.items():
        service = compose["services"][name]
        assert service["command"] == [command]
        env = service["environment"]
        for key, value in expected.items():
            assert key in env, f"{name} lacks {key}"
            assert _same(env[key], value), f"{name}: {key}={env[key]!r}, tested with {value!r}"
        # Every setting the tests run with is here, but for what only a test needs.
        missing = {key for key in tested if key not in env} - TEST_ONLY
        assert missing == set(), f"{name} lacks {sorted(missing)}"
        for secret in SECRETS:
            assert re.fullmatch(r"\$\{[A-Z_]+:\?[^}]+\}", env[secret]), f"{secret} must come from docker/.env"
        for conn_id in (S3_CONN_ID, DAGS_CONN_ID, "mlci_dvc_default"):
            assert f"AIRFLOW_CONN_{conn_id.upper()}" in env
    assert json.loads(env[f"AIRFLOW_CONN_{DAGS_CONN_ID.upper()}"])["host"] == "git://git-server/dags.git"


def test_two_workers_share_no_disk_and_nothing_is_bind_mounted_but_the_git_server(compose):
    services = compose["services"]
    workers = {name: svc for name, svc in services.items() if (svc.get("command") or [None])[0] == "celery"}
    assert sorted(workers) == ["airflow-worker-1", "airflow-worker-2"]
    volumes = [set(svc.get("volumes", [])) for svc in workers.values()]
    assert volumes[0] & volumes[1] == set()
    for volume_set in volumes:
        assert {v.split(":")[1] for v in volume_set} == {"/opt/airflow/mlci-cache"}
    for name, svc in services.items():
        for volume in svc.get("volumes", []):
            if volume.startswith((".", "/")):
                assert name == "git-server", f"{name} mounts {volume} from the host"
    hostnames = [svc["command"][-1] for svc in workers.values()]
    assert len(set(hostnames)) == 2


def test_every_image_is_pinned_to_a_version(compose):
    for name, svc in compose["services"].items():
        image = svc.get("image", "")
        assert image, f"{name} has no image"
        repository, _, tag = image.rpartition(":")
        assert repository, f"{name}: {image} has no tag"
        assert re.fullmatch(r"\d[\w.-]*", tag), f"{name}: {image} is not pinned to a version"
        if repository == "airflow-mlci":
            assert tag == __version__
    dockerfile = (DOCKER / "Dockerfile").read_text()
    assert "ARG AIRFLOW_IMAGE=apache/airflow:3.3.2-python3.11" in dockerfile


def test_the_image_pins_are_complete_and_agree_with_the_constraints():
    """Every requirement of the provider (and what the image adds) is pinned in image-pins.txt or
    listed there as already in the official image; every pin equals constraints.txt."""
    from scripts.image_pins import IMAGE_EXTRAS, requirement_name

    text = (DOCKER / "image-pins.txt").read_text()
    pins = [line for line in text.splitlines() if line and not line.startswith("#")]
    names = {requirement_name(line) for line in pins}
    (present,) = re.findall(r"^# In the image already: (.*)$", text, flags=re.MULTILINE)
    requires = (ROOT / "setup.cfg").read_text().split("install_requires =", 1)[1].split("\n\n")[0]
    wanted = {requirement_name(line) for line in [*requires.splitlines(), *IMAGE_EXTRAS]} - {""}
    unaccounted = wanted - names - {name.strip() for name in present.split(",")}
    assert unaccounted == set(), f"not in docker/image-pins.txt: {sorted(unaccounted)}: run make docker-pins"
    assert {"dvc", "dvc-s3", "pandera", "pandas", "pyarrow", "vl-convert-python", "aiobotocore"} <= names
    assert "apache-airflow" not in names
    constraints = (ROOT / "constraints.txt").read_text().splitlines()
    for pin in pins:
        assert pin in constraints, f"{pin} differs from constraints.txt: run make docker-pins"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    for extra in IMAGE_EXTRAS:
        assert extra in dockerfile, f"the Dockerfile does not install {extra}"
