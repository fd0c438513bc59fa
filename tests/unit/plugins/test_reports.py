"""The reports app over a real reports folder (and a real S3 endpoint), with Airflow's auth or a stand-in.

Most tests give the app a stand-in for the api-server's login (:class:`Allow`: a list of readable Dags);
``test_airflow_login_*`` use Airflow's own: the SimpleAuthManager and its JWTs.
"""

from __future__ import annotations

import asyncio
import json
import os
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from airflow_provider_mlci.plugins.reports import MlciReportsPlugin, create_app, render_markdown
from tests.helpers.imports import modules_loaded_by

SVG = b"<svg xmlns='http://www.w3.org/2000/svg' width='40' height='20'><rect width='40' height='20' fill='#36c'/></svg>"
PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c6360f8cfc0f01f0005000201a5b0e1a30000000049454e44ae426082"
)
REPORT_MD = """# Metrics

| metric | main | PR |
|---|---:|---:|
| accuracy | 0.91 | **0.93** |

- first
- second

![ROC](images/roc.svg)

`code` and <script>alert("x")</script> and [bad](javascript:alert(1))
"""


class Allow:
    """A stand-in for the api-server's login: the user may read these Dags."""

    def __init__(self, *dag_ids: str) -> None:
        self.dag_ids = set(dag_ids)

    def allows(self, dag_id: str) -> bool:
        return "*" in self.dag_ids or dag_id in self.dag_ids


def client_for(*dag_ids: str) -> TestClient:
    async def authenticate(request: Any) -> Allow:
        return Allow(*dag_ids)

    return TestClient(create_app(authenticate=authenticate))


