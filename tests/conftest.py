"""Test harness on real components.

- Airflow: a session ``AIRFLOW_HOME`` in a temporary folder, SQLite metadata database
  initialised once (fixture ``airflow_db``); test DAG files are written into its DAGs folder,
  where ``dag.test()`` finds them (fixture ``run_dag``). For what needs the real thing
  (parallel mapped tasks, deferral, retries with delays) ``airflow_cluster`` starts a real
  scheduler, dag-processor, api-server and triggerer.
- git and DVC: a real DVC project with a bare git remote and a local DVC remote
  (``dvc_project``), or an S3 DVC remote (``s3_dvc_project``).
- S3 and EC2: moto's HTTP server on 127.0.0.1 at a random port (``moto_endpoint``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE_DAGS = ROOT / "example_dags"
DEMO_PROJECT = EXAMPLE_DAGS / "demo_project"
EVAL_ROWS = 1000  # the rows of the demo project's frozen evaluation set (src/generate.py)
ARTIFACTS = ROOT / "test-artifacts"

_HOME = Path(tempfile.mkdtemp(prefix="mlci-tests-"))


def _session_environment(home: Path) -> dict[str, str]:
    gitconfig = home / "gitconfig"
    gitconfig.write_text(
        "[user]\n\tname = mlci tests\n\temail = mlci-tests@example.invalid\n[init]\n\tdefaultBranch = main\n"
    )
    return {
        "AIRFLOW_HOME": str(home / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "airflow" / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__MLCI__CACHE_DIR": str(home / "worker-cache"),
        # One key for this process and every Airflow component the tests start: each must read
        # what another encrypted (connections made through the API, trigger arguments).
        "AIRFLOW__CORE__FERNET_KEY": "aTX0Ms5x1lBSw0v8Sp3A-L6nwka__yGl55UruTTt2Bk=",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_CONFIG_FILE": str(home / "aws-config-absent"),
        "AWS_SHARED_CREDENTIALS_FILE": str(home / "aws-credentials-absent"),
        "DVC_NO_ANALYTICS": "1",
        "GIT_CONFIG_GLOBAL": str(gitconfig),
        "GIT_CONFIG_NOSYSTEM": "1",
        "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
    }


#: The slowest test files, slowest first (seconds each, in the parallel run): the
#: parallel run (``--dist loadfile --no-loadscope-reorder``) starts them first, so that it does not
#: end waiting on a long file begun last. Files not listed follow in their usual order. Update when
#: the durations drift; a wrong order only costs time.
SLOWEST_FIRST = (  # 2026-12-06, fresh clone, compiled venv: the parallel run took 732 s
    "tests/integration/test_cluster.py",  # 245 s
    "tests/unit/core/dvc/test_ops.py",  # 203 s
    "tests/integration/test_example_dvc_pipeline.py",  # 116 s
    "tests/integration/test_model_pages_ui.py",  # 116 s
    "tests/integration/test_sweep_on_gpu.py",  # 106 s
    "tests/integration/test_gpu_paths.py",  # 94 s
    "tests/integration/test_adaptive_sweep.py",  # 73 s
    "tests/integration/test_gpu_faults.py",  # 63 s
    "tests/integration/test_example_hyperparameter_sweep.py",  # 60 s
    "tests/integration/test_pr_webhook.py",  # 55 s
    "tests/integration/test_model_release.py",  # 53 s
    "tests/integration/test_dvc_errors.py",  # 50 s
    "tests/unit/agent/test_agent.py",  # 45 s
    "tests/integration/test_corpus_monorepo.py",  # 44 s
    "tests/integration/test_dvc_operators.py",  # 43 s
    "tests/integration/test_release_refusals.py",  # 39 s
    "tests/integration/test_metrics_report.py",  # 36 s
    "tests/integration/test_example_gpu_training.py",  # 35 s
    "tests/integration/test_corpus_templated.py",  # 33 s
    "tests/integration/test_gpu_lifecycle.py",  # 32 s
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    rank = {path: index for index, path in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::", 1)[0], len(rank)))  # stable


def pytest_configure(config: pytest.Config) -> None:
    # Before anything imports Airflow: its configuration is read on first import.
    os.environ.update(_session_environment(_HOME))
    (_HOME / "airflow" / "dags").mkdir(parents=True, exist_ok=True)
    # With CI set, a skip or xfail outside the reviewed allow-list fails the run.
    from tests.helpers import skips

    skips.register(config)


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_HOME, ignore_errors=True)


# ------------------------------------------------------------------------------------ Airflow


@pytest.fixture(autouse=True)
def _dvc_logs_to_this_tests_streams() -> None:
    """Point DVC's console handlers at the streams of the test about to run.

    ``import dvc`` binds its handlers to ``sys.stdout``/``sys.stderr`` as they are at that moment;
    in a test that captures output those are the test's own buffers, closed when it ends, and a
    later test in the same worker that makes DVC log then dies with DVC's ``LoggingException``.
    """
    import logging

    handler_type = getattr(sys.modules.get("dvc.logger"), "LoggerHandler", None)
    if handler_type is None:
        return
    for name in ("dvc", "dvc_objects", "dvc_data"):
        for handler in logging.getLogger(name).handlers:
            if isinstance(handler, handler_type):
                # not setStream(): it flushes the old stream, which may be closed
                handler.stream = sys.stderr if handler.level >= logging.WARNING else sys.stdout


@pytest.fixture(scope="session")
def airflow_home() -> Path:
    """The session's ``AIRFLOW_HOME``."""
    return Path(os.environ["AIRFLOW_HOME"])


