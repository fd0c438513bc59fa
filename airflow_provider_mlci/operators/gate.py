"""The model gate: should the candidate at a revision replace the model on a stage?

:class:`ModelGateOperator` fails a refused candidate; :class:`ModelGateBranchOperator` branches on
it. Both push the decision (every delta and reason, see
:func:`~airflow_provider_mlci.core.model.release.gate_decision`) under the XCom key ``decision``
and store it as the task's report. Re-exported by :mod:`airflow_provider_mlci.operators.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseBranchOperator
from airflow.sdk import BaseOperator

from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import MODEL_BLUE, DvcWorkspaceMixin, airflow_failures, store_json_report

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["APPROVAL_KEY", "DECISION_KEY", "GateMixin", "ModelGateBranchOperator", "ModelGateOperator"]

#: The XCom key of the gate's decision.
DECISION_KEY = "decision"
#: The XCom key of a release approval's answer (``ReleaseApprovalOperator``), read by the promotion and
#: the release outcome; here, beside the gate's, so that reading it imports no human-in-the-loop module.
APPROVAL_KEY = "approval"

_GATE_ARGUMENTS = (
    "model",
    "rules",
    "rev",
    "stage",
    "metrics_files",
    "eval_data",
    "allow_different_data",
    "dvc_conn_id",
    "cache_dir",
)


class GateMixin(DvcWorkspaceMixin):
    """The comparison both gate operators make."""

    model: str
    stage: str
    rules: Mapping[str, Mapping[str, Any]]
    metrics_files: Sequence[str] | None
    eval_data: Sequence[str] | None
    allow_different_data: bool
    log: Any
    verify_inputs_by_default = True  # cached metrics are fetched and re-hashed, not streamed
    template_fields: Sequence[str] = ("model", "rev", "stage")
    operator_extra_links = (MlciReportLink(),)
    ui_color = MODEL_BLUE
    ui_fgcolor = "#ffffff"

    def _store(self, arguments: Mapping[str, Any]) -> None:
        """Keep the gate's arguments (the constructor's ``locals()``) as attributes."""
        for name in _GATE_ARGUMENTS:
            setattr(self, name, arguments[name])

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.model.gate import GateSpec
        from airflow_provider_mlci.core.model.registry import check_model_name, check_stage_name

        check_model_name(self.model)
        check_stage_name(self.stage)
        GateSpec.of(self.rules)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.model.release import gate_decision

        return gate_decision(
            workspace,
            model=self.model,
            stage=self.stage,
            rules=self.rules,
            rev=self.rev,
            metrics_files=self.metrics_files,
            eval_data=self.eval_data,
            allow_different_data=self.allow_different_data,
            log=self.log,
        )

    def decide(self, context: Context) -> dict[str, Any]:
        """Compare, push the decision under the XCom key ``decision``, and return it."""
        decision = self._with_workspace(context)
        context["ti"].xcom_push(key=DECISION_KEY, value=decision)
        store_json_report(context, DECISION_KEY, decision, f"Gate: {self.model} at {decision['sha'][:12]}")
        verdict = "promote" if decision["promote"] else "keep the deployed model"
        self.log.info("Gate decision for %s at %s: %s", self.model, decision["sha"][:12], verdict)
        for reason in decision["reasons"]:
            self.log.info("  because %s", reason)
        return decision


class ModelGateOperator(GateMixin, BaseOperator):
    """Compare the model at ``rev`` with the one on ``stage``; fail with ``GateRefusedError`` unless it is better.

    The deployed model is read from the registry tags (e.g. ``fraud#prod#N``). Both models'
    metrics are the ones the pipeline recorded at their commits, and are only compared when
    ``dvc.lock`` shows they were computed by the same evaluation (same data, code and params,
    less the model); otherwise the candidate is refused unless ``allow_different_data``.
    Missing or NaN metrics refuse. With no deployed model, the floors alone decide.

    :param model: the model's name in the registry (and in ``dvc.yaml``'s ``artifacts:``) (templated)
    :param rules: ``{metric: {"direction": "higher"|"lower", "floor": x, "min_improvement": d,
        "min_relative_improvement": r, "max_regression": m}}``
    :param rev: the candidate's branch, tag, commit id or expression (templated)
    :param stage: the stage whose model is the one to beat (templated)
    :param metrics_files: the metrics files that count (default: every one ``dvc.yaml`` names)
    :param eval_data: the evaluation inputs that must match (default: every dependency of the
        stage that writes the metrics, except the model)
    :param allow_different_data: compare even when the evaluations differ (recorded in the decision)
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    def __init__(
        self,
        *,
        model: str,
        rules: Mapping[str, Mapping[str, Any]],
        rev: str = "HEAD",
        stage: str = "prod",
        metrics_files: Sequence[str] | None = None,
        eval_data: Sequence[str] | None = None,
        allow_different_data: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self._store(locals())

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import GateRefusedError

        decision = self.decide(context)
        if not decision["promote"]:
            with airflow_failures():
                raise GateRefusedError(
                    f"{self.model} at {decision['sha'][:12]} does not replace the model on {self.stage}: "
                    + "; ".join(decision["reasons"])
                )
        return decision


class ModelGateBranchOperator(GateMixin, BaseBranchOperator):
    """The branching form of :class:`ModelGateOperator`: follow ``if_promote`` or ``if_skip``.

    Same arguments and decision (XCom key ``decision``); a refused candidate is not a failure here.

    :param if_promote: task id(s) to follow when the candidate is better
    :param if_skip: task id(s) to follow otherwise
    """

    def __init__(
        self,
        *,
        model: str,
        rules: Mapping[str, Mapping[str, Any]],
        if_promote: str | Sequence[str],
        if_skip: str | Sequence[str],
        rev: str = "HEAD",
        stage: str = "prod",
        metrics_files: Sequence[str] | None = None,
        eval_data: Sequence[str] | None = None,
        allow_different_data: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.if_promote = if_promote
        self.if_skip = if_skip
        self._store(locals())

    def choose_branch(self, context: Context) -> str | Sequence[str]:
        decision = self.decide(context)
        return self.if_promote if decision["promote"] else self.if_skip
