"""Operators that run DVC on a repository checked out at an exact revision."""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators._errors import airflow_failures

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.process import CommandRunner
    from airflow_provider_mlci.hooks.dvc import DvcHook

__all__ = ["DvcReproOperator"]

_DVC_PURPLE = "#945dd6"


class DvcReproOperator(BaseOperator):
    """Reproduce a DVC pipeline at a git revision, on this worker, and share what it produced.

    The task checks out ``rev`` into a private folder, pulls the data sources (failing if any
    is missing), reproduces the pipeline, letting each stage fetch the run-cache and what it
    needs, then pushes outputs and run-cache to the DVC remote so that other tasks and workers
    can use them. It returns ``{"repo", "rev", "sha", "stages", "metrics", "pushed"}`` where
    ``stages`` maps each stage to ``ran``, ``restored`` (from the run-cache) or ``skipped``.

    :param rev: branch, tag, commit id or expression (templated); ``HEAD`` is the default branch
    :param targets: stages to reproduce (templated); default: the whole pipeline
    :param force: run the stages even if nothing changed
    :param single_stage: run only the targets, not their upstream stages
    :param pull: pull inputs and run-cache first
    :param push: push outputs and run-cache afterwards
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: the provider setting ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets")
    ui_color = _DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        force: bool = False,
        single_stage: bool = False,
        pull: bool = True,
        push: bool = True,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.targets = targets
        self.force = force
        self.single_stage = single_stage
        self.pull = pull
        self.push = push
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir
        self._runner: CommandRunner | None = None

    @cached_property
    def hook(self) -> DvcHook:
        """The hook for the repository's connection."""
        from airflow_provider_mlci.hooks.dvc import DvcHook

        return DvcHook(self.dvc_conn_id, cache_dir=self.cache_dir)

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core import dvc_ops
        from airflow_provider_mlci.core.process import CommandRunner

        self._runner = CommandRunner(log=self.log)
        with airflow_failures():
            request = dvc_ops.ReproRequest(
                targets=dvc_ops.check_targets(self.targets),
                force=self.force,
                single_stage=self.single_stage,
                pull=self.pull,
                push=self.push,
            )
            with self.hook.open_workspace(self.rev, runner=self._runner) as workspace:
                outcome = dvc_ops.repro(workspace, request)
                result = {
                    "repo": workspace.access.git.display_url,
                    "rev": self.rev,
                    "sha": workspace.sha,
                    "stages": outcome.stages,
                    "metrics": outcome.metrics,
                    "pushed": outcome.pushed,
                }
        for stage, state in outcome.stages.items():
            self.log.info("Stage %s: %s", stage, state)
        return result

    def on_kill(self) -> None:
        """Stop the running git or DVC process (and the stage command it runs)."""
        if self._runner is not None:
            self._runner.stop()
