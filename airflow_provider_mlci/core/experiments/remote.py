"""One trial of a sweep run on a GPU instance, recorded as a DVC experiment on the git remote.

The agent on an instance reproduces pipelines (:mod:`~airflow_provider_mlci.core.compute.remote`);
it does not run ``dvc exp run``. So the worker does the two parts of ``dvc exp run -S ...`` that
are not a reproduction itself:

1. :func:`submit_trial`: in a checkout of the baseline commit, set the trial's params in the
   params files as ``-S`` does (DVC's own Hydra override code), commit that (a local commit,
   never pushed), and submit the commit as a reproduction job to the instance's mailbox. The
   agent pulls the inputs, reproduces (run-cache first), pushes outputs and run-cache to the
   DVC remote, and hands back the new ``dvc.lock`` entries and the uncached outputs (metrics,
   plots).
2. :func:`record_trial`: in a checkout of the baseline commit (on any worker), set the params
   again, write what the job handed back, and commit it all as one commit whose parent is the
   baseline, as DVC commits an experiment; push it to ``refs/exps/<sha[:2]>/<sha[2:]>/<name>``
   (:func:`~airflow_provider_mlci.core.experiments.trials.experiment_ref`). ``dvc exp pull`` and
   ``dvc exp show`` then list it with its params and metrics, like any other experiment.

A trial whose experiment is already on the git remote (a retried task) is read, not run again
(:func:`existing_trial`). A pruned trial's partial work is kept the same way, as the experiment
``<name>-pruned`` (:func:`save_pruned`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci.core.experiments.sweep import Objective, Trial
from airflow_provider_mlci.core.experiments.trials import (
    FAILED,
    check_experiment_name,
    experiment_ref,
    read_experiment,
    remote_experiment,
    score_trial,
    trial_result,
)
from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.exceptions import DvcError, MlciConfigError

if TYPE_CHECKING:
    from airflow_provider_mlci.core.compute.jobs import JobSpec, JobStore
    from airflow_provider_mlci.core.dvc.ops import ReproOutcome
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "apply_params",
    "as_trial",
    "existing_trial",
    "failed_trial",
    "record_trial",
    "save_pruned",
    "submit_trial",
]

log = logging.getLogger(__name__)

#: Author and committer of the commits made here.
AUTHOR = "Airflow MLCI <mlci@airflow.invalid>"


def as_trial(trial: Trial | Mapping[str, Any]) -> Trial:
    """The :class:`~airflow_provider_mlci.core.experiments.sweep.Trial` of a trial's JSON form (``{"name", "params"}``).

    :param trial: a trial or its JSON form
    :raises MlciConfigError: neither
    """
    if isinstance(trial, Trial):
        return trial
    if not isinstance(trial, Mapping) or not isinstance(trial.get("params"), Mapping):
        raise MlciConfigError(f"trial={trial!r}: give {{'name': ..., 'params': {{param: value}}}}.")
    return Trial(name=str(trial.get("name")), params=dict(trial["params"]))


def apply_params(workspace: Workspace, trial: Trial) -> list[str]:
    """Set the trial's params in the checkout's params files, as ``dvc exp run -S`` does; return the files.

    ``-S`` syntax: ``train.lr=0.1`` changes ``params.yaml``, ``other.yaml:train.lr=0.1`` that file.

    :param workspace: the checkout
    :param trial: the trial
    :raises MlciConfigError: a params file outside the repository or missing, or an override
        DVC cannot apply (naming it)
    """
    from dvc.exceptions import DvcException
    from dvc.utils.cli_parse import to_path_overrides
    from dvc.utils.hydra import apply_overrides

    root = workspace.path.resolve()
    changed = []
    for name, overrides in to_path_overrides(trial.overrides).items():
        path = inside(root, name, what=f"params file of trial {trial.name}")
        if not path.is_file():
            raise MlciConfigError(f"Trial {trial.name}: the params file {name!r} is not in the repository.")
        try:
            apply_overrides(path, overrides)
        except (DvcException, ValueError) as exc:
            raise MlciConfigError(f"Trial {trial.name}: cannot set {', '.join(overrides)} in {name}: {exc}") from exc
        changed.append(path.relative_to(root).as_posix())
    return changed


def existing_trial(
    workspace: Workspace, trial: Trial | Mapping[str, Any], *, objective: Objective | Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The trial's result if its experiment is already on the git remote (a retried task); else ``None``.

    :param workspace: a checkout of the baseline commit
    :param trial: the trial
    :param objective: the sweep's objective
    """
    trial = as_trial(trial)
    result = trial_result(trial, workspace.sha)
    sha = remote_experiment(workspace, result["exp_ref"])
    if sha is None:
        return None
    result.update(sha=sha, reused=True, metrics=read_experiment(workspace, result["exp_ref"], sha))
    return score_trial(result, objective)


def submit_trial(
    workspace: Workspace,
    store: JobStore,
    *,
    job_id: str,
    trial: Trial | Mapping[str, Any],
    targets: Iterable[str] = (),
    heartbeat_interval: float = 10.0,
    progress: Mapping[str, Any] | None = None,
) -> JobSpec:
    """Commit the trial's params on the baseline (locally) and submit that commit as a reproduction job.

    The job is the one :func:`~airflow_provider_mlci.core.compute.remote.submit_repro` makes,
    at the params commit: no credential goes into it.

    :param workspace: a checkout of the baseline commit
    :param store: the instance's mailbox
    :param job_id: the job's id
    :param trial: the trial
    :param targets: the stages to run; empty: the whole pipeline
    :param heartbeat_interval: seconds between the agent's heartbeats
    :param progress: ``{"file", "interval"}``: the per-step table the agent copies to the mailbox
        while the trial runs (an adaptive sweep's pruning signal)
    """
    from airflow_provider_mlci.core.compute.remote import submit_repro
    from airflow_provider_mlci.core.dvc.ops import ReproRequest, check_targets

    trial = as_trial(trial)
    files = apply_params(workspace, trial)
    sha = _commit(workspace, files, f"Set the params of trial {trial.name} [mlci]")
    # The bundle is of the checkout's HEAD; the workspace keeps naming the baseline as its commit.
    workspace.git.check(["-c", "advice.detachedHead=false", "checkout", "--quiet", "--force", sha], cwd=workspace.path)
    return submit_repro(
        workspace,
        store,
        job_id=job_id,
        request=ReproRequest(targets=check_targets(tuple(targets)), pull=True, push=True),
        heartbeat_interval=heartbeat_interval,
        sha=sha,
        rev=f"{workspace.sha[:12]} with {' '.join(trial.overrides)}",
        progress=progress,
    )


