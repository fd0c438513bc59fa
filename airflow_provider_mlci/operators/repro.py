"""Reproduce a DVC pipeline at a revision, on this worker or on a GPU instance: :class:`DvcReproOperator`.

Like every operator of :mod:`airflow_provider_mlci.operators.dvc` (which re-exports it), it
works in a private checkout of an exact commit and returns small JSON that starts with
``{"repo", "rev", "sha"}``; with an :class:`~airflow_provider_mlci.config.Ec2Compute` the stages
run on a GPU instance through :class:`~airflow_provider_mlci.operators.remote_job.RemoteJobMixin`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator

from airflow_provider_mlci import lineage
from airflow_provider_mlci.config import Compute, Ec2Compute, resolve_compute
from airflow_provider_mlci.lineage import OpenLineageMixin
from airflow_provider_mlci.operators.base import DVC_PURPLE, DvcWorkspaceMixin, airflow_failures
from airflow_provider_mlci.operators.remote_job import RemoteJobMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.commit import CommitSpec
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["DvcReproOperator"]


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
    :param compute: where the stages run: ``"local"`` (this worker; GPUs that ``nvidia-smi`` finds
        are reported in the log) or an :class:`~airflow_provider_mlci.config.Ec2Compute` whose
        ``instance_task_id`` names the ``GpuCreateInstanceOperator`` task that started the
        instance: the commit goes to the instance's agent through S3 and the task defers until
        the job ends, holding no worker slot, with the instance's log copied into the task log
        (``compute="ec2", instance_task_id=...`` and the other ec2-only keywords still work for
        this release, deprecated)
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: the provider setting ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "targets", "commit_to", "commit_message", "ec2")
    ui_color = DVC_PURPLE
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
        compute: str | Compute | Ec2Compute = Compute.LOCAL,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        self.compute, self.ec2 = resolve_compute(compute, kwargs, owner=f"DvcReproOperator {kwargs.get('task_id')!r}")
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
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        if self.compute is Compute.EC2:
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
            ec2 = self.ec2_compute
            instance = self.upstream_instance(context, str(ec2.instance_task_id))
            store = self.job_store(instance["mailbox"], instance.get("region"))

            def submit(job_id: str) -> Any:
                self._runner = CommandRunner(log=self.log)
                with self.hook.open_workspace(self.rev, runner=self._runner, python=self.python) as workspace:
                    spec = submit_repro(
                        workspace,
                        store,
                        job_id=job_id,
                        request=self.repro_request(context),
                        heartbeat_interval=ec2.heartbeat_interval,
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
                store, self.task_key(context), submit, heartbeat_timeout=ec2.heartbeat_timeout, log=self.log
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
        if self.compute is Compute.EC2 and not self.ec2_compute.instance_task_id:
            raise MlciConfigError(
                "compute=Ec2Compute(...) needs instance_task_id: the GpuCreateInstanceOperator task whose "
                "instance runs the job."
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
