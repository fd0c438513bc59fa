"""A metrics report: metrics and params against a baseline, the plots, and what upstream tasks decided.

:func:`build_report` turns what DVC read at two revisions (see
:func:`airflow_provider_mlci.core.dvc.ops.report_inputs`) into ``report.md`` and a
self-contained ``report.html`` (images inlined), plus the image files Markdown links to. The HTML
comes from Jinja2 templates (``templates/*.html.j2``, autoescaped; see
:mod:`~airflow_provider_mlci.core.reports.templating`), which a folder given as ``templates_dir``
can replace one by one.
Plots are Vega-Lite specs as DVC fills them from its templates (linear, simple, scatter,
smooth, confusion, bar…), rendered to SVG by vl-convert (no browser, no Node), or image files
the pipeline wrote. What could not be read is stated in the report, never hidden.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from airflow_provider_mlci.core.dvc.metrics import flatten_metrics
from airflow_provider_mlci.core.reports.templating import render

__all__ = [
    "Cell",
    "Report",
    "ReportImage",
    "ReportSection",
    "build_report",
    "outcome_page",
    "outcome_sections",
    "run_links",
    "section_for",
    "sections_page",
    "svg_of",
    "trend_spec",
]

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")
_MIME = {".svg": "image/svg+xml", ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif"}


@dataclass(frozen=True, kw_only=True)
class ReportImage:
    """One rendered plot or image.

    :param name: the plot's id in ``dvc.yaml`` (or a title)
    :param file: its path inside the report folder, e.g. ``images/eval-roc.svg``
    :param data: the image's bytes
    :param caption: what it shows
    """

    name: str
    file: str
    data: bytes
    caption: str = ""

    @property
    def mime(self) -> str:
        """The image's media type, from its suffix."""
        return _MIME.get(Path(self.file).suffix.lower(), "application/octet-stream")


@dataclass(frozen=True, kw_only=True)
class ReportSection:
    """A section of the report, in Markdown and in HTML.

    :param title: its heading
    :param markdown: its body as Markdown
    :param html: its body as HTML
    """

    title: str
    markdown: str
    html: str


@dataclass(kw_only=True)
class Report:
    """A finished report.

    :param markdown: ``report.md``
    :param html: ``report.html``, self-contained
    :param images: the image files (``report.md`` links to them)
    :param problems: what could not be read or rendered
    :param summary: small JSON: revisions, metric changes, counts
    """

    markdown: str
    html: str
    images: list[ReportImage] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    summary: dict[str, Any] = field(default_factory=dict)


class Cell(NamedTuple):
    """A table cell as the templates get it.

    :param text: what it shows
    :param num: whether it is a number (right-aligned)
    """

    text: str
    num: bool


