"""Releasing a model: :class:`PromoteModelOperator` (after a gate, compare-and-swap) and :class:`RollbackModelOperator`.

A release is one atomic push of registry tags in GTO's format (see
:mod:`airflow_provider_mlci.core.model.registry`); :func:`release_outcome` says what a gate and a
promotion came to. Re-exported by :mod:`airflow_provider_mlci.operators.model`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import MODEL_BLUE, DvcWorkspaceMixin
from airflow_provider_mlci.operators.gate import APPROVAL_KEY, DECISION_KEY

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["PromoteModelOperator", "RollbackModelOperator", "release_outcome", "run_evidence"]


def run_evidence(context: Context) -> dict[str, Any]:
    """The DAG run and task a registry tag's message names as its author.

    :param context: the task's context
    """
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}


class PromoteModelOperator(DvcWorkspaceMixin, BaseOperator):
    """Put the model at ``rev`` on ``stage``: register a new version if needed, then one atomic tag push.

    With ``gate_task_id`` (recommended) it promotes only what that gate approved, and only if
    the stage still holds the model the gate compared against (re-read from the remote right
    before writing); otherwise it fails with ``PromotionConflictError`` and writes nothing. Tag
    messages record the evidence: metrics, every delta, the evaluation's data, the replaced
    model, and the DAG run. Returns ``{"repo", "rev", "sha", "name", "stage", "version",
    "tags", "changed", "replaced"}``; a retry after a successful push changes nothing.

    :param model: the model's name in the registry (templated)
    :param rev: the candidate's branch, tag, commit id or expression (templated)
    :param stage: the stage to put it on (templated)
    :param bump: for a new version: ``major``, ``minor`` or ``patch`` over the greatest one
    :param version: an explicit new version (``v1.4.0``) instead of a bump (templated)
    :param gate_task_id: the gate task whose decision this follows
    :param stage_order: the stages in the order a version must pass them (``("staging", "prod")``):
        a version may enter ``stage`` only after it was on each stage listed before it; a promotion
        that skips one fails with ``StageOrderError`` naming it, writing nothing
    :param approval_task_id: a :class:`~airflow_provider_mlci.operators.approval.ReleaseApprovalOperator`
        task: release only what it approved; skipped (not failed) when it was rejected or timed out
    :param emit_asset: emit an event of ``x-mlci-model://<model>/<stage>`` when it succeeds (needs
        ``model`` and ``stage`` without templates), so a deployment Dag can be scheduled on releases
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("model", "rev", "stage", "version")
    verify_inputs_by_default = True
    ui_color = MODEL_BLUE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        model: str,
        rev: str = "HEAD",
        stage: str = "prod",
        bump: str = "minor",
        version: str | None = None,
        gate_task_id: str | None = None,
        stage_order: Sequence[str] = (),
        approval_task_id: str | None = None,
        emit_asset: bool = True,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        if emit_asset and "{{" not in model + stage and "outlets" not in kwargs:
            from airflow_provider_mlci.assets import model_asset

            kwargs["outlets"] = [model_asset(model, stage)]
        super().__init__(**kwargs)
        self.model = model
        self.rev = rev
        self.stage = stage
        self.bump = bump
        self.version = version
        self.gate_task_id = gate_task_id
        self.stage_order = tuple(stage_order)
        self.approval_task_id = approval_task_id
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        if self.approval_task_id:
            from airflow.providers.common.compat.sdk import AirflowSkipException

            answer = context["ti"].xcom_pull(task_ids=self.approval_task_id, key=APPROVAL_KEY) or {}
            if answer.get("decision") != "approved":
                raise AirflowSkipException(
                    f"Not released: the approval was {answer.get('decision') or 'not given'}; the deployed model stays."
                )
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.model.registry import Bump, check_model_name, check_stage_name, parse_version

        check_model_name(self.model)
        check_stage_name(self.stage)
        for stage in self.stage_order:
            check_stage_name(stage)
        Bump.of(self.bump)
        if self.version:
            parse_version(self.version)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.model.registry import UNCHECKED, GitRegistry
        from airflow_provider_mlci.core.model.release import promotion_terms

        evidence: dict[str, Any] = run_evidence(context)
        expected: Any = UNCHECKED
        if self.gate_task_id:
            decision = context["ti"].xcom_pull(task_ids=self.gate_task_id, key=DECISION_KEY)
            expected, judged = promotion_terms(decision, sha=workspace.sha, rev=self.rev, gate=self.gate_task_id)
            evidence.update(judged)
        else:
            self.log.warning("No gate_task_id: promoting without comparing against what the gate saw.")
        result = GitRegistry(workspace=workspace).promote(
            name=self.model,
            sha=workspace.sha,
            stage=self.stage,
            bump=self.bump,
            version=self.version,
            expected=expected,
            evidence=evidence,
            stage_order=self.stage_order,
        )
        if result.tags:
            self.log.info("Pushed %s: %s %s is on %s", ", ".join(result.tags), self.model, result.version, self.stage)
        else:
            self.log.info("%s %s was already on %s; nothing written", self.model, result.version, self.stage)
        return result.to_json()


