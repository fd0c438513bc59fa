"""A pipeline at a revision, without running it: what would run, is it in sync, is it the one rendered.

Re-exported by :mod:`airflow_provider_mlci.operators.dvc`; like every operator there, each works
in a private checkout of an exact commit and returns JSON that starts with ``{"repo", "rev", "sha"}``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseBranchOperator
from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import DVC_PURPLE, DvcWorkspaceMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "DvcPipelineResolveOperator",
    "DvcPipelineSyncCheckOperator",
    "DvcWillItRunBranchOperator",
    "DvcWillItRunOperator",
]


class DvcWillItRunOperator(DvcWorkspaceMixin, BaseOperator):
    """Say, from the lock file and the run-cache, which stages a reproduction at ``rev`` would run.

    Runs no stage command: stages restorable from the run-cache are restored in the private
    checkout (so stages below them are judged on their real inputs), and a stage below one that
    would run would run too. Returns ``{"repo", "rev", "sha", "stages", "will_run"}`` where
    ``stages`` maps each stage to ``run``, ``restore`` or ``skip``. Put it before an expensive
    step (starting a GPU) and skip that step when ``will_run`` is empty; see
    :class:`DvcWillItRunBranchOperator`.

    :param rev: branch, tag, commit id or expression (templated)
    :param targets: stages to consider (templated); default: every stage
    :param single_stage: consider only the targets, not their upstream stages
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets")
    ui_color = DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        single_stage: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.targets = targets
        self.single_stage = single_stage
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        result = self._with_workspace(context)
        self.log.info("Stages that would run: %s", ", ".join(result["will_run"]) or "none")
        return result

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets

        check_targets(self.targets)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops

        outcome = dvc_ops.plan(workspace, dvc_ops.check_targets(self.targets), single_stage=self.single_stage)
        return {"stages": outcome.stages, "will_run": outcome.will_run}


class DvcWillItRunBranchOperator(DvcWorkspaceMixin, BaseBranchOperator):
    """Follow ``if_run`` when a reproduction at ``rev`` would run any stage, else ``if_nothing``.

    The branching form of :class:`DvcWillItRunOperator` (same arguments, same XCom): put it
    before the GPU setup task so no instance starts when every stage is a lock hit or a
    run-cache restore.

    :param if_run: task id(s) to follow when some stage would run
    :param if_nothing: task id(s) to follow when nothing would run
    :param rev: branch, tag, commit id or expression (templated)
    :param targets: stages to consider (templated); default: every stage
    :param single_stage: consider only the targets
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets")
    ui_color = DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        if_run: str | Sequence[str],
        if_nothing: str | Sequence[str],
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        single_stage: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.if_run = if_run
        self.if_nothing = if_nothing
        self.rev = rev
        self.targets = targets
        self.single_stage = single_stage
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    check_arguments = DvcWillItRunOperator.check_arguments
    work = DvcWillItRunOperator.work

    def choose_branch(self, context: Context) -> str | Sequence[str]:
        result = self._with_workspace(context)
        context["ti"].xcom_push(key="plan", value=result)
        chosen = self.if_run if result["will_run"] else self.if_nothing
        self.log.info("Stages that would run: %s -> %s", ", ".join(result["will_run"]) or "none", chosen)
        return chosen


class DvcPipelineSyncCheckOperator(DvcWorkspaceMixin, BaseOperator):
    """Are commits and artifacts in sync? Fail, listing every difference, if not.

    Fails with ``DvcOutOfSyncError`` (not retried) if ``dvc.lock`` at ``rev`` does not match the
    code, params and data at ``rev`` (each changed stage with its changed dependencies, outputs,
    params or command), or if the remote lacks data the lock and ``.dvc`` files name. Returns
    ``{"repo", "rev", "sha", "in_sync": true, "changed": {}, "not_in_remote": []}`` otherwise.

    :param rev: branch, tag, commit id or expression (templated)
    :param targets: stages to check (templated); default: every stage
    :param check_remote: also require the remote to hold every object the revision names
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets")
    ui_color = DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        check_remote: bool = True,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.targets = targets
        self.check_remote = check_remote
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets

        check_targets(self.targets)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops

        status = dvc_ops.sync_status(workspace, dvc_ops.check_targets(self.targets), check_remote=self.check_remote)
        status.check(f"{self.rev} ({workspace.sha[:12]})")
        return {"in_sync": True, "changed": {}, "not_in_remote": []}


class DvcPipelineResolveOperator(DvcWorkspaceMixin, BaseOperator):
    """Pin ``rev`` to a commit and check that its pipeline is the one the DAG was rendered from.

    The first task of a ``DvcPipelineTaskGroup`` that runs one task per stage: every stage task
    then works on the commit this one returns, even if the branch moves during the run. Fails
    with ``DvcPipelineMismatchError``, naming the stages added or removed and the dependencies
    changed, when the stages at the commit differ from ``expected_stages``. Returns
    ``{"repo", "rev", "sha", "stages"}``.

    :param rev: branch, tag, commit id or expression (templated)
    :param expected_stages: ``{stage: [upstream stages]}`` as rendered
    :param dvc_file: the ``dvc.yaml`` the stages come from, relative to the repository root
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev",)
    ui_color = DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        expected_stages: dict[str, list[str]],
        dvc_file: str = "dvc.yaml",
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.expected_stages = expected_stages
        self.dvc_file = dvc_file
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.dvc.pipeline import check_stages_match

        stages = check_stages_match(
            dvc_ops.stage_graph(workspace),
            self.expected_stages,
            dvc_file=self.dvc_file,
            where=f"{self.rev} ({workspace.sha[:12]})",
        )
        return {"stages": stages}
