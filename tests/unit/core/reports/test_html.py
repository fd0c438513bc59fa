"""Report assembly: diff rows, sections by shape, plots rendered by vl-convert, problems stated."""

from __future__ import annotations

import base64

from airflow_provider_mlci.core.reports.html import build_report, diff_rows, section_for, trend_spec

A, B = "a" * 40, "b" * 40
LINE = {
    "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
    "data": {"values": [{"x": 1, "y": 2, "rev": A}, {"x": 2, "y": 3, "rev": B}]},
    "mark": "line",
    "encoding": {
        "x": {"field": "x", "type": "quantitative"},
        "y": {"field": "y", "type": "quantitative"},
        "color": {"field": "rev", "type": "nominal"},
    },
}


def test_diff_rows_cover_both_sides_with_changes():
    rows = diff_rows({"m.json": {"acc": 0.9, "new": 1, "name": "x"}}, {"m.json": {"acc": 0.8, "gone": 2, "name": "y"}})
    by_key = {r["key"]: r for r in rows}
    assert by_key["acc"]["change"] == 0.9 - 0.8
    assert (by_key["new"]["old"], by_key["new"]["new"], by_key["new"]["change"]) == (None, 1, "changed")
    assert (by_key["gone"]["old"], by_key["gone"]["new"]) == (2, None)
    assert by_key["name"]["change"] == "changed"
    assert diff_rows({"m.json": {"acc": 1}}, None)[0]["change"] is None


def test_the_report_renders_plots_and_images_and_states_what_failed(tmp_path):
    image = tmp_path / "weights.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    inputs = {
        "metrics": {A: {"m.json": {"acc": 0.9}}, B: {"m.json": {"acc": 0.8}}},
        "params": {A: {"params.yaml": {"lr": 0.1}}, B: {"params.yaml": {"lr": 0.1}}},
        "plots": [
            {"name": "eval/loss.csv", "type": "vega", "revisions": [A, B], "content": LINE},
            {"name": "eval/broken.csv", "type": "vega", "revisions": [A], "content": {"mark": "nonsense"}},
            {"name": "weights.png", "type": "image", "revisions": [A], "path": str(image)},
        ],
        "problems": ["Cannot read the metrics file other.json at bbbbbbbbbbbb: bad"],
    }
    report = build_report(
        title="T",
        rev="feature",
        sha=A,
        baseline_rev="main",
        baseline_sha=B,
        inputs=inputs,
        trend={"metric": "acc", "points": [{"label": "1", "value": 0.7}, {"label": "2", "value": 0.9}]},
        image_base="https://airflow.example/mlci/reports/d/r/t",
        problems=["Baseline note"],
    )
    files = [i.file for i in report.images]
    assert files == ["images/eval-loss.csv.svg", f"images/weights-{A[:7]}.png", "images/trend-acc.svg"]
    loss = report.images[0].data.decode()
    assert loss.startswith("<svg")
    assert "feature (aaaaaaaaaaaa)" in loss  # the legend names revisions by label...
    assert "main (bbbbbbbbbbbb)" in loss
    assert A not in loss  # ...not by full commit id
    assert any("eval/broken.csv: cannot render" in p for p in report.problems)
    assert report.problems[0] == "Baseline note"
    assert "| m.json | acc | 0.8 | 0.9 | +0.1 |" in report.markdown
    assert "![eval/loss.csv](https://airflow.example/mlci/reports/d/r/t/images/eval-loss.csv.svg)" in report.markdown
    assert report.html.count("<img ") == 3
    assert f"data:image/png;base64,{base64.b64encode(image.read_bytes()).decode()}" in report.html
    assert report.summary["metrics_changed"] == ["m.json:acc"]


def test_no_baseline_gives_a_value_table():
    report = build_report(
        title="T",
        rev="main",
        sha=A,
        baseline_rev=None,
        baseline_sha=None,
        inputs={"metrics": {A: {"m.json": {"acc": 0.9}}}},
    )
    assert "| m.json | acc | 0.9 |" in report.markdown
    assert "(no baseline)" in report.markdown
    assert "## Params\n\n(none)" in report.markdown