def write(path: Path, data: bytes | str, mtime: float | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        path.write_text(data)
    else:
        path.write_bytes(data)
    if mtime is not None:
        os.utime(path, (mtime, mtime))
    return path


def complete(folder: Path, mtime: float | None = None) -> None:
    """Mark a hand-written report folder complete, as the report store does last (``outcome.json``)."""
    write(folder / "outcome.json", json.dumps({"format": 1, "outcome": {}}), mtime)


@pytest.fixture
def reports(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``[mlci] reports_dir``: a folder with reports of two Dags, three runs (the older run written first)."""
    base = tmp_path / "reports"
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(base))
    monkeypatch.delenv("AIRFLOW__MLCI__REPORTS_CONN_ID", raising=False)
    old, new = 1_780_000_000, 1_790_000_000
    run_old = base / "pr_validation" / "manual__2026-05-28T10_00_00+00_00"
    run_new = base / "pr_validation" / "scheduled__2026-01-01T00_00_00+00_00"  # sorts first by name, is newer
    write(run_old / "report" / "report.md", "# Old\n", old)
    write(run_new / "report" / "report.html", "<html><body><table><tr><td>new</td></tr></table></body></html>", new)
    write(run_new / "report" / "report.md", REPORT_MD, new)
    write(run_new / "report" / "images" / "roc.svg", SVG, new)
    write(run_new / "report" / "images" / "pr.png", PNG, new)
    write(run_new / "validate.2" / "report.md", REPORT_MD, new)
    write(run_new / "validate.2" / "images" / "roc.svg", SVG, new)
    write(run_new / "validate.2" / "validation.json", json.dumps({"valid": False}), new)
    write(run_new / "validate.2" / "failure_cases.parquet", b"PAR1-not-really", new)
    write(base / "secret_dag" / "manual__1" / "report" / "report.md", "# Secret\n", new)
    for folder, when in (
        (run_old / "report", old),
        (run_new / "report", new),
        (run_new / "validate.2", new),
        (base / "secret_dag" / "manual__1" / "report", new),
    ):
        complete(folder, when)
    write(run_new / "half_written" / "report.md", "# Not yet\n", new)  # no outcome.json yet: not a report
    return base


# ------------------------------------------------------------------------------------ pages


def test_the_index_lists_dags_runs_and_tasks_newest_run_first(reports):
    response = client_for("*").get("/reports")
    assert response.status_code == 200
    page = response.text
    assert "pr_validation" in page
    assert "secret_dag" in page
    assert page.index("scheduled__2026-01-01T00_00_00+00_00") < page.index("manual__2026-05-28T10_00_00+00_00")
    assert "href='/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/validate.2/'" in page
    assert "href='/reports/pr_validation/manual__2026-05-28T10_00_00+00_00/report/'" in page
    assert "2026-09-21 14:13 UTC" in page  # when the newest run was stored (1_790_000_000 s)
    assert client_for("*").get("/reports/").text == page


def test_the_index_shows_only_dags_the_user_may_read(reports):
    page = client_for("pr_validation").get("/reports").text
    assert "pr_validation" in page
    assert "secret_dag" not in page


def test_an_empty_or_missing_reports_dir_gives_an_empty_index(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "nothing-yet"))
    response = client_for("*").get("/reports")
    assert response.status_code == 200
    assert "No reports stored yet" in response.text
    (tmp_path / "nothing-yet").mkdir()
    assert "No reports stored yet" in client_for("*").get("/reports").text


def test_the_default_reports_dir_is_in_airflow_home(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AIRFLOW__MLCI__REPORTS_DIR", raising=False)
    write(tmp_path / "mlci-reports" / "d" / "r" / "t" / "report.md", "# Home\n")
    complete(tmp_path / "mlci-reports" / "d" / "r" / "t")
    assert "<h1>Home</h1>" in client_for("*").get("/reports/d/r/t/").text


def test_a_dag_page_and_a_run_page_list_their_reports(reports):
    client = client_for("*")
    dag_page = client.get("/reports/pr_validation/").text
    assert "manual__2026-05-28T10_00_00+00_00" in dag_page
    assert "scheduled__2026-01-01T00_00_00+00_00" in dag_page
    run_page = client.get("/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/").text
    assert "validate.2" in run_page
    assert "failure_cases.parquet" in run_page
    assert "half_written" not in run_page  # a report still being written is not shown
    assert client.get("/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/half_written/").status_code == 404
    assert client.get("/reports/no_such_dag/").status_code == 404


def test_report_html_is_served_as_stored(reports):
    response = client_for("*").get("/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert response.text == "<html><body><table><tr><td>new</td></tr></table></body></html>"
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp
    assert "script-src" not in csp  # so default-src 'none' forbids scripts
    assert response.headers["x-content-type-options"] == "nosniff"


def test_a_folder_without_html_shows_its_markdown_rendered_and_its_files(reports):
    response = client_for("*").get("/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/validate.2/")
    assert response.status_code == 200
    page = response.text
    assert "<table>" in page
    assert "<th>metric</th>" in page
    assert "<strong>0.93</strong>" in page
    assert '<img src="images/roc.svg" alt="ROC" />' in page
    assert "<li>first</li>" in page
    assert "<code>code</code>" in page
    assert "<script>" not in page
    assert "&lt;script&gt;" in page
    assert 'href="javascript:' not in page
    for name in ("images/roc.svg", "validation.json", "failure_cases.parquet", "report.md"):
        assert f"<a href='{name}'>{name}</a>" in page


def test_view_files_shows_the_folder_even_when_it_has_report_html(reports):
    page = client_for("*").get("/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/?view=files").text
    assert "<h1>Metrics</h1>" in page
    assert "<a href='report.html'>report.html</a>" in page
    assert "<a href='images/pr.png'>images/pr.png</a>" in page


def test_a_folder_link_without_the_slash_is_redirected(reports):
    response = client_for("*").get("/reports/pr_validation/manual__2026-05-28T10_00_00+00_00/report")
    assert response.status_code == 200
    assert str(response.url).endswith("/report/")
    assert "<h1>Old</h1>" in response.text


@pytest.mark.parametrize(
    ("path", "content_type", "data"),
    [
        ("report/images/roc.svg", "image/svg+xml", SVG),
        ("report/images/pr.png", "image/png", PNG),
        ("validate.2/validation.json", "application/json", b'{"valid": false}'),
        ("validate.2/report.md", "text/plain; charset=utf-8", REPORT_MD.encode()),
    ],
)
def test_files_are_served_with_their_content_type(reports, path, content_type, data):
    response = client_for("*").get(f"/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/{path}")
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.content == data
    assert "content-disposition" not in response.headers


def test_data_files_are_downloads(reports):
    url = "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/validate.2/failure_cases.parquet"
    response = client_for("*").get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/vnd.apache.parquet"
    assert response.headers["content-disposition"] == "attachment; filename*=UTF-8''failure_cases.parquet"


def test_a_large_file_is_streamed_whole(reports):
    data = os.urandom(9 * 1024 * 1024)
    write(reports / "big" / "r" / "t" / "images" / "huge.png", data)
    response = client_for("*").get("/reports/big/r/t/images/huge.png")
    assert response.status_code == 200
    assert response.content == data


def test_missing_files_and_folders_are_404(reports):
    client = client_for("*")
    base = "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00"
    assert client.get(f"{base}/report/images/nope.svg").status_code == 404
    assert client.get(f"{base}/report/images").status_code == 404  # a folder, not a file
    assert client.get(f"{base}/report/images/").status_code == 404
    assert client.get(f"{base}/nope/").status_code == 404


def test_reports_of_a_dag_the_user_may_not_read_are_refused(reports):
    client = client_for("pr_validation")
    assert client.get("/reports/secret_dag/manual__1/report/").status_code == 403
    assert client.get("/reports/secret_dag/manual__1/report/report.md").status_code == 403
    assert client.get("/reports/secret_dag/").status_code == 403
    assert client.get("/task-report/secret_dag/manual__1/report").status_code == 403


# ------------------------------------------------------------------------------------ traversal


def raw_get(app: Any, path: str) -> tuple[int, bytes]:
    """GET ``path`` exactly as given (an HTTP client would normalise ``..`` away), straight into the app."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    asyncio.run(app(scope, receive, send))
    status = next(m["status"] for m in sent if m["type"] == "http.response.start")
    return status, b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")


TRAVERSALS = [
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/../../../../secret.txt",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/images/../../../../../secret.txt",
    "/reports/../secret.txt/x/y/",
    "/reports/pr_validation/../../secret.txt/x/",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report//etc/passwd",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/.hidden",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/images/.",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/a\\..\\..\\secret.txt",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/file:/etc/passwd",
    "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/x\x00.svg",
    "/task-report/pr_validation/../../secret.txt",
]


@pytest.mark.parametrize("path", TRAVERSALS)
def test_paths_leading_out_of_the_folder_are_404(reports, path):
    write(reports.parent / "secret.txt", "top secret")
    status, body = raw_get(client_for("*").app, path)
    assert status == 404
    assert b"top secret" not in body


@pytest.mark.parametrize(
    "url",
    [
        "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/%2e%2e/%2e%2e/%2e%2e/%2e%2e/secret.txt",
        "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/..%2f..%2f..%2f..%2fsecret.txt",
        "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/%252e%252e/%252e%252e/secret.txt",
        "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/%2Fetc%2Fpasswd",
        "/reports/%2e%2e/%2e%2e/x/secret.txt",
    ],
)
def test_encoded_traversals_are_404(reports, url):
    write(reports.parent / "secret.txt", "top secret")
    response = client_for("*").get(url)
    assert response.status_code == 404
    assert "top secret" not in response.text


def test_a_symlink_out_of_the_reports_dir_is_not_followed(reports):
    outside = write(reports.parent / "secret.txt", "top secret")
    folder = reports / "pr_validation" / "scheduled__2026-01-01T00_00_00+00_00" / "report"
    (folder / "leak.txt").symlink_to(outside)
    (folder / "images" / "up").symlink_to(reports.parent, target_is_directory=True)
    client = client_for("*")
    for url in ("leak.txt", "images/up/secret.txt"):
        response = client.get(f"/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/{url}")
        assert response.status_code == 404
        assert "top secret" not in response.text


# ------------------------------------------------------------------------------------ task instance tab


def test_the_task_instance_tab_finds_the_folder_from_the_run_id_as_airflow_spells_it(reports):
    client = client_for("*")
    response = client.get(
        "/task-report/pr_validation/scheduled__2026-01-01T00:00:00+00:00/validate",
        params={"map_index": "2"},
        follow_redirects=False,
    )
    assert response.status_code == 302
    assert response.headers["location"] == "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/validate.2/"
    unmapped = client.get(
        "/task-report/pr_validation/manual__2026-05-28T10:00:00+00:00/report",
        params={"map_index": "{MAP_INDEX}"},  # what the UI leaves in place for a task that is not mapped
        follow_redirects=False,
    )
    assert unmapped.headers["location"] == "/reports/pr_validation/manual__2026-05-28T10_00_00+00_00/report/"
    for map_index in ("-1", ""):
        response = client.get(
            "/task-report/pr_validation/manual__2026-05-28T10:00:00+00:00/report",
            params={"map_index": map_index},
            follow_redirects=False,
        )
        assert response.status_code == 302


def test_the_task_instance_tab_says_when_there_is_no_report_and_where_the_run_s_reports_are(reports):
    response = client_for("*").get("/task-report/pr_validation/scheduled__2026-01-01T00:00:00+00:00/train")
    assert response.status_code == 200
    assert "The task train stored no report in this run" in response.text
    run = "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/"
    assert f"<li><a href='{run}report/'>report</a></li>" in response.text
    assert f"<li><a href='{run}validate.2/'>validate.2</a></li>" in response.text
    none = client_for("*").get("/task-report/pr_validation/manual__2099-01-01T00:00:00+00:00/train")
    assert none.status_code == 200
    assert "No task of this run stored a report (yet)." in none.text


# ------------------------------------------------------------------------------------ markdown


def test_markdown_is_rendered_safely():
    out = render_markdown(
        "## Title <img src=x onerror=alert(1)>\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n"
        '![plot](images/p.svg)\n\n```\n<b>code</b>\n```\n\n[x](javascript:alert(1)) [y](https://example.com/a "t")\n'
        "![d](data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=)\n"
    )
    assert "<h2>Title &lt;img src=x onerror=alert(1)&gt;</h2>" in out
    assert "<td>1</td>" in out
    assert '<img src="images/p.svg" alt="plot" />' in out
    assert "<pre><code>&lt;b&gt;code&lt;/b&gt;\n</code></pre>" in out
    assert "javascript:" not in out.replace("[x](javascript:alert(1))", "")
    assert '<a href="https://example.com/a" title="t">y</a>' in out
    assert "data:image/svg+xml" not in out.replace("![d](data:image/svg+xml;base64,PHN2Zz48L3N2Zz4=)", "")


# ------------------------------------------------------------------------------------ templates

XSS = "<script>alert('x')</script>"
ESCAPED = "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"


def test_the_page_templates_escape_every_name_they_show():
    # Names in URLs are checked before they reach a page; the templates escape them all the same.
    from airflow_provider_mlci.core.reports.templating import render
    from airflow_provider_mlci.plugins import reports as plugin

    packaged = Path(plugin.__file__).parent / "templates"
    crumbs = [(XSS, f"/reports/{XSS}/"), (XSS, None)]
    outcome = {"decision": XSS, "summary": XSS, "href": XSS, "version": XSS}
    run = {"name": XSS, "href": XSS, "stored": XSS, "tasks": [{"name": XSS, "href": XSS}], "outcome": outcome}
    link = {"label": XSS, "href": XSS, "outcome": XSS}
    metric = {"metric": XSS, "direction": XSS, "champion": XSS, "candidate": XSS, "delta": XSS}
    pages = {
        "index.html.j2": {
            "dags": [{"name": XSS, "href": XSS, "runs": [run], "total": 20, "more": True}],
            "models": XSS,
            "page": 1,
            "pages": 2,
            "dags_total": 30,
            "pager": {"newer": XSS, "older": XSS},
        },
        "dag.html.j2": {"runs": [run], "older": XSS},
        "run.html.j2": {
            "folders": [{"task": XSS, "href": XSS, "stored": None, "files": [XSS, XSS]}],
            "airflow_run": XSS,
            "run_id": XSS,
            "outcome": outcome,
            "record": {"metrics": [metric], "cost": {"total_usd": XSS}, "model": XSS},
            "model_href": XSS,
        },
        "no_report.html.j2": {"task": XSS, "run_href": XSS, "others": [{"name": XSS, "href": XSS}]},
        "models.html.j2": {"models": [{"name": XSS, "href": XSS, "newest": outcome}]},
        "model.html.j2": {
            "registry_problem": XSS,
            "stages": [{"stage": XSS, "version": XSS, "sha": XSS, "since": XSS, "run": link}],
            "versions": [
                {"version": XSS, "sha": XSS, "registered_at": XSS, "stages": [XSS], "run": link, "metrics": {XSS: XSS}}
            ],
            "events": [
                {
                    "time": XSS,
                    "action": XSS,
                    "stage": XSS,
                    "version": XSS,
                    "sha": XSS,
                    "tag": XSS,
                    "by": XSS,
                    "run": link,
                }
            ],
            "nights": [{**outcome, "night": XSS, "cost": XSS, "airflow_run": XSS, "dag_id": XSS, "run_id": XSS}],
            "chart": XSS,
        },
        "folder.html.j2": {
            "documents": [{"name": XSS, "html": None}],
            "files": [{"name": XSS, "href": XSS, "size": XSS}],
        },
        "message.html.j2": {"message": XSS},
    }
    for name, values in pages.items():
        page = render(name, packaged=packaged, title=XSS, crumbs=crumbs, **values)
        assert "<script" not in page, name
        assert "='x'" not in page, name  # nor can a quote end an attribute
        assert f"<title>{ESCAPED}</title>" in page, name
        assert f"<a href='/reports/{ESCAPED}/'>{ESCAPED}</a> / {ESCAPED}</nav>" in page, name
        assert page.count(ESCAPED) >= 5, name


def test_a_storage_error_is_shown_escaped(reports, monkeypatch):
    from airflow_provider_mlci.plugins import reports as plugin

    def broken(*args: Any, **kwargs: Any) -> None:
        raise OSError(XSS)

    monkeypatch.setattr(plugin.ReportStore, "open", broken)
    response = client_for("*").get("/reports")
    assert response.status_code == 503
    assert "<script" not in response.text
    assert f"<p>Cannot read the reports storage: {ESCAPED}</p>" in response.text


def test_templates_in_the_report_templates_folder_replace_the_packaged_pages(reports, tmp_path, monkeypatch):
    ours = tmp_path / "templates"
    ours.mkdir()
    (ours / "base.html.j2").write_text(
        "<!DOCTYPE html><title>{{ title }}</title><header class='ours'>"
        "{% for label, href in crumbs %}[{{ label }}]{% endfor %}</header>{% block content %}{% endblock %}\n"
    )
    (ours / "message.html.j2").write_text("<p class='ours'>{{ message }}</p>\n")
    client = client_for("*")
    page = client.get("/reports").text
    assert "<header class='ours'>" not in page  # not set: the packaged ones
    monkeypatch.setenv("AIRFLOW__MLCI__REPORT_TEMPLATES", str(ours))
    page = client.get("/reports").text
    assert page.startswith("<!DOCTYPE html><title>MLCI reports</title><header class='ours'>[Reports]</header>")
    assert "href='/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/validate.2/'" in page  # index.html.j2
    missing = client.get("/reports/no_such_dag/")
    assert missing.status_code == 404
    assert missing.text == "<p class='ours'>No reports stored for the Dag no_such_dag.</p>\n"


# ------------------------------------------------------------------------------------ S3


def test_an_s3_reports_dir_is_read_through_its_connection(monkeypatch, moto_endpoint, s3_bucket, aws_moto_connection):
    import boto3

    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    folder = "airflow/pr_validation/manual__1/report"
    s3.put_object(Bucket=s3_bucket, Key=f"{folder}/report.md", Body=REPORT_MD.encode())
    s3.put_object(Bucket=s3_bucket, Key=f"{folder}/images/roc.svg", Body=SVG)
    s3.put_object(Bucket=s3_bucket, Key=f"{folder}/outcome.json", Body=b'{"format": 1}')
    s3.put_object(Bucket=s3_bucket, Key="elsewhere/secret.txt", Body=b"top secret")
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", f"s3://{s3_bucket}/airflow")
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_CONN_ID", aws_moto_connection)
    client = client_for("*")
    assert "href='/reports/pr_validation/manual__1/report/'" in client.get("/reports").text
    page = client.get("/reports/pr_validation/manual__1/report/").text
    assert '<img src="images/roc.svg" alt="ROC" />' in page
    image = client.get("/reports/pr_validation/manual__1/report/images/roc.svg")
    assert image.headers["content-type"] == "image/svg+xml"
    assert image.content == SVG
    status, body = raw_get(client.app, "/reports/pr_validation/manual__1/report/../../../../elsewhere/secret.txt")
    assert status == 404
    assert b"top secret" not in body


# ------------------------------------------------------------------------------------ Airflow's login


@pytest.fixture
def airflow_login(reports, monkeypatch, airflow_db):
    """Airflow's SimpleAuthManager as the api-server sets it up, with a viewer; yields a token maker."""
    manager_class = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    monkeypatch.setenv("AIRFLOW__CORE__AUTH_MANAGER", manager_class)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS", "viewer:viewer")
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    monkeypatch.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "mlci-unit-test-secret-" + "0123456789abcdef" * 4)
    from airflow.api_fastapi import app as api_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    monkeypatch.setattr(api_app._AuthManagerState, "instance", None)  # put back afterwards
    manager = api_app.init_auth_manager()

    def token(role: str = "viewer") -> str:
        return manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role=role))

    return token


