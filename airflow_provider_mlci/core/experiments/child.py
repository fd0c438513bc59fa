"""The subprocess side of :mod:`airflow_provider_mlci.core.experiments.trials`: ``dvc exp run`` itself.

Run as ``python -m airflow_provider_mlci.core.experiments.child``; it speaks the protocol of
:mod:`airflow_provider_mlci.core.dvc.child` (a JSON request on standard input, a JSON result
file, DVC's exceptions translated into ours) and adds the operation ``exp_run``.

``dvc exp run`` opens a repository object of its own, which does not see the settings the
parent hands to ours (the worker's shared cache, the connection's remote), so they are first
written to the private checkout's ``.dvc/config.local``. They hold no secret: credentials stay
in the environment.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

from airflow_provider_mlci import exceptions as errors
from airflow_provider_mlci.core.dvc import child as dvc_child

if TYPE_CHECKING:
    from dvc.repo import Repo

log = logging.getLogger("airflow_provider_mlci.core.experiments.child")


def _persist_config(repo: Repo, settings: dict[str, Any]) -> None:
    """Write the worker's cache and the connection's remote into ``.dvc/config.local``."""
    from dvc.config import merge

    config = settings.get("config") or {}
    remote = settings.get("remote")
    remote_config = {key: _config_value(value) for key, value in (settings.get("remote_config") or {}).items()}
    with repo.config.edit("local") as local:
        merge(local, config)
        if remote:
            local.setdefault("core", {})["remote"] = remote
        if remote_config:
            name = remote or repo.config["core"].get("remote")
            if not name:
                raise errors.MlciConfigError("A remote URL was given on the connection but no remote name.")
            merge(local, {"remote": {name: remote_config}})
    repo._reset()


def _config_value(value: Any) -> Any:
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def op_exp_run(
    repo: Repo,
    *,
    name: str,
    params: list[str],
    targets: list[str],
    settings: dict[str, Any],
    push: bool = True,
) -> dict[str, Any]:
    """Run one experiment in the workspace; push its outputs and the run-cache; read its metrics.

    A stage whose command fails is a failed trial, not an error: the result says so.
    """
    from dvc.exceptions import DvcException

    _persist_config(repo, settings)
    dvc_child.require_remote(repo)
    stages = dvc_child.stages_in_scope(repo, targets, single_stage=False)
    dvc_child.pull_inputs(repo, stages)
    try:
        # pull=True: fetch the run-cache and what unchanged stages need; never allow_missing.
        results = repo.experiments.run(targets=targets or None, params=params, name=name, pull=True)
    except DvcException as exc:
        translated = dvc_child.translate(exc, repo)
        if isinstance(translated, errors.DvcStageFailedError):
            log.warning("Trial %s failed: %s", name, translated)
            return {"status": "failed", "error": str(translated), "exp_sha": None, "metrics": {}}
        raise translated from exc
    exp_sha = next(iter(results), None)
    if exp_sha is None:
        raise errors.DvcError(f"dvc exp run --name {name} reproduced no experiment")
    repo._reset()
    if push:
        dvc_child.push_results(repo, [stage.addressing for stage in stages], run_cache=True)
    return {"status": "success", "error": None, "exp_sha": exp_sha, "metrics": dvc_child.metrics_of(repo)}


def op_exp_metrics(repo: Repo) -> dict[str, Any]:
    """The metrics files of the commit checked out (an experiment fetched from the remote)."""
    shown = repo.metrics.show(revs=[repo.scm.get_rev()], hide_workspace=True)
    return dvc_child.files_at(repo, shown, repo.scm.get_rev(), "metrics")


def main() -> int:
    """Serve one request, as :func:`airflow_provider_mlci.core.dvc.child.main` does."""
    dvc_child.OPS["exp_run"] = op_exp_run
    dvc_child.OPS["exp_metrics"] = op_exp_metrics
    return dvc_child.main()


if __name__ == "__main__":
    sys.exit(main())
