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
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseBranchOperator
from airflow.sdk import BaseOperator

from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import DvcWorkspaceMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "ModelGateBranchOperator",
    "ModelGateOperator",
    "ModelValidationOperator",
    "PromoteModelOperator",
    "RollbackModelOperator",
]

DECISION_KEY = "decision"
VERDICT_KEY = "verdict"
_MODEL_BLUE = "#1565c0"
_FORMATS = ("auto", "pickle", "joblib", "skops")


def _model_file(workspace: Workspace, model: str) -> tuple[str, str | None]:
    """The model's path in the checkout and its artifact name (``None`` when ``model`` is a path)."""
    from airflow_provider_mlci.core.dvc import ops as dvc_ops
    from airflow_provider_mlci.core.model.registry import artifact_path

    declared = artifact_path(workspace.path, model)
    if declared:
        return dvc_ops.check_targets(declared)[0], model
    return dvc_ops.check_targets(model)[0], None


def _ensure_files(workspace: Workspace, paths: Sequence[str]) -> None:
    """Pull the files of ``paths`` that git does not hold from the DVC remote (only those)."""
    from airflow_provider_mlci.core.dvc import ops as dvc_ops

    missing = [p for p in paths if not (workspace.path / p).exists()]
    if missing:
        dvc_ops.pull(workspace, missing)


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
    ui_color = _MODEL_BLUE
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
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.model.checks import ModelContract, check_model, check_scores
        from airflow_provider_mlci.core.repo.paths import inside
        from airflow_provider_mlci.exceptions import ModelValidationError

        path, name = _model_file(workspace, self.model)
        contract = ModelContract.from_mapping(self.contract, root=workspace.path) if self.contract else None
        requirements = self._requirements(workspace)
        needed = [path]
        if contract is not None:
            needed.append(str(Path(contract.sample_input).relative_to(workspace.path)))
        _ensure_files(workspace, needed)
        label = f"{path}@{workspace.sha[:12]}"
        checks = check_model(
            model_path=workspace.path / path,
            model_format=self.model_format,
            requirements=requirements,
            contract=contract,
            code_paths=[inside(workspace.path, folder, what="code folder") for folder in self.code_paths],
            cwd=workspace.path,
            display_name=label,
            python=workspace.python,
            trusted_types=self.trusted_types,
            timeout_s=self.timeout_s,
            runner=self._runner,
            sandbox=workspace.sandbox,
        )
        if self.thresholds:  # the child process logged its own checks as it ran them
            scores = check_scores(dvc_ops.metrics(workspace).metrics, self.thresholds)
            for check in scores:
                self.log.info("%-6s %s: %s", "ok" if check.passed else "FAILED", check.name, check.detail)
            checks += scores
        failed = [c for c in checks if c.passed is False]
        verdict = {
            "model": name or path,
            "path": path,
            "passed": all(c.passed is True for c in checks),
            "checks": [c.to_json() for c in checks],
            "failed": [c.name for c in failed],
        }
        full = {"rev": self.rev, "sha": workspace.sha, **verdict}
        _store_report(context, "verdict", full, f"Model validation: {label}")
        if not verdict["passed"]:
            context["ti"].xcom_push(key=VERDICT_KEY, value=dvc_ops.json_safe(full))
            lines = "\n".join(f"  - {c.kind}: {c.name}: {c.detail}" for c in failed)
            not_run = sum(c.passed is None for c in checks)
            raise ModelValidationError(
                f"Model {label} failed {len(failed)} check(s)"
                + (f" ({not_run} not run)" if not_run else "")
                + f":\n{lines}"
            )
        return dvc_ops.json_safe(verdict)

    def _requirements(self, workspace: Workspace) -> list[str]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.model.checks import read_requirements
        from airflow_provider_mlci.core.repo.paths import inside
        from airflow_provider_mlci.exceptions import MlciConfigError

        if not self.requirements:
            return []
        if isinstance(self.requirements, str):
            target = dvc_ops.check_targets(self.requirements)[0]
            file = inside(workspace.path, target, what="requirements file")
            if not file.is_file():
                raise MlciConfigError(
                    f"No requirements file {target} in {workspace.access.git.display_url} at {workspace.sha[:12]}."
                )
            return read_requirements(file, root=workspace.path)
        return [str(r) for r in self.requirements]


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