class RollbackModelOperator(DvcWorkspaceMixin, BaseOperator):
    """Put the previous model (or ``to_version``) back on ``stage`` with one tag push.

    :param model: the model's name in the registry (templated)
    :param stage: the stage (templated)
    :param to_version: a registered version to put back (default: the model before the current one) (templated)
    :param expected_version: refuse unless this version is on the stage now (templated)
    :param rev: the revision whose ``.gto`` says which stages exist (templated)
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("model", "stage", "to_version", "expected_version", "rev")
    verify_inputs_by_default = True
    ui_color = MODEL_BLUE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        model: str,
        stage: str = "prod",
        to_version: str | None = None,
        expected_version: str | None = None,
        rev: str = "HEAD",
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.stage = stage
        self.to_version = to_version
        self.expected_version = expected_version
        self.rev = rev
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.model.registry import check_model_name, check_stage_name, parse_version

        check_model_name(self.model)
        check_stage_name(self.stage)
        for version in (self.to_version, self.expected_version):
            if version:
                parse_version(version)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.model.registry import GitRegistry
        from airflow_provider_mlci.core.model.release import current_champion

        registry = GitRegistry(workspace=workspace)
        expected = current_champion(
            registry, model=self.model, stage=self.stage, expected_version=self.expected_version
        )
        result = registry.rollback(
            name=self.model,
            stage=self.stage,
            to_version=self.to_version,
            expected=expected,
            evidence=run_evidence(context),
        )
        self.log.info(
            "%s on %s is %s again (%s)", self.model, self.stage, result.version, ", ".join(result.tags) or "unchanged"
        )
        return result.to_json()


def release_outcome(
    ti: Any, gate_task_id: str, promote_task_id: str, approval_task_id: str | None = None
) -> dict[str, Any]:
    """What the gate decided, a person answered and the promotion wrote, as small JSON.

    ``decision`` is ``promoted``, ``kept`` (the gate refused), ``rejected`` or ``timed_out`` (the
    gate passed; the approval did not come).

    :param ti: the running task instance
    :param gate_task_id: the gate task
    :param promote_task_id: the promotion task
    :param approval_task_id: the approval task, if the release needs one
    """
    decision = ti.xcom_pull(task_ids=gate_task_id, key=DECISION_KEY) or {}
    released = ti.xcom_pull(task_ids=promote_task_id)
    released = released if isinstance(released, Mapping) else None
    approval = ti.xcom_pull(task_ids=approval_task_id, key=APPROVAL_KEY) if approval_task_id else None
    answer = (approval or {}).get("decision")
    if released is not None:
        verdict = "promoted"
    elif answer in ("rejected", "timed_out"):
        verdict = answer
    else:
        verdict = "kept"
    return {
        "decision": verdict,
        "approval": approval,
        "promoted": released is not None,
        "model": decision.get("model"),
        "stage": decision.get("stage"),
        "sha": (decision.get("candidate") or {}).get("sha"),
        "version": released.get("version") if released else None,
        "tags": list(released.get("tags") or []) if released else [],
        "replaced": released.get("replaced") if released else None,
        "reasons": list(decision.get("reasons") or []),
        "champion": decision.get("champion"),
        "metrics": decision.get("metrics") or [],
    }
