"""The production topology on one machine, without containers: PostgreSQL, Redis, Celery workers
that share no disk.

:class:`Deployment` starts

- PostgreSQL (as the ``postgres`` user, which it must be: the server refuses root) on its own data
  folder and port, with the metadata database and, beside it, ``studies``: the database of adaptive
  sweeps' Optuna studies (connection :data:`STUDIES_CONN_ID`, ``[mlci] optuna_conn_id``), which
  every worker reaches;
- Redis as the Celery broker;
- the scheduler, dag-processor, triggerer and api-server (CeleryExecutor);
- one Celery worker per name in ``workers``, each **as its own Unix user** (``mlci-<name>``) with its
  own home, Airflow home, ``[mlci] cache_dir``, temporary folder, logs folder and DAG-bundle storage,
  all mode 0700, its own ``hostname_callable`` answer (task instances record which worker ran them)
  and log-server port. The workers see none of root's files: they run from a virtualenv built from
  the system ``python3.11`` at a world-readable path (uv, from the project's ``constraints.txt``).

Everything the components share travels as on separate machines: DAGs through a DAG bundle (the
git bundle, cloned by each component from ``dags_url``), task logs and the report store on S3
(``s3_endpoint``), configuration as environment variables (:meth:`Deployment.environment`, the same
that ``docker/`` is checked against). It needs root (to make the users and run as them), the
PostgreSQL server binaries and ``redis-server``.
"""

from __future__ import annotations

import contextlib
import grp
import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from airflow_provider_mlci.testing.cluster import AirflowDriver, free_port, signal_group

__all__ = [
    "DAGS_CONN_ID",
    "S3_CONN_ID",
    "STUDIES_CONN_ID",
    "Deployment",
    "WorkerSpec",
    "dvc_connection",
    "postgres_server",
    "start_postgres",
    "topology",
    "worker_hostname",
]

#: The environment variable a worker's ``hostname_callable`` answers with.
HOSTNAME_VARIABLE = "MLCI_WORKER_HOSTNAME"
#: What the workers' virtualenv is built from.
SYSTEM_PYTHON = "/usr/bin/python3.11"
#: Where it is kept between runs (world-readable; the key is a hash of the pins).
VENV_BASE = Path("/var/tmp")  # noqa: S108 (a cache every local user must read, kept across runs)
#: Runs a program as another user (util-linux; in sbin, outside the components' PATH).
_RUNUSER = shutil.which("runuser", path="/usr/sbin:/sbin:/usr/bin:/bin") or "runuser"
#: The ``aws`` connection of the S3 service (task logs, reports, DVC remotes).
S3_CONN_ID = "mlci_s3"
#: The ``git`` connection of the DAG bundle's repository.
DAGS_CONN_ID = "git_dags"
#: The ``postgres`` connection of the studies' database (``[mlci] optuna_conn_id``).
STUDIES_CONN_ID = "mlci_studies"
#: That database, on the metadata database's server but not the metadata database.
STUDIES_DATABASE = "studies"
#: Root-side components.
SERVICES = ("scheduler", "dag-processor", "triggerer", "api-server")


def worker_hostname() -> str:
    """The hostname a deployment's worker records on its task instances (``hostname_callable``)."""
    import socket

    return os.environ.get(HOSTNAME_VARIABLE) or socket.getfqdn()


@dataclass(frozen=True, kw_only=True)
class WorkerSpec:
    """One Celery worker standing in for one machine.

    :param name: its name (``a``); the user is ``mlci-<name>``, the hostname ``worker-<name>``
    :param home: its home folder (mode 0700)
    :param log_port: its log server's port
    """

    name: str
    home: Path
    log_port: int

    @property
    def user(self) -> str:
        """The Unix user it runs as."""
        return f"mlci-{self.name}"

    @property
    def hostname(self) -> str:
        """The hostname its task instances record."""
        return f"worker-{self.name}"