def test_sections_by_shape_and_escaped_html():
    gate = section_for(
        "gate",
        {
            "promote": True,
            "reasons": [],
            "champion": None,
            "metrics": [
                {
                    "metric": "auc",
                    "direction": "higher",
                    "candidate": 0.9,
                    "champion": None,
                    "delta": None,
                    "passed": True,
                }
            ],
        },
    )
    assert "Decision: **promote** (against nothing deployed)." in gate.markdown
    verdict = section_for(
        "validate_model",
        {
            "model": "m",
            "passed": False,
            "checks": [{"kind": "load", "name": "load <m>", "passed": False, "detail": "x|y"}],
        },
    )
    assert "| load | load <m> | FAILED | x\\|y |" in verdict.markdown
    assert "load &lt;m&gt;" in verdict.html
    data = section_for(
        "validate", {"dataset": "d.csv", "rows_checked": 3, "valid": False, "error_counts": {"a": {"in_range": 2}}}
    )
    assert "| a | in_range | 2 |" in data.markdown
    other = section_for("x", [1, 2])
    assert other.markdown.startswith("```json")


def test_trend_spec_orders_commits_oldest_first():
    spec = trend_spec("acc", [{"label": "c1", "value": 0.5}, {"label": "c2", "value": 0.6}])
    assert [v["commit"] for v in spec["data"]["values"]] == ["c1", "c2"]
    assert spec["encoding"]["x"]["sort"] == {"field": "order"}


def test_a_release_outcome_says_how_the_candidate_started_and_what_became_of_it():
    kept = {
        "promoted": False,
        "model": "fraud-detector",
        "stage": "prod",
        "tags": [],
        "reasons": ["logloss: regressed by 0.03 <b>"],
        "from": {"from_scratch": False, "deployed": {"version": "v0.1.0", "sha": "6adf05235efab066e012"}},
    }
    section = section_for("refine.outcome", kept)
    assert "Refined from v0.1.0 (6adf05235efa)." in section.markdown
    assert "**Kept** the deployed fraud-detector on prod." in section.markdown
    assert "- logloss: regressed by 0.03 <b>" in section.markdown
    assert "&lt;b&gt;" in section.html
    assert "<b>" not in section.html
    promoted = {**kept, "promoted": True, "version": "v0.2.0", "tags": ["fraud-detector@v0.2.0"], "reasons": []}
    promoted.update(replaced={"version": "v0.1.0"}, **{"from": {"from_scratch": True, "deployed": None}})
    section = section_for("refine.outcome", promoted)
    assert "Trained from scratch: no model was deployed." in section.markdown
    assert (
        "**Promoted** fraud-detector v0.2.0 to prod, replacing v0.1.0 (tags: fraud-detector@v0.2.0)."
        in section.markdown
    )


def test_files_the_baseline_does_not_have_yet_are_stated_and_are_not_problems():
    inputs = {
        "metrics": {A: {"eval/m.json": {"auc": 0.8}}, B: {}},
        "absent": {B: ["eval/m.json", "eval/plots/roc.json"]},
    }
    report = build_report(title="T", rev="feature", sha=A, baseline_rev="main", baseline_sha=B, inputs=inputs)
    assert report.problems == []
    assert "## Problems" not in report.markdown
    assert "Not at main (bbbbbbbbbbbb) (not written there yet): eval/m.json, eval/plots/roc.json." in report.markdown
    assert "<p class='absent'>Not at main (bbbbbbbbbbbb)" in report.html
    assert report.summary["absent"] == {B: ["eval/m.json", "eval/plots/roc.json"]}


XSS = "<script>alert('x')</script>"


