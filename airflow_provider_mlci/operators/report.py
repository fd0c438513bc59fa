"""The metrics report of a revision against a baseline, stored where the UI and the pull request find it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.lineage import OpenLineageMixin, storage_dataset
from airflow_provider_mlci.links.report import MlciReportLink
from airflow_provider_mlci.operators.base import DvcWorkspaceMixin

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_mlci.core.repo.workspace import Workspace

__all__ = ["MetricsReportOperator"]


class MetricsReportOperator(OpenLineageMixin, DvcWorkspaceMixin, BaseOperator):
    """Write ``report.md`` and a self-contained ``report.html`` for ``rev`` against a baseline.

    The report holds the metrics and params diff (old, new, change, as ``dvc metrics diff`` and
    ``dvc params diff``), every plot ``dvc.yaml`` defines rendered for both revisions (Vega-Lite
    templates to SVG, and image outputs), an optional trend of one metric over the last commits,
    and sections for what upstream tasks returned (data validation, model validation, gate
    decision, sweep leaderboard). It goes to ``<report_base>/<dag>/<run>/<task>/`` with its
    images; the task's "Report" link opens it. What cannot be read (a baseline that does not
    exist, a plot whose file is missing, a malformed metrics file) is stated in the report; the
    task fails on it only with ``fail_on_missing=True``.

    Returns ``{"repo", "rev", "sha", "baseline_rev", "baseline_sha", "report_uri", "html",
    "markdown", "metrics_changed", "plots", "problems", "absent"}``; ``absent`` maps a commit to
    the metrics, params and plots files it does not have yet (a baseline from before the
    pipeline first ran): the report says so, and that is not a problem. Its OpenLineage inputs are
    the metrics and params files it read at ``rev``; its output, the report's folder.

    :param rev: branch, tag, commit id or expression (templated)
    :param baseline_rev: the revision to compare with (templated); default: the model on
        ``baseline_stage`` when ``baseline_model`` is given, else the repository's default branch
    :param baseline_model: a model in the registry whose deployed commit is the baseline
    :param baseline_stage: its stage (default ``prod``)
    :param include_tasks: upstream task ids whose results become sections (their return value,
        or their ``decision`` / ``verdict`` XCom)
    :param trend: ``{"metric": "accuracy", "branch": "main", "commits": 10}``: a plot of the metric
        over the branch's last commits
    :param title: the report's heading
    :param report_base: the folder or URL reports go under (default: ``[mlci] reports_dir``)
    :param report_conn_id: the connection to write ``report_base`` with
    :param public_url: where ``report_base`` is served over HTTP (Markdown image links use it, so
        a pull-request comment shows the images); default: relative links
    :param fail_on_missing: fail when anything could not be read or rendered
    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param cache_dir: the worker cache root; default: ``[mlci] cache_dir``
    """

    template_fields: Sequence[str] = ("rev", "baseline_rev", "title", "public_url", "trend")
    operator_extra_links = (MlciReportLink(),)
    ui_color = "#6f42c1"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        rev: str = "HEAD",
        baseline_rev: str | None = None,
        baseline_model: str | None = None,
        baseline_stage: str = "prod",
        include_tasks: Sequence[str] = (),
        trend: Mapping[str, Any] | None = None,
        title: str | None = None,
        report_base: str | None = None,
        report_conn_id: str | None = None,
        public_url: str | None = None,
        fail_on_missing: bool = False,
        dvc_conn_id: str = "mlci_dvc_default",
        cache_dir: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.rev = rev
        self.baseline_rev = baseline_rev
        self.baseline_model = baseline_model
        self.baseline_stage = baseline_stage
        self.include_tasks = tuple(include_tasks)
        self.trend = trend
        self.title = title
        self.report_base = report_base
        self.report_conn_id = report_conn_id
        self.public_url = public_url
        self.fail_on_missing = fail_on_missing
        self.dvc_conn_id = dvc_conn_id
        self.cache_dir = cache_dir

    def execute(self, context: Context) -> dict[str, Any]:
        return self._with_workspace(context)

    def check_arguments(self) -> None:
        from airflow_provider_mlci.core.model.registry import check_model_name, check_stage_name
        from airflow_provider_mlci.core.repo.git import check_rev
        from airflow_provider_mlci.exceptions import MlciConfigError

        if self.baseline_rev and self.baseline_model:
            raise MlciConfigError("Give baseline_rev or baseline_model, not both.")
        if self.baseline_rev:
            check_rev(self.baseline_rev)
        if self.baseline_model:
            check_model_name(self.baseline_model)
            check_stage_name(self.baseline_stage)
        if self.trend is not None:
            unknown = set(self.trend) - {"metric", "branch", "commits"}
            if not isinstance(self.trend.get("metric"), str) or unknown:
                raise MlciConfigError(
                    f"trend={self.trend!r}: give {{'metric': name, 'branch': 'main', 'commits': 10}}"
                    + (f" (unknown: {', '.join(sorted(unknown))})" if unknown else "")
                )
            check_rev(str(self.trend.get("branch", "HEAD")))

    def work(self, workspace: Workspace, context: Context) -> dict[str, Any]:

        from airflow_provider_mlci import settings
        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.reports.html import build_report, run_links, section_for
        from airflow_provider_mlci.exceptions import DvcError, MlciError
        from airflow_provider_mlci.report_store import ReportKey, store_task_report

        problems: list[str] = []
        baseline_rev, baseline_sha = self._baseline(workspace, problems)
        revs = [workspace.sha] + ([baseline_sha] if baseline_sha and baseline_sha != workspace.sha else [])
        templates_dir = settings.report_templates() or None
        sections = [
            section_for(task_id, value, templates_dir=templates_dir) for task_id, value in self._upstream(context)
        ]
        from airflow_provider_mlci.core.runtime.process import private_tempdir

        with private_tempdir("report") as tmp:
            try:
                inputs = dvc_ops.report_inputs(workspace, revs, tmp)
            except DvcError as exc:  # a broken dvc.yaml: still report what we know
                problems.append(f"DVC could not read the project: {exc}")
                inputs = {}
            trend = self._trend(workspace, problems)
            relative = "/".join(ReportKey.of(context["ti"]).parts)
            image_base = f"{self.public_url.rstrip('/')}/{relative}" if self.public_url else ""
            report = build_report(
                title=self.title or f"{context['ti'].dag_id}: metrics at {self.rev}",
                rev=self.rev,
                sha=workspace.sha,
                baseline_rev=baseline_rev,
                baseline_sha=baseline_sha,
                inputs=inputs,
                sections=sections,
                trend=trend,
                image_base=image_base,
                problems=problems,
                templates_dir=templates_dir,
                links=run_links(context["ti"].dag_id, context["ti"].run_id),
            )
        files: dict[str, bytes] = {image.file: image.data for image in report.images}
        files |= {"report.md": report.markdown.encode(), "report.html": report.html.encode()}
        uri = store_task_report(context, files, report.summary, base=self.report_base, conn_id=self.report_conn_id)
        read = {path for kind in ("metrics", "params") for path in (inputs.get(kind) or {}).get(workspace.sha, {})}
        self.record_lineage(
            {
                "repo": workspace.access.git.display_url,
                "rev": self.rev,
                "sha": workspace.sha,
                "inputs": [{"path": path} for path in sorted(read)],
                "outputs": [storage_dataset(uri)],
                "run": {"report": uri},
            }
        )
        self.log.info("Report: %s/report.html (%d plots, %d problems)", uri, len(report.images), len(report.problems))
        for problem in report.problems:
            self.log.warning("Report problem: %s", problem)
        if report.problems and self.fail_on_missing:
            raise MlciError(
                f"The report at {uri} is incomplete ({len(report.problems)} problems): " + "; ".join(report.problems)
            )
        summary = report.summary
        return {
            "baseline_rev": baseline_rev,
            "baseline_sha": baseline_sha,
            "report_uri": uri,
            "html": f"{uri}/report.html",
            "markdown": f"{uri}/report.md",
            "metrics_changed": summary["metrics_changed"],
            "plots": summary["plots"],
            "problems": report.problems,
            "absent": summary["absent"],
        }

    def _baseline(self, workspace: Workspace, problems: list[str]) -> tuple[str | None, str | None]:
        from airflow_provider_mlci.core.model.registry import GitRegistry
        from airflow_provider_mlci.exceptions import GitError

        if self.baseline_model:  # the tag fetch brings the champion's commit into the checkout
            champion = GitRegistry(workspace=workspace).refresh().champion(self.baseline_model, self.baseline_stage)
            if champion is None:
                problems.append(f"No model {self.baseline_model!r} on stage {self.baseline_stage!r}: no baseline.")
                return None, None
            return f"{self.baseline_model}#{self.baseline_stage} ({champion.version})", champion.sha
        rev = self.baseline_rev or "HEAD"
        try:
            return rev, workspace.resolve(rev)
        except GitError as exc:
            problems.append(f"Baseline {rev!r}: {exc}")
            return rev, None

    def _upstream(self, context: Context) -> list[tuple[str, Any]]:
        from airflow_provider_mlci.operators.model import DECISION_KEY, VERDICT_KEY

        ti = context["ti"]
        found = []
        for task_id in self.include_tasks:
            value = None
            for key in (DECISION_KEY, VERDICT_KEY, "return_value"):
                value = ti.xcom_pull(task_ids=task_id, key=key)
                if value is not None:
                    break
            if value is not None:
                found.append((task_id, value))
            else:
                self.log.info("Task %s left nothing to report (skipped or failed early)", task_id)
        return found

    def _trend(self, workspace: Workspace, problems: list[str]) -> dict[str, Any] | None:

        from airflow_provider_mlci.core.dvc import ops as dvc_ops
        from airflow_provider_mlci.core.dvc.metrics import lookup_metric
        from airflow_provider_mlci.exceptions import MlciError

        if not self.trend:
            return None
        metric = self.trend["metric"]
        branch = str(self.trend.get("branch", "HEAD"))
        count = int(self.trend.get("commits", 10))
        try:
            tip = workspace.resolve(branch)
            out = workspace.git.check(
                ["rev-list", "--first-parent", f"--max-count={count}", tip], cwd=workspace.path, capture=True
            )
            shas = list(reversed(out.split()))
            from airflow_provider_mlci.core.runtime.process import private_tempdir

            with private_tempdir("trend") as tmp:
                shown = dvc_ops.report_inputs(workspace, shas, tmp, plots=False)
        except MlciError as exc:
            problems.append(f"Trend of {metric} on {branch}: {exc}")
            return None
        points = []
        for sha in shas:
            found = lookup_metric(shown["metrics"].get(sha, {}), metric)
            if found.usable:
                points.append({"rev": sha, "label": sha[:7], "value": found.value})
        if not points:
            problems.append(f"Trend of {metric} on {branch}: no commit of the last {count} records it.")
        return {"metric": metric, "points": points}