class Deployment(AirflowDriver):
    """Start, drive and stop the production topology (see the module's docs).

    :param root: a folder for everything (made world-traversable; each part keeps its own mode)
    :param project_dir: the provider's source tree (installed into the workers' virtualenv)
    :param dags_url: the git repository (over HTTP) the DAG bundle clones; DAG files under ``dags/``
    :param dags_login: the user and token it takes, if any
    :param s3_endpoint: the S3 endpoint (the moto server) for logs and reports
    :param bucket: the bucket (it must exist)
    :param workers: the workers' names
    :param env: more environment for every component (connections as ``AIRFLOW_CONN_*``)
    """

    def __init__(
        self,
        *,
        root: Path,
        project_dir: Path,
        dags_url: str,
        s3_endpoint: str,
        bucket: str,
        dags_login: tuple[str, str] | None = None,
        workers: tuple[str, ...] = ("a", "b"),
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.project_dir = project_dir
        self.dags_url = dags_url
        self.dags_login = dags_login
        self.s3_endpoint = s3_endpoint
        self.bucket = bucket
        self.extra_env = dict(env or {})
        self.pg_port, self.redis_port, self.api_port = free_port(), free_port(), free_port()
        self.base_url = f"http://127.0.0.1:{self.api_port}"
        self.workers = [WorkerSpec(name=name, home=root / f"worker-{name}", log_port=free_port()) for name in workers]
        self.venv = VENV_BASE / f"mlci-deploy-venv-{_constraints_key(project_dir)}"
        self.log_dir = root / "logs"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}
        #: The UI's (and the REST API's) user and password: a real login, SimpleAuthManager's.
        self.login = ("admin", secrets.token_urlsafe(12))
        self._token: str | None = None

    # ------------------------------------------------------------------------------ configuration

    def environment(self) -> dict[str, str]:
        """What every component is configured with (``AIRFLOW__*`` and connections): the
        :func:`topology` that ``docker/docker-compose.yaml`` also has, plus this machine's ports,
        secrets and the timings that keep a test short."""
        database = f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"
        aws = {
            "conn_type": "aws",
            "login": "testing",
            "password": "testing",
            "extra": {"endpoint_url": self.s3_endpoint, "region_name": "us-east-1"},
        }
        studies = {"conn_type": "postgres", "host": "127.0.0.1", "port": self.pg_port, "login": "airflow"}
        studies["schema"] = STUDIES_DATABASE
        git: dict[str, str] = {"conn_type": "git", "host": self.dags_url}
        if self.dags_login:
            git["login"], git["password"] = self.dags_login
        settings = topology(
            database=database,
            broker=f"redis://127.0.0.1:{self.redis_port}/0",
            api_url=f"{self.base_url}/execution/",
            bucket=self.bucket,
            dags_refresh_interval=5,
        )
        return {
            **settings,
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": "1",  # one slot per "machine": parallel work spreads
            "AIRFLOW__CORE__FERNET_KEY": "aTX0Ms5x1lBSw0v8Sp3A-L6nwka__yGl55UruTTt2Bk=",
            "AIRFLOW__API_AUTH__JWT_SECRET": "mlci-deployment-secret-0123456789abcdef",
            "AIRFLOW__API__SECRET_KEY": "mlci-deployment-key",
            "AIRFLOW__API__PORT": str(self.api_port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{self.login[0]}:admin",
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "airflow_provider_mlci.testing.deployment.worker_hostname",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # A lost worker's tasks are failed (and retried) after 20 s of silence, not 5 minutes.
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
            "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
            f"AIRFLOW_CONN_{S3_CONN_ID.upper()}": json.dumps(aws),
            f"AIRFLOW_CONN_{DAGS_CONN_ID.upper()}": json.dumps(git),
            f"AIRFLOW_CONN_{STUDIES_CONN_ID.upper()}": json.dumps(studies),
            "DVC_NO_ANALYTICS": "1",
            "LANG": "C.UTF-8",
            **self.extra_env,
        }

    def _own_env(self, home: Path, *, user: str, hostname: str) -> dict[str, str]:
        return {
            **self.environment(),
            "HOME": str(home),
            "USER": user,
            "LOGNAME": user,
            "PATH": f"{self.venv}/bin:/usr/local/bin:/usr/bin:/bin",
            "TMPDIR": str(home / "tmp"),
            "AIRFLOW_HOME": str(home / "airflow"),
            "AIRFLOW__MLCI__CACHE_DIR": str(home / "cache"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(home / "bundles"),
            "GIT_CONFIG_GLOBAL": str(home / "gitconfig"),
            HOSTNAME_VARIABLE: hostname,
        }

    def _services_env(self) -> dict[str, str]:
        services = self.root / "services"
        env = self._own_env(services, user="root", hostname="services")
        env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] = str(services / "passwords.json")
        return env

    # ------------------------------------------------------------------------------ start / stop

    def start(self, timeout: float = 240) -> None:
        """Start every part and wait until the API says scheduler, triggerer and dag-processor are
        healthy and every worker answers Celery's ping."""
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        self.log_dir.mkdir(exist_ok=True)
        self._build_venv()
        self._start_postgres()
        self._start("redis", ["redis-server", "--port", str(self.redis_port), "--bind", "127.0.0.1", "--save", ""])
        services = self.root / "services"
        self._home(services, user="root")
        airflow = str(self.venv / "bin" / "airflow")
        env = self._services_env()
        Path(env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"]).write_text(json.dumps(dict([self.login])))
        _run([airflow, "db", "migrate"], env=env, log=self.log_dir / "db-migrate.log")
        for name in SERVICES:
            self._start(name, [airflow, name], env=env)
        for worker in self.workers:
            self._make_user(worker)
            self._start_worker(worker)
        self.wait_healthy(timeout, self._workers_ready)

    def _start_worker(self, worker: WorkerSpec) -> None:
        env = self._own_env(worker.home, user=worker.user, hostname=worker.hostname)
        env["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] = str(worker.log_port)
        airflow = str(self.venv / "bin" / "airflow")
        argv = [airflow, "celery", "worker", "--celery-hostname", f"{worker.hostname}@%h"]
        self._start(f"worker-{worker.name}", [_RUNUSER, "-u", worker.user, "--", *argv], env=env)

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL), PostgreSQL last."""
        for name, proc in reversed(list(self.processes.items())):
            signal_group(proc, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(10)
            signal_group(proc, signal.SIGKILL)
            proc.wait()
            self.processes.pop(name)
        for worker in self.workers:  # anything a worker's user left running
            subprocess.run(["pkill", "-KILL", "-u", worker.user], check=False, capture_output=True)
        data = self.root / "postgres" / "data"
        if data.exists():
            self._as_postgres(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"], check=False)

    def worker(self, name: str) -> WorkerSpec:
        """The worker called ``name`` (``a``) or with the hostname ``name`` (``worker-a``)."""
        return next(w for w in self.workers if name in (w.name, w.hostname))

    def kill_worker(self, name: str) -> None:
        """SIGKILL every process of one worker's user, as when its machine is lost; the worker's
        own process is forgotten (start it again with :meth:`restart_worker`).

        :param name: the worker's name or hostname
        """
        worker = self.worker(name)
        subprocess.run(["pkill", "-KILL", "-u", worker.user], check=False)
        proc = self.processes.pop(f"worker-{worker.name}")
        proc.wait(30)

    def restart_worker(self, name: str, timeout: float = 120) -> None:
        """Start a (killed) worker again, on what its user left on disk, and wait until it is ready."""
        worker = self.worker(name)
        log = self.log_dir / f"worker-{worker.name}.log"
        log.rename(log.with_suffix(f".{int(time.time())}.log"))
        self._start_worker(worker)
        self.wait_healthy(timeout, self._workers_ready)

    def restart(self, name: str, timeout: float = 120) -> None:
        """Stop one of the root-side services (``triggerer``, say) with SIGTERM and start it again.

        :param name: one of :data:`SERVICES`
        """
        proc = self.processes.pop(name)
        signal_group(proc, signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            signal_group(proc, signal.SIGKILL)
            proc.wait()
        log = self.log_dir / f"{name}.log"
        log.rename(log.with_suffix(f".{int(time.time())}.log"))
        env = self._services_env()
        self._start(name, [str(self.venv / "bin" / "airflow"), name], env=env)
        self.wait_healthy(timeout, self._workers_ready)

    def processes_of(self, name: str) -> list[str]:
        """The command lines of every process a worker's user runs now."""
        worker = self.worker(name)
        proc = subprocess.run(["pgrep", "-a", "-u", worker.user], capture_output=True, text=True, check=False)
        return proc.stdout.splitlines()

    # ------------------------------------------------------------------------------ parts

    def _build_venv(self) -> None:
        """The workers' virtualenv: the system Python, the pinned dependencies (kept between runs
        under a key of the constraints), and this source tree's provider, installed afresh."""
        uv = shutil.which("uv", path=str(Path(sys.executable).parent)) or "uv"
        log = self.log_dir / "venv.log"

        def install(*args: str) -> None:
            argv = [uv, "pip", "install", "--quiet", "--python", str(self.venv / "bin" / "python"), *args]
            _run(argv, log=log, env={**os.environ, "UV_LINK_MODE": "copy"})

        if not (self.venv / ".mlci-deps").exists():
            shutil.rmtree(self.venv, ignore_errors=True)
            _run([uv, "venv", "--quiet", "--python", SYSTEM_PYTHON, str(self.venv)], log=log)
            install("-c", str(self.project_dir / "constraints.txt"), f"{self.project_dir}[dev]")
            (self.venv / ".mlci-deps").touch()
        install("--no-deps", "--reinstall", str(self.project_dir))
        subprocess.run(["chmod", "-R", "a+rX", str(self.venv)], check=True)

    def _start_postgres(self) -> None:
        start_postgres(self.root / "postgres", self.pg_port, database="airflow")
        self._as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow", STUDIES_DATABASE])

    def _as_postgres(self, argv: list[str], *, check: bool = True) -> None:
        _as_postgres(argv, check=check)

    def _make_user(self, worker: WorkerSpec) -> None:
        try:
            pwd.getpwnam(worker.user)
        except KeyError:
            subprocess.run(
                [
                    "useradd",
                    "--no-create-home",
                    "--home-dir",
                    str(worker.home),
                    "--shell",
                    "/usr/sbin/nologin",
                    worker.user,
                ],
                check=True,
            )
        self._home(worker.home, user=worker.user)

    def _home(self, home: Path, *, user: str) -> None:
        """A home with the folders a component uses, all its own, mode 0700."""
        for sub in ("", "tmp", "airflow", "cache", "logs", "bundles"):
            folder = home / sub
            folder.mkdir(parents=True, exist_ok=True)
            if user != "root":
                group = grp.getgrgid(pwd.getpwnam(user).pw_gid).gr_name
                shutil.chown(folder, user, group)
            folder.chmod(0o700)
        (home / "gitconfig").write_text("[user]\n\tname = mlci worker\n\temail = worker@example.invalid\n")
        if user != "root":
            shutil.chown(home / "gitconfig", user)

    def _start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> None:
        with (self.log_dir / f"{name}.log").open("wb") as log:
            self.processes[name] = subprocess.Popen(
                argv,
                env=env or dict(os.environ),
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self.root,
            )

    def _workers_ready(self) -> bool:
        """Whether every worker's Celery said it is ready (under its own hostname)."""
        for worker in self.workers:
            said = (self.log_dir / f"worker-{worker.name}.log").read_text(errors="replace")
            if f"{worker.hostname}@" not in said or "ready." not in said:
                return False
        return True

    def _auth_headers(self) -> dict[str, str]:
        """A bearer token of :attr:`login`'s user (asked for once, at ``POST /auth/token``)."""
        if self._token is None:
            body = json.dumps({"username": self.login[0], "password": self.login[1]}).encode()
            request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1, the api-server started here)
                f"{self.base_url}/auth/token", data=body, headers={"Content-Type": "application/json"}
            )
            with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                self._token = json.loads(response.read())["access_token"]
        return {"Authorization": f"Bearer {self._token}"}

    def get(self, path: str) -> tuple[int, str]:
        """``GET`` a page of the api-server (a plugin's, say) as :attr:`login`'s user; return the
        status and the text."""
        request = urllib.request.Request(f"{self.base_url}{path}", headers=self._auth_headers())  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=15) as response:  # noqa: S310
                return response.status, response.read().decode(errors="replace")
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode(errors="replace")


