"""ForgeHook against a stand-in for GitHub's REST API (tests/helpers/github_server.py), not GitHub.

No GitHub is reachable from the tests. The stand-in answers the endpoints the hook uses with
the shapes of GitHub's published REST description, checks the token and records requests; the
hook speaks to it through PyGithub, as it would to GitHub.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from airflow_provider_mlci import __version__
from airflow_provider_mlci.exceptions import (
    ConnectionNotFoundError,
    ForgeAuthError,
    ForgeError,
    ForgeNotFoundError,
    ForgeUnavailableError,
    MlciConfigError,
)
from airflow_provider_mlci.hooks.forge import (
    MAX_BODY_CHARS,
    CommentTarget,
    ForgeHook,
    check_state,
    compose_body,
    marker_for,
)
from tests.helpers.github_server import GitHubServer

REPO = "acme/fraud-model"
HEAD = "1f0a9c3b" * 5
COMMIT = "9e8d7c6b" * 5
#: Written out, not made by marker_for: test_the_marker_is_an_html_comment_naming_its_key checks that.
MARKER = "<!-- mlci-report: pr_validation -->"


@pytest.fixture
def token() -> str:
    return "ghp_" + secrets.token_hex(16)


@pytest.fixture
def github(token):
    """The stand-in for GitHub, with pull request #7 (head ``HEAD``) and commit ``COMMIT``."""
    with GitHubServer(token=token, read_only_tokens=("ghp_readonly_0123456789",)) as server:
        server.add_pull(REPO, 7, HEAD)
        server.add_commit(REPO, COMMIT)
        yield server


@pytest.fixture
def connection(monkeypatch, github, token):
    """Define a ``github`` connection; by default ``github_default`` on the stand-in with the good token."""

    def _define(conn_id: str = "github_default", **fields) -> str:
        value = {"conn_type": "github", "host": github.url, "password": token, **fields}
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(value))
        return conn_id

    _define()
    return _define


PR = CommentTarget.of(REPO, pr_number=7)
ON_COMMIT = CommentTarget.of(REPO, commit_sha=COMMIT)


def _writes(server: GitHubServer) -> list[tuple[str, str]]:
    return [(r.method, r.path) for r in server.requests if r.method != "GET"]


# ------------------------------------------------------------------------------------ comments


def test_the_first_post_creates_one_comment_that_starts_with_the_marker(github, connection, token):
    body, _ = compose_body("# Report\n\naccuracy 0.91", MARKER)
    result = ForgeHook().upsert_comment(PR, body, marker=MARKER)
    comments = github.comments(REPO, pr_number=7)
    assert len(comments) == 1
    assert comments[0]["body"] == "<!-- mlci-report: pr_validation -->\n# Report\n\naccuracy 0.91\n"
    assert result == {
        "comment_id": comments[0]["id"],
        "url": comments[0]["html_url"],
        "created": True,
        "changed": True,
    }
    assert _writes(github) == [("POST", f"/repos/{REPO}/issues/7/comments")]
    sent = github.requests[-1].headers
    assert sent["authorization"] == f"token {token}"  # PyGithub's scheme for a token
    assert sent["user-agent"] == f"airflow-provider-mlci/{__version__}"
    assert sent["x-github-api-version"] == "2022-11-28"
    assert all(token not in r.raw_target for r in github.requests)


def test_a_later_post_finds_its_comment_on_the_second_page_and_edits_it(github, connection):
    for index in range(120):
        github.add_comment(REPO, f"comment {index} by a reviewer", pr_number=7)
    github.add_comment(REPO, f"> {MARKER}\n> quoted by a reviewer: not ours", pr_number=7)
    hook = ForgeHook()
    first = hook.upsert_comment(PR, compose_body("first report", MARKER)[0], marker=MARKER)
    github.add_comment(REPO, "a later review comment", pr_number=7)
    github.requests.clear()

    second = hook.upsert_comment(PR, compose_body("second report", MARKER)[0], marker=MARKER)

    assert second["comment_id"] == first["comment_id"]
    assert second["created"] is False
    assert second["changed"] is True
    ours = [c for c in github.comments(REPO, pr_number=7) if c["body"].startswith(MARKER)]
    assert len(ours) == 1
    assert ours[0]["body"] == "<!-- mlci-report: pr_validation -->\nsecond report\n"
    assert len(github.comments(REPO, pr_number=7)) == 123
    pages = [r.query.get("page", "1") for r in github.requests if r.method == "GET"]
    assert pages == ["1", "2"]  # followed rel="next", stopped at the comment
    assert github.requests[0].query["per_page"] == "100"
    assert _writes(github) == [("PATCH", f"/repos/{REPO}/issues/comments/{first['comment_id']}")]


