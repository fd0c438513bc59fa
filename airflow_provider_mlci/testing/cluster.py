"""A real Airflow deployment on this machine: scheduler, dag-processor, api-server, triggerer.

LocalExecutor on the SQLite database of an ``AIRFLOW_HOME`` of its own (``<home>/airflow.db``, made
with ``airflow db migrate`` unless it exists, and DAG files in ``<home>/dags``): nothing else that
uses Airflow on this machine (``dag.test()`` runs, another cluster) shares its database or its DAGs
folder, so its scheduler never picks up their runs. Parallelism 2 by default. Each component runs in
its own process group (started with ``setsid``), so :meth:`AirflowCluster.stop` can end it with
everything it spawned; their output goes to one log file each. Used by the test suite and by
``bench/``; handy for end-to-end tests of your own DAGs.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")
TERMINAL = {"success", "failed"}

__all__ = ["COMPONENTS", "AirflowCluster", "AirflowDriver", "free_port", "leftover_processes", "signal_group"]


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now (another process may take it before you bind it)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class AirflowDriver:
    """Drive a running Airflow through its REST API at :attr:`base_url` (subclasses start it and
    say, in :meth:`_check_alive`, whether its processes still run)."""

    base_url: str
    log_dir: Path
    processes: dict[str, subprocess.Popen[bytes]]

    def _check_alive(self) -> None:
        """Raise if a process has exited (its output is ``<log_dir>/<name>.log``)."""
        for name, proc in self.processes.items():
            if proc.poll() is not None:
                tail = (self.log_dir / f"{name}.log").read_text(errors="replace")[-3000:]
                raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def wait_healthy(self, timeout: float, ready: Callable[[], bool] | None = None) -> None:
        """Wait until the API says scheduler, triggerer and dag-processor are healthy (and
        ``ready()`` says yes).

        :param timeout: seconds
        :param ready: more to wait for
        """
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                health = self.api("GET", "/api/v2/monitor/health")
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                time.sleep(1)
                continue
            parts = ("scheduler", "triggerer", "dag_processor")
            if all((health.get(part) or {}).get("status") == "healthy" for part in parts) and (
                ready is None or ready()
            ):
                return
            time.sleep(1)
        raise TimeoutError(f"Airflow did not become healthy in {timeout} s; logs in {self.log_dir}")

    def api(self, method: str, path: str, body: Any = None) -> Any:
        """Call the REST API and return the decoded JSON answer."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json", **self._auth_headers()}
        request = urllib.request.Request(  # noqa: S310 (http://127.0.0.1, the api-server started here)
            f"{self.base_url}{path}", data=data, method=method, headers=headers
        )
        with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
            payload = response.read()
        return json.loads(payload) if payload else None

    _admin_token: str | None = None

    def _auth_headers(self) -> dict[str, str]:
        """An admin's bearer token, asked for once at ``GET /auth/token``.

        Every user is an admin here (``[core] simple_auth_manager_all_admins``): Airflow 3.3 lets a
        request without a token in, 3.1 and 3.2 hand one out to anyone who asks.
        """
        if self._admin_token is None:
            url = f"{self.base_url}/auth/token"
            with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 (the api-server started here)
                self._admin_token = json.loads(response.read())["access_token"]
        return {"Authorization": f"Bearer {self._admin_token}"}

    def wait_for_dag(self, dag_id: str, timeout: float = 90) -> None:
        """Wait until the dag-processor has parsed ``dag_id``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                self.api("GET", f"/api/v2/dags/{dag_id}")
                return
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
            time.sleep(1)
        raise TimeoutError(f"DAG {dag_id} was not parsed in {timeout} s; logs in {self.log_dir}")

    def trigger(self, dag_id: str, conf: dict | None = None, *, logical_date: str | None = None) -> str:
        """Trigger a run of ``dag_id`` and return its run id.

        :param dag_id: the DAG
        :param conf: the run's ``conf``
        :param logical_date: its logical date (ISO 8601); default: none (a run "now")
        """
        self.wait_for_dag(dag_id)
        self.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        body = {"logical_date": logical_date, "conf": conf or {}}
        run = self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", body)
        return run["dag_run_id"]

    def xcom(self, dag_id: str, run_id: str, task_id: str, *, map_index: int = -1, key: str = "return_value") -> Any:
        """What a task instance pushed to XCom (``None`` if nothing), as JSON."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        try:
            entry = self.api("GET", f"{path}?map_index={map_index}&deserialize=true")
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise
        value = entry["value"]
        return json.loads(value) if isinstance(value, str) and value[:1] in "[{" else value

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 300) -> str:
        """Wait for the run to end; return its state. Every task state seen on the way is kept
        in :attr:`seen_states` (``{(task_id, map_index): {states}}``)."""
        self.seen_states: dict[tuple[str, int], set[str]] = {}
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive()
            for ti in self.task_instances(dag_id, run_id):
                self.seen_states.setdefault((ti["task_id"], ti["map_index"]), set()).add(str(ti["state"]))
            state = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in TERMINAL:
                return state
            time.sleep(0.5)
        raise TimeoutError(f"run {run_id} of {dag_id} did not end in {timeout} s; logs in {self.log_dir}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        """Every task instance of the run, as the REST API describes them."""
        answer = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=100")
        return answer["task_instances"]

    def explain(self, dag_id: str, run_id: str, *, lines: int = 12) -> str:
        """Each task's state, and the last log lines (warnings and errors first) of every task
        that failed: what a failed test should print, since the cluster's own logs end with it."""
        tis = self.task_instances(dag_id, run_id)
        parts = [", ".join(f"{ti['task_id']}={ti['state']}" for ti in tis)]
        for ti in tis:
            if ti["state"] not in ("failed", "up_for_retry"):
                continue
            for try_number in range(1, int(ti.get("try_number") or 1) + 1):
                path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{ti['task_id']}/logs/{try_number}"
                try:
                    answer = self.api("GET", f"{path}?full_content=true&map_index={ti['map_index']}")
                except (OSError, ValueError) as exc:
                    parts.append(f"{ti['task_id']} try {try_number}: no log ({exc})")
                    continue
                events = [e for e in (answer or {}).get("content") or [] if isinstance(e, dict)]
                loud = [e for e in events if str(e.get("level", "")).lower() in ("warning", "error", "critical")]
                shown = (loud or events)[-lines:]
                text = "\n".join(f"  [{e.get('level', '')}] {e.get('event', '')}{_exception(e)}" for e in shown)
                parts.append(f"{ti['task_id']} try {try_number}:\n{text}")
        return "\n".join(parts)

    def add_connection(self, conn_id: str, conn_type: str, **fields: Any) -> None:
        """Create (or replace) a connection in the metadata database through the API."""
        try:
            self.api("DELETE", f"/api/v2/connections/{conn_id}")
        except urllib.error.HTTPError as exc:
            if exc.code != 404:
                raise
        body = {"connection_id": conn_id, "conn_type": conn_type, **fields}
        if isinstance(body.get("extra"), dict):
            body["extra"] = json.dumps(body["extra"])
        self.api("POST", "/api/v2/connections", body)


class AirflowCluster(AirflowDriver):
    """Start, drive and stop a real Airflow on ``home``.

    :param home: the ``AIRFLOW_HOME``: its own SQLite database ``airflow.db`` (made on start if
        missing) and DAGs folder ``dags/`` (:attr:`dags_folder`)
    :param log_dir: where each component's output goes
    :param parallelism: the executor's parallelism
    """

    def __init__(self, *, home: Path, log_dir: Path, parallelism: int = 2) -> None:
        self.home = home
        self.log_dir = log_dir
        self.dags_folder = home / "dags"
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            **os.environ,
            "PATH": os.pathsep.join([bin_dir, os.environ.get("PATH", "")]),
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": "mlci-test-cluster-secret-0123456789",
            "AIRFLOW__API__SECRET_KEY": "mlci-test-cluster-key",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
            "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "3",
            "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
        }
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, timeout: float = 120) -> None:
        """Start every component and wait until the API says they are healthy."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.dags_folder.mkdir(parents=True, exist_ok=True)
        airflow = str(Path(sys.executable).parent / "airflow")
        if not (self.home / "airflow.db").exists():
            with (self.log_dir / "db-migrate.log").open("wb") as log:
                subprocess.run(
                    [airflow, "db", "migrate"], env=self.env, stdout=log, stderr=subprocess.STDOUT, check=True
                )
        for name in COMPONENTS:
            args = [airflow, name] + (["--port", str(self.port)] if name == "api-server" else [])
            with (self.log_dir / f"{name}.log").open("wb") as log:
                self.processes[name] = subprocess.Popen(
                    args, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
                )
        self.wait_healthy(timeout)

    def explain(self, dag_id: str, run_id: str, *, lines: int = 12) -> str:
        """As :meth:`AirflowDriver.explain`, with the scheduler's and api-server's own lines about
        each failed task: a task that fails after its code ended (its state not reported) leaves
        nothing in its task log."""
        text = super().explain(dag_id, run_id, lines=lines)
        failed = [ti["task_id"] for ti in self.task_instances(dag_id, run_id) if ti["state"] == "failed"]
        for name in ("scheduler", "api-server"):
            path = self.log_dir / f"{name}.log"
            if not failed or not path.exists():
                continue
            said = [
                line
                for line in path.read_text(errors="replace").splitlines()
                if any(task_id in line for task_id in failed) or "Traceback" in line or "rror" in line
            ]
            text += f"\n{name}.log:\n" + "\n".join(f"  {line[:400]}" for line in said[-lines:])
        return text

    def stop(self) -> None:
        """Stop every component and everything it started (SIGTERM, then SIGKILL)."""
        for proc in self.processes.values():
            signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.processes.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(max(0.1, deadline - time.monotonic()))
        for proc in self.processes.values():
            signal_group(proc, signal.SIGKILL)
            proc.wait()

    def process_groups(self) -> list[int]:
        """The process groups of the components (for checking nothing is left behind)."""
        return [proc.pid for proc in self.processes.values()]


def leftover_processes(groups: list[int]) -> list[int]:
    """The live processes (zombies count as dead) in any of the process groups ``groups``."""
    from airflow_provider_mlci.testing.procs import alive

    left = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(ProcessLookupError):
                if os.getpgid(int(entry)) in groups and alive(int(entry)):
                    left.append(int(entry))
    return left


def _exception(event: dict[str, Any]) -> str:
    """The exception a structured log event carries (``error_detail``), as ``: Type: message``."""
    details = event.get("error_detail") or []
    return "".join(
        f": {d.get('exc_type', '')}: {str(d.get('exc_value', ''))[:500]}" for d in details if isinstance(d, dict)
    )


def signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)