def build_report(
    *,
    title: str,
    rev: str,
    sha: str,
    baseline_rev: str | None,
    baseline_sha: str | None,
    inputs: Mapping[str, Any],
    sections: Sequence[ReportSection] = (),
    trend: Mapping[str, Any] | None = None,
    image_base: str = "",
    problems: Iterable[str] = (),
    templates_dir: str | None = None,
    links: Sequence[tuple[str, str]] = (),
) -> Report:
    """Assemble the report from what DVC read at ``sha`` and ``baseline_sha``.

    :param title: the report's heading
    :param rev: the revision as asked for
    :param sha: its commit
    :param baseline_rev: the baseline as asked for (``None``: no baseline)
    :param baseline_sha: its commit (``None``: none, or it could not be resolved)
    :param inputs: :func:`~airflow_provider_mlci.core.dvc.ops.report_inputs`' result for both commits
    :param sections: sections from upstream tasks (validation, gate, leaderboard…)
    :param trend: ``{"metric": name, "points": [{"rev", "label", "value"}]}`` for a trend plot
    :param image_base: what Markdown image links start with (a public URL of the report folder;
        empty: relative links)
    :param problems: problems found before (an unknown baseline…), stated in the report
    :param templates_dir: a folder whose templates replace the packaged ones of the same name
        (``report.html.j2``, ``table.html.j2``); default: the packaged ones
    :param links: ``(label, href)`` shown at the top of ``report.html`` only (see :func:`run_links`;
        relative links mean nothing in a pull-request comment)
    """
    problems = [*problems, *inputs.get("problems", [])]
    labels = {sha: _label(rev, sha)}
    if baseline_sha:
        labels[baseline_sha] = _label(baseline_rev or baseline_sha, baseline_sha)
    metrics = inputs.get("metrics", {})
    params = inputs.get("params", {})
    metric_rows = diff_rows(metrics.get(sha, {}), metrics.get(baseline_sha, {}) if baseline_sha else None)
    param_rows = diff_rows(params.get(sha, {}), params.get(baseline_sha, {}) if baseline_sha else None)
    images, plot_problems = _render_plots(inputs.get("plots", []), labels)
    problems += plot_problems
    if trend and trend.get("points"):
        try:
            images.append(_render_trend(trend))
        except Exception as exc:  # a broken trend must not cost the rest of the report
            problems.append(f"Trend of {trend.get('metric')}: cannot render: {exc}")

    against = f" against {labels[baseline_sha]}" if baseline_sha else " (no baseline)"
    head = f"{labels[sha]}{against}"
    md: list[str] = [f"# {title}", "", f"Revision {head}.", ""]
    absent = []
    for at, paths in (inputs.get("absent") or {}).items():
        absent.append(f"Not at {labels.get(at, at[:12])} (not written there yet): {', '.join(paths)}.")
        md += [absent[-1], ""]
    if problems:
        md += ["## Problems", "", *[f"- {p}" for p in problems], ""]
    tables = []
    for heading, rows in (("Metrics", metric_rows), ("Params", param_rows)):
        md += [f"## {heading}", "", *_rows_markdown(rows, baseline_sha is not None), ""]
        header, cells = _diff_table(rows, baseline_sha is not None)
        tables.append({"heading": heading, "header": header, "rows": _cells(cells)})
    if images:
        md += ["## Plots", ""]
        for image in images:
            link = f"{image_base.rstrip('/')}/{image.file}" if image_base else image.file
            md += [f"![{image.name}]({link})", f"*{image.caption or image.name}*", ""]
    for section in sections:
        md += [f"## {section.title}", "", section.markdown, ""]
    page = render(
        "report.html.j2",
        templates_dir=templates_dir,
        title=title,
        links=[{"label": label, "href": href} for label, href in links],
        head=head,
        absent=absent,
        problems=problems,
        tables=tables,
        images=[
            {
                "name": image.name,
                "caption": image.caption or image.name,
                "uri": f"data:{image.mime};base64,{base64.b64encode(image.data).decode()}",
            }
            for image in images
        ],
        sections=[{"title": section.title, "html": section.html} for section in sections],
    )
    changed = [r for r in metric_rows if r["change"] not in (None, 0)]
    summary = {
        "rev": rev,
        "sha": sha,
        "baseline_rev": baseline_rev,
        "baseline_sha": baseline_sha,
        "metrics": len(metric_rows),
        "metrics_changed": [f"{r['file']}:{r['key']}" for r in changed],
        "params": len(param_rows),
        "plots": [image.file for image in images],
        "sections": [section.title for section in sections],
        "problems": problems,
        "absent": dict(inputs.get("absent") or {}),
    }
    return Report(markdown="\n".join(md).rstrip() + "\n", html=page, images=images, problems=problems, summary=summary)


def diff_rows(new: Mapping[str, Any], old: Mapping[str, Any] | None) -> list[dict[str, Any]]:
    """One row per value in either revision: ``{"file", "key", "old", "new", "change"}``.

    :param new: ``{file: nested values}`` at the revision
    :param old: the same at the baseline (``None``: no baseline)
    """
    ours, theirs = flatten_metrics(new), flatten_metrics(old or {})
    rows = []
    for name in sorted(set(ours) | set(theirs)):
        file, key = name.split(":", 1)
        a, b = theirs.get(name), ours.get(name)
        change = b - a if _num(a) and _num(b) else None
        if change is None and old is not None and a != b:
            change = "changed"
        rows.append({"file": file, "key": key, "old": a, "new": b, "change": change})
    return rows