def test_airflow_login_is_required(airflow_login):
    client = TestClient(create_app())
    url = "/reports/pr_validation/scheduled__2026-01-01T00_00_00+00_00/report/images/roc.svg"
    assert client.get(url).status_code == 401
    browser = client.get("/reports", headers={"Accept": "text/html"}, follow_redirects=False)
    assert browser.status_code == 302
    assert browser.headers["location"].startswith("/auth/login?next=")
    assert client.get(url, headers={"Authorization": "Bearer not-a-token"}).status_code == 403
    image = client.get(url, headers={"Authorization": f"Bearer {airflow_login()}"})
    assert image.status_code == 200
    assert image.content == SVG
    client.cookies.set("_token", airflow_login())  # what the UI's login leaves in the browser
    assert "pr_validation" in client.get("/reports").text


# ------------------------------------------------------------------------------------ the plugin


def test_the_plugin_declares_the_app_and_the_views():
    from airflow.api_fastapi.core_api.datamodels.plugins import ExternalViewResponse
    from fastapi import FastAPI

    (entry,) = MlciReportsPlugin.fastapi_apps
    assert isinstance(entry["app"], FastAPI)
    assert entry["url_prefix"] == "/mlci"
    assert MlciReportsPlugin().fastapi_apps[0]["app"] is entry["app"]  # one app, however it is read
    views = {view["url_route"]: ExternalViewResponse(**view) for view in MlciReportsPlugin.external_views}
    assert views["mlci-reports"].href == "/mlci/reports"
    assert views["mlci-reports"].destination == "nav"
    assert views["mlci-task-report"].destination == "task_instance"
    assert views["mlci-run-outcome"].destination == "dag_run"
    assert views["mlci-run-outcome"].href == "/mlci/run-outcome/{DAG_ID}/{RUN_ID}"
    assert views["mlci-models"].href == "/mlci/models/"
    icon = TestClient(entry["app"]).get("/icon.svg")
    assert icon.headers["content-type"] == "image/svg+xml"


def test_airflow_finds_the_plugin_through_its_entry_point_only():
    import importlib.metadata

    from airflow_provider_mlci.get_provider_info import get_provider_info

    (point,) = [ep for ep in importlib.metadata.entry_points(group="airflow.plugins") if ep.name == "mlci_reports"]
    assert point.load() is MlciReportsPlugin
    # Not also in the provider info: with [core] lazy_discover_providers=False Airflow would load it
    # twice and report "already registered" as a plugin import error.
    assert "plugins" not in get_provider_info()


def test_importing_the_plugin_is_cheap():
    # Every task process loads the installed plugins: no web framework, renderer or data library then.
    loaded = modules_loaded_by(
        "from airflow_provider_mlci.plugins.reports import MlciReportsPlugin\n"
        "MlciReportsPlugin.validate(); MlciReportsPlugin.on_load(); MlciReportsPlugin.external_views"
    )
    heavy = ("fastapi", "starlette", "markdown_it", "pandas", "pyarrow", "dvc", "boto3", "botocore", "s3fs", "numpy")
    assert [m for m in loaded if m.split(".")[0] in heavy] == []
