"""One trial of a sweep, run as a DVC experiment in a task's own workspace and pushed to the git remote.

:func:`run_trial` does what ``dvc exp run --name <trial> -S <param>=<value> ...`` followed by
``dvc push --run-cache`` and ``dvc exp push origin <trial>`` do, on a private checkout
(:class:`~airflow_provider_mlci.core.workspace.Workspace`):

1. pull what the pipeline needs from outside itself, run the experiment (each stage fetches the
   run-cache first, so a point already tried is restored rather than trained again);
2. push the outputs and the run-cache to the DVC remote, as a reproduction does;
3. push the experiment's ref (``refs/exps/<baseline>/<name>``) to the git remote with the
   workspace's git, which holds the connection's credentials, so ``dvc exp pull`` and
   ``dvc exp show`` find it in any clone.

DVC runs in a subprocess (:mod:`airflow_provider_mlci.core.experiments_child`), as every DVC
operation here does. A stage that fails makes a *failed trial* (a result, not an exception),
so that a sweep can count them against its budget of failures. An objective metric that the
pipeline does not produce is a mistake in the sweep, not a bad trial: it raises
:class:`~airflow_provider_mlci.exceptions.MlciConfigError` naming the metric and the metrics
the trial did produce.

A trial whose experiment is already on the git remote (a retried task) is not run again: its
commit is fetched and its metrics read from it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core import dvc_ops
from airflow_provider_mlci.core.dvc_ops import check_targets, json_safe
from airflow_provider_mlci.core.metrics import flatten_metrics, lookup_metric
from airflow_provider_mlci.core.sweep import Objective, Trial
from airflow_provider_mlci.exceptions import DvcError, MlciConfigError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.workspace import Workspace

__all__ = ["FAILED", "SUCCESS", "check_experiment_name", "experiment_ref", "run_trial"]

log = logging.getLogger(__name__)

#: Trial outcomes.
SUCCESS, FAILED = "success", "failed"

_EXP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")


def check_experiment_name(name: str) -> str:
    """Return ``name`` if DVC and git accept it as an experiment name.

    :param name: ``trial-001-3fa2b1c`` and the like
    :raises MlciConfigError: naming it otherwise
    """
    if not isinstance(name, str) or not _EXP_NAME.match(name) or ".." in name or name.endswith((".", ".lock")):
        raise MlciConfigError(
            f"{name!r} is not a valid experiment name (letters, digits, '.', '_', '-'; at most 100 characters)."
        )
    return name


def experiment_ref(baseline_sha: str, name: str) -> str:
    """The git ref DVC keeps an experiment under: ``refs/exps/<sha[:2]>/<sha[2:]>/<name>``.

    :param baseline_sha: the commit the experiment started from
    :param name: the experiment's name
    """
    return f"refs/exps/{baseline_sha[:2]}/{baseline_sha[2:]}/{check_experiment_name(name)}"


def run_trial(
    workspace: Workspace,
    trial: Trial | Mapping[str, Any],
    *,
    objective: Objective | Mapping[str, Any] | None = None,
    targets: str | Iterable[str] | None = None,
    push: bool = True,
) -> dict[str, Any]:
    """Run ``trial`` as a DVC experiment in ``workspace`` and record it on the remotes.

    Returns small JSON: ``{"name", "params", "overrides", "status", "error", "metrics", "value",
    "exp_ref", "sha", "baseline_sha", "reused"}``; ``status`` is ``success`` or ``failed``,
    ``value`` the objective's value (``None`` without an objective, or when it is not finite),
    ``sha`` the experiment's commit.

    :param workspace: a private checkout of the baseline commit
    :param trial: a :class:`~airflow_provider_mlci.core.sweep.Trial` or its JSON form
        (``{"name", "params"}``)
    :param objective: the sweep's objective, to check the metric exists and read its value
    :param targets: stages to run; default: the whole pipeline
    :param push: push outputs, run-cache and the experiment's ref
    :raises MlciConfigError: a bad trial name, or an objective metric the pipeline does not produce
    :raises DvcError: DVC failed otherwise (lock held, data missing, remote unreachable, ...)
    :raises GitError: the experiment's ref could not be pushed
    """
    if not isinstance(trial, Trial):
        if not isinstance(trial, Mapping) or not isinstance(trial.get("params"), Mapping):
            raise MlciConfigError(f"trial={trial!r}: give {{'name': ..., 'params': {{param: value}}}}.")
        trial = Trial(name=str(trial.get("name")), params=dict(trial["params"]))
    goal = Objective.of(objective) if objective is not None else None
    ref = experiment_ref(workspace.sha, trial.name)
    targets = check_targets(targets)
    result: dict[str, Any] = {
        "name": trial.name,
        "params": trial.params,
        "overrides": trial.overrides,
        "status": SUCCESS,
        "error": None,
        "metrics": {},
        "value": None,
        "exp_ref": ref,
        "sha": None,
        "baseline_sha": workspace.sha,
        "reused": False,
    }
    existing = _remote_sha(workspace, ref) if push else None
    if existing:
        log.info("Experiment %s is already on the git remote (%s): reading it, not running it again", ref, existing)
        workspace.git.check(["fetch", "--quiet", "origin", f"+{ref}:{ref}"], cwd=workspace.path, remote=True)
        workspace.git.check(
            ["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", existing], cwd=workspace.path
        )
        result.update(sha=existing, reused=True, metrics=_call(workspace, "exp_metrics", {}))
    else:
        settings = {"config": workspace.dvc_config(runs_user_code=True), **workspace.access.dvc.dvc_overrides()}
        args = {
            "name": trial.name,
            "params": trial.overrides,
            "targets": list(targets),
            "settings": settings,
            "push": push,
        }
        log.info(
            "Running trial %s: dvc exp run --name %s %s",
            trial.name,
            trial.name,
            " ".join(f"-S {o}" for o in trial.overrides),
        )
        outcome = _call(workspace, "exp_run", args)
        if outcome["status"] != SUCCESS:
            result.update(status=FAILED, error=outcome["error"])
            return json_safe(result)
        sha = workspace.git.rev_parse(workspace.path, ref)
        if sha is None:
            raise DvcError(f"dvc exp run made no ref {ref} for trial {trial.name}")
        if push:
            workspace.git.check(["push", "--quiet", "origin", f"{ref}:{ref}"], cwd=workspace.path, remote=True)
            log.info("Pushed experiment %s (%s) to %s", trial.name, sha[:12], workspace.access.git.display_url)
        result.update(sha=sha, metrics=outcome["metrics"])
    if goal is not None:
        found = lookup_metric(result["metrics"], goal.metric)
        if found.file is None:
            files = ", ".join(sorted(result["metrics"])) or "no metrics file"
            known = ", ".join(sorted(flatten_metrics(result["metrics"]))) or "none"
            raise MlciConfigError(
                f"The objective metric {goal.metric!r} is not produced by the pipeline: trial {trial.name} "
                f"wrote {files} (metrics: {known}). Name one of those as the objective."
            )
        result["value"] = found.value
        if not found.usable:
            result["error"] = found.problem
    return json_safe(result)


def _remote_sha(workspace: Workspace, ref: str) -> str | None:
    out = workspace.git.check(["ls-remote", "origin", ref], cwd=workspace.path, capture=True, remote=True)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name.strip() == ref:
            return sha.strip()
    return None


def _call(workspace: Workspace, op: str, args: dict[str, Any]) -> Any:
    """Run ``op`` in the experiments child process (the protocol of :mod:`.dvc_ops`)."""
    return dvc_ops._call(
        workspace, op, args, module="airflow_provider_mlci.core.experiments_child", runs_user_code=op == "exp_run"
    )