def section_for(title: str, value: Any, *, templates_dir: str | None = None) -> ReportSection:
    """A section for what an upstream task returned, shaped by what it is.

    Knows a data validation summary, a model validation verdict, a gate decision, a release
    outcome (``{"promoted", "tags", "reasons", ...}``), a sweep (``{"leaderboard": {...}, "best":
    ...}``, as the sweep's leaderboard task returns it) and a bare leaderboard (``{"trials":
    [...]}``); anything else is shown as JSON.

    :param title: the section's heading (e.g. the task id)
    :param value: the task's XCom value
    :param templates_dir: a folder whose templates replace the packaged ones of the same name
        (``section.html.j2``, ``table.html.j2``); default: the packaged ones
    """
    board = value.get("leaderboard") if isinstance(value, Mapping) else None
    if isinstance(value, Mapping) and "promote" in value and "metrics" in value:
        markdown, blocks = _gate_section(value)
    elif isinstance(value, Mapping) and "checks" in value and "passed" in value:
        markdown, blocks = _verdict_section(value)
    elif isinstance(value, Mapping) and {"promoted", "tags", "reasons"} <= value.keys():
        markdown, blocks = _release_section(value)
    elif isinstance(value, Mapping) and "rows_checked" in value:
        markdown, blocks = _validation_section(value)
    elif isinstance(board, Mapping) and isinstance(board.get("trials"), list):
        markdown, blocks = _sweep_section(value)
    elif isinstance(value, Mapping) and isinstance(value.get("trials"), list):
        markdown, blocks = _leaderboard_section(value)
    else:
        text = json.dumps(value, indent=2, sort_keys=True, default=str)
        markdown, blocks = f"```json\n{text}\n```", [{"kind": "pre", "text": text}]
    html = render("section.html.j2", templates_dir=templates_dir, blocks=blocks).strip()
    return ReportSection(title=title, markdown=markdown, html=html)


def sections_page(
    title: str, sections: Sequence[ReportSection], *, templates_dir: str | None = None
) -> dict[str, bytes]:
    """``report.md`` and ``report.html`` of a report made of sections alone (the sweep leaderboard).

    :param title: the page's heading
    :param sections: its sections, in order
    :param templates_dir: a folder whose templates replace the packaged ones of the same name
    """
    markdown = "\n".join([f"# {title}", "", *(f"{section.markdown}\n" for section in sections)])
    page = render("page.html.j2", templates_dir=templates_dir, title=title, sections=sections)
    return {"report.md": markdown.encode(), "report.html": page.encode()}


