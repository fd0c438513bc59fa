"""One trial of a sweep, run as a DVC experiment in a task's own workspace and pushed to the git remote.

:func:`run_trial` does what ``dvc exp run --name <trial> -S <param>=<value> ...`` followed by
``dvc push --run-cache`` and ``dvc exp push origin <trial>`` do, on a private checkout
(:class:`~airflow_provider_mlci.core.repo.workspace.Workspace`):

1. pull what the pipeline needs from outside itself, run the experiment (each stage fetches the
   run-cache first, so a point already tried is restored rather than trained again);
2. push the outputs and the run-cache to the DVC remote, as a reproduction does;
3. push the experiment's ref (``refs/exps/<baseline>/<name>``) to the git remote with the
   workspace's git, which holds the connection's credentials, so ``dvc exp pull`` and
   ``dvc exp show`` find it in any clone.

DVC runs in a subprocess (:mod:`airflow_provider_mlci.core.experiments.child`), as every DVC
operation here does. A stage that fails makes a *failed trial* (a result, not an exception),
so that a sweep can count them against its budget of failures. An objective metric that the
pipeline does not produce is a mistake in the sweep, not a bad trial: it raises
:class:`~airflow_provider_mlci.exceptions.MlciConfigError` naming the metric and the metrics
the trial did produce.

A trial whose experiment is already on the git remote (a retried task) is not run again: its
commit is fetched and its metrics read from it.

:func:`branch_experiment` does what ``dvc exp branch <trial> <branch>`` then ``git push origin
<branch>`` do: it makes an experiment's commit reachable from an ordinary branch on the git
remote (where a release, a pull request or a reviewer can find it), without force and
idempotently.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.dvc.metrics import flatten_metrics, lookup_metric
from airflow_provider_mlci.core.dvc.ops import check_targets, json_safe
from airflow_provider_mlci.core.experiments.sweep import Objective, Trial
from airflow_provider_mlci.core.repo.commit import check_branch
from airflow_provider_mlci.exceptions import (
    DvcError,
    GitConflictError,
    GitRevisionNotFoundError,
    MlciConfigError,
)

if TYPE_CHECKING:
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "FAILED",
    "SUCCESS",
    "branch_experiment",
    "check_experiment_name",
    "experiment_ref",
    "params_at",
    "read_experiment",
    "remote_experiment",
    "run_trial",
    "score_trial",
    "trial_result",
]

log = logging.getLogger(__name__)

#: Trial outcomes.
SUCCESS, FAILED = "success", "failed"

_EXP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
_EXP_REF = re.compile(r"^refs/exps/[0-9a-f]{2}/[0-9a-f]{38,62}/(?P<name>[^/]+)$")
_PUSH_REJECTED = ("[rejected]", "[remote rejected]", "already exists", "fetch first", "non-fast-forward")


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
    :param trial: a :class:`~airflow_provider_mlci.core.experiments.sweep.Trial` or its JSON form
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
    targets = check_targets(targets)
    result = trial_result(trial, workspace.sha)
    ref = result["exp_ref"]
    existing = _remote_sha(workspace, ref) if push else None
    if existing:
        result.update(sha=existing, reused=True, metrics=read_experiment(workspace, ref, existing))
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
    return score_trial(result, goal)


def trial_result(trial: Trial, baseline_sha: str) -> dict[str, Any]:
    """The result of ``trial`` before it ran: ``{"name", "params", "overrides", "status", "error",
    "metrics", "value", "exp_ref", "sha", "baseline_sha", "reused"}`` (see :func:`run_trial`).

    :param trial: the trial
    :param baseline_sha: the commit it starts from
    """
    return {
        "name": trial.name,
        "params": trial.params,
        "overrides": trial.overrides,
        "status": SUCCESS,
        "error": None,
        "metrics": {},
        "value": None,
        "exp_ref": experiment_ref(baseline_sha, trial.name),
        "sha": None,
        "baseline_sha": baseline_sha,
        "reused": False,
    }


def score_trial(result: dict[str, Any], objective: Objective | Mapping[str, Any] | None) -> dict[str, Any]:
    """Set a successful trial's ``value`` (and ``error`` when it is not usable) from its metrics; JSON-safe.

    :param result: the trial's result (see :func:`trial_result`)
    :param objective: the sweep's objective; ``None``: no value
    :raises MlciConfigError: the pipeline does not produce the objective metric
    """
    goal = Objective.of(objective) if objective is not None else None
    if goal is not None and result["status"] == SUCCESS:
        found = lookup_metric(result["metrics"], goal.metric)
        if found.file is None:
            files = ", ".join(sorted(result["metrics"])) or "no metrics file"
            known = ", ".join(sorted(flatten_metrics(result["metrics"]))) or "none"
            raise MlciConfigError(
                f"The objective metric {goal.metric!r} is not produced by the pipeline: trial {result['name']} "
                f"wrote {files} (metrics: {known}). Name one of those as the objective."
            )
        result["value"] = found.value
        if not found.usable:
            result["error"] = found.problem
    return json_safe(result)


def remote_experiment(workspace: Workspace, ref: str) -> str | None:
    """The commit of the experiment ``ref`` on the git remote, or ``None`` when it is not there.

    :param workspace: a checkout of the repository
    :param ref: the experiment's ref (see :func:`experiment_ref`)
    """
    return _remote_sha(workspace, ref)


def read_experiment(workspace: Workspace, ref: str, sha: str) -> dict[str, Any]:
    """Fetch the experiment ``ref`` (at ``sha``) from the git remote, check it out, return its metrics files.

    :param workspace: a checkout of the repository (left at the experiment's commit)
    :param ref: the experiment's ref
    :param sha: its commit on the remote
    """
    log.info("Experiment %s is already on the git remote (%s): reading it, not running it again", ref, sha)
    workspace.git.check(["fetch", "--quiet", "origin", f"+{ref}:{ref}"], cwd=workspace.path, remote=True)
    workspace.git.check(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", sha], cwd=workspace.path)
    return _call(workspace, "exp_metrics", {})


def branch_experiment(workspace: Workspace, exp_ref: str, branch: str, *, sha: str | None = None) -> dict[str, Any]:
    """Point ``branch`` on the git remote at the commit of the experiment ``exp_ref``, as ``dvc exp branch`` would.

    The branch is created with a plain push (never a force-push). A branch that already points
    at the experiment's commit is left as it is (a retried task changes nothing); one that
    points elsewhere is an error, and nothing is written. Returns ``{"branch", "sha",
    "exp_ref", "experiment", "created"}``.

    :param workspace: a checkout of the repository (its ``origin`` is the remote written to)
    :param exp_ref: the experiment's ref, ``refs/exps/<sha[:2]>/<sha[2:]>/<name>``
        (see :func:`experiment_ref`)
    :param branch: the branch to create, e.g. ``sweep/trial-002-3fa2b1c``
    :param sha: the commit the experiment must be at (the one that was ranked); default: the one
        its ref points at
    :raises MlciConfigError: ``exp_ref`` is no experiment ref, or ``branch`` no valid branch name
    :raises GitRevisionNotFoundError: the git remote has no experiment ``exp_ref``
    :raises GitConflictError: the branch exists and points at another commit, or the experiment
        is not at ``sha``
    :raises GitRemoteError: the remote cannot be reached or refused the push otherwise
    """
    match = _EXP_REF.match(exp_ref) if isinstance(exp_ref, str) else None
    if match is None:
        raise MlciConfigError(f"{exp_ref!r} is not an experiment ref (refs/exps/<sha[:2]>/<sha[2:]>/<name>).")
    git, root, url = workspace.git, workspace.path, workspace.access.git.display_url
    check_branch(git, root, branch)
    head = f"refs/heads/{branch}"
    found = _remote_sha(workspace, exp_ref)
    if found is None:
        raise GitRevisionNotFoundError(f"The experiment {exp_ref} is not on {url} (was it pushed, or removed since?).")
    if sha is not None and found != sha:
        raise GitConflictError(
            f"The experiment {exp_ref} is at {found[:12]} on {url}, not at {sha[:12]} (the commit that was ranked); "
            "nothing was pushed."
        )
    sha = found
    result = {"branch": branch, "sha": sha, "exp_ref": exp_ref, "experiment": match["name"], "created": False}
    git.check(["fetch", "--quiet", "origin", f"+{exp_ref}:{exp_ref}"], cwd=root, remote=True)  # the commit to push
    for _ in range(2):  # a second look when another writer created the branch between our look and our push
        current = _remote_sha(workspace, head)
        if current == sha:
            log.info("Branch %s of %s already points at experiment %s (%s)", branch, url, match["name"], sha[:12])
            return result
        if current is not None:
            raise GitConflictError(
                f"Branch {branch!r} of {url} already exists at {current[:12]}, not at experiment "
                f"{match['name']} ({sha[:12]}): choose another branch name or delete that branch; nothing was pushed."
            )
        pushed = git.run(["push", "--porcelain", "origin", f"{sha}:{head}"], cwd=root, capture=True)
        if pushed.returncode == 0:
            log.info("Created branch %s of %s at experiment %s (%s)", branch, url, match["name"], sha[:12])
            return {**result, "created": True}
        if not any(marker in f"{pushed.stdout}\n{pushed.tail_text}" for marker in _PUSH_REJECTED):
            break
    raise git.error(pushed, remote=True)


def params_at(workspace: Workspace, tag: str, keys: Iterable[str]) -> dict[str, Any]:
    """The values the commit of ``tag`` on the git remote holds for the sweep's params ``keys``
    (``train.lr`` in ``params.yaml``, ``other.yaml:train.lr`` in that file); a key the commit
    lacks is left out.

    :param workspace: a checkout of the repository (the tag is fetched into it)
    :param tag: a tag of the remote, e.g. the stage tag of the deployed model
    :param keys: the params, as the sweep's space names them
    """
    import tomllib

    import yaml

    workspace.git.check(
        ["fetch", "--quiet", "origin", f"+refs/tags/{tag}:refs/tags/{tag}"], cwd=workspace.path, remote=True
    )
    files: dict[str, Any] = {}
    found = {}
    for key in keys:
        name, _, dotted = key.rpartition(":") if ":" in key else ("params.yaml", "", key)
        if name not in files:
            shown = workspace.git.run(["show", f"refs/tags/{tag}^{{commit}}:{name}"], cwd=workspace.path, capture=True)
            text = shown.stdout if shown.returncode == 0 else ""
            try:
                files[name] = (tomllib.loads(text) if name.endswith(".toml") else yaml.safe_load(text)) or {}
            except (tomllib.TOMLDecodeError, yaml.YAMLError):
                files[name] = {}
        value: Any = files[name]
        for part in dotted.split("."):
            value = value.get(part) if isinstance(value, Mapping) else None
        if value is not None and not isinstance(value, Mapping | list):
            found[key] = value
    return found


def _remote_sha(workspace: Workspace, ref: str) -> str | None:
    out = workspace.git.check(["ls-remote", "origin", ref], cwd=workspace.path, capture=True, remote=True)
    for line in out.splitlines():
        sha, _, name = line.partition("\t")
        if name.strip() == ref:
            return sha.strip()
    return None


def _call(workspace: Workspace, op: str, args: dict[str, Any]) -> Any:
    """Run ``op`` in the experiments child process (the protocol of :mod:`.dvc_ops`)."""
    return dvc_ops.call_child(
        workspace, op, args, module="airflow_provider_mlci.core.experiments.child", runs_user_code=op == "exp_run"
    )