def test_an_unchanged_report_is_not_edited_again(github, connection):
    body = compose_body("same report", MARKER)[0]
    hook = ForgeHook()
    hook.upsert_comment(PR, body, marker=MARKER)
    github.requests.clear()
    result = hook.upsert_comment(PR, body, marker=MARKER)
    assert result["created"] is False
    assert result["changed"] is False
    assert _writes(github) == []


def test_two_markers_keep_two_comments(github, connection):
    hook = ForgeHook()
    other = marker_for("nightly")
    hook.upsert_comment(PR, compose_body("validation", MARKER)[0], marker=MARKER)
    hook.upsert_comment(PR, compose_body("nightly", other)[0], marker=other)
    hook.upsert_comment(PR, compose_body("validation again", MARKER)[0], marker=MARKER)
    bodies = [c["body"] for c in github.comments(REPO, pr_number=7)]
    assert bodies == [
        "<!-- mlci-report: pr_validation -->\nvalidation again\n",
        "<!-- mlci-report: nightly -->\nnightly\n",
    ]


def test_commit_comments_are_created_then_edited(github, connection):
    hook = ForgeHook()
    first = hook.upsert_comment(ON_COMMIT, compose_body("one", MARKER)[0], marker=MARKER)
    second = hook.upsert_comment(ON_COMMIT, compose_body("two", MARKER)[0], marker=MARKER)
    comments = github.comments(REPO, commit_sha=COMMIT)
    assert len(comments) == 1
    assert comments[0]["body"] == "<!-- mlci-report: pr_validation -->\ntwo\n"
    assert comments[0]["commit_id"] == COMMIT
    assert first["created"] is True
    assert second["created"] is False
    assert _writes(github) == [
        ("POST", f"/repos/{REPO}/commits/{COMMIT}/comments"),
        ("PATCH", f"/repos/{REPO}/comments/{first['comment_id']}"),
    ]
    assert github.comments(REPO, pr_number=7) == []


def test_github_enterprise_base_url_keeps_its_path(github, connection):
    connection(host=github.enterprise_url)
    ForgeHook().upsert_comment(PR, compose_body("ghe", MARKER)[0], marker=MARKER)
    assert {r.raw_target.split("?")[0] for r in github.requests} == {f"/api/v3/repos/{REPO}/issues/7/comments"}
    assert len(github.comments(REPO, pr_number=7)) == 1


# ------------------------------------------------------------------------------------ statuses


def test_a_status_on_a_pull_request_goes_on_its_head_commit(github, connection):
    result = ForgeHook().set_status(
        PR,
        "success",
        context="mlci/gate",
        description="Gate passed: " + "x" * 300,
        target_url="https://reports.example.com/run/report.html",
    )
    (status,) = github.statuses(REPO, HEAD)
    assert status["state"] == "success"
    assert status["context"] == "mlci/gate"
    assert len(status["description"]) == 140
    assert status["description"].endswith("…")
    assert status["target_url"] == "https://reports.example.com/run/report.html"
    assert result["sha"] == HEAD
    assert result["state"] == "success"
    assert [(r.method, r.path) for r in github.requests] == [
        ("GET", f"/repos/{REPO}/pulls/7"),
        ("POST", f"/repos/{REPO}/statuses/{HEAD}"),
    ]


def test_a_status_goes_on_the_commit_or_the_sha_given(github, connection):
    hook = ForgeHook()
    hook.set_status(ON_COMMIT, "failure", context="mlci/gate", description="Gate refused: accuracy -0.02")
    github.add_commit(REPO, "ab" * 20)
    hook.set_status(PR, "pending", context="mlci/validate", sha="ab" * 20)
    assert [s["state"] for s in github.statuses(REPO, COMMIT)] == ["failure"]
    assert [s["context"] for s in github.statuses(REPO, "ab" * 20)] == ["mlci/validate"]
    assert not any(r.path.endswith("/pulls/7") for r in github.requests)


def test_an_unknown_state_fails_before_any_request(github, connection):
    with pytest.raises(MlciConfigError, match=r"'passed'.*success, failure, pending, error"):
        ForgeHook().set_status(PR, "passed", context="mlci/gate")
    assert github.requests == []
    assert check_state(" Success ") == "success"


# ------------------------------------------------------------------------------------ errors


