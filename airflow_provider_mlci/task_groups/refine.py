"""Nightly refinement as a task group: fine-tune the deployed model on new data, release it only if better.

::

    refine = RefinementTaskGroup(
        group_id="refine",
        model="fraud-detector",
        rev="main",
        dataset="data/raw.csv",
        schema="schemas/raw.yaml",
        rules={"logloss": {"direction": "lower", "floor": 0.8}},
    )

Tasks, in order (ids under the group):

``validate_data``
    the data at ``rev`` against its pandera schema (skipped when no ``schema`` is given)
``start``
    reads the registry for the model on ``stage`` and points the project's DVC-tracked base
    model at it, in a commit on ``branch`` (see :mod:`airflow_provider_mlci.core.model.refine`); with
    no model deployed yet nothing is written and the pipeline trains as the repository says
    (the demo project: from scratch), which the task logs and returns (``from_scratch``)
``drift``
    the data at ``rev`` against the data the deployed model was trained on (skipped when no
    model is deployed, or with ``drift=None``)
``gpu.*``
    with the ``ec2`` backend: a GPU instance launched for the run (nothing is launched when DVC
    says no stage would run) and terminated after the refinement whatever happened
``refine``
    reproduces the pipeline at the refinement commit (locally or on the instance), pushes data
    and model to the DVC remote, and commits ``dvc.lock`` to ``branch``
``validate_model``
    the candidate's I/O contract, dependencies and score floors
``gate``
    the candidate against the deployed model on the same (frozen) evaluation data
``approve``
    with ``approval``: a person approves the release the gate passed (Airflow's human-in-the-loop
    task, showing the metric deltas and the run's reports); reject or no answer in time skips
    ``promote``
``promote`` / ``keep_deployed``
    a new version on ``stage`` in one tag push (emitting an event of the Asset
    ``x-mlci-model://<model>/<stage>``), or nothing; ``promote`` is skipped, not succeeded, when
    nothing is released
``outcome``
    what happened, as small JSON (promoted or not, version, tags, reasons, how it started)
``report``
    metrics, params and plots against the deployed model, with the data validation, drift, model
    verdict and gate sections; written whatever happened
``record``
    the run record (:mod:`airflow_provider_mlci.core.model.history`): promoted, kept or failed in
    one line with the metric deltas, the GPU cost, the trend of the model's last runs; what the
    run view, the index and the model page show. It fails when the refinement failed, so the Dag
    run says so (a kept model is a successful run)

The compute backend is ``compute``, or the provider setting ``[mlci] compute_backend`` (``local``
by default) when ``compute`` is ``None``; it is read when the DAG file is parsed.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import TaskGroup, TriggerRule

from airflow_provider_mlci.config import Approval, Compute, Ec2Compute
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.operators.model import ModelGateBranchOperator, ModelValidationOperator, PromoteModelOperator
from airflow_provider_mlci.operators.refine import RefinementStartOperator, ReleaseOutcomeOperator, RunRecordOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.operators.validation import DataDriftCheckOperator, DataValidationOperator

if TYPE_CHECKING:
    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec

__all__ = ["RefinementTaskGroup", "compute_backend"]

#: One branch per run: each night's refinement sits on top of that night's data.
DEFAULT_BRANCH = "mlci/refine/{{ (dag_run.logical_date or dag_run.run_after) | ts_nodash }}"


def compute_backend(compute: str | Compute | Ec2Compute | None = None) -> str:
    """``compute``'s backend, or the provider setting ``[mlci] compute_backend`` (default ``local``).

    :param compute: ``local``, ``ec2``, a :class:`~airflow_provider_mlci.config.Compute` or
        :class:`~airflow_provider_mlci.config.Ec2Compute`, or ``None``
    :raises MlciConfigError: another value
    """
    return Compute.of(compute).value


class RefinementTaskGroup(TaskGroup):
    """Fine-tune the model on ``stage`` on the data at ``rev``; promote the result only if it beats it.

    :param group_id: the group's id
    :param model: the model's name in the registry and in ``dvc.yaml``'s ``artifacts:`` (templated)
    :param rules: the gate's rules, ``{metric: {"direction", "floor", "min_improvement", ...}}``
    :param stage: the stage whose model is refined and replaced (templated)
    :param rev: the revision holding the new data (templated)
    :param base_model: the DVC-tracked file the training stage starts from (templated)
    :param branch: the branch the refinement commits go to (templated); default: one per run,
        ``mlci/refine/<logical date, else run_after>``
    :param dataset: the data to validate and check for drift, a path in the repository
    :param schema: its pandera schema (a YAML file in the repository or ``module:attribute``);
        ``None``: no data validation
    :param drift: arguments of the drift check (``psi``, ``ks``, ``mode``, ...); ``None``: none
    :param targets: the stages to reproduce; default: the whole pipeline
    :param requirements: for the model validation: a requirements file or requirement strings
    :param contract: the model's I/O contract (see ``ModelValidationOperator``)
    :param thresholds: score floors for the model validation, ``{metric: {"min", "max"}}``
    :param eval_data: the evaluation inputs the gate requires to be the same for both models
    :param bump: the version bump of a promotion (``major``, ``minor``, ``patch``)
    :param approval: ``True`` or an :class:`~airflow_provider_mlci.config.Approval` (or its mapping):
        a person approves a release the gate passed before it is written (Airflow 3.1+'s
        human-in-the-loop); ``None``: releases are automatic
    :param stage_order: the stages in the order a version must pass them (``("staging", "prod")``):
        a promotion to ``stage`` of a version that skipped an earlier one fails naming it
    :param notifiers: Airflow notifiers per outcome, ``{"promoted" | "kept" | "rejected" |
        "timed_out" | "failed": notifier or list}``, called by ``record`` (see
        :class:`~airflow_provider_mlci.operators.refine.RunRecordOperator`)
    :param compute: ``"local"``, ``"ec2"``, an :class:`~airflow_provider_mlci.config.Ec2Compute`
        (its ``instance`` is launched for the run), or ``None`` for ``[mlci] compute_backend``
    :param instance: the GPU instance when the backend is ``ec2`` and ``compute`` is not an
        ``Ec2Compute`` (a ``GpuInstanceSpec`` or its mapping)
    :param aws_conn_id: the ``aws`` connection, likewise
    :param pool: an Airflow pool for the GPU launch and work (``ec2``)
    :param report_base: the folder or URL the report goes under (default ``[mlci] reports_dir``)
    :param commit_author: ``"Name <email>"`` of the refinement commits
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    :param refine_args: more keyword arguments for the ``refine`` task (``retries``,
        ``execution_timeout``, ...)
    :param kwargs: passed to ``TaskGroup`` (``tooltip``, ``default_args``, ...)
    """

    def __init__(
        self,
        *,
        group_id: str,
        model: str,
        rules: Mapping[str, Mapping[str, Any]],
        stage: str = "prod",
        rev: str = "HEAD",
        base_model: str = "models/base.pkl",
        branch: str = DEFAULT_BRANCH,
        dataset: str | None = None,
        schema: Any = None,
        drift: Mapping[str, Any] | None = None,
        targets: str | Sequence[str] | None = None,
        requirements: str | Sequence[str] | None = None,
        contract: Mapping[str, Any] | None = None,
        thresholds: Mapping[str, Mapping[str, float]] | None = None,
        eval_data: Sequence[str] | None = None,
        bump: str = "minor",
        approval: Approval | bool | Mapping[str, Any] | None = None,
        stage_order: Sequence[str] = (),
        notifiers: Mapping[str, Any] | None = None,
        compute: str | Compute | Ec2Compute | None = None,
        instance: GpuInstanceSpec | Mapping[str, Any] | None = None,
        aws_conn_id: str | None = "aws_default",
        pool: str | None = None,
        report_base: str | None = None,
        commit_author: str = "Airflow MLCI <mlci@airflow.invalid>",
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        refine_args: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_mlci.core.model.gate import GateSpec
        from airflow_provider_mlci.exceptions import MlciConfigError

        super().__init__(group_id=group_id, **kwargs)
        GateSpec.of(rules)  # bad rules fail when the DAG file is parsed
        approve = Approval.of(approval)
        self.compute = Compute.of(compute)
        ec2 = compute if isinstance(compute, Ec2Compute) else Ec2Compute(instance=instance, aws_conn_id=aws_conn_id)
        if self.compute is Compute.EC2 and ec2.instance is None:
            raise MlciConfigError(
                f"RefinementTaskGroup {group_id!r}: the ec2 backend needs "
                "compute=Ec2Compute(instance=GpuInstanceSpec())."
            )
        if (schema is not None or drift is not None) and not dataset:
            raise MlciConfigError(f"RefinementTaskGroup {group_id!r}: schema and drift need dataset.")
        repo = {"dvc_conn_id": dvc_conn_id, "cache_dir": cache_dir}
        start_id = self.child_id("start")
        started = f"ti.xcom_pull(task_ids='{start_id}')"
        with self:
            checks = []
            if schema is not None:
                checks.append(
                    DataValidationOperator(task_id="validate_data", dataset=dataset, schema=schema, rev=rev, **repo)
                )
            self.start = RefinementStartOperator(
                task_id="start",
                model=model,
                stage=stage,
                base_model=base_model,
                rev=rev,
                branch=branch,
                commit_author=commit_author,
                **repo,
            )
            checks >> self.start
            after_start: list[Any] = []
            if drift is not None:
                after_start.append(
                    DataDriftCheckOperator(
                        task_id="drift",
                        dataset=dataset,
                        rev="{{ " + started + ".sha }}",
                        baseline_rev="{{ (" + started + ".deployed or {}).get('sha') or '' }}",
                        skip_without_baseline=True,
                        dvc_conn_id=dvc_conn_id,
                        cache_dir=cache_dir,
                        **dict(drift),
                    )
                )
            refine_kwargs: dict[str, Any] = {
                "task_id": "refine",
                "rev": "{{ " + started + ".refine_sha }}",
                "targets": targets,
                "commit_to": branch,
                "commit_message": f"Refine {model}: reproduce on new data [mlci]",
                "commit_author": commit_author,
                **repo,
                **dict(refine_args or {}),
            }
            cost_task_id = None
            if self.compute is Compute.EC2:
                from airflow_provider_mlci.task_groups.gpu import GpuRunTaskGroup

                with GpuRunTaskGroup(
                    group_id="gpu",
                    spec=ec2.instance,  # type: ignore[arg-type]
                    aws_conn_id=ec2.aws_conn_id,
                    job_base=ec2.job_base,
                    pool=pool,
                    skip_if_nothing_runs=True,
                    rev=refine_kwargs["rev"],
                    targets=targets,
                    dvc_conn_id=dvc_conn_id,
                ) as gpu:
                    self.refine = DvcReproOperator(
                        compute=dataclasses.replace(ec2, instance=None, instance_task_id=gpu.setup_task_id),
                        **refine_kwargs,
                    )
                first = gpu.plan if gpu.plan is not None else gpu.launch
                cost_task_id = gpu.terminate.task_id if gpu.terminate is not None else None
            else:
                self.refine = DvcReproOperator(**refine_kwargs)
                first = self.refine
            # A skipped drift check (nothing deployed to compare with) must not skip the refinement.
            first.trigger_rule = TriggerRule.NONE_FAILED_MIN_ONE_SUCCESS
            self.start >> first
            for check in after_start:
                self.start >> check >> first
            refined = f"ti.xcom_pull(task_ids='{self.refine.task_id}')"
            # No XCom when the refinement was skipped or failed: the report falls back to start's commit.
            made = "{% set r = " + refined + " or {} %}{{ (r.get('commit') or {}).get('commit') or r.get('sha')"
            candidate = made + " }}"
            self.validate_model = ModelValidationOperator(
                task_id="validate_model",
                model=model,
                rev=candidate,
                requirements=requirements,
                contract=contract,
                thresholds=thresholds,
                **repo,
            )
            self.gate = ModelGateBranchOperator(
                task_id="gate",
                model=model,
                rev=candidate,
                stage=stage,
                rules=rules,
                eval_data=eval_data,
                if_promote=self.child_id("approve" if approve else "promote"),
                if_skip=self.child_id("keep_deployed"),
                **repo,
            )
            self.approve = None
            if approve is not None:
                from airflow_provider_mlci.operators.approval import ReleaseApprovalOperator

                self.approve = ReleaseApprovalOperator(
                    task_id="approve", model=model, stage=stage, gate_task_id=self.gate.task_id, approval=approve
                )
            self.promote = PromoteModelOperator(
                task_id="promote",
                model=model,
                rev=candidate,
                stage=stage,
                bump=bump,
                gate_task_id=self.gate.task_id,
                stage_order=stage_order,
                approval_task_id=self.approve.task_id if self.approve else None,
                **repo,
            )
            keep_deployed = EmptyOperator(task_id="keep_deployed")
            self.outcome = ReleaseOutcomeOperator(
                task_id="outcome",
                gate_task_id=self.gate.task_id,
                promote_task_id=self.promote.task_id,
                candidate_task_id=start_id,
                approval_task_id=self.approve.task_id if self.approve else None,
                # A rejected or unanswered approval skips the promotion, and the branch skipped the other way.
                trigger_rule="none_failed" if self.approve else "none_failed_min_one_success",
            )
            self.report = MetricsReportOperator(
                task_id="report",
                rev=made + " or " + started + ".refine_sha }}",
                baseline_rev="{{ (" + started + ".deployed or {}).get('sha') or " + started + ".sha }}",
                include_tasks=[
                    *(check.task_id for check in [*checks, *after_start]),
                    self.validate_model.task_id,
                    self.gate.task_id,
                    self.outcome.task_id,
                ],
                title=f"Refinement of {model}",
                report_base=report_base,
                trigger_rule="all_done",
                **repo,
            )
            self.record = RunRecordOperator(
                task_id="record",
                model=model,
                stage=stage,
                outcome_task_id=self.outcome.task_id,
                start_task_id=start_id,
                report_task_id=self.report.task_id,
                cost_task_id=cost_task_id,
                dvc_conn_id=dvc_conn_id,
                report_base=report_base,
                notifiers=notifiers,
            )
            self.refine >> self.validate_model >> self.gate >> [self.approve or self.promote, keep_deployed]
            if self.approve is not None:
                self.approve >> self.promote
            [self.promote, keep_deployed] >> self.outcome >> self.report >> self.record