def topology(*, database: str, broker: str, api_url: str, bucket: str, dags_refresh_interval: int) -> dict[str, str]:
    """The settings that make the production topology, for every component: the metadata database,
    Celery on Redis (its results in the database), the API the workers report to, DAGs from the git
    DAG bundle (connection :data:`DAGS_CONN_ID`, ``dags/`` of ``main``), task logs and the report
    store on S3 (connection :data:`S3_CONN_ID`), adaptive sweeps' studies in a database of their own
    (connection :data:`STUDIES_CONN_ID`), a real login (SimpleAuthManager). Used by
    :class:`Deployment` and compared with ``docker/docker-compose.yaml`` by the test suite.

    :param database: the SQLAlchemy URL of the PostgreSQL database
    :param broker: the Redis URL
    :param api_url: the api-server's execution API (``.../execution/``)
    :param bucket: the S3 bucket of logs (``logs/``) and reports (``reports/``)
    :param dags_refresh_interval: seconds between the DAG bundle's fetches
    """
    bundle = {
        "name": "dags",
        "classpath": "airflow.providers.git.bundles.git.GitDagBundle",
        "kwargs": {
            "git_conn_id": DAGS_CONN_ID,
            "tracking_ref": "main",
            "subdir": "dags",
            "refresh_interval": dags_refresh_interval,
        },
    }
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": database,
        "AIRFLOW__CELERY__BROKER_URL": broker,
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+{database}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": api_url,
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "False",
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([bundle]),
        "AIRFLOW__LOGGING__REMOTE_LOGGING": "True",
        "AIRFLOW__LOGGING__REMOTE_BASE_LOG_FOLDER": f"s3://{bucket}/logs",
        "AIRFLOW__LOGGING__REMOTE_LOG_CONN_ID": S3_CONN_ID,
        "AIRFLOW__MLCI__REPORTS_DIR": f"s3://{bucket}/reports",
        "AIRFLOW__MLCI__REPORTS_CONN_ID": S3_CONN_ID,
        "AIRFLOW__MLCI__OPTUNA_CONN_ID": STUDIES_CONN_ID,
    }


