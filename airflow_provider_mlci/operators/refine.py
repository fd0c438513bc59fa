"""Operators that start a refinement of the deployed model and say how it ended.

``RefinementStartOperator`` points the project's DVC-tracked base model at the model on a stage
and commits that to a branch (see :mod:`airflow_provider_mlci.core.model.refine`); reproducing the
commit it returns fine-tunes the deployed model. ``ReleaseOutcomeOperator`` closes a release
chain (gate, promote or keep) with one small JSON answer. ``RefinementTaskGroup`` wires both.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.operators.base import DvcWorkspaceMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.model.refine import RefinementSpec
    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["RefinementStartOperator", "ReleaseOutcomeOperator"]

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
    of the gate and of the promotion): a refused candidate is an outcome, not a failure.
    Returns ``{"promoted", "model", "stage", "sha", "version", "tags", "replaced", "reasons",
    "from"}`` where ``from`` is the XCom of ``candidate_task_id`` (how the candidate was made).

    :param gate_task_id: the :class:`~airflow_provider_mlci.operators.model.ModelGateBranchOperator` task
    :param promote_task_id: the :class:`~airflow_provider_mlci.operators.model.PromoteModelOperator` task
    :param candidate_task_id: a task whose result describes the candidate (optional)
    """

    ui_color = _REFINE_TEAL
    ui_fgcolor = "#ffffff"

    def __init__(
        self, *, gate_task_id: str, promote_task_id: str, candidate_task_id: str | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.gate_task_id = gate_task_id
        self.promote_task_id = promote_task_id
        self.candidate_task_id = candidate_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.operators.model import release_outcome

        ti = context["ti"]
        outcome = release_outcome(ti, self.gate_task_id, self.promote_task_id)
        if self.candidate_task_id:
            outcome["from"] = ti.xcom_pull(task_ids=self.candidate_task_id)
        label = f"{outcome['model']} at {(outcome['sha'] or '?')[:12]}"
        if outcome["promoted"]:
            tags = ", ".join(outcome["tags"]) or "already there"
            self.log.info("Promoted %s as %s to %s (%s)", label, outcome["version"], outcome["stage"], tags)
        else:
            self.log.info("Kept the deployed model: %s was not promoted to %s", label, outcome["stage"])
            for reason in outcome["reasons"]:
                self.log.info("  because %s", reason)
        return outcome