def test_a_refused_token_is_a_non_retryable_error_naming_the_repo(github, connection):
    connection(password="ghp_wrong_token_000000000000")
    with pytest.raises(ForgeAuthError) as caught:
        ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)
    assert caught.value.retryable is False
    assert str(caught.value) == (
        f"GitHub at {github.url} refused the token of connection 'github_default' for pull request #7 of "
        "acme/fraud-model (HTTP 401: Bad credentials): it is missing, invalid or expired."
    )


def test_a_read_only_token_is_told_what_permission_it_lacks(github, connection):
    connection(password="ghp_readonly_0123456789")
    with pytest.raises(ForgeAuthError, match=r"HTTP 403.*needs 'Pull requests: write'") as caught:
        ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)
    assert "acme/fraud-model" in str(caught.value)
    assert "ghp_readonly_0123456789" not in str(caught.value)


@pytest.mark.parametrize(
    ("target", "named"),
    [
        (CommentTarget.of(REPO, pr_number=99), "pull request #99 of acme/fraud-model"),
        (CommentTarget.of(REPO, commit_sha="d" * 40), "commit dddddddddddd of acme/fraud-model"),
        (CommentTarget.of("acme/no-such-repo", pr_number=7), "pull request #7 of acme/no-such-repo"),
    ],
)
def test_not_found_names_the_repo_and_the_pull_request_or_commit(github, connection, target, named):
    with pytest.raises(ForgeNotFoundError) as caught:
        ForgeHook().upsert_comment(target, compose_body("x", MARKER)[0], marker=MARKER)
    assert named in str(caught.value)
    assert caught.value.retryable is False


def test_a_server_error_is_retryable(github, connection):
    github.fail_next("GET", r"/issues/7/comments$", 502, message="Server Error", times=3)
    with pytest.raises(ForgeUnavailableError, match=r"HTTP 502: Server Error") as caught:
        ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)
    assert caught.value.retryable is True
    assert [r.method for r in github.requests] == ["GET"] * 3  # tried twice more within a second, nothing written
    # the task's retry succeeds
    assert ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)["created"] is True


def test_a_read_that_fails_once_is_tried_again_but_a_write_is_not(github, connection):
    github.fail_next("GET", r"/issues/7/comments$", 503, message="Service Unavailable")
    github.fail_next("POST", r"/issues/7/comments$", 502, message="Server Error")
    with pytest.raises(ForgeUnavailableError, match=r"HTTP 502"):
        ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)
    assert [r.method for r in github.requests] == ["GET", "GET", "POST"]  # a POST again could comment twice


def test_a_long_retry_after_is_not_slept_through(github, connection):
    github.fail_next("GET", r"/pulls/7$", 503, message="Service Unavailable", headers={"Retry-After": "3600"})
    with pytest.raises(ForgeUnavailableError, match=r"HTTP 503"):
        ForgeHook().set_status(PR, "success", context="mlci/gate")
    assert [r.path for r in github.requests] == [f"/repos/{REPO}/pulls/7"]
    github.fail_next("GET", r"/pulls/7$", 503, message="Service Unavailable", headers={"Retry-After": "1"})
    assert ForgeHook().set_status(PR, "success", context="mlci/gate")["sha"] == HEAD  # a short one is waited out


@pytest.mark.parametrize(
    ("status", "message", "headers", "wait"),
    [
        (403, "You have exceeded a secondary rate limit. Please wait a few minutes.", {"Retry-After": "60"}, "60 s"),
        (429, "Too Many Requests", {}, None),
        (403, "API rate limit exceeded for user ID 1.", {"X-RateLimit-Remaining": "0"}, None),
    ],
)
def test_rate_limits_are_retryable(github, connection, status, message, headers, wait):
    github.fail_next("POST", r"/issues/7/comments$", status, message=message, headers=headers)
    with pytest.raises(ForgeUnavailableError, match="limited our request rate") as caught:
        ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)
    assert caught.value.retryable is True
    if wait:
        assert f"wait {wait}" in str(caught.value)


def test_a_validation_error_is_not_retried(github, connection):
    with pytest.raises(ForgeError, match="body is too long") as caught:
        ForgeHook().create_comment(PR, "x" * (MAX_BODY_CHARS + 1))
    assert type(caught.value) is ForgeError
    assert not caught.value.retryable
    assert [r.method for r in github.requests] == ["POST"]


def test_an_unreachable_github_is_retryable(connection):
    connection("github_closed", host="http://127.0.0.1:9", password="ghp_closed_port_123456")
    with pytest.raises(ForgeUnavailableError, match=r"Cannot reach GitHub at http://127\.0\.0\.1:9") as caught:
        ForgeHook("github_closed").upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER)
    assert "ghp_closed_port" not in str(caught.value)