class _GateMixin(DvcWorkspaceMixin):
    """The comparison both gate operators make."""

    model: str
    stage: str
    rules: Mapping[str, Mapping[str, Any]]
    metrics_files: Sequence[str] | None
    eval_data: Sequence[str] | None
    allow_different_data: bool
    log: Any
    verify_inputs_by_default = True  # cached metrics are fetched and re-hashed, not streamed

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
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.model.gate import GateSpec, compare_evaluations, decide, evaluation_fingerprint
        from airflow_provider_mlci.core.model.registry import GitRegistry, artifact_path

        spec = GateSpec.of(self.rules)
        registry = GitRegistry(workspace=workspace)
        registry.check_stage(self.stage)
        # The tag fetch brought the champion's commit into the checkout: no other fetch is needed.
        champion = registry.refresh().champion(self.model, self.stage)
        report = dvc_ops.metrics(workspace, champion.sha if champion else None)
        reasons: list[str] = []
        evaluation: dict[str, Any] = {}
        if champion is not None:
            files = list(self.metrics_files or report.metrics or report.baseline_metrics)
            model_path = artifact_path(workspace.path, self.model)
            exclude = [model_path] if model_path else []
            include = list(self.eval_data) if self.eval_data else None
            ours = evaluation_fingerprint(_lock_at(workspace, workspace.sha), files, exclude=exclude, include=include)
            theirs = evaluation_fingerprint(_lock_at(workspace, champion.sha), files, exclude=exclude, include=include)
            differences = compare_evaluations(ours, theirs)
            evaluation = {"same": not differences, "differences": differences, "fingerprint": ours}
            if differences and not self.allow_different_data:
                reasons.append(
                    "the candidate and the deployed model were not evaluated on the same data and code: "
                    + "; ".join(differences)
                )
            elif differences:
                self.log.warning("Comparing metrics from different evaluations (allowed): %s", "; ".join(differences))
        passed, verdicts = decide(spec, report.metrics, report.baseline_metrics if champion else None)
        reasons += [f"{v.metric}: {reason}" for v in verdicts for reason in v.reasons]
        if champion is None:
            self.log.info("No model on stage %r of %r yet: the floors alone decide.", self.stage, self.model)
        decision = {
            "model": self.model,
            "stage": self.stage,
            "promote": passed and not reasons,
            "reasons": reasons,
            "metrics": [v.to_json() for v in verdicts],
            "candidate": {"rev": self.rev, "sha": workspace.sha, "metrics": report.metrics},
            "champion": {**champion.to_json(), "metrics": report.baseline_metrics} if champion else None,
            "evaluation": evaluation,
        }
        for verdict in verdicts:
            self.log.info(
                "%s %s: candidate %s, deployed %s, delta %s %s",
                "ok    " if verdict.passed else "FAILED",
                verdict.metric,
                verdict.candidate,
                verdict.champion,
                verdict.delta,
                "; ".join(verdict.reasons),
            )
        return dvc_ops.json_safe(decision)

    def decide(self, context: Context) -> dict[str, Any]:
        """Compare, push the decision under the XCom key ``decision``, and return it."""
        decision = self._with_workspace(context)
        context["ti"].xcom_push(key=DECISION_KEY, value=decision)
        _store_report(context, "decision", decision, f"Gate: {self.model} at {decision['sha'][:12]}")
        verdict = "promote" if decision["promote"] else "keep the deployed model"
        self.log.info("Gate decision for %s at %s: %s", self.model, decision["sha"][:12], verdict)
        for reason in decision["reasons"]:
            self.log.info("  because %s", reason)
        return decision


def _lock_at(workspace: Workspace, sha: str) -> dict[str, Any] | None:
    from airflow_provider_mlci.core.model.refine import yaml_at

    data = yaml_at(workspace, sha, "dvc.lock")
    return data if isinstance(data, dict) else None


class ModelGateOperator(_GateMixin, BaseOperator):
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

    template_fields: Sequence[str] = ("model", "rev", "stage")
    operator_extra_links = (MlciReportLink(),)
    ui_color = _MODEL_BLUE
    ui_fgcolor = "#ffffff"

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
        from airflow_provider_mlci.operators.base import airflow_failures

        decision = self.decide(context)
        if not decision["promote"]:
            with airflow_failures():
                raise GateRefusedError(
                    f"{self.model} at {decision['sha'][:12]} does not replace the model on {self.stage}: "
                    + "; ".join(decision["reasons"])
                )
        return decision


