"""A person approves a release the gate passed: Airflow's human-in-the-loop approval, told what it approves.

:class:`ReleaseApprovalOperator` is the standard provider's ``ApprovalOperator`` (Airflow 3.1+) placed
between a gate's "promote" branch and the promotion. Its request names the model, the candidate's
commit and the stage, shows the gate metrics' deltas against the deployed model and links the run's
reports. It pushes ``{"decision": "approved" | "rejected" | "timed_out", "by", "at"}`` under
:data:`APPROVAL_KEY` and succeeds; the promotion (``PromoteModelOperator(approval_task_id=...)``)
runs only on "approved" and skips itself otherwise (no answer within the timeout keeps the model
too, instead of failing the task); the release outcome and the run record say which. This module
imports the standard provider's HITL operator: task groups import it only when an approval is asked for.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from airflow_provider_mlci.operators.gate import APPROVAL_KEY, DECISION_KEY

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.config import Approval

__all__ = ["APPROVAL_KEY", "ReleaseApprovalOperator", "approval_body"]


def approval_body(decision: Mapping[str, Any], *, dag_id: str, run_id: str) -> str:
    """The request's Markdown: the gate's verdict with each metric's delta, and a link to the run's reports.

    :param decision: the gate's decision
    :param dag_id: the Dag
    :param run_id: the run
    """
    from airflow_provider_mlci.core.model.history import metric_line
    from airflow_provider_mlci.plugins.history import outcome_href
    from airflow_provider_mlci.plugins.pages import URL_PREFIX

    champion = decision.get("champion") or {}
    against = champion.get("version") or str(champion.get("sha") or "")[:12] or "nothing deployed"
    lines = [f"The gate passed the candidate against {against} on {decision.get('stage')}:", ""]
    lines += [f"- {metric_line(metric)}" for metric in decision.get("metrics") or []]
    run = outcome_href(URL_PREFIX, dag_id, run_id)
    lines += ["", f"[The run's reports]({run})", "", "Approve to release it; reject to keep the deployed model."]
    return "\n".join(lines)


class ReleaseApprovalOperator(ApprovalOperator):
    """Ask a person to approve the release the gate passed; skip the promotion on reject or timeout.

    :param model: the model (templated)
    :param stage: the stage (templated)
    :param gate_task_id: the gate whose decision is shown
    :param approval: who may answer, how long to wait, the subject
    :param kwargs: passed to ``BaseOperator``
    """

    ui_color = "#6a1b9a"
    ui_fgcolor = "#ffffff"

    def __init__(self, *, model: str, stage: str, gate_task_id: str, approval: Approval, **kwargs: Any) -> None:
        users = [dict(user) for user in approval.assigned_users] if approval.assigned_users else None
        super().__init__(
            subject=approval.subject,
            response_timeout=approval.timeout,
            assigned_users=users,
            **kwargs,
        )
        self.model = model
        self.stage = stage
        self.gate_task_id = gate_task_id

    def execute(self, context: Context) -> Any:
        ti = context["ti"]
        decision = ti.xcom_pull(task_ids=self.gate_task_id, key=DECISION_KEY) or {}
        sha = str((decision.get("candidate") or {}).get("sha") or decision.get("sha") or "?")[:12]
        for key, value in (("{model}", self.model), ("{stage}", self.stage), ("{sha}", sha)):
            self.subject = self.subject.replace(key, str(value))
        self.body = approval_body(decision, dag_id=ti.dag_id, run_id=ti.run_id)
        return super().execute(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Record the answer (or that none came in time) and end; the promotion reads it and skips itself,
        saying why in its own log (``ApprovalOperator`` would skip it from here)."""
        ti = context["ti"]
        if event.get("error_type") == "timeout":
            self.log.warning("No answer in time: the deployed model stays")
            answer = {"decision": "timed_out", "by": None, "at": None}
        else:
            chosen = list(event.get("chosen_options") or [])
            self.validate_chosen_options(chosen)
            user = event.get("responded_by_user")
            by = (user.get("name") or user.get("id")) if isinstance(user, Mapping) else user
            at = event.get("responded_at")
            answer = {
                "decision": "approved" if chosen == [self.APPROVE] else "rejected",
                "by": by,
                "at": at.isoformat() if hasattr(at, "isoformat") else at,
            }
            self.hitl_summary_extra.update({"chosen_options": chosen, "approved": answer["decision"] == "approved"})
            self.log.info(
                "%s %s the release of %s to %s", by or "A reviewer", answer["decision"], self.model, self.stage
            )
        ti.xcom_push(key=APPROVAL_KEY, value=answer)
        return answer