@pytest.fixture(scope="session")
def dags_folder(airflow_home: Path) -> Path:
    """The DAGs folder of the session's Airflow, where test DAG files must live."""
    return Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])


@pytest.fixture(scope="session")
def airflow_db(airflow_home: Path) -> Path:
    """Initialise the SQLite metadata database once per session; return ``AIRFLOW_HOME``.

    A copy of the new, empty database is kept as ``<session home>/airflow-empty.db`` for the
    clusters, which must not share this one (:func:`airflow_cluster`)."""
    from airflow.utils import db

    db.initdb()
    # SQLite's backup API: the database is in WAL mode, so the file alone is not all of it.
    with (
        contextlib.closing(sqlite3.connect(airflow_home / "airflow.db")) as source,
        contextlib.closing(sqlite3.connect(_HOME / "airflow-empty.db")) as copy,
    ):
        source.backup(copy)
    return airflow_home


def load_dag_file(path: Path, dag_id: str) -> Any:
    """Parse a DAG file as the dag-processor does and return its DAG ``dag_id``."""
    from airflow_provider_mlci.testing.airflow import dag_bag

    bag = dag_bag(path)
    assert not bag.import_errors, bag.import_errors
    assert dag_id in bag.dags, f"{path} defines no DAG {dag_id!r}"
    return bag.dags[dag_id]


@pytest.fixture
def run_dag(airflow_db: Path, dags_folder: Path) -> Callable[..., Any]:
    """Run a DAG with ``dag.test()`` and return its :class:`RunRecord`.

    Call as ``run_dag(dag_id, source=...)`` with the DAG file's text, or ``run_dag(dag_id, path=...)``
    with a file to copy (an example DAG); either way the file goes into the DAGs folder first.
    ``logical_date`` runs it for that date (default: now).
    """
    from airflow_provider_mlci.testing.airflow import latest_run

    def _run(
        dag_id: str,
        *,
        source: str | None = None,
        path: Path | None = None,
        conf: dict | None = None,
        logical_date: Any = None,
    ) -> Any:
        target = dags_folder / f"{dag_id}.py"
        if source is not None:
            target.write_text(source)
        elif path is not None:
            shutil.copyfile(path, target)
        dag = load_dag_file(target, dag_id)
        dag_run = dag.test(run_conf=conf, **({"logical_date": logical_date} if logical_date else {}))
        record = latest_run(dag_id, dag_run.run_id)
        assert record is not None
        return record

    return _run


def new_cluster(root: Path) -> Any:
    """An :class:`AirflowCluster` (not started) with an Airflow home of its own under ``root``:
    its own database (a copy of the empty one) and DAGs folder, so its scheduler never sees the
    ``dag.test()`` runs and DAG files of the session (it would run them)."""
    from airflow_provider_mlci.testing.cluster import AirflowCluster

    home = root / "airflow"
    home.mkdir(parents=True)
    shutil.copyfile(_HOME / "airflow-empty.db", home / "airflow.db")
    return AirflowCluster(home=home, log_dir=root / "cluster-logs")