class ModelGateBranchOperator(_GateMixin, BaseBranchOperator):
    """The branching form of :class:`ModelGateOperator`: follow ``if_promote`` or ``if_skip``.

    Same arguments and decision (XCom key ``decision``); a refused candidate is not a failure here.

    :param if_promote: task id(s) to follow when the candidate is better
    :param if_skip: task id(s) to follow otherwise
    """

    template_fields: Sequence[str] = ("model", "rev", "stage")
    operator_extra_links = (MlciReportLink(),)
    ui_color = _MODEL_BLUE
    ui_fgcolor = "#ffffff"

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
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("model", "rev", "stage", "version")
    verify_inputs_by_default = True
    ui_color = _MODEL_BLUE
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
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.rev = rev
        self.stage = stage
        self.bump = bump
        self.version = version
        self.gate_task_id = gate_task_id
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.model.registry import Bump, check_model_name, check_stage_name, parse_version

        check_model_name(self.model)
        check_stage_name(self.stage)
        Bump.of(self.bump)
        if self.version:
            parse_version(self.version)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.model.registry import UNCHECKED, Champion, GitRegistry
        from airflow_provider_mlci.exceptions import GateRefusedError, MlciConfigError, PromotionConflictError

        evidence: dict[str, Any] = _run_evidence(context)
        expected: Any = UNCHECKED
        if self.gate_task_id:
            decision = context["ti"].xcom_pull(task_ids=self.gate_task_id, key=DECISION_KEY)
            if not isinstance(decision, Mapping):
                raise MlciConfigError(f"Task {self.gate_task_id!r} left no gate decision (XCom key {DECISION_KEY!r}).")
            if not decision.get("promote"):
                raise GateRefusedError(f"The gate refused this candidate: {'; '.join(decision.get('reasons') or [])}")
            judged = decision["candidate"]["sha"]
            if judged != workspace.sha:
                raise PromotionConflictError(
                    f"The gate judged {judged[:12]} but {self.rev!r} is {workspace.sha[:12]} now; nothing was written."
                )
            champion = decision.get("champion")
            expected = (
                Champion(**{k: champion[k] for k in ("name", "stage", "version", "sha", "tag")}) if champion else None
            )
            evidence.update(
                metrics=decision["candidate"].get("metrics"),
                gate=[{k: m[k] for k in ("metric", "candidate", "champion", "delta")} for m in decision["metrics"]],
                evaluation=(decision.get("evaluation") or {}).get("fingerprint"),
            )
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
    ui_color = _MODEL_BLUE
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
        from airflow_provider_mlci.core.model.registry import UNCHECKED, GitRegistry, parse_version
        from airflow_provider_mlci.exceptions import PromotionConflictError

        registry = GitRegistry(workspace=workspace)
        expected: Any = UNCHECKED
        if self.expected_version:
            current = registry.refresh().champion(self.model, self.stage)
            have = current.version if current else None
            if have is None or parse_version(have) != parse_version(self.expected_version):
                raise PromotionConflictError(
                    f"Stage {self.stage!r} of {self.model!r} holds {have or 'no model'}, not {self.expected_version}; "
                    "nothing was written."
                )
            expected = current
        result = registry.rollback(
            name=self.model,
            stage=self.stage,
            to_version=self.to_version,
            expected=expected,
            evidence=_run_evidence(context),
        )
        self.log.info(
            "%s on %s is %s again (%s)", self.model, self.stage, result.version, ", ".join(result.tags) or "unchanged"
        )
        return result.to_json()


def _store_report(context: Context, name: str, payload: Mapping[str, Any], title: str) -> None:
    """Write ``<name>.json`` and ``<name>.md`` to the task's report folder; the "Report" link opens it."""
    import json

    from airflow_provider_mlci.core.dvc.ops import json_safe
    from airflow_provider_mlci.core.reports.html import section_for
    from airflow_provider_mlci.report_store import store_task_report

    files = {
        f"{name}.json": (json.dumps(json_safe(payload), indent=2, sort_keys=True) + "\n").encode(),
        f"{name}.md": f"# {title}\n\n{section_for(title, payload).markdown}\n".encode(),
    }
    store_task_report(context, files, {"kind": name, name: payload})


def _run_evidence(context: Context) -> dict[str, Any]:
    ti = context["ti"]
    return {"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id}


def release_outcome(ti: Any, gate_task_id: str, promote_task_id: str) -> dict[str, Any]:
    """What the gate decided and the promotion wrote, as small JSON.

    :param ti: the running task instance
    :param gate_task_id: the gate task
    :param promote_task_id: the promotion task
    """
    decision = ti.xcom_pull(task_ids=gate_task_id, key=DECISION_KEY) or {}
    released = ti.xcom_pull(task_ids=promote_task_id)
    released = released if isinstance(released, Mapping) else None
    return {
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
