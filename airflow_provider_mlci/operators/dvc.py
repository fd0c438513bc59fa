"""Operators that run DVC on a repository checked out at an exact revision.

Every operator here checks the revision out into a private folder on the worker (made cheaply
from the worker's mirror of the repository), does its work there through
:mod:`airflow_provider_mlci.core.dvc.ops`, removes the folder and returns small JSON that starts
with ``{"repo", "rev", "sha"}``. Nothing passes between tasks through a worker's disk: data and
run-cache go through the DVC remote, lock entries through XCom.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.providers.common.compat.sdk import BaseBranchOperator
from airflow.sdk import BaseOperator

from airflow_provider_mlci import lineage
from airflow_provider_mlci.lineage import OpenLineageMixin
from airflow_provider_mlci.operators.base import DvcWorkspaceMixin, airflow_failures
from airflow_provider_mlci.operators.remote_job import RemoteJobMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.commit import CommitSpec
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

_DVC_PURPLE = "#945dd6"


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
    ui_color = _DVC_PURPLE
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


class DvcReproOperator(OpenLineageMixin, RemoteJobMixin, DvcWorkspaceMixin, BaseOperator):
    """Reproduce a DVC pipeline at a git revision on this worker and share what it produced.

    The task checks out ``rev`` into a private folder, pulls what the stages need from outside
    themselves (failing, by name, if anything is missing), reproduces them (each stage fetches
    the run-cache and its unchanged outputs; never ``--allow-missing``), pushes outputs and
    run-cache so that other tasks and workers can use them and, if asked, commits ``dvc.lock``
    and the metrics it changed to a branch (never a force-push). It returns
    ``{"repo", "rev", "sha", "stages", "metrics", "pushed", "commit"}`` where ``stages`` maps each
    stage to ``ran``, ``restored`` (from the run-cache) or ``skipped``. With Airflow's OpenLineage
    provider, the task's lineage names the stages' dependencies and outputs as datasets of the
    repository, with the commit and DVC's object ids (see :mod:`airflow_provider_mlci.lineage`).

    :param rev: branch, tag, commit id or expression (templated); ``HEAD`` is the default branch
    :param targets: stages to reproduce (templated); default: the whole pipeline
    :param force: run the stages even if nothing changed
    :param single_stage: run only the targets, not their upstream stages
    :param pull: pull inputs and run-cache first
    :param push: push outputs and run-cache afterwards
    :param commit_to: a branch to commit ``dvc.lock`` (and changed metrics, plots) to; default: none
    :param commit_message: the message of that commit
    :param commit_author: ``"Name <email>"`` of that commit
    :param python: the interpreter (or virtualenv folder) stage commands run with; default: this
        worker's interpreter
    :param sandbox: run the stage commands as untrusted code: under bubblewrap with no network,
        none of the worker's files or secrets, and a DVC cache of their own whose run-cache never
        reaches the shared remote (``None``: the provider setting ``[mlci] sandbox``; a mapping
        sets options: ``env``, ``timeout_s``, ``memory_mb``, ``network``, ``readable``)
    :param handoff_from: task ids of upstream stage tasks whose results (lock entries, uncached
        outputs) this one applies first; used by ``DvcPipelineTaskGroup``
    :param hand_off: add this run's lock entries and uncached outputs to the XCom (``handoff``)
    :param compute: where the stages run: ``local`` (this worker; GPUs that ``nvidia-smi`` finds
        are reported in the log) or ``ec2`` (the GPU instance that ``instance_task_id`` started:
        the commit goes to the instance's agent through S3 and the task defers until the job
        ends, holding no worker slot, with the instance's log copied into the task log)
    :param instance_task_id: with ``ec2``: the ``GpuCreateInstanceOperator`` task whose instance
        runs the job
    :param aws_conn_id: with ``ec2``: the ``aws`` connection that reaches the instance's mailbox
    :param poll_interval: with ``ec2``: seconds between looks at the job
    :param heartbeat_timeout: with ``ec2``: seconds without a heartbeat after which the job counts
        as lost and the task fails
    :param start_timeout: with ``ec2``: seconds the job may wait for the instance's agent to take
        it (boot and install included)
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: the provider setting ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets", "commit_to", "commit_message", "instance_task_id")
    ui_color = _DVC_PURPLE
    ui_fgcolor = "#ffffff"
    _stage_io: dict[str, Any] | None = None

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        targets: str | Sequence[str] | None = None,
        force: bool = False,
        single_stage: bool = False,
        pull: bool = True,
        push: bool = True,
        commit_to: str | None = None,
        commit_message: str = "Reproduce the pipeline [mlci]",
        commit_author: str = "Airflow MLCI <mlci@airflow.invalid>",
        python: str | None = None,
        sandbox: bool | Mapping[str, Any] | None = None,
        handoff_from: Sequence[str] = (),
        hand_off: bool = False,
        compute: str = "local",
        instance_task_id: str | None = None,
        aws_conn_id: str | None = "aws_default",
        poll_interval: float = 10.0,
        heartbeat_timeout: float = 300.0,
        start_timeout: float = 1800.0,
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
        self.commit_to = commit_to
        self.commit_message = commit_message
        self.commit_author = commit_author
        self.python = python
        self.sandbox = sandbox
        self.handoff_from = tuple(handoff_from)
        self.hand_off = hand_off
        self.compute = compute
        self.instance_task_id = instance_task_id
        self.aws_conn_id = aws_conn_id
        self.poll_interval = poll_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.start_timeout = start_timeout
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        if self.compute == "ec2":
            self.submit_to_instance(context)
        result = self._with_workspace(context)
        for stage, state in result["stages"].items():
            self.log.info("Stage %s: %s", stage, state)
        self.record_repro_lineage(result)
        return result

    def submit_to_instance(self, context: Context) -> NoReturn:
        """Submit the reproduction (or resume an earlier try's) on the instance and defer (``ec2``)."""
        from airflow_provider_mlci.core.compute.remote import RemoteJob, submit_or_resume, submit_repro
        from airflow_provider_mlci.core.runtime.process import CommandRunner

        with airflow_failures():
            self.check_arguments()
            instance = self.upstream_instance(context, str(self.instance_task_id))
            store = self.job_store(instance["mailbox"], instance.get("region"))

            def submit(job_id: str) -> Any:
                self._runner = CommandRunner(log=self.log)
                with self.hook.open_workspace(self.rev, runner=self._runner, python=self.python) as workspace:
                    spec = submit_repro(
                        workspace,
                        store,
                        job_id=job_id,
                        request=self.repro_request(context),
                        heartbeat_interval=self.heartbeat_interval,
                    )
                self.log.info(
                    "Submitted job %s (%s at %s) to instance %s through %s",
                    job_id,
                    self.rev,
                    spec.sha[:12],
                    instance["instance_id"],
                    instance["mailbox"],
                )
                return spec

            job_id, spec = submit_or_resume(
                store, self.task_key(context), submit, heartbeat_timeout=self.heartbeat_timeout, log=self.log
            )
            job = RemoteJob(
                job_id=job_id,
                mailbox=instance["mailbox"],
                instance_id=instance["instance_id"],
                region=instance.get("region"),
                repo=spec.repo if spec else None,
                sha=spec.sha if spec else None,
                submitted=spec.created if spec else None,
            )
        self.wait_for_job(job)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Finish a run on a GPU instance: copy the rest of its log, then its outcome (``ec2``)."""
        from airflow_provider_mlci.core.compute.remote import job_outcome
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.repo.commit import commit_changes
        from airflow_provider_mlci.core.runtime.process import CommandRunner

        with airflow_failures():
            job, store = self.ended_job(event)
            outcome = job_outcome(store, job, event)
            self._stage_io = lineage.stage_io(outcome, log=self.log)  # no checkout here: paths from the lock
            commit = None
            if self.commit_to:  # the job's lock entries and metrics, written into a checkout of its commit
                self._runner = CommandRunner(log=self.log)
                with self.hook.open_workspace(str(job.sha), runner=self._runner) as workspace:
                    changed = dvc_ops.apply_handoff(workspace, outcome.handoff) if outcome.handoff else ()
                    commit = commit_changes(workspace, list(changed), self.commit_spec(), self.log)
            result = {
                "repo": job.repo,
                "rev": self.rev,
                "sha": job.sha,
                **self.outcome_json(outcome, commit),
                "compute": job.compute_record(),
            }
        for stage, state in result["stages"].items():
            self.log.info("Stage %s: %s", stage, state)
        self.record_repro_lineage(result)
        return result

    def record_repro_lineage(self, result: dict[str, Any]) -> None:
        """Keep the reproduction's repository, commit, stage outcomes and datasets for OpenLineage.

        :param result: the task's result (its XCom)
        """
        io = self._stage_io or {}
        self.record_lineage(
            {
                "repo": result.get("repo"),
                "rev": result.get("rev"),
                "sha": result.get("sha"),
                "inputs": io.get("inputs", []),
                "outputs": io.get("outputs", []),
                "run": {"stages": result.get("stages")},
            }
        )

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.dvc.ops import check_targets
        from airflow_provider_mlci.exceptions import MlciConfigError

        check_targets(self.targets)
        if self.compute not in ("local", "ec2"):
            raise MlciConfigError(f"compute={self.compute!r} is not one of 'local', 'ec2'.")
        if self.compute == "ec2" and not self.instance_task_id:
            raise MlciConfigError(
                "compute='ec2' needs instance_task_id: the GpuCreateInstanceOperator task whose instance runs the job."
            )
        if self.commit_to:
            if not self.push:
                raise MlciConfigError("commit_to needs push=True: a commit must not name data the remote lacks.")
            self.commit_spec()

    def commit_spec(self) -> CommitSpec:
        """Where and how to commit (``commit_to`` and friends)."""
        from airflow_provider_mlci.core.repo.commit import CommitSpec

        return CommitSpec(branch=self.commit_to or "", message=self.commit_message, author=self.commit_author)

    def repro_request(self, context: Context) -> Any:
        """The :class:`~airflow_provider_mlci.core.dvc.ops.ReproRequest` these arguments ask for."""
        from airflow_provider_mlci.core.dvc import ops as dvc_ops

        return dvc_ops.ReproRequest(
            targets=dvc_ops.check_targets(self.targets),
            force=self.force,
            single_stage=self.single_stage,
            pull=self.pull,
            push=self.push,
            handoff=self.handoff_from_tasks(context, self.handoff_from),
        )

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.compute.local import describe_gpus, detect_gpus
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.repo.commit import commit_changes

        self.log.info("%s", describe_gpus(detect_gpus(self._runner)))
        outcome = dvc_ops.repro(workspace, self.repro_request(context))
        self._stage_io = lineage.stage_io(
            outcome, root=workspace.path, render_cache=os.path.join(self.hook.cache_dir, "render"), log=self.log
        )
        commit = (
            commit_changes(workspace, list(outcome.changed_files), self.commit_spec(), self.log)
            if self.commit_to
            else None
        )
        return self.outcome_json(outcome, commit)

    def outcome_json(self, outcome: Any, commit: dict[str, Any] | None = None) -> dict[str, Any]:
        """The XCom part of a reproduction's outcome (wherever it ran) and of its commit, if any."""
        result: dict[str, Any] = {
            "stages": outcome.stages,
            "metrics": outcome.metrics,
            "pushed": outcome.pushed,
            "commit": commit,
        }
        if self.hand_off:
            result["handoff"] = outcome.handoff.to_json()
        return result


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
    ui_color = _DVC_PURPLE
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
    ui_color = _DVC_PURPLE
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
    ui_color = _DVC_PURPLE
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


class DvcPushOperator(DvcWorkspaceMixin, BaseOperator):
    """Push what this worker's cache holds of ``targets`` at ``rev`` (and the run-cache) to the remote.

    Fails, naming them, if the cache lacks data the revision names that the remote lacks too:
    after this task, the remote holds everything ``rev`` needs. Returns
    ``{"repo", "rev", "sha", "pushed", "missing"}``.

    :param rev: branch, tag, commit id or expression (templated)
    :param targets: ``.dvc`` files, stages or tracked paths (templated); default: everything
    :param run_cache: push the run-cache too
    :param allow_missing: only warn about data neither the cache nor the remote holds
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets")
    ui_color = _DVC_PURPLE
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
    "baseline_sha", "metrics", "params", "metrics_diff", "params_diff"}`` with the diffs shaped
    as ``dvc metrics diff --json`` and ``dvc params diff --json`` shape them.

    :param rev: branch, tag, commit id or expression (templated)
    :param baseline_rev: the revision to compare with (templated); default: no diff
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "baseline_rev")
    ui_color = _DVC_PURPLE
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
    ui_color = _DVC_PURPLE
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
        from airflow_provider_mlci.exceptions import DvcOutOfSyncError

        status = dvc_ops.sync_status(workspace, dvc_ops.check_targets(self.targets), check_remote=self.check_remote)
        if not status.in_sync:
            lines = [f"dvc.lock at {self.rev} ({workspace.sha[:12]}) is out of sync:"]
            for stage, items in status.changed.items():
                lines.append(f"  stage {stage}:")
                lines += [f"    {item}" for item in items]
            if status.not_in_remote:
                lines.append("  not in the DVC remote: " + ", ".join(status.not_in_remote))
            raise DvcOutOfSyncError("\n".join(lines))
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
    ui_color = _DVC_PURPLE
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
        from airflow_provider_mlci.exceptions import DvcPipelineMismatchError

        prefix = "" if self.dvc_file == "dvc.yaml" else f"{self.dvc_file}:"
        actual = {
            name: upstream
            for name, upstream in dvc_ops.stage_graph(workspace).items()
            if (name.startswith(prefix) if prefix else ":" not in name)
        }
        expected = {name: sorted(upstream) for name, upstream in self.expected_stages.items()}
        problems = []
        if added := sorted(set(actual) - set(expected)):
            problems.append(f"stages added: {', '.join(added)}")
        if removed := sorted(set(expected) - set(actual)):
            problems.append(f"stages removed: {', '.join(removed)}")
        for name in sorted(set(actual) & set(expected)):
            if actual[name] != expected[name]:
                problems.append(
                    f"stage {name} now depends on [{', '.join(actual[name])}], not [{', '.join(expected[name])}]"
                )
        if problems:
            raise DvcPipelineMismatchError(
                f"The pipeline in {self.dvc_file} at {self.rev} ({workspace.sha[:12]}) is not the one this DAG was "
                f"rendered from ({'; '.join(problems)}). Update the DAG's copy of the project."
            )
        return {"stages": actual}
