"""What a sweep comes to: the leaderboard, the best trial on a branch, and whether it was promoted.

Re-exported by :mod:`airflow_provider_mlci.operators.sweep` (see there for the whole sweep);
the ranking itself is :func:`~airflow_provider_mlci.core.experiments.sweep.rank_sweep`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import SWEEP_COLOR, DvcWorkspaceMixin, airflow_failures, rendered_int

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["SweepBestBranchOperator", "SweepLeaderboardOperator", "SweepPromotionOutcomeOperator"]


class SweepLeaderboardOperator(BaseOperator):
    """Rank the trials of a sweep by the objective, pick the best, and store a leaderboard report.

    Reads the trial list from ``generate_task_id`` and the results from the mapped
    ``trial_task_id``. A trial with no result (its task failed) counts as failed; one skipped
    because the target was already met counts as skipped. The report (``report.md`` and
    ``report.html``: the best trial, the counts, the ranked table) goes where
    :class:`~airflow_provider_mlci.operators.report.MetricsReportOperator` puts reports; the
    task's "Report" link opens it. Run it with ``trigger_rule="all_done"``.

    Returns ``{"leaderboard": {"objective", "goal", "trials": [{"name", "params", "value",
    "status"}]}, "best": {..., "exp_ref", "sha"} | None, "target", "target_met", "succeeded",
    "failed", "skipped", "report_uri"}``; give the task's id to
    :class:`~airflow_provider_mlci.operators.report.MetricsReportOperator`'s ``include_tasks``
    to put the leaderboard in another report.

    Fails (no retry) when more than ``max_failed_trials`` trials failed, or when none succeeded.

    :param generate_task_id: the :class:`SweepTrialsOperator` task
    :param trial_task_id: the mapped :class:`SweepTrialOperator` task
    :param objective: ``{"metric": "accuracy", "goal": "max", "target": 0.9}``
    :param max_failed_trials: how many failed trials are tolerated (templated); ``None``: any number,
        as long as one succeeds
    :param title: the report's heading
    :param report_base: the folder or URL reports go under (default: ``[mlci] reports_dir``)
    :param report_conn_id: the connection to write ``report_base`` with
    """

    template_fields: Sequence[str] = ("max_failed_trials", "title")
    operator_extra_links = (MlciReportLink(),)
    ui_color = SWEEP_COLOR

    def __init__(
        self,
        *,
        generate_task_id: str,
        trial_task_id: str,
        objective: Mapping[str, Any],
        max_failed_trials: int | str | None = None,
        title: str | None = None,
        report_base: str | None = None,
        report_conn_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.generate_task_id = generate_task_id
        self.trial_task_id = trial_task_id
        self.objective = objective
        self.max_failed_trials = max_failed_trials
        self.title = title
        self.report_base = report_base
        self.report_conn_id = report_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        with airflow_failures():
            return self._rank(context)

    def _rank(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.dvc.ops import json_safe
        from airflow_provider_mlci.core.experiments.sweep import Objective, check_sweep, rank_sweep
        from airflow_provider_mlci.exceptions import MlciError

        objective = Objective.of(self.objective)
        limit = rendered_int(self.max_failed_trials, "max_failed_trials")
        ti = context["ti"]
        planned = ti.xcom_pull(task_ids=self.generate_task_id)
        if not isinstance(planned, list):
            raise MlciError(f"No trials to rank: task {self.generate_task_id} left no trial list (did it fail?).")
        results = ti.xcom_pull(task_ids=[self.trial_task_id]) or []
        self._close_abandoned(context, planned)
        summary = rank_sweep(planned, results, objective, skipped=self._skipped(context))
        summary["report_uri"] = self._write_report(context, summary, planned)
        best = summary["best"]
        if best is not None:
            self.log.info(
                "Best trial: %s, %s = %s (%s)", best["name"], objective.metric, best["value"], best.get("exp_ref")
            )
        for row in summary["leaderboard"]["trials"]:
            if row.get("status") == "failed":
                self.log.warning("Trial %s failed: %s", row["name"], row.get("error"))
        check_sweep(summary, max_failed=limit)
        return json_safe(summary)

    def _close_abandoned(self, context: Context, planned: list[Any]) -> None:
        """An adaptive sweep: tell the study ``FAIL`` for this run's trials whose task failed for good
        (they told it nothing and would stay running)."""
        from airflow_provider_mlci.core.experiments.study import fail_abandoned
        from airflow_provider_mlci.hooks.study import open_sweep_study

        spec = next((slot.get("study") for slot in planned if isinstance(slot, Mapping) and slot.get("study")), None)
        if not spec:
            return
        ti = context["ti"]
        try:
            study = open_sweep_study(spec)
            closed = fail_abandoned(study, f"{ti.dag_id}/{ti.run_id}/{self.trial_task_id}/")
        except Exception as exc:  # the ranking stands on the trials' results; the study heals next time
            self.log.warning("Cannot close the abandoned trials of the study %s: %s", spec.get("name"), exc)
            return
        if closed:
            self.log.warning("Study %s: trial(s) %s of failed tasks told FAIL", spec["name"], closed)

    def _skipped(self, context: Context) -> set[int]:
        """Map indexes of the trial task that were skipped (the target was already met)."""
        ti = context["ti"]
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id], task_ids=[self.trial_task_id])
        except Exception as exc:  # only to tell skipped from failed in the report
            self.log.info("Could not read the trials' states (%s): missing results count as failed", exc)
            return set()
        found = set()
        for by_task in states.values():
            for key, state in by_task.items():
                task_id, _, index = str(key).rpartition("_")
                if task_id == self.trial_task_id and state == "skipped" and index.isdigit():
                    found.add(int(index))
        return found

    def _write_report(self, context: Context, summary: Mapping[str, Any], planned: list[Any]) -> str:
        from airflow_provider_mlci import settings
        from airflow_provider_mlci.core.reports.html import section_for, sections_page
        from airflow_provider_mlci.report_store import store_task_report

        templates_dir = settings.report_templates() or None
        title = self.title or f"{context['ti'].dag_id}: sweep leaderboard"
        sections = [section_for("Leaderboard", summary, templates_dir=templates_dir)]
        study = next((slot.get("study") for slot in planned if isinstance(slot, Mapping) and slot.get("study")), None)
        if study:
            sections += self._study_sections(study)
        files = sections_page(title, sections, templates_dir=templates_dir)
        outcome = {key: summary.get(key) for key in ("best", "target_met", "succeeded", "failed", "skipped", "pruned")}
        uri = store_task_report(context, files, outcome, base=self.report_base, conn_id=self.report_conn_id)
        self.log.info("Leaderboard report: %s/report.html", uri)
        return uri

    def _study_sections(self, spec: Mapping[str, Any]) -> list[Any]:
        """The adaptive sweep's charts (optimisation history, parallel coordinates, importances) as
        report sections; what cannot be drawn is said, never fails the leaderboard."""
        import base64

        from airflow_provider_mlci.core.experiments.study import study_charts
        from airflow_provider_mlci.core.reports.html import ReportSection, svg_of
        from airflow_provider_mlci.hooks.study import open_sweep_study

        titles = {"history": "Optimisation history", "parallel": "Parallel coordinates", "importance": "Importances"}
        try:
            study = open_sweep_study(spec)
            charts = study_charts(study)
        except Exception as exc:  # the ranking stands without its charts
            self.log.warning("Cannot read the study %s for the report: %s", spec.get("name"), exc)
            return [ReportSection(title="Study", markdown=f"Cannot read the study: {exc}", html="")]
        sections = []
        for key, spec_of in charts.items():
            try:
                svg = svg_of(spec_of)
            except Exception as exc:
                self.log.warning("Cannot draw the %s chart: %s", key, exc)
                continue
            uri = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
            sections.append(
                ReportSection(
                    title=titles[key],
                    markdown=f"({titles[key]}: see report.html)",
                    html=f"<figure><img id='study-{key}' alt='{titles[key]}' src='{uri}'></figure>",
                )
            )
        return sections


class SweepBestBranchOperator(DvcWorkspaceMixin, BaseOperator):
    """Put the best trial of a sweep on a branch of the git remote, as ``dvc exp branch`` and ``git push`` would.

    Reads the best trial from the leaderboard task and creates ``branch`` at its experiment's
    commit on the git remote, with a plain push (never a force-push). A retried task finds the
    branch already there and changes nothing; a branch that already holds another commit fails
    the task (not retried), naming it. The gate and the release then work on an ordinary branch
    (see :func:`~airflow_provider_mlci.core.experiments.trials.branch_experiment`).

    Returns ``{"repo", "rev", "sha", "branch", "created", "experiment", "exp_ref", "trial":
    {"name", "params", "value"}}``; pin the commit downstream with
    ``{{ ti.xcom_pull(task_ids='<this>')['sha'] }}``.

    :param leaderboard_task_id: the :class:`SweepLeaderboardOperator` task
    :param branch: the branch to create (templated); default: ``sweep/<best trial's name>``,
        unique per DAG run as trial names are
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("branch",)
    ui_color = SWEEP_COLOR

    def __init__(
        self,
        *,
        leaderboard_task_id: str,
        branch: str | None = None,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.leaderboard_task_id = leaderboard_task_id
        self.branch = branch
        self.rev = "HEAD"
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir
        self._best: Mapping[str, Any] = {}

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import MlciError

        summary = context["ti"].xcom_pull(task_ids=self.leaderboard_task_id)
        best = summary.get("best") if isinstance(summary, Mapping) else None
        with airflow_failures():
            if not isinstance(best, Mapping) or not best.get("sha") or not best.get("exp_ref"):
                raise MlciError(f"No best trial to branch: task {self.leaderboard_task_id} ranked none.")
        self._best = best
        self.rev = str(best["sha"])
        return self._with_workspace(context)

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.core.experiments.trials import branch_experiment

        best = self._best
        branch = self.branch or f"sweep/{best['name']}"
        result = branch_experiment(workspace, str(best["exp_ref"]), branch, sha=workspace.sha)
        self.log.info(
            "Best trial %s is on branch %s (%s)%s",
            best["name"],
            branch,
            workspace.sha[:12],
            "" if result["created"] else ", already",
        )
        return {**result, "trial": {k: best.get(k) for k in ("name", "params", "value")}}


class SweepPromotionOutcomeOperator(BaseOperator):
    """Say what became of the best trial of a sweep: promoted (version and tags), or kept off the stage and why.

    The last task of a sweep with a promotion: run it with ``trigger_rule="none_failed_min_one_success"``
    downstream of the gate and of the promotion, so that it runs whichever way the gate went (a
    refused candidate is an outcome, not a failure). Returns ``{"promoted", "model", "stage",
    "trial", "branch", "sha", "version", "tags", "replaced", "reasons"}``.

    :param branch_task_id: the :class:`SweepBestBranchOperator` task
    :param gate_task_id: the :class:`~airflow_provider_mlci.operators.model.ModelGateBranchOperator` task
    :param promote_task_id: the :class:`~airflow_provider_mlci.operators.model.PromoteModelOperator` task
    :param approval_task_id: the approval task, where the release needs one
    """

    ui_color = SWEEP_COLOR

    def __init__(
        self,
        *,
        branch_task_id: str,
        gate_task_id: str,
        promote_task_id: str,
        approval_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.approval_task_id = approval_task_id
        self.branch_task_id = branch_task_id
        self.gate_task_id = gate_task_id
        self.promote_task_id = promote_task_id

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.operators.model import release_outcome

        ti = context["ti"]
        branched = ti.xcom_pull(task_ids=self.branch_task_id) or {}
        released = release_outcome(ti, self.gate_task_id, self.promote_task_id, self.approval_task_id)
        trial = (branched.get("trial") or {}).get("name")
        outcome = {**released, "trial": trial, "branch": branched.get("branch"), "sha": branched.get("sha")}
        if outcome["promoted"]:
            self.log.info(
                "Trial %s is %s %s on %s (%s)",
                trial,
                outcome["model"],
                outcome["version"],
                outcome["stage"],
                ", ".join(outcome["tags"]) or "already there",
            )
        else:
            self.log.info("Trial %s was not promoted to %s:", trial, outcome["stage"])
            for reason in outcome["reasons"]:
                self.log.info("  because %s", reason)
        return outcome