def test_untrusted_names_come_out_escaped_in_report_html(tmp_path):
    image = tmp_path / "plot.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"0" * 20)
    inputs = {
        "metrics": {A: {f"{XSS}.json": {XSS: 0.9}}, B: {f"{XSS}.json": {XSS: 0.8}}},
        "params": {A: {"params.yaml": {"lr": XSS}}, B: {"params.yaml": {"lr": 0.1}}},
        "plots": [{"name": f"{XSS}' onerror='alert(1).png", "type": "image", "revisions": [A], "path": str(image)}],
        "absent": {B: [f"{XSS}.csv"]},
    }
    gate = section_for(
        XSS,
        {
            "promote": False,
            "reasons": [XSS],
            "champion": {"version": XSS},
            "metrics": [
                {"metric": XSS, "direction": "higher", "candidate": 1, "champion": 2, "delta": -1, "passed": 0}
            ],
            "evaluation": {"same": False, "differences": [XSS]},
        },
    )
    report = build_report(
        title=XSS,
        rev=XSS,
        sha=A,
        baseline_rev="main",
        baseline_sha=B,
        inputs=inputs,
        sections=[gate, section_for("other", {"note": XSS})],
        problems=[XSS],
    )
    assert "<script" not in report.html
    assert "onerror='" not in report.html  # the quote that would end the alt attribute is escaped too
    escaped = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
    assert report.html.count(escaped) >= 12  # title, heading, revision, absent, problem, metric file and key...
    assert f"<td>{escaped}.json</td><td>{escaped}</td>" in report.html
    assert f"<h2>{escaped}</h2>" in report.html  # a section title
    assert "<strong>keep the deployed model</strong>" in report.html  # the templates' own markup stays
    assert f"| {XSS}.json | {XSS} |" in report.markdown  # Markdown is not HTML: as it was


def test_a_template_in_the_templates_dir_replaces_the_packaged_one(tmp_path):
    (tmp_path / "report.html.j2").write_text(
        '{% from "table.html.j2" import table %}<main><h1 class="ours">{{ title }}</h1>'
        "{% for t in tables %}{{ table(t.header, t.rows) }}{% endfor %}"
        "{% for s in sections %}<section>{{ s.html | safe }}</section>{% endfor %}</main>\n"
    )
    (tmp_path / "section.html.j2").write_text("<div class='ours'>{{ blocks | length }} blocks</div>")
    section = section_for("json", {"a": "<b>"}, templates_dir=str(tmp_path))
    assert section.html == "<div class='ours'>1 blocks</div>"
    assert section_for("json", {"a": 1}).html.startswith("<pre>")  # without it: the packaged one
    report = build_report(
        title="T <b>",
        rev="main",
        sha=A,
        baseline_rev=None,
        baseline_sha=None,
        inputs={"metrics": {A: {"m.json": {"acc": 0.9}}}},
        sections=[section],
        templates_dir=str(tmp_path),
    )
    assert report.html.startswith('<main><h1 class="ours">T &lt;b&gt;</h1><table>')  # escaped in ours as well
    assert "<td>m.json</td><td>acc</td><td class='num'>0.9</td>" in report.html  # the packaged table.html.j2
    assert "<section><div class='ours'>1 blocks</div></section>" in report.html
    assert "<style>" not in report.html
    default = build_report(title="T", rev="main", sha=A, baseline_rev=None, baseline_sha=None, inputs={})
    assert "<style>" in default.html
    missing = build_report(
        title="T", rev="main", sha=A, baseline_rev=None, baseline_sha=None, inputs={}, templates_dir=str(tmp_path / "x")
    )
    assert missing.html == default.html  # a folder that is not there: the packaged templates


def test_a_page_of_sections_escapes_its_title_and_keeps_the_sections_own_html(tmp_path):
    from airflow_provider_mlci.core.reports.html import sections_page

    board = section_for("Leaderboard", {"leaderboard": {"objective": XSS, "goal": "max", "trials": []}, "best": None})
    files = sections_page(f"sweep {XSS}", [board])
    page = files["report.html"].decode()
    assert XSS not in page
    assert "<title>sweep &lt;script&gt;" in page
    assert "<h2>Leaderboard</h2>" in page
    assert board.html in page  # built (and escaped) by section.html.j2: not escaped twice
    assert files["report.md"].decode() == f"# sweep {XSS}\n\n{board.markdown}\n"
    (tmp_path / "page.html.j2").write_text("custom {{ title }} {{ sections | length }}")
    assert sections_page("T", [board], templates_dir=str(tmp_path))["report.html"] == b"custom T 1"