def test_the_token_is_in_no_error_and_no_log(github, connection, token, caplog, capfd, monkeypatch):
    import airflow.sdk.log

    masked = []
    mask_secret = airflow.sdk.log.mask_secret
    monkeypatch.setattr(
        airflow.sdk.log, "mask_secret", lambda secret, *a, **k: masked.append(secret) or mask_secret(secret, *a, **k)
    )
    caplog.set_level(logging.DEBUG)
    # GitHub never echoes a token, but if an error did, it must not reach the message.
    github.fail_next("GET", r"/comments$", 500, message=f"token {token} rejected by upstream")
    github.fail_next("GET", r"/pulls/7$", 404, message="Not Found")
    github.fail_next("POST", r"/statuses/", 403, message="Resource not accessible by integration")
    raised = []
    for call in (
        lambda: ForgeHook().upsert_comment(PR, compose_body("x", MARKER)[0], marker=MARKER),
        lambda: ForgeHook().set_status(PR, "success", context="mlci/gate"),
        lambda: ForgeHook().set_status(ON_COMMIT, "success", context="mlci/gate"),
    ):
        with pytest.raises(ForgeError) as caught:
            call()
        raised.append(caught.value)
    ForgeHook().upsert_comment(PR, compose_body("ok", MARKER)[0], marker=MARKER)
    assert "token *** rejected" in str(raised[0])
    text = "\n".join([f"{e!s} {e!r} {e.__cause__!r}" for e in raised] + [caplog.text, *capfd.readouterr()])
    assert token not in text
    assert "Added the report comment on pull request #7 of acme/fraud-model" in text  # the log was captured
    assert set(masked) == {token}  # registered with Airflow's masker, which redacts task logs


