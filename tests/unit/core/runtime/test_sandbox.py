"""The sandbox for a revision's own code: what stage commands and model loading can and cannot see.

Everything here runs for real: bubblewrap in new namespaces, DVC running stage commands through
our stage shell, a local bare git remote and a local DVC remote.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.dvc.ops import ReproRequest
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig, check_available, confine, stage_environment
from airflow_provider_mlci.exceptions import DvcStageFailedError, MlciConfigError, SandboxUnavailableError
from airflow_provider_mlci.testing import create_dvc_project
from tests.helpers.dvc_remote import access_for, remote_files
from tests.helpers.tools import require_tool

ON = SandboxConfig(enabled=True)


@pytest.fixture(autouse=True)
def _bwrap():
    """Bubblewrap: every test here either runs something sandboxed or compares with it."""
    require_tool("bwrap", install="apt-get install -y bubblewrap")


def _probe_script(sentinel_file: Path) -> str:
    """A program that prints what it can find of the worker: environment, /proc, files, /tmp."""
    return textwrap.dedent(
        f"""
        import glob, os
        seen = [k + "=" + v for k, v in os.environ.items()]
        for path in glob.glob("/proc/[0-9]*/environ"):
            try:
                seen.append(path + " " + open(path, "rb").read().decode(errors="replace"))
            except OSError:
                pass
        for path in ({str(sentinel_file)!r}, os.path.expanduser("~/.aws/credentials")):
            try:
                seen.append(path + " " + open(path).read())
            except OSError:
                pass
        seen.extend(glob.glob("/tmp/*") + glob.glob("/tmp/mlci-*/*"))
        print("PROBE", len(glob.glob("/proc/[0-9]*")), "processes")
        print("\\n".join(seen))
        """
    )


def test_stage_environment_keeps_the_allow_list_and_drops_the_worker_s_secrets():
    worker = {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "DVC_ROOT": "/ckout",
        "DVC_EXP_NAME": "trial-1",
        "CUDA_VISIBLE_DEVICES": "0",
        "AIRFLOW__CORE__FERNET_KEY": "fernet",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://u:p@db/airflow",
        "AIRFLOW_CONN_MLCI_DVC_DEFAULT": '{"password": "tok"}',
        "AWS_SECRET_ACCESS_KEY": "aws",
        "DVC_STUDIO_TOKEN": "studio",
        "WANDB_API_KEY": "wandb",
        "WANDB_MODE": "offline",
    }
    assert stage_environment(worker, ["WANDB_MODE"]) == {
        "PATH": "/usr/bin",
        "LC_ALL": "C.UTF-8",
        "DVC_ROOT": "/ckout",
        "DVC_EXP_NAME": "trial-1",
        "CUDA_VISIBLE_DEVICES": "0",
        "WANDB_MODE": "offline",
        "SHELL": "/bin/sh",
        "DVC_NO_ANALYTICS": "1",
    }


def test_config_from_an_operator_argument():
    default = SandboxConfig(env=("WANDB_MODE",))
    assert SandboxConfig.of(None, default) is default
    assert SandboxConfig.of(True, default) == SandboxConfig(enabled=True, env=("WANDB_MODE",))
    assert SandboxConfig.of({"timeout_s": 60, "env": ["X"]}, default) == SandboxConfig(
        enabled=True, env=("X",), timeout_s=60
    )
    for bad in ("yes", {"timeout_s": -1}, {"cpus": 2}, {"env": "A,B"}, {"readable": ["relative/dir"]}):
        with pytest.raises(MlciConfigError):
            SandboxConfig.of(bad, default)


def test_without_bubblewrap_a_sandboxed_run_fails_naming_the_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))  # a worker where bwrap is not installed
    with pytest.raises(SandboxUnavailableError) as info:
        check_available()
    assert str(info.value) == (
        "[mlci] sandbox is on but bubblewrap (bwrap) is not installed on this worker: install it (Debian/Ubuntu: "
        "apt-get install bubblewrap) or run only trusted revisions with the sandbox off."
    )
    with pytest.raises(SandboxUnavailableError):
        confine(ON, ["true"], cwd=tmp_path, environ=os.environ)


def test_confined_code_sees_no_worker_secret_process_file_or_network(monkeypatch, tmp_path):
    secret_file = tmp_path / "home" / "airflow.cfg"
    secret_file.parent.mkdir()
    secret_file.write_text("fernet_key = SENTINEL-CFG\n")
    (tmp_path / "home" / ".aws").mkdir()
    (tmp_path / "home" / ".aws" / "credentials").write_text("aws_secret_access_key = SENTINEL-AWS-FILE\n")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MY_APP_TOKEN", "SENTINEL-ENV")
    leftover = Path(os.environ.get("TMPDIR", "/tmp")) / f"mlci-git-{os.getpid()}-probe"
    leftover.mkdir(exist_ok=True)
    (leftover / "id_key").write_text("SENTINEL-KEY")
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "probe.py").write_text(_probe_script(secret_file))
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    (checkout / "net.py").write_text(
        f"import socket\ntry:\n    socket.create_connection(('127.0.0.1', {port}), timeout=2)\n"
        "    print('NET-REACHED')\nexcept OSError as exc:\n    print('NET-REFUSED', exc)\n"
    )
    try:
        outputs = {}
        for config in (SandboxConfig(), ON):
            text = ""
            for script in ("probe.py", "net.py"):
                argv, env = confine(config, [sys.executable, script], cwd=checkout, environ=os.environ)
                done = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, check=True)
                text += done.stdout
            outputs[config.enabled] = text
    finally:
        listener.close()
        shutil.rmtree(leftover)
    unconfined, confined = outputs[False], outputs[True]
    # Without the sandbox, the allow-listed environment alone does not hide the worker: its
    # files and temporary folders are there to read (why the sandbox exists).
    assert "SENTINEL-ENV" not in unconfined
    assert "SENTINEL-CFG" in unconfined
    assert f"{leftover}/id_key" in unconfined
    assert "NET-REACHED" in unconfined
    assert "PROBE" in confined
    assert "NET-REFUSED" in confined
    for sentinel in ("SENTINEL-ENV", "SENTINEL-CFG", "SENTINEL-AWS-FILE", "SENTINEL-KEY", "id_key"):
        assert sentinel not in confined, sentinel
    processes = int(confined.split("PROBE ", 1)[1].split()[0])
    assert processes <= 3  # bubblewrap's init, the interpreter: nothing of the worker


STAGES = {
    "make": "make:\n  cmd: python make.py\n  deps: [make.py]\n  outs: [out.txt]\n",
    "grab": "grab:\n  cmd: ln -s /etc/hostname grabbed.txt\n  outs: [grabbed.txt]\n",
    "slow": "slow:\n  cmd: sleep 30\n",
    "big": "big:\n  cmd: python -c 'bytearray(400 * 2**20)'\n",
}
#: Writes what it finds: "untrusted" in the sandbox (a stand-in for a poisoned result), else "trusted".
MAKE = "import os\nopen('out.txt', 'w').write('untrusted' if os.path.isdir('/home/mlci-sandbox') else 'trusted')\n"


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sandbox-template")
    (folder / "template").mkdir()
    (folder / "template" / "dvc.yaml").write_text(
        "stages:\n" + "".join(textwrap.indent(s, "  ") for s in STAGES.values())
    )
    (folder / "template" / "make.py").write_text(MAKE)
    return create_dvc_project(folder / "template", folder / "project")


@pytest.fixture
def project(template, tmp_path):
    """A private copy: its own git and DVC remotes."""
    return template.copy_to(tmp_path / "project")


def test_an_untrusted_run_s_run_cache_is_never_restored_into_a_trusted_run(project, tmp_path):
    """The untrusted run's result differs from what the code would give (a stand-in for
    poisoning); a trusted run of the same stage on the same worker must run it, not restore it."""
    cache = tmp_path / "worker-cache"
    access = access_for(project)
    with Workspace.open(access, "main", cache_dir=cache, sandbox=ON) as ws:
        assert dvc_ops.repro(ws, ReproRequest(targets=("make",))).stages == {"make": "ran"}
        assert (ws.path / "out.txt").read_text() == "untrusted"
        private = ws.private_cache
        assert private is not None
        assert any(private.rglob("*"))
    assert not private.exists()
    assert not any(name.startswith("runs/") for name in remote_files(project.dvc_remote_url))
    assert not (cache / "dvc" / "cache" / "runs").exists()
    with Workspace.open(access, "main", cache_dir=cache) as ws:
        assert dvc_ops.repro(ws, ReproRequest(targets=("make",))).stages == {"make": "ran"}
        assert (ws.path / "out.txt").read_text() == "trusted"
    assert any(name.startswith("runs/") for name in remote_files(project.dvc_remote_url))


def where(project) -> str:
    """How an error names the repository and revision a stage ran at."""
    return f"[in {project.remote} at main ({project.head()[:12]})]"


def stage_output(caplog) -> list[str]:
    """The lines of stage output (and DVC's own) the workspace logged at info."""
    return [
        r.getMessage()
        for r in caplog.records
        if (r.name, r.levelname) == ("airflow_provider_mlci.core.repo.workspace", "INFO")
    ]


def test_a_sandboxed_stage_that_links_out_of_the_checkout_fails_and_pushes_nothing(project, tmp_path, caplog):
    before = remote_files(project.dvc_remote_url)
    with (
        Workspace.open(access_for(project), "main", cache_dir=tmp_path / "cache", sandbox=ON) as ws,
        caplog.at_level("INFO"),
        pytest.raises(DvcStageFailedError) as info,
    ):
        dvc_ops.repro(ws, ReproRequest(targets=("grab",)))
    assert str(info.value) == (
        f"failed to reproduce 'grab': failed to run: ln -s /etc/hostname grabbed.txt, exited with 1 {where(project)}"
    )
    assert (
        stage_output(caplog).count(
            "mlci: the stage command left links that lead out of the checkout: grabbed.txt -> /etc/hostname"
        )
        == 1
    )
    assert remote_files(project.dvc_remote_url) == before


def test_a_stage_past_its_time_or_memory_limit_is_stopped(project, tmp_path, caplog):
    limits = {"slow": SandboxConfig(enabled=True, timeout_s=1), "big": SandboxConfig(enabled=True, memory_mb=300)}
    failures = {}
    for stage, config in limits.items():
        with (
            Workspace.open(access_for(project), "main", cache_dir=tmp_path / "cache", sandbox=config) as ws,
            caplog.at_level("INFO"),
            pytest.raises(DvcStageFailedError) as info,
        ):
            dvc_ops.repro(ws, ReproRequest(targets=(stage,), push=False))
        failures[stage] = str(info.value)
    assert failures == {
        "slow": f"failed to reproduce 'slow': failed to run: sleep 30, exited with 137 {where(project)}",
        "big": "failed to reproduce 'big': failed to run: python -c 'bytearray(400 * 2**20)', exited with 1 "
        f"{where(project)}",
    }
    output = stage_output(caplog)
    assert output.count("mlci: the stage command ran past the sandbox time limit of 1.0 s and was killed") == 1
    assert output.count("MemoryError") == 1