@pytest.fixture(scope="module")
def airflow_cluster(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real scheduler, dag-processor, api-server and triggerer, for one test module.

    LocalExecutor on an Airflow home of its own (:func:`new_cluster`; write its DAG files into
    ``airflow_cluster.dags_folder``), parallelism 2. Every process it starts is stopped at the
    end, and the end checks that none of them is left.
    """
    from airflow_provider_mlci.testing.cluster import leftover_processes

    cluster = new_cluster(tmp_path_factory.mktemp("cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        groups = cluster.process_groups()
        cluster.stop()
        # Keep the components' logs for a look after the run (the session's home is removed).
        shutil.copytree(cluster.log_dir, ARTIFACTS / "cluster-logs", dirs_exist_ok=True)
    assert leftover_processes(groups) == [], "processes of the stopped cluster are still running"


# ------------------------------------------------------------------------------------ S3 / EC2


#: Buckets on the moto server from the start: where the tests' GPU jobs go.
JOB_BUCKETS = ("jobs", "mlci-jobs")


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """moto's S3/EC2 server over HTTP on 127.0.0.1, at a free port, offering the Deep Learning AMI
    (:func:`airflow_provider_mlci.testing.moto.moto_server`), with the buckets :data:`JOB_BUCKETS`."""
    import boto3

    from airflow_provider_mlci.testing.moto import moto_server

    with moto_server() as endpoint:
        # The job bases tests name (a launch puts the agent's wheel beside the job's mailbox).
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        for bucket in JOB_BUCKETS:
            s3.create_bucket(Bucket=bucket)
        yield endpoint


@pytest.fixture
def s3_bucket(moto_endpoint: str) -> str:
    """A new, empty bucket on the moto server."""
    import boto3

    name = f"mlci-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1").create_bucket(Bucket=name)
    return name


# ------------------------------------------------------------------------------------ git + DVC


@pytest.fixture(scope="session")
def demo_project_template(tmp_path_factory: pytest.TempPathFactory) -> Any:
    """The demo DVC project with day 0's data, committed and pushed once per session; tests use copies."""
    from airflow_provider_mlci.testing import create_demo_project

    return create_demo_project(DEMO_PROJECT, tmp_path_factory.mktemp("demo-template"), rows=600)


@pytest.fixture
def dvc_project(demo_project_template: Any, tmp_path: Path) -> Any:
    """A private copy of the demo project: working copy, bare git remote, local DVC remote."""
    return demo_project_template.copy_to(tmp_path / "project")


@pytest.fixture
def s3_dvc_project(demo_project_template: Any, tmp_path: Path, moto_endpoint: str, s3_bucket: str) -> Any:
    """A private copy of the demo project whose DVC remote is a bucket on the moto server."""
    project = demo_project_template.copy_to(
        tmp_path / "project",
        dvc_remote_url=f"s3://{s3_bucket}/store",
        dvc_remote_options={"endpointurl": moto_endpoint},
    )
    project.dvc("push", "--quiet")
    return project


@pytest.fixture
def worker_cache(tmp_path: Path) -> Path:
    """A worker cache root of this test's own (a separate worker)."""
    path = tmp_path / "worker-cache"
    path.mkdir()
    return path


@pytest.fixture
def separate_workers(monkeypatch, tmp_path):
    """Give every task its own worker cache, as if each ran on another machine."""
    from airflow_provider_mlci.hooks.dvc import DvcHook

    roots = []

    def fresh_cache(self):
        root = tmp_path / f"worker-{len(roots)}"
        roots.append(root)
        return str(root)

    monkeypatch.setattr(DvcHook, "cache_dir", property(fresh_cache))
    return roots


@pytest.fixture
def dvc_connection(monkeypatch: pytest.MonkeyPatch) -> Callable[..., str]:
    """Define the ``mlci_dvc`` connection ``conn_id`` through ``AIRFLOW_CONN_*`` (JSON form)."""

    def _define(host: str, conn_id: str = "mlci_dvc_default", **fields: Any) -> str:
        extra = fields.pop("extra", {})
        value = {"conn_type": "mlci_dvc", "host": host, **fields, "extra": extra}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return conn_id

    return _define


@pytest.fixture
def aws_moto_connection(monkeypatch: pytest.MonkeyPatch, moto_endpoint: str) -> str:
    """The Airflow ``aws`` connection ``aws_moto``: the moto server's endpoint and test credentials."""
    extra = {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}
    value = {"conn_type": "aws", "login": "testing", "password": "testing", "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_AWS_MOTO", json.dumps(value))
    return "aws_moto"


@pytest.fixture
def artifacts_dir() -> Path:
    """Where tests keep artifacts worth looking at after a run (screenshots, logs)."""
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


@pytest.fixture
def ec2c(moto_endpoint: str) -> Iterator[Any]:
    """A boto3 EC2 client on the moto server; the test ends by asserting that none of our
    instances is left running."""
    from tests.helpers.moto_ec2 import assert_no_instance_left, ec2_client

    client = ec2_client(moto_endpoint)
    yield client
    assert_no_instance_left(client)