@pytest.mark.parametrize(
    "next_url",
    [
        "https://elsewhere.example.net/repos/acme/fraud-model/issues/7/comments?page=2",
        "https://{here}/repos/acme/fraud-model/issues/7/comments?page=2",  # same host, another scheme
        "http://127.0.0.1:9/repos/acme/fraud-model/issues/7/comments?page=2",  # same host, another port
    ],
)
def test_a_next_page_on_another_host_is_not_followed(connection, next_url):
    """PyGithub follows ``Link`` headers; the hook refuses a next page off the API's scheme, host and port."""
    seen = []

    class Answer(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            seen.append((self.path, self.headers.get("Authorization")))
            data = json.dumps([{"id": 1, "body": "hello"}]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Link", f'<{next_url.format(here=here)}>; rel="next"')
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Answer)
    here = f"127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        connection("github_linking", host=f"http://{here}/api/v3", password="ghp_links_0123456789")
        with pytest.raises(ForgeError, match=r"a page of comments of pull request #7.* on another host") as caught:
            ForgeHook("github_linking").find_comment(PR, MARKER)
    finally:
        server.shutdown()
        server.server_close()
    assert seen == [("/api/v3/repos/acme/fraud-model/issues/7/comments?per_page=100", "token ghp_links_0123456789")]
    assert "ghp_links" not in str(caught.value)


# ------------------------------------------------------------------------------------ the connection


def test_a_missing_connection_is_named(connection):
    with pytest.raises(ConnectionNotFoundError, match="'github_absent'"):
        ForgeHook("github_absent").get_credentials()


def test_a_connection_without_token_or_app_is_refused(connection):
    connection("github_empty", password="")
    with pytest.raises(MlciConfigError, match="'github_empty' has no token"):
        ForgeHook("github_empty").get_credentials()


def test_the_default_host_is_github_com(connection, token):
    connection(host="")
    assert ForgeHook().get_credentials() == ("https://api.github.com", token)
    connection(host="ghe.example.com/api/v3/")
    assert ForgeHook().get_credentials()[0] == "https://ghe.example.com/api/v3"


def test_test_connection_reports_the_token_accepted_or_not(github, connection):
    assert ForgeHook().test_connection() == (True, f"GitHub at {github.url} accepted the token.")
    connection(password="ghp_wrong_token_000000000000")
    ok, message = ForgeHook().test_connection()
    assert not ok
    assert "HTTP 401" in message
    assert "ghp_wrong" not in message


def test_a_github_app_connection_gets_an_installation_token(monkeypatch, token):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private_pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    public_pem = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    with GitHubServer(token=token, app=(4242, 77, public_pem)) as server:
        server.add_pull(REPO, 7, HEAD)
        extra = {"app_id": "4242", "installation_id": 77, "private_key": private_pem}
        value = {"conn_type": "github", "host": server.url, "extra": extra}
        monkeypatch.setenv("AIRFLOW_CONN_GITHUB_APP", json.dumps(value))
        ForgeHook("github_app").upsert_comment(PR, compose_body("from the app", MARKER)[0], marker=MARKER)
        (comment,) = server.comments(REPO, pr_number=7)
        assert comment["user"]["login"] == "app-4242[bot]"
        assert comment["user"]["type"] == "Bot"

        value["extra"] = {**extra, "installation_id": 78}
        monkeypatch.setenv("AIRFLOW_CONN_GITHUB_APP", json.dumps(value))
        with pytest.raises(ForgeNotFoundError, match="installation 78 of app 4242"):
            ForgeHook("github_app").get_credentials()


# ------------------------------------------------------------------------------------ arguments and body


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"repo": "acme", "pr_number": 1}, "'acme' is not a GitHub repository 'owner/name'"),
        ({"repo": "https://github.com/acme/x", "pr_number": 1}, "not a URL"),
        ({"repo": "acme/x/y", "pr_number": 1}, "'owner/name'"),
        ({"repo": "acme/x", "pr_number": "12a"}, "pr_number='12a' is not a pull request number"),
        ({"repo": "acme/x", "pr_number": 0}, "pr_number=0"),
        ({"repo": "acme/x", "pr_number": True}, "pr_number=True"),
        ({"repo": "acme/x"}, "exactly one of pr_number and commit_sha"),
        ({"repo": "acme/x", "pr_number": 1, "commit_sha": COMMIT}, "exactly one of pr_number and commit_sha"),
        ({"repo": "acme/x", "commit_sha": "main"}, "commit_sha='main' is not a commit id"),
    ],
)
def test_bad_targets_are_refused_naming_the_argument(kwargs, message):
    with pytest.raises(MlciConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        CommentTarget.of(**kwargs)


def test_targets_accept_numbers_as_text_and_short_commits():
    assert CommentTarget.of("acme/x", pr_number=" 12 ").pr_number == 12
    assert CommentTarget.of("acme/x", commit_sha="ABCDEF1").commit_sha == "abcdef1"
    assert str(CommentTarget.of("acme/x.y_z", pr_number=3)) == "pull request #3 of acme/x.y_z"


def test_the_marker_is_an_html_comment_naming_its_key():
    assert marker_for("pr_validation") == MARKER
    assert marker_for("  Nightly refine@prod #2 ") == "<!-- mlci-report: Nightly refine@prod #2 -->"


@pytest.mark.parametrize("key", ["", "a-->b", "x<y", "two\nlines", "k" * 201, None])
def test_a_marker_that_could_break_out_of_its_html_comment_is_refused(key):
    with pytest.raises(MlciConfigError, match="marker="):
        marker_for(key)


def test_a_short_body_is_the_marker_then_the_markdown_with_no_second_marker():
    body, cut = compose_body(f"# Title\n{MARKER}\n![plot](https://r.example.com/images/roc.svg)", MARKER)
    assert not cut
    assert body == "<!-- mlci-report: pr_validation -->\n# Title\n![plot](https://r.example.com/images/roc.svg)\n"


def test_a_long_body_is_cut_at_a_line_with_its_code_block_closed_and_a_link():
    lines = ["# Report", "```text"] + [f"row {i:06d} " + "x" * 80 for i in range(2000)] + ["```", "end"]
    body, cut = compose_body("\n".join(lines), MARKER, full_report="https://r.example.com/run/report.html")
    assert cut
    assert len(body) <= MAX_BODY_CHARS
    assert body.startswith(MARKER + "\n# Report\n```text\n")
    kept = body.split("\n```\n\n---\n")[0].splitlines()[3:]
    assert kept
    assert all(line in lines for line in kept)
    assert body.count("```") == 2  # the fence left open was closed
    assert f"of {len(lines)} lines shown" in body
    assert "[Read the full report](https://r.example.com/run/report.html)" in body
    assert not compose_body("\n".join(lines), MARKER, limit=len(body) + 10_000_000)[1]


def test_a_cut_inside_details_closes_it_and_names_a_stored_report():
    lines = ["<details><summary>All rows</summary>", ""] + ["| a | b |"] * 8000 + ["</details>"]
    body, cut = compose_body("\n".join(lines), MARKER, full_report="s3://bucket/reports/run")
    assert cut
    assert len(body) <= MAX_BODY_CHARS
    assert body.count("<details>") == body.count("</details>") == 1
    assert "The full report is at `s3://bucket/reports/run`." in body