def outcome_sections(record: Mapping[str, Any]) -> list[ReportSection]:
    """The sections of a run record's page: the outcome with the gate metrics' deltas, the cost.

    :param record: a run record (:func:`airflow_provider_mlci.core.model.history.run_record`)
    """
    deployed = record.get("deployed") or {}
    against = deployed.get("version") or str(deployed.get("sha") or "")[:12] or "nothing deployed"
    header = ["metric", "better", "deployed", "candidate", "delta", "passed"]
    rows = [
        [m.get("metric"), m.get("direction"), _fmt(m.get("champion")), _fmt(m.get("candidate")),
         _fmt(m.get("delta"), signed=True), _yes(m.get("passed"))]
        for m in record.get("metrics") or []
    ]  # fmt: skip
    md = [f"**{record.get('decision')}**: {record.get('summary')}", ""]
    blocks: _Blocks = [_p((str(record.get("decision")), True), f": {record.get('summary')}")]
    if rows:
        md += [f"Against {against} on {record.get('stage')}:", "", *_table_md(header, rows), ""]
        blocks += [_p(f"Against {against} on {record.get('stage')}:"), _table(header, rows)]
    for title, items in (("Reasons", record.get("reasons")), ("Failed tasks", record.get("failed_tasks"))):
        if items:
            md += [f"{title}:", "", *[f"- {item}" for item in items], ""]
            blocks += [_p(f"{title}:"), _ul(items)]
    sections = [ReportSection(title="Outcome", markdown="\n".join(md), html=_blocks_html(blocks))]
    cost = record.get("cost")
    if cost:
        header = ["instance", "type", "market", "seconds", "USD/h", "USD"]
        rows = [
            [i.get("instance_id"), i.get("instance_type"), i.get("market"), _fmt(i.get("seconds")),
             _fmt(i.get("hourly_usd")), _fmt(i.get("cost_usd"))]
            for i in cost.get("instances") or []
        ]  # fmt: skip
        total = f"GPU cost: {_fmt(cost.get('total_usd'))} USD"
        md = [total, "", *_table_md(header, rows)]
        body = _blocks_html([_p(total), _table(header, rows)])
        sections.append(ReportSection(title="GPU cost", markdown="\n".join(md), html=body))
    return sections


def outcome_page(
    record: Mapping[str, Any],
    history: Sequence[Mapping[str, Any]],
    *,
    log: Any = None,
    templates_dir: str | None = None,
) -> dict[str, bytes]:
    """``report.md``, ``report.html`` and ``images/trend.svg`` of a run record: its outcome, its cost,
    the trend of the model over ``history``, and links to the run's metrics report and Airflow run.

    :param record: the run record
    :param history: the model's records to chart, oldest first (this one last)
    :param log: where a trend that cannot be drawn is logged
    :param templates_dir: a folder whose templates replace the packaged ones
    """
    from html import escape
    from urllib.parse import quote

    from airflow_provider_mlci.core.model.history import trend_spec

    sections = outcome_sections(record)
    files: dict[str, bytes] = {}
    try:
        svg = svg_of(trend_spec(str(record.get("model")), history))
    except Exception as exc:  # the record matters more than its chart
        if log is not None:
            log.warning("Cannot draw the trend of %s: %s", record.get("model"), exc)
        svg = None
    if svg is not None:
        files["images/trend.svg"] = svg.encode()
        inline = "data:image/svg+xml;base64," + base64.b64encode(svg.encode()).decode()
        sections.append(
            ReportSection(
                title=f"Trend of the last {len(history)} runs",
                markdown="![trend](images/trend.svg)",
                html=f"<figure><img id='trend' alt='trend' src='{inline}'></figure>",
            )
        )
    links = run_links(str(record["dag_id"]), str(record["run_id"]))
    if record.get("report"):
        links.insert(1, ("Metrics report of this run", f"../{quote(str(record['report']), safe='')}/"))
    md = "\n".join(f"- [{label}]({href})" for label, href in links)
    html = "<ul>" + "".join(f"<li><a target='_top' href='{escape(h)}'>{escape(t)}</a></li>" for t, h in links) + "</ul>"
    sections.append(ReportSection(title="Links", markdown=md, html=html))
    files.update(sections_page(f"{record.get('model')} on {record.get('stage')}: run outcome", sections,
                               templates_dir=templates_dir))  # fmt: skip
    return files


def run_links(dag_id: str, run_id: str) -> list[tuple[str, str]]:
    """Links from a report page, as the UI plugin serves it, to its Airflow run and the run's other reports.

    :param dag_id: the Dag
    :param run_id: the run
    """
    from urllib.parse import quote

    # A report page is served at /mlci/reports/<dag>/<run>/<task>/: the Airflow UI is five levels up.
    dag, run = quote(dag_id, safe=""), quote(run_id, safe="")
    return [(f"Airflow run {run_id}", f"../../../../../dags/{dag}/runs/{run}"), ("All reports of this run", "../")]