def dvc_connection(url: str, login: tuple[str, str], *, dvc_remote_url: str, endpoint: str) -> str:
    """An ``mlci_dvc`` connection (the JSON of an ``AIRFLOW_CONN_*`` variable) to a git repository
    over HTTP with a user and token, its DVC remote on the deployment's S3 (:data:`S3_CONN_ID`).

    :param url: the repository's URL
    :param login: the user and token
    :param dvc_remote_url: the DVC remote (``s3://...``)
    :param endpoint: the S3 endpoint
    """
    extra = {"dvc_remote_url": dvc_remote_url, "endpoint_url": endpoint, "aws_conn_id": S3_CONN_ID}
    return json.dumps({"conn_type": "mlci_dvc", "host": url, "login": login[0], "password": login[1], "extra": extra})


def _constraints_key(project_dir: Path) -> str:
    digest = hashlib.sha256()
    for name in ("constraints.txt", "setup.cfg"):
        digest.update((project_dir / name).read_bytes())
    return digest.hexdigest()[:12]


def start_postgres(folder: Path, port: int, *, database: str) -> None:
    """Start a PostgreSQL server of its own in ``folder`` on ``127.0.0.1:port`` (user ``airflow``,
    no password) with one database; as the ``postgres`` user, which the server wants (not root).

    :param folder: a new folder for its data and log
    :param port: its TCP port
    :param database: the database to create
    """
    folder.mkdir(parents=True, exist_ok=True)
    shutil.chown(folder, "postgres", "postgres")
    folder.chmod(0o700)
    data = folder / "data"
    _as_postgres(["initdb", "-D", str(data), "-U", "airflow", "--auth=trust", "--no-sync"])
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off"
    _as_postgres(["pg_ctl", "-D", str(data), "-l", str(folder / "server.log"), "-o", options, "-w", "start"])
    _as_postgres(["createdb", "-h", "127.0.0.1", "-p", str(port), "-U", "airflow", database])


@contextlib.contextmanager
def postgres_server(folder: Path, *, database: str = "mlci") -> Iterator[str]:
    """A PostgreSQL server for the duration (see :func:`start_postgres`); yields its
    ``postgresql+psycopg2://`` URL, stops it (immediately) on exit.

    :param folder: a new folder for its data and log
    :param database: the database to create
    """
    port = free_port()
    start_postgres(folder, port, database=database)
    try:
        yield f"postgresql+psycopg2://airflow@127.0.0.1:{port}/{database}"
    finally:
        _as_postgres(["pg_ctl", "-D", str(folder / "data"), "-m", "immediate", "-w", "stop"], check=False)


def _as_postgres(argv: list[str], *, check: bool = True) -> None:
    binary = _postgres_bin(argv[0])
    proc = subprocess.run(
        [_RUNUSER, "-u", "postgres", "--", binary, *argv[1:]], capture_output=True, text=True, check=False
    )
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:2])} failed ({proc.returncode}): {proc.stdout}{proc.stderr}")


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    return str(found[-1]) if found else name


def _run(argv: list[str], *, log: Path, env: dict[str, str] | None = None) -> None:
    with log.open("ab") as out:
        proc = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:3])} failed ({proc.returncode}); see {log}")
