"""CI/CD for machine learning on Apache Airflow 3.

Importing the package is cheap: it loads nothing but this file. The names below are
re-exported lazily, on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_LAZY = {
    "DataValidationOperator": "airflow_provider_mlci.operators.validation",
    "DvcHook": "airflow_provider_mlci.hooks.dvc",
    "DvcReproOperator": "airflow_provider_mlci.operators.dvc",
    "GpuCreateInstanceOperator": "airflow_provider_mlci.operators.gpu",
    "GpuInstanceSpec": "airflow_provider_mlci.core.compute.spec",
    "GpuRunTaskGroup": "airflow_provider_mlci.task_groups.gpu",
    "GpuTerminateInstanceOperator": "airflow_provider_mlci.operators.gpu",
    "MetricsReportOperator": "airflow_provider_mlci.operators.report",
    "MlciError": "airflow_provider_mlci.exceptions",
    "ModelGateBranchOperator": "airflow_provider_mlci.operators.model",
    "ModelGateOperator": "airflow_provider_mlci.operators.model",
    "ModelValidationOperator": "airflow_provider_mlci.operators.model",
    "PromoteModelOperator": "airflow_provider_mlci.operators.model",
    "RollbackModelOperator": "airflow_provider_mlci.operators.model",
}

__all__ = [
    "DataValidationOperator",
    "DvcHook",
    "DvcReproOperator",
    "GpuCreateInstanceOperator",
    "GpuInstanceSpec",
    "GpuRunTaskGroup",
    "GpuTerminateInstanceOperator",
    "MetricsReportOperator",
    "MlciError",
    "ModelGateBranchOperator",
    "ModelGateOperator",
    "ModelValidationOperator",
    "PromoteModelOperator",
    "RollbackModelOperator",
    "__version__",
]

if TYPE_CHECKING:
    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
    from airflow_provider_mlci.exceptions import MlciError
    from airflow_provider_mlci.hooks.dvc import DvcHook
    from airflow_provider_mlci.operators.dvc import DvcReproOperator
    from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator, GpuTerminateInstanceOperator
    from airflow_provider_mlci.operators.model import (
        ModelGateBranchOperator,
        ModelGateOperator,
        ModelValidationOperator,
        PromoteModelOperator,
        RollbackModelOperator,
    )
    from airflow_provider_mlci.operators.report import MetricsReportOperator
    from airflow_provider_mlci.operators.validation import DataValidationOperator
    from airflow_provider_mlci.task_groups.gpu import GpuRunTaskGroup


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
