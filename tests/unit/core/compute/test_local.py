"""GPU report of the ``local`` backend. This machine has no GPU: a stand-in ``nvidia-smi``
script (named as such) put first on ``PATH`` answers as the real one does."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from airflow_provider_mlci.core.compute.local import (
    NVIDIA_SMI_QUERY,
    describe_gpus,
    detect_gpus,
    parse_nvidia_smi,
)
from airflow_provider_mlci.core.runtime.process import CommandRunner

TWO_GPUS = "0, Tesla T4, 15360 MiB, 535.104.05\n1, NVIDIA A10G, 23028 MiB, 535.104.05\n"


def stand_in_nvidia_smi(folder: Path, *, output: str = TWO_GPUS, status: int = 0) -> Path:
    """Write a stand-in ``nvidia-smi`` that records its arguments and prints ``output``."""
    folder.mkdir(parents=True, exist_ok=True)
    script = folder / "nvidia-smi"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > "{folder}/argv"\ncat <<\'OUT\'\n{output}OUT\nexit {status}\n')
    script.chmod(0o755)
    return folder


@pytest.fixture
def on_path(monkeypatch, tmp_path):
    def _put(**kwargs) -> Path:
        folder = stand_in_nvidia_smi(tmp_path / "bin", **kwargs)
        monkeypatch.setenv("PATH", os.pathsep.join([str(folder), os.environ["PATH"]]))
        return folder

    return _put


@pytest.mark.parametrize("with_runner", [False, True])
def test_gpus_are_read_from_nvidia_smi(on_path, with_runner):
    folder = on_path()
    runner = CommandRunner(log=logging.getLogger("test")) if with_runner else None
    gpus = detect_gpus(runner)
    assert gpus == [
        {"index": 0, "name": "Tesla T4", "memory_mib": 15360, "driver_version": "535.104.05"},
        {"index": 1, "name": "NVIDIA A10G", "memory_mib": 23028, "driver_version": "535.104.05"},
    ]
    assert (folder / "argv").read_text().split() == list(NVIDIA_SMI_QUERY)
    line = describe_gpus(gpus)
    assert line == "GPUs: 2 (#0 Tesla T4, 15360 MiB; #1 NVIDIA A10G, 23028 MiB), NVIDIA driver 535.104.05"
    assert "\n" not in line


def test_no_nvidia_smi_means_no_gpu(monkeypatch, tmp_path):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert detect_gpus() == []
    assert describe_gpus([]).startswith("GPUs: none found")


def test_a_failing_nvidia_smi_means_no_gpu(on_path):
    on_path(output="NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver.\n", status=9)
    assert detect_gpus() == []
    assert detect_gpus(CommandRunner()) == []


def test_unreadable_output_means_no_gpu(on_path):
    on_path(output="No devices were found\n")
    assert detect_gpus() == []


def test_parse_tolerates_odd_lines():
    text = "\n0, Tesla V100-SXM2-16GB, [N/A], 470.1\ngarbage\n"
    assert parse_nvidia_smi(text) == [
        {"index": 0, "name": "Tesla V100-SXM2-16GB", "memory_mib": None, "driver_version": "470.1"}
    ]
    assert describe_gpus(parse_nvidia_smi(text)) == "GPUs: 1 (#0 Tesla V100-SXM2-16GB), NVIDIA driver 470.1"
