"""The wheel of the worker's own code that a GPU instance installs the agent from.

That the agent runs from it without Airflow is shown end to end by
``tests/integration/test_example_gpu_training.py`` (the instance emulator's ``from_wheel``).
"""

from __future__ import annotations

import base64
import hashlib
import io
import subprocess
import sys
import zipfile
from importlib.metadata import version

from airflow_provider_mlci import __version__
from airflow_provider_mlci.core.compute import agent_dist


def test_the_wheel_is_the_package_without_bytecode_and_the_same_bytes_each_time():
    data = agent_dist.package_wheel()
    assert agent_dist.package_wheel() == data  # the boot script names the same wheel on every try
    with zipfile.ZipFile(io.BytesIO(data)) as wheel:
        names = wheel.namelist()
        info = f"airflow_provider_mlci-{__version__}.dist-info"
        assert "airflow_provider_mlci/agent/__main__.py" in names
        assert "airflow_provider_mlci/core/compute/jobs.py" in names
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        metadata = wheel.read(f"{info}/METADATA").decode()
        assert f"Version: {__version__}" in metadata
        assert "Requires-Dist" not in metadata  # installed with --no-deps: no Airflow comes with it
        assert "Tag: py3-none-any" in wheel.read(f"{info}/WHEEL").decode()
        record = wheel.read(f"{info}/RECORD").decode().splitlines()
        for line in record:
            name, digest, size = line.rsplit(",", 2)
            if name == f"{info}/RECORD":
                continue
            body = wheel.read(name)
            assert digest == "sha256=" + base64.urlsafe_b64encode(hashlib.sha256(body).digest()).rstrip(b"=").decode()
            assert int(size) == len(body)
        assert len(record) == len(names)
    assert agent_dist.wheel_name() == f"airflow_provider_mlci-{__version__}-py3-none-any.whl"


def test_pip_installs_the_wheel_alone(tmp_path):
    wheel = tmp_path / agent_dist.wheel_name()
    wheel.write_bytes(agent_dist.package_wheel())
    site = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--target", str(site), str(wheel)],
        check=True,
        capture_output=True,
    )
    assert (site / "airflow_provider_mlci" / "agent" / "__init__.py").is_file()
    assert (site / f"airflow_provider_mlci-{__version__}.dist-info" / "RECORD").is_file()


def test_the_requirements_are_pinned_to_the_workers_versions():
    pinned = agent_dist.agent_requirements()
    assert pinned == [f"{name}=={version(name)}" for name in agent_dist.AGENT_DISTRIBUTIONS]
    assert not [r for r in pinned if r.lower().startswith("apache-airflow")]
