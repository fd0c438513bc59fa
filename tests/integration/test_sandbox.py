"""A pull request's own code, run by a real Airflow task, finds none of the worker's secrets.

The DAG runs with ``dag.test()`` in a process of its own, started with sentinel secrets in its
environment (Fernet and JWT keys, an AWS secret, a connection with an SSH key), a home folder
with ``~/.aws/credentials`` and an ``airflow.cfg`` holding a sentinel: the "worker". Its stage
command and the pickle its model check loads print everything they can reach: environment,
every ``/proc/*/environ``, ``airflow.cfg``, ``~/.aws``, the temporary folder.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from airflow_provider_mlci.testing import create_dvc_project
from tests.helpers.tools import require_tool

SENTINELS = {
    "AIRFLOW__API_AUTH__JWT_SECRET": "SENTINEL-JWT-0123456789abcdef",
    "AWS_SECRET_ACCESS_KEY": "SENTINEL-AWS-ENV",
    "GITHUB_TOKEN": "SENTINEL-GITHUB-TOKEN",
}
KEY_TEXT = "-----BEGIN OPENSSH PRIVATE KEY-----\nSENTINEL-SSH-KEY\n-----END OPENSSH PRIVATE KEY-----"

DAG = """
from __future__ import annotations

import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.operators.model import ModelValidationOperator

with DAG("pr_code_probe", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    DvcReproOperator(task_id="stage", rev="main", sandbox=True)
    ModelValidationOperator(task_id="model", rev="main", model="model.pkl", code_paths=[], sandbox=True)
"""

RUN = """
import sys
from tests.conftest import load_dag_file
from pathlib import Path
dag = load_dag_file(Path(sys.argv[1]), "pr_code_probe")
run = dag.test()
print("RUN-STATE", run.state)
"""


def probe(airflow_cfg: Path, aws_file: Path, tag: str) -> str:
    """Python code that prints what it can reach of the worker between two markers."""
    return textwrap.dedent(
        f"""
        import glob, os
        seen = ["ENV " + k + "=" + v for k, v in os.environ.items()]
        for path in glob.glob("/proc/[0-9]*/environ"):
            try:
                seen.append(path + " " + open(path, "rb").read().decode(errors="replace").replace("\\0", " "))
            except OSError as exc:
                seen.append(path + " " + type(exc).__name__)
        for path in ({str(airflow_cfg)!r}, {str(aws_file)!r}, os.path.expanduser("~/.aws/credentials")):
            try:
                seen.append(path + " " + open(path).read())
            except OSError as exc:
                seen.append(path + " " + type(exc).__name__)
        for path in glob.glob("/tmp/*") + glob.glob("/tmp/*/*"):
            seen.append("TMP " + path)
            if os.path.isfile(path) and os.access(path, os.R_OK) and "key" in path:
                seen.append(open(path, errors="replace").read())
        print("{tag}-BEGIN " + " | ".join(seen).replace("\\n", " ") + " {tag}-END", flush=True)
        """
    )


class _Probe:
    """A pickle that runs the probe when it is loaded."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return (exec, (self.code,))


@pytest.fixture
def worker_home(tmp_path, airflow_db):
    home = tmp_path / "worker-home"
    (home / ".aws").mkdir(parents=True)
    aws_file = home / ".aws" / "credentials"
    aws_file.write_text("[default]\naws_secret_access_key = SENTINEL-AWS-FILE\n")
    cfg = Path(os.environ["AIRFLOW_HOME"]) / "airflow.cfg"
    original = cfg.read_text() if cfg.exists() else None
    with cfg.open("a") as fh:
        fh.write("\n# SENTINEL-AIRFLOW-CFG\n")
    yield home, cfg, aws_file
    if original is None:
        cfg.unlink()
    else:
        cfg.write_text(original)


def test_stage_commands_and_model_loading_see_no_worker_secret(tmp_path, worker_home, worker_cache, dags_folder):
    require_tool("bwrap", install="apt-get install -y bubblewrap")
    home, cfg, aws_file = worker_home
    template = tmp_path / "template"
    template.mkdir()
    (template / "dvc.yaml").write_text("stages:\n  probe:\n    cmd: python probe.py\n    outs: [probe.txt]\n")
    (template / "probe.py").write_text(probe(cfg, aws_file, "STAGE") + "open('probe.txt', 'w').write('done')\n")
    (template / "model.pkl").write_bytes(pickle.dumps(_Probe(probe(cfg, aws_file, "MODEL"))))
    project = create_dvc_project(template, tmp_path / "project")
    (dags_folder / "pr_code_probe.py").write_text(DAG)
    fernet = Fernet.generate_key().decode()
    connection = {
        "conn_type": "mlci_dvc",
        "host": str(project.remote),
        "extra": {"dvc_remote_url": project.dvc_remote_url, "private_key": KEY_TEXT},
    }
    env = {
        **os.environ,
        **SENTINELS,
        "AIRFLOW__CORE__FERNET_KEY": fernet,
        "AIRFLOW_CONN_MLCI_DVC_DEFAULT": json.dumps(connection),
        "AIRFLOW__MLCI__CACHE_DIR": str(worker_cache),
        "HOME": str(home),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN, str(dags_folder / "pr_code_probe.py")],
        env=env,
        cwd=Path(__file__).parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = done.stdout + done.stderr
    assert "RUN-STATE" in out, out[-3000:]
    seen = {}
    for tag in ("STAGE", "MODEL"):
        assert f"{tag}-BEGIN" in out, f"the {tag.lower()} probe did not run:\n{out[-3000:]}"
        seen[tag] = out.split(f"{tag}-BEGIN", 1)[1].split(f"{tag}-END", 1)[0]
        assert "DVC_ROOT=" in seen[tag] or tag == "MODEL"  # the probe printed its environment
        assert "/proc/1/environ" in seen[tag]
    for tag, text in seen.items():
        for secret in [*SENTINELS.values(), fernet, "SENTINEL-SSH-KEY", "SENTINEL-AWS-FILE", "SENTINEL-AIRFLOW-CFG"]:
            assert secret not in text, f"{tag} saw {secret}"
        assert "mlci-git" not in text
        assert "id_key" not in text
        assert "AIRFLOW" not in text