def _blocks_html(blocks: _Blocks, templates_dir: str | None = None) -> str:
    return render("section.html.j2", templates_dir=templates_dir, blocks=blocks).strip()


def trend_spec(metric: str, points: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A Vega-Lite line chart of ``metric`` over commits, oldest first.

    :param metric: the metric's name
    :param points: ``[{"label", "value"}]`` oldest first
    """
    values = [{"order": i, "commit": p["label"], "value": p["value"]} for i, p in enumerate(points)]
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"{metric} over the last {len(values)} commits",
        "width": 520,
        "height": 260,
        "data": {"values": values},
        "mark": {"type": "line", "point": True},
        "encoding": {
            "x": {"field": "commit", "type": "ordinal", "sort": {"field": "order"}, "title": "commit"},
            "y": {"field": "value", "type": "quantitative", "title": metric, "scale": {"zero": False}},
        },
    }


# ----------------------------------------------------------------------------------- plots


def _render_plots(plots: Sequence[Mapping[str, Any]], labels: Mapping[str, str]) -> tuple[list[ReportImage], list[str]]:
    images: list[ReportImage] = []
    problems: list[str] = []
    used: set[str] = set()
    for plot in plots:
        name = str(plot.get("name"))
        revisions = [labels.get(r, r) for r in plot.get("revisions") or []]
        caption = f"{name} ({', '.join(revisions)})" if revisions else name
        try:
            if plot.get("type") == "vega" and plot.get("content"):
                spec = _relabel(plot["content"], labels)
                data = svg_of(spec).encode()
                suffix = ".svg"
            elif plot.get("type") == "image" and plot.get("path"):
                path = Path(plot["path"])
                data, suffix = path.read_bytes(), path.suffix.lower()
                if suffix not in _MIME:
                    raise ValueError(f"unsupported image type {suffix}")
            else:
                continue
        except Exception as exc:  # one plot failing must not cost the others
            problems.append(f"Plot {name}: cannot render: {exc}")
            continue
        stem = name
        if plot.get("type") == "image":  # one image per revision: name it after both
            stem = f"{Path(name).with_suffix('')}-{str((plot.get('revisions') or ['x'])[0])[:7]}"
        file = _unique(f"images/{_SAFE.sub('-', stem).strip('-') or 'plot'}", suffix, used)
        images.append(ReportImage(name=name, file=file, data=data, caption=caption))
    return images, problems


def _render_trend(trend: Mapping[str, Any]) -> ReportImage:
    metric = str(trend["metric"])
    data = svg_of(trend_spec(metric, trend["points"])).encode()
    name = f"trend-{_SAFE.sub('-', metric).strip('-')}"
    return ReportImage(name=f"{metric} trend", file=f"images/{name}.svg", data=data, caption=f"{metric} by commit")


def svg_of(spec: Mapping[str, Any]) -> str:
    """A Vega-Lite spec rendered to SVG (vl-convert: no browser, no Node).

    :param spec: the chart
    """
    import vl_convert

    return vl_convert.vegalite_to_svg(vl_spec=dict(spec))


def _relabel(spec: Mapping[str, Any], labels: Mapping[str, str]) -> dict[str, Any]:
    """The spec with full commit ids in its data replaced by readable labels."""
    text = json.dumps(spec)
    for sha, label in labels.items():
        text = text.replace(json.dumps(sha), json.dumps(label))
    return json.loads(text)


def _unique(stem: str, suffix: str, used: set[str]) -> str:
    name, count = f"{stem}{suffix}", 1
    while name in used:
        count += 1
        name = f"{stem}-{count}{suffix}"
    used.add(name)
    return name


# ------------------------------------------------------------------------------ sections
# Each returns the section's Markdown and its HTML as blocks for section.html.j2 (see there).

_Blocks = list[dict[str, Any]]


def _gate_section(decision: Mapping[str, Any]) -> tuple[str, _Blocks]:
    champion = decision.get("champion")
    against = f"{champion.get('version') or str(champion.get('sha'))[:12]}" if champion else "nothing deployed"
    verdict = "promote" if decision.get("promote") else "keep the deployed model"
    header = ["metric", "better", "candidate", "deployed", "delta", "passed"]
    rows = [
        [m["metric"], m["direction"], _fmt(m["candidate"]), _fmt(m["champion"]), _fmt(m["delta"]), _yes(m["passed"])]
        for m in decision.get("metrics", [])
    ]
    reasons = list(decision.get("reasons") or [])
    md = [f"Decision: **{verdict}** (against {against}).", "", *_table_md(header, rows)]
    md += ["", *[f"- {r}" for r in reasons]] if reasons else []
    blocks = [_p("Decision: ", (verdict, True), f" (against {against})."), _table(header, rows)]
    blocks += [_ul(reasons)] if reasons else []
    evaluation = decision.get("evaluation") or {}
    if evaluation:
        same = f"Same evaluation inputs: {'yes' if evaluation.get('same') else 'no'}"
        differences = list(evaluation.get("differences") or [])
        md += ["", same, *[f"- {d}" for d in differences]]
        blocks += [_p(same), *([_ul(differences)] if differences else [])]
    return "\n".join(md), blocks


def _verdict_section(verdict: Mapping[str, Any]) -> tuple[str, _Blocks]:
    status = {True: "ok", False: "FAILED", None: "not run"}
    header = ["group", "check", "result", "detail"]
    rows = [[c["kind"], c["name"], status[c["passed"]], c.get("detail") or ""] for c in verdict.get("checks", [])]
    result = "passed" if verdict.get("passed") else "failed"
    md = [f"Model {verdict.get('model')}: **{result}**.", "", *_table_md(header, rows)]
    return "\n".join(md), [_p(f"Model {verdict.get('model')}: ", (result, True), "."), _table(header, rows)]


def _release_section(outcome: Mapping[str, Any]) -> tuple[str, _Blocks]:
    model, stage = outcome.get("model"), outcome.get("stage")
    lines = []
    started = outcome.get("from")
    if isinstance(started, Mapping) and "from_scratch" in started:
        deployed = started.get("deployed") or {}
        lines.append(
            "Trained from scratch: no model was deployed."
            if started["from_scratch"]
            else f"Refined from {deployed.get('version') or '?'} ({str(deployed.get('sha'))[:12]})."
        )
    if outcome.get("promoted"):
        replaced = (outcome.get("replaced") or {}).get("version")
        lines.append(
            f"**Promoted** {model} {outcome.get('version')} to {stage}"
            + (f", replacing {replaced}" if replaced else "")
            + f" (tags: {', '.join(outcome.get('tags') or []) or 'already there'})."
        )
    else:
        lines.append(f"**Kept** the deployed {model} on {stage}.")
    reasons = [] if outcome.get("promoted") else [str(reason) for reason in outcome.get("reasons") or []]
    markdown = "\n\n".join(lines) + ("\n\n" + "\n".join(f"- {r}" for r in reasons) if reasons else "")
    blocks = [_p(line.replace("**", "")) for line in lines]
    return markdown, blocks + ([_ul(reasons)] if reasons else [])


def _validation_section(summary: Mapping[str, Any]) -> tuple[str, _Blocks]:
    result = "valid" if summary.get("valid") else "invalid"
    line = f"{summary.get('dataset')}: {summary.get('rows_checked')} rows checked, **{result}**."
    header = ["column", "check", "failures"]
    rows = [
        [column, check, str(count)]
        for column, checks in (summary.get("error_counts") or {}).items()
        for check, count in (checks.items() if isinstance(checks, Mapping) else [("", checks)])
    ]
    md = [line, *(["", *_table_md(header, rows)] if rows else [])]
    return "\n".join(md), [_p(line.replace("**", "")), *([_table(header, rows)] if rows else [])]


def _leaderboard_section(board: Mapping[str, Any]) -> tuple[str, _Blocks]:
    trials = [t for t in board["trials"] if isinstance(t, Mapping)]
    params = sorted({k for t in trials for k in (t.get("params") or {})})
    metric = str(board.get("objective") or "value")
    header = ["rank", "trial", *params, metric, "status"]
    rows = [
        [
            str(rank),
            str(t.get("name") or t.get("trial") or rank),
            *[_fmt((t.get("params") or {}).get(p)) for p in params],
            _fmt(t.get("value")),
            str(t.get("status") or ""),
        ]
        for rank, t in enumerate(trials, 1)
    ]
    return "\n".join(_table_md(header, rows)), [_table(header, rows)]


def _sweep_section(summary: Mapping[str, Any]) -> tuple[str, _Blocks]:
    board = summary["leaderboard"]
    metric = str(board.get("objective") or "value")
    goal = f"{board.get('goal') or 'maximize'} {metric}"
    target = summary.get("target")
    lines = [f"Objective: {goal}" + (f", target {_fmt(target)}." if target is not None else ".")]
    if "succeeded" in summary:
        pruned = f", {summary['pruned']} pruned" if summary.get("pruned") else ""
        lines.append(
            f"Trials: {summary.get('succeeded')} succeeded, {summary.get('failed')} failed, "
            f"{summary.get('skipped')} skipped{pruned}."
        )
    if target is not None:
        lines.append(f"Target met: {_yes(summary.get('target_met'))}.")
    best = summary.get("best")
    if isinstance(best, Mapping):
        params = ", ".join(f"{k}={_fmt(v)}" for k, v in (best.get("params") or {}).items())
        lines.append(
            f"Best trial: {best.get('name')} ({metric} = {_fmt(best.get('value'))}; {params}), "
            f"experiment {best.get('exp_ref')} at {str(best.get('sha'))[:12]}."
        )
    else:
        lines.append("Best trial: none.")
    table_md, table_blocks = _leaderboard_section(board)
    md = [*[f"- {line}" for line in lines], "", table_md]
    return "\n".join(md), [_ul(lines), *table_blocks]


def _p(*parts: str | tuple[str, bool]) -> dict[str, Any]:
    """A paragraph: text, and ``(text, True)`` for bold."""
    return {"kind": "p", "parts": [part if isinstance(part, tuple) else (part, False) for part in parts]}


def _ul(items: Iterable[Any]) -> dict[str, Any]:
    return {"kind": "ul", "items": [str(item) for item in items]}


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict[str, Any]:
    return {"kind": "table", "header": list(header), "rows": _cells(rows)}


# ------------------------------------------------------------------------------- helpers


def _rows_markdown(rows: Sequence[Mapping[str, Any]], with_baseline: bool) -> list[str]:
    return _table_md(*_diff_table(rows, with_baseline)) if rows else ["(none)"]


def _diff_table(rows: Sequence[Mapping[str, Any]], with_baseline: bool) -> tuple[list[str], list[list[str]]]:
    """Header and cells of a diff table (old, new, change), or of a value table without a baseline."""
    if not with_baseline:
        return ["file", "key", "value"], [[r["file"], r["key"], _fmt(r["new"])] for r in rows]
    body = [[r["file"], r["key"], _fmt(r["old"]), _fmt(r["new"]), _fmt(r["change"], signed=True)] for r in rows]
    return ["file", "key", "old", "new", "change"], body


def _table_md(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: Any) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(map(cell, row)) + " |" for row in rows]


def _cells(rows: Sequence[Sequence[Any]]) -> list[list[Cell]]:
    return [[Cell(str(text), _numeric(str(text))) for text in row] for row in rows]


def _numeric(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _fmt(value: Any, *, signed: bool = False) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        return f"{value:+.6g}" if signed else f"{value:.6g}"
    if isinstance(value, int) and signed:
        return f"{value:+d}"
    return str(value)


def _yes(passed: Any) -> str:
    return "yes" if passed else "no"


def _num(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _label(rev: str, sha: str) -> str:
    return sha[:12] if rev == sha else f"{rev} ({sha[:12]})"
