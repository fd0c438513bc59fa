"""Operators that start a refinement of the deployed model and say how it ended.

``RefinementStartOperator`` points the project's DVC-tracked base model at the model on a stage
and commits that to a branch (see :mod:`airflow_provider_mlci.core.model.refine`); reproducing the
commit it returns fine-tunes the deployed model. ``ReleaseOutcomeOperator`` closes a release
chain (gate, promote or keep) with one small JSON answer. ``RunRecordOperator`` ends the run,
whatever happened, by recording what it came to (see :mod:`airflow_provider_mlci.core.model.history`).
``RefinementTaskGroup`` wires all three.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import DvcWorkspaceMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.model.refine import RefinementSpec
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["RefinementStartOperator", "ReleaseOutcomeOperator", "RunRecordOperator"]

_REFINE_TEAL = "#00796b"


class RefinementStartOperator(DvcWorkspaceMixin, BaseOperator):
    """Point the base model at the model on ``stage`` and commit that to ``branch``, on top of ``rev``.

    Returns ``{"repo", "rev", "sha", "model", "stage", "deployed", "from_scratch", "base_model",
    "refine_sha", "commit"}`` where ``sha`` is the commit of ``rev`` and ``refine_sha`` the one to
    reproduce (the refinement commit on ``branch``). With no model on the stage nothing is
    written, ``from_scratch`` is true and the pipeline runs at ``rev`` as it is (say so in the
    project: the demo's empty base model means training from scratch).

    :param model: the model's name in the registry and in ``dvc.yaml``'s ``artifacts:`` (templated)
    :param stage: the stage whose model is refined (templated)
    :param base_model: the DVC-tracked file the training stage starts from (templated)
    :param rev: the revision holding the new data (templated)
    :param branch: the branch the refinement is committed to (templated); one per run keeps
        each night's refinement on top of that night's data
    :param commit_message: its message; ``{model}``, ``{version}`` and ``{sha}`` name the deployed model
    :param commit_author: ``"Name <email>"``
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("model", "stage", "base_model", "rev", "branch")
    ui_color = _REFINE_TEAL
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        model: str,
        stage: str = "prod",
        base_model: str = "models/base.pkl",
        rev: str = "HEAD",
        branch: str,
        commit_message: str = "Refine {model} {version} on new data [mlci]",
        commit_author: str = "Airflow MLCI <mlci@airflow.invalid>",
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.model = model
        self.stage = stage
        self.base_model = base_model
        self.rev = rev
        self.branch = branch
        self.commit_message = commit_message
        self.commit_author = commit_author
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def spec(self) -> RefinementSpec:
        """The rendered arguments as a :class:`~airflow_provider_mlci.core.model.refine.RefinementSpec`."""
        from airflow_provider_mlci.core.model.refine import RefinementSpec
        from airflow_provider_mlci.core.model.registry import check_stage_name
        from airflow_provider_mlci.core.repo.commit import CommitSpec

        check_stage_name(self.stage)
        commit = CommitSpec(branch=self.branch, message=self.commit_message, author=self.commit_author)
        return RefinementSpec(model=self.model, stage=self.stage, base_model=self.base_model, commit=commit)

    def check_arguments(self) -> None:
        self.spec()

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.model.refine import start_refinement
        from airflow_provider_mlci.core.repo.commit import check_branch

        check_branch(workspace.git, workspace.path, self.branch)
        started = start_refinement(workspace, self.spec())
        if started["from_scratch"]:
            self.log.info(
                "No %s model on %s: the pipeline runs at %s as it is (from scratch)", self.model, self.stage, self.rev
            )
        return started


class ReleaseOutcomeOperator(BaseOperator):
    """Say how a release chain ended: promoted (version, tags), or kept off the stage and why.

    Runs whichever way the gate went (``trigger_rule="none_failed_min_one_success"`` downstream
    of the gate and of the promotion; ``none_failed`` where an approval may skip the promotion): a
    refused or rejected candidate is an outcome, not a failure. Returns ``{"decision", "promoted",
    "approval", "model", "stage", "sha", "version", "tags", "replaced", "reasons", "from"}`` where
    ``decision`` is ``promoted``, ``kept``, ``rejected`` or ``timed_out`` and ``from`` is the XCom of
    ``candidate_task_id`` (how the candidate was made).

    :param gate_task_id: the :class:`~airflow_provider_mlci.operators.model.ModelGateBranchOperator` task
    :param promote_task_id: the :class:`~airflow_provider_mlci.operators.model.PromoteModelOperator` task
    :param candidate_task_id: a task whose result describes the candidate (optional)
    :param approval_task_id: the :class:`~airflow_provider_mlci.operators.approval.ReleaseApprovalOperator`
        task, where the release needs one
    """

    ui_color = _REFINE_TEAL
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        gate_task_id: str,
        promote_task_id: str,
        candidate_task_id: str | None = None,
        approval_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.gate_task_id = gate_task_id
        self.promote_task_id = promote_task_id
        self.candidate_task_id = candidate_task_id
        self.approval_task_id = approval_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.model.history import APPROVAL_REASONS
        from airflow_provider_mlci.operators.model import release_outcome

        ti = context["ti"]
        outcome = release_outcome(ti, self.gate_task_id, self.promote_task_id, self.approval_task_id)
        if self.candidate_task_id:
            outcome["from"] = ti.xcom_pull(task_ids=self.candidate_task_id)
        label = f"{outcome['model']} at {(outcome['sha'] or '?')[:12]}"
        if outcome["promoted"]:
            tags = ", ".join(outcome["tags"]) or "already there"
            self.log.info("Promoted %s as %s to %s (%s)", label, outcome["version"], outcome["stage"], tags)
        elif outcome["decision"] in ("rejected", "timed_out"):
            why = APPROVAL_REASONS[outcome["decision"]]
            self.log.info("Kept the deployed model: %s passed the gate for %s but %s", label, outcome["stage"], why)
        else:
            self.log.info("Kept the deployed model: %s was not promoted to %s", label, outcome["stage"])
            for reason in outcome["reasons"]:
                self.log.info("  because %s", reason)
        return outcome


class RunRecordOperator(BaseOperator):
    """Record what the run came to for ``model``: promoted, kept, or failed; fail the run if it failed.

    Runs whatever happened upstream (``trigger_rule="all_done"``, as the group's last task). Writes
    the run record (:func:`~airflow_provider_mlci.core.model.history.run_record`) into its own
    report folder (``run-outcome.json``, with a page: the outcome in one line, the gate metrics'
    deltas, the GPU cost, and the trend of the last ``nights`` runs of the model) and a copy under
    the model in the report store, which the model page and the trend read. Returns the record.
    When a task of ``task_group_id`` failed, or no release outcome came, it records ``failed`` and
    then fails, so the Dag run is failed (a kept model is a successful run).

    :param model: the model (templated)
    :param stage: the stage it was judged for (templated)
    :param outcome_task_id: the :class:`ReleaseOutcomeOperator` task
    :param start_task_id: the task that says how the candidate was made (``from_scratch``, ``deployed``)
    :param report_task_id: the run's metrics report task (linked from the record)
    :param cost_task_id: the GPU teardown task whose ``gpu_cost`` XCom says what the run cost
    :param task_group_id: the group whose failed tasks make a failed run (default: this task's group)
    :param nights: how many runs the trend shows
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository whose registry holds the model
    :param report_base: the folder or URL of the report store (default ``[mlci] reports_dir``)
    :param notifiers: Airflow notifiers to call per outcome, ``{"promoted" | "kept" | "rejected" |
        "timed_out" | "failed": notifier or list}``, after the record is stored; their templates see
        the record as ``mlci_record`` (``{{ mlci_record.summary }}``). A notifier that fails is logged,
        never fails the run
    """

    template_fields: Sequence[str] = ("model", "stage")
    ui_color = _REFINE_TEAL
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        model: str,
        stage: str = "prod",
        outcome_task_id: str,
        start_task_id: str | None = None,
        report_task_id: str | None = None,
        cost_task_id: str | None = None,
        task_group_id: str | None = None,
        nights: int = 30,
        dvc_conn_id: str = "mlci_dvc_default",
        report_base: str | None = None,
        notifiers: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        from airflow_provider_mlci.core.model.history import DECISIONS
        from airflow_provider_mlci.exceptions import MlciConfigError

        unknown = sorted(set(notifiers or {}) - set(DECISIONS))
        if unknown:
            raise MlciConfigError(
                f"notifiers: unknown outcome(s) {', '.join(unknown)} (known: {', '.join(DECISIONS)})."
            )
        kwargs.setdefault("trigger_rule", "all_done")
        super().__init__(**kwargs)
        self.model = model
        self.stage = stage
        self.outcome_task_id = outcome_task_id
        self.start_task_id = start_task_id
        self.report_task_id = report_task_id
        self.cost_task_id = cost_task_id
        self.task_group_id = task_group_id
        self.nights = nights
        self.dvc_conn_id = dvc_conn_id
        self.report_base = report_base
        self.notifiers = {
            decision: list(found) if isinstance(found, list | tuple) else [found]
            for decision, found in (notifiers or {}).items()
        }

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow.providers.common.compat.sdk import AirflowFailException

        from airflow_provider_mlci.core.model.history import run_record
        from airflow_provider_mlci.operators.gpu import COST_XCOM_KEY
        from airflow_provider_mlci.report_store import ReportKey, ReportStore, store_task_report

        ti = context["ti"]
        outcome = ti.xcom_pull(task_ids=self.outcome_task_id)
        cost = ti.xcom_pull(task_ids=self.cost_task_id, key=COST_XCOM_KEY) if self.cost_task_id else None
        store = ReportStore.open(self.report_base)
        history = [
            r
            for r in store.records(self.model, limit=self.nights)
            if (r.get("dag_id"), r.get("run_id")) != (ti.dag_id, ti.run_id) and r.get("stage") == self.stage
        ]
        report = None
        if self.report_task_id:
            key = ReportKey(dag_id=ti.dag_id, run_id=ti.run_id, task_id=self.report_task_id)
            report = key.task if store.outcome(key) is not None else None
        record = run_record(
            model=self.model,
            stage=self.stage,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            night=_night(context),
            outcome=outcome if isinstance(outcome, dict) else None,
            started=ti.xcom_pull(task_ids=self.start_task_id) if self.start_task_id else None,
            failed_tasks=self._failed_tasks(ti),
            report=report,
            cost=_cost_summary(cost),
            dvc_conn_id=self.dvc_conn_id,
            deployed=_held_after(history[-1]) if history else None,
        )
        files = self._page(record, history)
        store_task_report(context, files, record, base=self.report_base)
        store.write_record(record)
        self.log.info("%s on %s: %s", self.model, self.stage, record["summary"])
        self._notify(context, record)
        if record["decision"] == "failed":
            raise AirflowFailException(f"The run failed: {record['summary']}")
        return record

    def _notify(self, context: Context, record: dict[str, Any]) -> None:
        notifiers = self.notifiers.get(record["decision"]) or []
        if not notifiers:
            return
        context["mlci_record"] = record  # type: ignore[typeddict-unknown-key]
        for notifier in notifiers:
            try:
                notifier(context)
            except Exception as exc:  # the record is stored; a notification is not worth failing the run
                self.log.warning(
                    "Notifier %s failed on the %s outcome: %s", type(notifier).__name__, record["decision"], exc
                )

    def _failed_tasks(self, ti: Any) -> list[str]:
        group = self.task_group_id
        if group is None and self.task_group is not None and self.task_group.group_id:
            group = self.task_group.group_id
        try:
            if group:
                found = ti.get_task_states(dag_id=ti.dag_id, task_group_id=group, run_ids=[ti.run_id])
            else:
                found = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
        except Exception as exc:  # an Airflow without the call: the outcome alone decides
            self.log.warning("Cannot read the run's task states (%s): failures are judged by the outcome", exc)
            return []
        states = found.get(ti.run_id) or {}
        failed = {task for task, state in states.items() if state == "failed" and task != self.task_id}
        return _first_failures_first(self.dag, failed)

    def _page(self, record: dict[str, Any], history: list[dict[str, Any]]) -> dict[str, bytes]:
        from airflow_provider_mlci.core.model.history import dumps
        from airflow_provider_mlci.core.reports.html import outcome_page

        files = outcome_page(record, [*history, record][-self.nights :], log=self.log)
        files["run-outcome.json"] = dumps(record)
        return files


def _first_failures_first(dag: Any, failed: set[str]) -> list[str]:
    """The failed tasks, those no other failed task led to first (each group in the Dag's order)."""
    order = {task_id: n for n, task_id in enumerate(t.task_id for t in dag.topological_sort())} if dag else {}

    def led_to(task_id: str) -> bool:
        try:
            return bool(dag.get_task(task_id).get_flat_relative_ids(upstream=True) & failed)
        except Exception:  # a task this Dag version lacks: judge it by name
            return False

    first = sorted((t for t in failed if not led_to(t)), key=lambda t: (order.get(t, len(order)), t))
    then = sorted((t for t in failed if led_to(t)), key=lambda t: (order.get(t, len(order)), t))
    return first + then


def _held_after(record: dict[str, Any]) -> dict[str, Any] | None:
    """What was on the stage after a recorded run: its promotion, else what it kept."""
    if record.get("decision") == "promoted":
        return {"version": record.get("version"), "sha": record.get("sha")}
    return record.get("deployed")


def _night(context: Context) -> str:
    """The time the run is for: its logical date, else when it was due (runs without a logical date)."""
    from datetime import UTC, datetime

    run = context.get("dag_run")
    when = getattr(run, "logical_date", None) or getattr(run, "run_after", None) or datetime.now(UTC)
    return when.isoformat(timespec="seconds")


def _cost_summary(cost: Any) -> dict[str, Any] | None:
    """The teardown's ``gpu_cost`` XCom as a record keeps it (``None`` without GPU work)."""
    if not cost:
        return None
    return dict(cost) if isinstance(cost, dict) else {"instances": list(cost)}
