"""``make airflow``: the Airflow UI with the example DAGs (``airflow standalone``).

Uses the demo's Airflow home (``.demo/airflow``, SQLite) and, if missing, builds the demo
project so the example DAGs have a repository to work on. Stop with Ctrl-C: every process
standalone started is stopped with it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from demo import BIN, DEMO, airflow_env, build_project

PORT = os.environ.get("PORT", "8080")


def main() -> int:
    remote = DEMO / "project" / "remote.git"
    if not remote.exists():
        print("Building the demo project for the example DAGs ...", flush=True)
        build_project(DEMO / "project")
    env = airflow_env(str(remote))
    env["AIRFLOW__API__PORT"] = PORT
    env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] = f"http://localhost:{PORT}/execution/"
    passwords = DEMO / "airflow" / "simple_auth_manager_passwords.json.generated"
    log_path = DEMO / "logs" / "standalone.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [str(BIN / "airflow"), "standalone"], env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )

    def stop(*_: object) -> None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            time.sleep(3)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    signal.signal(signal.SIGTERM, lambda *_: (stop(), sys.exit(0)))
    print(f"Starting Airflow (log: {log_path}) ...", flush=True)
    try:
        deadline = time.monotonic() + 180
        while not passwords.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        if not passwords.exists():
            print(f"Airflow did not start; see {log_path}")
            stop()
            return 1
        # The pool the GPU example's launch and work tasks take a slot of (sized to a GPU quota).
        subprocess.run(
            [str(BIN / "airflow"), "pools", "set", "mlci_gpu", "2", "GPU instances", "--include-deferred"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            check=False,
        )
        user, password = next(iter(json.loads(passwords.read_text()).items()))
        print(f"Airflow UI: http://localhost:{PORT}  user: {user}  password: {password}")
        print(f"(the login is kept in {passwords}; Ctrl-C stops everything)", flush=True)
        proc.wait()
    except KeyboardInterrupt:
        pass
    finally:
        stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
