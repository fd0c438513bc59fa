"""A model tracked in a checkout, checked as a whole: the verdict of ``ModelValidationOperator``.

:func:`validate_model` finds the model (an artifact of ``dvc.yaml`` or a path), pulls what git
does not hold of it and of the contract's sample, runs :func:`~airflow_provider_mlci.core.model.checks.check_model`
and the score floors, and sums it up; :func:`verdict_error` is the error a failed verdict raises.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.model.checks import ModelContract, check_model, check_scores, read_requirements
from airflow_provider_mlci.core.model.registry import artifact_path
from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.exceptions import MlciConfigError, ModelValidationError

if TYPE_CHECKING:
    import logging

    from airflow_provider_mlci.core.repo.workspace import Workspace
    from airflow_provider_mlci.core.runtime.process import CommandRunner

__all__ = ["model_file", "requirements_in", "validate_model", "verdict_error"]


def model_file(workspace: Workspace, model: str) -> tuple[str, str | None]:
    """The model's path in the checkout and its artifact name (``None`` when ``model`` is a path).

    :param workspace: the checkout
    :param model: an artifact name from ``dvc.yaml``'s ``artifacts:`` or a path
    """
    declared = artifact_path(workspace.path, model)
    if declared:
        return dvc_ops.check_targets(declared)[0], model
    return dvc_ops.check_targets(model)[0], None


def validate_model(
    workspace: Workspace,
    *,
    model: str,
    model_format: str = "auto",
    requirements: str | Sequence[str] | None = None,
    contract: Mapping[str, Any] | None = None,
    thresholds: Mapping[str, Mapping[str, float]] | None = None,
    code_paths: Sequence[str] = ("src",),
    trusted_types: Sequence[str] = (),
    timeout_s: float = 600.0,
    runner: CommandRunner | None = None,
    log: logging.Logger | Any,
) -> tuple[dict[str, Any], str]:
    """Check the model at the checkout's commit: dependencies, I/O contract, scores.

    :param workspace: the checkout
    :param model: an artifact name or a path in the repository
    :param model_format: ``auto``, ``pickle``, ``joblib`` or ``skops``
    :param requirements: a requirements file in the repository, or requirement strings
    :param contract: the I/O contract's mapping (see :class:`~airflow_provider_mlci.core.model.checks.ModelContract`)
    :param thresholds: ``{metric: {"min", "max"}}`` over the metrics ``dvc.yaml`` names
    :param code_paths: folders of the repository on ``sys.path`` while loading
    :param trusted_types: types a skops file may contain beyond skops' defaults
    :param timeout_s: how long loading and inference may take
    :param runner: runs the loading process (and stops it when the task is killed)
    :param log: where the score checks are logged (the child logs its own)
    :returns: ``{"model", "path", "passed", "checks", "failed"}`` and the label the checks name
        the model by (``<path>@<short commit>``)
    """
    path, name = model_file(workspace, model)
    checked = ModelContract.from_mapping(contract, root=workspace.path) if contract else None
    needed = [path]
    if checked is not None:
        needed.append(str(Path(checked.sample_input).relative_to(workspace.path)))
    missing = [p for p in needed if not (workspace.path / p).exists()]
    if missing:  # only what git does not hold comes from the DVC remote
        dvc_ops.pull(workspace, missing)
    label = f"{path}@{workspace.sha[:12]}"
    checks = check_model(
        model_path=workspace.path / path,
        model_format=model_format,
        requirements=requirements_in(workspace, requirements),
        contract=checked,
        code_paths=[inside(workspace.path, folder, what="code folder") for folder in code_paths],
        cwd=workspace.path,
        display_name=label,
        python=workspace.python,
        trusted_types=trusted_types,
        timeout_s=timeout_s,
        runner=runner,
        sandbox=workspace.sandbox,
    )
    if thresholds:
        scores = check_scores(dvc_ops.metrics(workspace).metrics, thresholds)
        for check in scores:
            log.info("%-6s %s: %s", "ok" if check.passed else "FAILED", check.name, check.detail)
        checks += scores
    verdict = {
        "model": name or path,
        "path": path,
        "passed": all(c.passed is True for c in checks),
        "checks": [c.to_json() for c in checks],
        "failed": [c.name for c in checks if c.passed is False],
    }
    return verdict, label


def verdict_error(verdict: Mapping[str, Any], label: str) -> ModelValidationError:
    """The error of a failed verdict, listing every failed check.

    :param verdict: what :func:`validate_model` returned
    :param label: the model's label, as :func:`validate_model` returned it
    """
    checks = verdict["checks"]
    failed = [c for c in checks if c["passed"] is False]
    lines = "\n".join(f"  - {c['kind']}: {c['name']}: {c['detail']}" for c in failed)
    not_run = sum(c["passed"] is None for c in checks)
    return ModelValidationError(
        f"Model {label} failed {len(failed)} check(s)" + (f" ({not_run} not run)" if not_run else "") + f":\n{lines}"
    )


def requirements_in(workspace: Workspace, requirements: str | Sequence[str] | None) -> list[str]:
    """The requirement strings to check: read from a requirements file of the checkout (and the
    files it includes, none of which may lead out of it), or as given.

    :param workspace: the checkout
    :param requirements: a requirements file's path in the repository, or requirement strings
    :raises MlciConfigError: no such file
    :raises UnsafePathError: a file that is a link out of the checkout
    """
    if not requirements:
        return []
    if isinstance(requirements, str):
        target = dvc_ops.check_targets(requirements)[0]
        file = inside(workspace.path, target, what="requirements file")
        if not file.is_file():
            raise MlciConfigError(
                f"No requirements file {target} in {workspace.access.git.display_url} at {workspace.sha[:12]}."
            )
        return read_requirements(file, root=workspace.path)
    return [str(r) for r in requirements]
