"""The ``local`` compute backend's report of the GPUs a stage can use on this machine.

The stage itself runs through :func:`~airflow_provider_mlci.core.dvc.ops.repro` on the worker;
this module only finds the NVIDIA GPUs (with ``nvidia-smi``) so the task log says what the
stage had. A machine without ``nvidia-smi``, or where it fails, has no GPU: that is no error.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_mlci.core.runtime.process import CommandRunner

__all__ = ["NVIDIA_SMI_QUERY", "describe_gpus", "detect_gpus"]

log = logging.getLogger(__name__)

#: The ``nvidia-smi`` command line, one CSV line per GPU.
NVIDIA_SMI_QUERY = ("--query-gpu=index,name,memory.total,driver_version", "--format=csv,noheader")

_TIMEOUT_SECONDS = 20.0


def detect_gpus(runner: CommandRunner | None = None) -> list[dict[str, Any]]:
    """List this machine's NVIDIA GPUs: ``[{"index", "name", "memory_mib", "driver_version"}]``.

    Returns an empty list when ``nvidia-smi`` is not on ``PATH``, fails or prints nothing usable.

    :param runner: runs ``nvidia-smi`` (so it can be stopped with the task); ``None``: a plain
        subprocess with a timeout
    """
    program = shutil.which("nvidia-smi")
    if program is None:
        return []
    argv = [program, *NVIDIA_SMI_QUERY]
    try:
        if runner is not None:
            result = runner.run(argv, capture=True, quiet=True)
            returncode, stdout = result.returncode, result.stdout
        else:
            proc = subprocess.run(argv, capture_output=True, text=True, timeout=_TIMEOUT_SECONDS)
            returncode, stdout = proc.returncode, proc.stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.info("nvidia-smi could not run (%s): no GPU reported", exc)
        return []
    if returncode != 0:
        log.info("nvidia-smi ended with exit status %s: no GPU reported", returncode)
        return []
    return parse_nvidia_smi(stdout)


def parse_nvidia_smi(text: str) -> list[dict[str, Any]]:
    """Read ``nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader``.

    Lines that do not have the four fields are skipped.

    :param text: its standard output
    """
    gpus = []
    for line in text.splitlines():
        parts = [part.strip() for part in line.split(",")]
        if len(parts) != 4 or not parts[0].isdigit():
            continue
        index, name, memory, driver = parts
        amount = memory.split()[0] if memory else ""
        gpus.append(
            {
                "index": int(index),
                "name": name,
                "memory_mib": int(amount) if amount.isdigit() else None,
                "driver_version": driver,
            }
        )
    return gpus


def describe_gpus(gpus: list[dict[str, Any]]) -> str:
    """One log line saying what GPUs there are.

    :param gpus: what :func:`detect_gpus` returned
    """
    if not gpus:
        return "GPUs: none found (no working nvidia-smi on PATH); the stage runs on the CPU"
    driver = gpus[0].get("driver_version") or "unknown"
    items = []
    for gpu in gpus:
        memory = f", {gpu['memory_mib']} MiB" if gpu.get("memory_mib") else ""
        items.append(f"#{gpu['index']} {gpu['name']}{memory}")
    return f"GPUs: {len(gpus)} ({'; '.join(items)}), NVIDIA driver {driver}"