def record_trial(
    workspace: Workspace,
    trial: Trial | Mapping[str, Any],
    outcome: ReproOutcome,
    *,
    objective: Objective | Mapping[str, Any] | None = None,
    push: bool = True,
) -> dict[str, Any]:
    """Commit a trial that ran elsewhere as a DVC experiment on the baseline and push its ref.

    The commit's parent is the baseline; it holds the params files as the trial set them and
    what the reproduction handed back (``dvc.lock``, metrics, plots). An experiment already on
    the git remote under the same name is read instead (a retried task); nothing is
    force-pushed. Returns what :func:`~airflow_provider_mlci.core.experiments.trials.run_trial` returns.

    :param workspace: a checkout of the baseline commit
    :param trial: the trial
    :param outcome: the reproduction's outcome (its handoff and metrics)
    :param objective: the sweep's objective, to check the metric exists and read its value
    :param push: push the experiment's ref to the git remote
    :raises MlciConfigError: the pipeline does not produce the objective metric
    :raises DvcError: the reproduction handed nothing back
    :raises GitError: the ref could not be pushed
    """
    from airflow_provider_mlci.core.dvc import ops as dvc_ops

    trial = as_trial(trial)
    found = existing_trial(workspace, trial, objective=objective) if push else None
    if found is not None:
        return found
    result = trial_result(trial, workspace.sha)
    ref = result["exp_ref"]
    if not outcome.handoff:
        raise DvcError(f"Trial {trial.name}: the reproduction handed back no dvc.lock entries or outputs.")
    files = apply_params(workspace, trial)
    files += [name for name in dvc_ops.apply_handoff(workspace, outcome.handoff) if name not in files]
    sha = _commit(workspace, files, f"dvc: commit experiment {trial.name} [mlci]")
    workspace.git.check(["update-ref", ref, sha], cwd=workspace.path)
    if push:
        workspace.git.check(["push", "--quiet", "origin", f"{sha}:{ref}"], cwd=workspace.path, remote=True)
        log.info("Pushed experiment %s (%s) to %s", trial.name, sha[:12], workspace.access.git.display_url)
    result.update(sha=sha, metrics=dict(outcome.metrics))
    return score_trial(result, objective)


def save_pruned(workspace: Workspace, trial: Trial | Mapping[str, Any], table: str, *, push: bool = True) -> str:
    """Keep a pruned trial's partial work for inspection: its params files and its per-step table,
    committed on the baseline as the experiment ``<name>-pruned`` (pushed to the git remote); return
    its ref. Never ranked (the sweep knows the trial as pruned), and another name than the trial's
    own, so a re-run of the trial runs it rather than reading this.

    ``dvc exp save`` cannot do it: it commits every output of the pipeline, and a stage stopped
    half-way left them missing (DVC says ``output 'metrics.json' does not exist``).

    :param workspace: the checkout the trial ran in
    :param trial: the trial
    :param table: the per-step table, relative to the checkout (a link out of it is refused)
    :param push: push the ref to the git remote
    :raises UnsafePathError: the table leads out of the checkout
    :raises GitError: the ref could not be pushed
    """
    trial = as_trial(trial)
    name = check_experiment_name(f"{trial.name}-pruned")
    ref = experiment_ref(workspace.sha, name)
    if push and remote_experiment(workspace, ref) is not None:
        return ref  # a retried task kept it already
    files = apply_params(workspace, trial)
    if inside(workspace.path, table, what="per-step table").is_file():
        files.append(table)
    sha = _commit(workspace, files, f"Trial {trial.name}, pruned: its params and per-step values [mlci]")
    workspace.git.check(["update-ref", ref, sha], cwd=workspace.path)
    if push:
        workspace.git.check(["push", "--quiet", "origin", f"{sha}:{ref}"], cwd=workspace.path, remote=True)
        log.info("Kept the pruned trial's partial work as experiment %s (%s)", name, sha[:12])
    return ref


def failed_trial(workspace_sha: str, trial: Trial | Mapping[str, Any], error: str) -> dict[str, Any]:
    """The result of a trial whose stage failed (nothing is recorded on the remotes).

    :param workspace_sha: the baseline commit
    :param trial: the trial
    :param error: what went wrong
    """
    result = trial_result(as_trial(trial), workspace_sha)
    result.update(status=FAILED, error=error)
    return score_trial(result, None)


def _commit(workspace: Workspace, files: list[str], message: str) -> str:
    """Commit ``files`` as they are in the checkout onto its commit, without touching a branch; return the commit."""
    from airflow_provider_mlci.core.repo.commit import CommitSpec, commit_tree

    root = workspace.path
    contents = {name: (root / name).read_bytes() if (root / name).exists() else None for name in files}
    spec = CommitSpec(branch="unused", message=message, author=AUTHOR)
    return commit_tree(workspace, workspace.sha, contents, spec, {**workspace.git.env, **spec.environment()})
