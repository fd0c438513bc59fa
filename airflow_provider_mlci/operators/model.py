"""Operators that validate a model, gate it against the deployed one, and release or roll it back.

The registry is the repository's git tags in GTO's format (see
:mod:`airflow_provider_mlci.core.model.registry`): a release is one atomic tag push, after a
compare-and-swap on the model the gate compared against. A typical DAG::

    validate = ModelValidationOperator(task_id="validate", model="fraud-detector", rev=rev, ...)
    gate = ModelGateBranchOperator(task_id="gate", model="fraud-detector", rev=rev, rules=...,
                                   if_promote="promote", if_skip="skip")
    promote = PromoteModelOperator(task_id="promote", model="fraud-detector", rev=rev, gate_task_id="gate")
    validate >> gate >> [promote, skip]

What these operators download from the DVC remote (the model, the contract's sample, metrics
files DVC caches) is re-hashed on arrival, and an object whose bytes do not match its name fails
the task with ``DvcCorruptObjectError`` naming the file, instead of being judged or released:
verification is on for them unless the connection sets ``verify_objects`` (``false`` turns it
off); other operators keep the connection's or the repository's setting.

Each returns small JSON starting with ``{"repo", "rev", "sha"}``; the gate's decision, with every
delta, is also pushed under the XCom key ``decision``, and a failed validation's verdict under
``verdict`` before the task fails.

The gate lives in :mod:`~airflow_provider_mlci.operators.gate` and the release in
:mod:`~airflow_provider_mlci.operators.release`; both are importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import MODEL_BLUE, DvcWorkspaceMixin, store_json_report
from airflow_provider_mlci.operators.gate import DECISION_KEY, ModelGateBranchOperator, ModelGateOperator
from airflow_provider_mlci.operators.release import PromoteModelOperator, RollbackModelOperator, release_outcome

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "DECISION_KEY",
    "VERDICT_KEY",
    "ModelGateBranchOperator",
    "ModelGateOperator",
    "ModelValidationOperator",
    "PromoteModelOperator",
    "RollbackModelOperator",
    "release_outcome",
]

#: The XCom key of a failed model validation's verdict.
VERDICT_KEY = "verdict"
_FORMATS = ("auto", "pickle", "joblib", "skops")


class ModelValidationOperator(DvcWorkspaceMixin, BaseOperator):
    """Check a model tracked at ``rev``: dependencies, I/O contract and scores; fail listing every failure.

    Loads the model in a separate process with the interpreter stage commands use (``python``),
    so what is checked is what would run. Pickle and joblib files are only loaded from the
    repository itself (the team's own artifacts); use ``model_format="skops"`` with
    ``trusted_types`` for safe loading. Returns the verdict ``{"repo", "rev", "sha", "model",
    "path", "passed", "checks": [...], "failed": [...]}``; on failure it is pushed under the
    XCom key ``verdict`` and the task fails with ``ModelValidationError`` (not retried).

    :param model: an artifact name from ``dvc.yaml``'s ``artifacts:`` or a path in the repository (templated)
    :param rev: branch, tag, commit id or expression (templated)
    :param model_format: ``auto`` (by extension), ``pickle``, ``joblib`` or ``skops``
    :param requirements: a requirements file in the repository, or a list of requirement strings
        (templated); each must be installed at a matching version
    :param contract: the I/O contract: ``{"sample_input": "data/eval.csv",
        "input_columns": [...], "method": "predict", "output": {"shape": [], "dtype": "int",
        "min_value": 0, "max_value": 1, "allow_nan": False}, "deterministic": True, "seed": 0,
        "latency_budget_ms": 50}`` (the sample is pulled from the DVC remote if needed)
    :param thresholds: ``{metric: {"min": x, "max": y}}`` over the metrics ``dvc.yaml`` names
    :param code_paths: folders of the repository to put on ``sys.path`` while loading (default ``src``)
    :param trusted_types: types a skops file may contain beyond skops' defaults
    :param python: the interpreter (or virtualenv folder) to load the model with
    :param sandbox: load the model as untrusted code, under bubblewrap with no network and none
        of the worker's files or secrets (``None``: the provider setting ``[mlci] sandbox``)
    :param timeout_s: how long loading and inference may take
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("model", "rev", "requirements", "contract", "thresholds")
    template_fields_renderers = {"contract": "json", "thresholds": "json"}
    verify_inputs_by_default = True  # the model and sample it pulls are re-hashed (see the module docs)
    operator_extra_links = (MlciReportLink(),)
    ui_color = MODEL_BLUE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        model: str,
        rev: str = "HEAD",
        model_format: str = "auto",
        requirements: str | Sequence[str] | None = None,
        contract: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, Mapping[str, float]] | None = None,
        code_paths: Sequence[str] = ("src",),
        trusted_types: Sequence[str] = (),
        python: str | None = None,
        timeout_s: float = 600.0,
        sandbox: bool | Mapping[str, Any] | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.rev = rev
        self.model_format = model_format
        self.requirements = requirements
        self.contract = contract
        self.thresholds = thresholds
        self.code_paths = tuple(code_paths)
        self.trusted_types = tuple(trusted_types)
        self.python = python
        self.timeout_s = timeout_s
        self.sandbox = sandbox
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.exceptions import MlciConfigError

        if self.model_format not in _FORMATS:
            raise MlciConfigError(f"model_format={self.model_format!r} is not one of {', '.join(_FORMATS)}.")
        if not isinstance(self.model, str) or not self.model.strip():
            raise MlciConfigError(f"model={self.model!r} names no artifact or file.")
        dvc_ops.check_targets(self.code_paths)
        if self.thresholds is not None and not isinstance(self.thresholds, Mapping):
            raise MlciConfigError(
                f"thresholds must be a mapping of metric to {{'min', 'max'}}, not {self.thresholds!r}."
            )
        if self.contract is not None and not isinstance(self.contract, Mapping):
            raise MlciConfigError(f"contract must be a mapping, not {self.contract!r}.")

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc.ops import json_safe
        from airflow_provider_mlci.core.model.verdict import validate_model, verdict_error

        verdict, label = validate_model(
            workspace,
            model=self.model,
            model_format=self.model_format,
            requirements=self.requirements,
            contract=self.contract,
            thresholds=self.thresholds,
            code_paths=self.code_paths,
            trusted_types=self.trusted_types,
            timeout_s=self.timeout_s,
            runner=self._runner,
            log=self.log,
        )
        full = {"rev": self.rev, "sha": workspace.sha, **verdict}
        store_json_report(context, VERDICT_KEY, full, f"Model validation: {label}")
        if not verdict["passed"]:
            context["ti"].xcom_push(key=VERDICT_KEY, value=json_safe(full))
            raise verdict_error(verdict, label)
        return json_safe(verdict)
