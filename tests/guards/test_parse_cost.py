"""Parsing is free: what a DAG file imports loads none of the heavy libraries.

The dag-processor re-imports every DAG file every 30 seconds. In a fresh interpreter that has
already imported ``airflow.sdk`` (as the dag-processor has), importing every module a DAG file
may import from this provider, and running every example DAG file, must leave none of the
heavy libraries in ``sys.modules``.
"""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import airflow_provider_mlci
from tests.conftest import EXAMPLE_DAGS

pytestmark = pytest.mark.smoke  # also on every supported Airflow and Python (make smoke)

HEAVY = ("dvc", "pandas", "pandera", "numpy", "boto3", "botocore", "sklearn", "pyarrow", "scipy", "moto", "github")
HEAVY_PREFIXES = ("airflow.providers.amazon.aws",)  # its hooks, operators and boto3 behind them
#: What DAG files import: the package root, these subpackages and these modules.
DAG_FACING_PACKAGES = ("operators", "sensors", "task_groups", "links", "triggers")  # triggers: AssetWatchers
DAG_FACING_MODULES = ("assets", "config", "exceptions", "get_provider_info", "lineage", "settings", "report_store")

_PROBE = """
import importlib, json, runpy, sys, time
import airflow.sdk
baseline = set(sys.modules)
started = time.perf_counter()
for name in {modules!r}:
    importlib.import_module(name)
root = importlib.import_module("airflow_provider_mlci")
for name in root.__all__:
    getattr(root, name)
imported = time.perf_counter() - started
for path in {dag_files!r}:
    runpy.run_path(path)
heavy = sorted(
    m for m in sys.modules
    if m.split(".")[0] in {heavy!r} or m.startswith({prefixes!r})
)
print(json.dumps({{"heavy": heavy, "preloaded": sorted(set(heavy) & baseline), "import_seconds": imported}}))
"""


def dag_facing_modules() -> list[str]:
    root = Path(airflow_provider_mlci.__file__).parent
    names = ["airflow_provider_mlci"]
    for module in DAG_FACING_MODULES:
        if (root / f"{module}.py").exists():
            names.append(f"airflow_provider_mlci.{module}")
    for package in DAG_FACING_PACKAGES:
        if (root / package / "__init__.py").exists():
            prefix = f"airflow_provider_mlci.{package}."
            names.append(prefix[:-1])
            names += [info.name for info in pkgutil.walk_packages([str(root / package)], prefix)]
    return names


def probe(modules: list[str], dag_files: list[str]) -> dict:
    code = _PROBE.format(modules=modules, dag_files=dag_files, heavy=HEAVY, prefixes=HEAVY_PREFIXES)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_the_guard_sees_the_modules_dag_files_import():
    modules = dag_facing_modules()
    assert "airflow_provider_mlci.operators.dvc" in modules
    assert "airflow_provider_mlci.exceptions" in modules
    assert not any(".core" in name or ".hooks" in name for name in modules)


def test_importing_what_dag_files_import_loads_no_heavy_library():
    result = probe(dag_facing_modules(), [])
    assert result["preloaded"] == [], "airflow.sdk itself loaded these; the guard cannot judge them"
    assert result["heavy"] == [], f"parse-time imports pulled in heavy libraries: {result['heavy']}"


def test_example_dag_files_parse_without_heavy_libraries():
    files = sorted(str(p) for p in EXAMPLE_DAGS.glob("*.py"))
    assert files
    result = probe([], files)
    assert result["heavy"] == [], f"example DAGs pulled in heavy libraries at parse time: {result['heavy']}"


def test_the_guard_can_fail():
    """A module that imports a heavy library is caught (the probe is not blind)."""
    result = probe(["json", "dvc.repo"], [])
    assert "dvc.repo" in result["heavy"]
