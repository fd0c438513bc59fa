"""Operators that run DVC on a repository checked out at an exact revision.

Every operator here checks the revision out into a private folder on the worker (made cheaply
from the worker's mirror of the repository), does its work there through
:mod:`airflow_provider_mlci.core.dvc.ops`, removes the folder and returns small JSON that starts
with ``{"repo", "rev", "sha"}``. Nothing passes between tasks through a worker's disk: data and
run-cache go through the DVC remote, lock entries through XCom.

:class:`DvcReproOperator` lives in :mod:`~airflow_provider_mlci.operators.repro` and the
pipeline questions (will it run, in sync, the rendered pipeline) in
:mod:`~airflow_provider_mlci.operators.pipeline`; both are importable from here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import DVC_PURPLE, DvcWorkspaceMixin
from airflow_provider_mlci.operators.pipeline import (
    DvcPipelineResolveOperator,
    DvcPipelineSyncCheckOperator,
    DvcWillItRunBranchOperator,
    DvcWillItRunOperator,
)
from airflow_provider_mlci.operators.repro import DvcReproOperator

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = [
    "DvcCheckoutOperator",
    "DvcCommitOperator",
    "DvcMetricsOperator",
    "DvcPipelineResolveOperator",
    "DvcPipelineSyncCheckOperator",
    "DvcPushOperator",
    "DvcReproOperator",
    "DvcWillItRunBranchOperator",
    "DvcWillItRunOperator",
]


class DvcCheckoutOperator(DvcWorkspaceMixin, BaseOperator):
    """Resolve ``rev`` to a commit and pull ``targets`` (or everything) from the DVC remote.

    Checks that the revision exists and that the remote holds its data (failing, by name, on
    anything missing), and brings the data into this worker's DVC cache, where later tasks on
    the worker find it. The private checkout itself is not filled: no other task could see it.
    Returns ``{"repo", "rev", "sha", "targets", "fetched"}``; tasks downstream can pin the
    commit with ``{{ ti.xcom_pull(task_ids='<this>')['sha'] }}``.

    :param rev: branch, tag, commit id or expression (templated)
    :param targets: ``.dvc`` files, stages or tracked paths (templated); default: everything
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
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.targets = targets
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets

        check_targets(self.targets)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops

        targets = dvc_ops.check_targets(self.targets)
        fetched = dvc_ops.fetch(workspace, targets)
        return {"targets": list(targets), "fetched": fetched["fetched"]}


class DvcCommitOperator(DvcWorkspaceMixin, BaseOperator):
    """Commit the lock entries and uncached outputs that stage tasks handed on, to a branch.

    The last task of a ``DvcPipelineTaskGroup`` that runs one task per stage: it checks out the
    commit the stages ran at, writes their new ``dvc.lock`` entries and metrics, and commits them
    to ``branch`` (never a force-push; a moved branch is rebased onto, a real conflict fails
    naming the file; no commit when the branch already holds the same files). Returns
    ``{"repo", "rev", "sha", "commit": {"branch", "commit", "created"}}``.

    :param rev: the commit the stages ran at (templated)
    :param handoff_from: task ids of the stage tasks
    :param branch: the branch to commit to (templated)
    :param message: the commit message (templated)
    :param author: ``"Name <email>"``
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "branch", "message")
    ui_color = DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str,
        handoff_from: Sequence[str],
        branch: str,
        message: str = "Reproduce the pipeline [mlci]",
        author: str = "Airflow MLCI <mlci@airflow.invalid>",
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.handoff_from = tuple(handoff_from)
        self.branch = branch
        self.message = message
        self.author = author
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.repo.commit import CommitSpec

        CommitSpec(branch=self.branch, message=self.message, author=self.author)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.repo.commit import CommitSpec, commit_changes

        handoff = self.handoff_from_tasks(context, self.handoff_from)
        changed = dvc_ops.apply_handoff(workspace, handoff) if handoff else ()
        spec = CommitSpec(branch=self.branch, message=self.message, author=self.author)
        return {"commit": commit_changes(workspace, list(changed), spec, self.log)}


class DvcPushOperator(DvcWorkspaceMixin, BaseOperator):
    """Push what this worker's cache holds of ``targets`` at ``rev`` (and the run-cache) to the remote.

    Fails, naming them, if the cache lacks data the revision names that the remote lacks too:
    after this task, the remote holds everything ``rev`` needs. What the cache does hold is
    pushed first, so a failed push still leaves the remote with everything it could send.
    Returns ``{"repo", "rev", "sha", "pushed", "missing"}``.

    :param rev: branch, tag, commit id or expression (templated)
    :param targets: ``.dvc`` files, stages or tracked paths (templated); default: everything
    :param run_cache: push the run-cache too
    :param allow_missing: only warn about data neither the cache nor the remote holds
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
        run_cache: bool = True,
        allow_missing: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.targets = targets
        self.run_cache = run_cache
        self.allow_missing = allow_missing
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets

        check_targets(self.targets)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.exceptions import DvcMissingObjectError

        result = dvc_ops.push(workspace, dvc_ops.check_targets(self.targets), run_cache=self.run_cache)
        if result["missing"]:
            message = f"Neither this worker's cache nor the remote holds: {', '.join(result['missing'])}"
            if not self.allow_missing:
                raise DvcMissingObjectError(message)
            self.log.warning("%s", message)
        return result


class DvcMetricsOperator(DvcWorkspaceMixin, BaseOperator):
    """Metrics and params at ``rev``, and their diff against ``baseline_rev``.

    Reads what git holds (no data is pulled). Returns ``{"repo", "rev", "sha", "baseline_rev",
    "baseline_sha", "metrics", "params", "metrics_diff", "params_diff", "baseline_metrics"}``
    with the diffs shaped as ``dvc metrics diff --json`` and ``dvc params diff --json`` shape
    them, and ``baseline_metrics`` the metrics at ``baseline_rev`` (empty without one).

    :param rev: branch, tag, commit id or expression (templated)
    :param baseline_rev: the revision to compare with (templated); default: no diff
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "baseline_rev")
    ui_color = DVC_PURPLE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        baseline_rev: str | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.baseline_rev = baseline_rev
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.repo.git import check_rev

        if self.baseline_rev:
            check_rev(self.baseline_rev)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from dataclasses import asdict

        from airflow_provider_mlci.core.dvc import ops as dvc_ops

        baseline_sha = workspace.resolve(self.baseline_rev) if self.baseline_rev else None
        report = dvc_ops.metrics(workspace, baseline_sha)
        return {"baseline_rev": self.baseline_rev, "baseline_sha": baseline_sha, **asdict(report)}
