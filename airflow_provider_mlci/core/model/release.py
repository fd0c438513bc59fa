"""Releasing a model from a checkout: the gate's decision against the deployed model, and the terms of a promotion.

:func:`gate_decision` compares the candidate at the checkout's commit with the model on a stage
(its metrics as the pipeline recorded them at both commits, and whether one evaluation made
them); :func:`promotion_terms` turns that decision into what a promotion may write, or refuses.
The operators of :mod:`airflow_provider_mlci.operators.gate` and
:mod:`airflow_provider_mlci.operators.release` call these with their arguments.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.model.gate import GateSpec, compare_evaluations, decide, evaluation_fingerprint
from airflow_provider_mlci.core.model.refine import yaml_at
from airflow_provider_mlci.core.model.registry import UNCHECKED, Champion, GitRegistry, artifact_path, parse_version
from airflow_provider_mlci.exceptions import GateRefusedError, MlciConfigError, PromotionConflictError

if TYPE_CHECKING:
    import logging

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["current_champion", "gate_decision", "promotion_terms"]


def gate_decision(
    workspace: Workspace,
    *,
    model: str,
    stage: str,
    rules: Mapping[str, Mapping[str, Any]],
    rev: str,
    metrics_files: Sequence[str] | None = None,
    eval_data: Sequence[str] | None = None,
    allow_different_data: bool = False,
    log: logging.Logger | Any,
) -> dict[str, Any]:
    """Should the model at the checkout's commit replace the one on ``stage``? Every delta and reason.

    Both models' metrics are those the pipeline recorded at their commits; they are only compared
    when ``dvc.lock`` shows one evaluation made them (same data, code and params, less the
    model), unless ``allow_different_data``. Missing or NaN metrics refuse; with no deployed
    model, the floors alone decide.

    :param workspace: a checkout of the candidate's commit
    :param model: the model's name in the registry
    :param stage: the stage whose model is the one to beat
    :param rules: the gate's rules (see :class:`~airflow_provider_mlci.core.model.gate.GateSpec`)
    :param rev: the candidate's revision as given (recorded)
    :param metrics_files: the metrics files that count (default: every one ``dvc.yaml`` names)
    :param eval_data: the evaluation inputs that must match (default: every dependency of the
        stage that writes the metrics, except the model)
    :param allow_different_data: compare even when the evaluations differ (recorded)
    :param log: where each verdict is logged
    :returns: ``{"model", "stage", "promote", "reasons", "metrics", "candidate", "champion", "evaluation"}``
    :raises MlciConfigError: bad rules or a stage the repository's ``.gto`` does not allow
    """
    spec = GateSpec.of(rules)
    registry = GitRegistry(workspace=workspace)
    registry.check_stage(stage)
    # The tag fetch brought the champion's commit into the checkout: no other fetch is needed.
    champion = registry.refresh().champion(model, stage)
    report = dvc_ops.metrics(workspace, champion.sha if champion else None)
    reasons: list[str] = []
    evaluation: dict[str, Any] = {}
    if champion is not None:
        files = list(metrics_files or report.metrics or report.baseline_metrics)
        model_path = artifact_path(workspace.path, model)
        exclude = [model_path] if model_path else []
        include = list(eval_data) if eval_data else None
        ours = evaluation_fingerprint(_lock_at(workspace, workspace.sha), files, exclude=exclude, include=include)
        theirs = evaluation_fingerprint(_lock_at(workspace, champion.sha), files, exclude=exclude, include=include)
        differences = compare_evaluations(ours, theirs)
        evaluation = {"same": not differences, "differences": differences, "fingerprint": ours}
        if differences and not allow_different_data:
            reasons.append(
                "the candidate and the deployed model were not evaluated on the same data and code: "
                + "; ".join(differences)
            )
        elif differences:
            log.warning("Comparing metrics from different evaluations (allowed): %s", "; ".join(differences))
    passed, verdicts = decide(spec, report.metrics, report.baseline_metrics if champion else None)
    reasons += [f"{v.metric}: {reason}" for v in verdicts for reason in v.reasons]
    if champion is None:
        log.info("No model on stage %r of %r yet: the floors alone decide.", stage, model)
    for verdict in verdicts:
        log.info(
            "%s %s: candidate %s, deployed %s, delta %s %s",
            "ok    " if verdict.passed else "FAILED",
            verdict.metric,
            verdict.candidate,
            verdict.champion,
            verdict.delta,
            "; ".join(verdict.reasons),
        )
    return dvc_ops.json_safe(
        {
            "model": model,
            "stage": stage,
            "promote": passed and not reasons,
            "reasons": reasons,
            "metrics": [v.to_json() for v in verdicts],
            "candidate": {"rev": rev, "sha": workspace.sha, "metrics": report.metrics},
            "champion": {**champion.to_json(), "metrics": report.baseline_metrics} if champion else None,
            "evaluation": evaluation,
        }
    )


def promotion_terms(decision: Any, *, sha: str, rev: str, gate: str) -> tuple[Champion | None, dict[str, Any]]:
    """What a promotion that follows a gate's decision may replace, and the evidence it records.

    :param decision: what the gate decided (see :func:`gate_decision`)
    :param sha: the commit about to be promoted
    :param rev: the revision as given, for the message
    :param gate: the gate task, for the message
    :returns: the model the gate compared against (``None``: the stage was empty) and
        ``{"metrics", "gate", "evaluation"}``
    :raises MlciConfigError: no decision
    :raises GateRefusedError: the gate refused the candidate
    :raises PromotionConflictError: the gate judged another commit
    """
    if not isinstance(decision, Mapping):
        raise MlciConfigError(f"Task {gate!r} left no gate decision.")
    if not decision.get("promote"):
        raise GateRefusedError(f"The gate refused this candidate: {'; '.join(decision.get('reasons') or [])}")
    judged = decision["candidate"]["sha"]
    if judged != sha:
        raise PromotionConflictError(
            f"The gate judged {judged[:12]} but {rev!r} is {sha[:12]} now; nothing was written."
        )
    champion = decision.get("champion")
    expected = Champion(**{k: champion[k] for k in ("name", "stage", "version", "sha", "tag")}) if champion else None
    evidence = {
        "metrics": decision["candidate"].get("metrics"),
        "gate": [{k: m[k] for k in ("metric", "candidate", "champion", "delta")} for m in decision["metrics"]],
        "evaluation": (decision.get("evaluation") or {}).get("fingerprint"),
    }
    return expected, evidence


def current_champion(registry: GitRegistry, *, model: str, stage: str, expected_version: str | None) -> Any:
    """The model on ``stage`` as a rollback may replace it: checked against ``expected_version`` if given.

    :param registry: the repository's registry
    :param model: the model's name
    :param stage: the stage
    :param expected_version: the version that must be on the stage now (``None``: anything)
    :returns: the champion, or ``UNCHECKED`` without ``expected_version``
    :raises PromotionConflictError: another version (or none) is on the stage
    """
    if not expected_version:
        return UNCHECKED
    current = registry.refresh().champion(model, stage)
    have = current.version if current else None
    if have is None or parse_version(have) != parse_version(expected_version):
        raise PromotionConflictError(
            f"Stage {stage!r} of {model!r} holds {have or 'no model'}, not {expected_version}; nothing was written."
        )
    return current


def _lock_at(workspace: Workspace, sha: str) -> dict[str, Any] | None:
    data = yaml_at(workspace, sha, "dvc.lock")
    return data if isinstance(data, dict) else None
