"""The report store on a local folder and on S3 (the moto server): layout, atomic writes,
paged listing, retention, bad names."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path

import pytest

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.report_store import (
    OUTCOME_FILE,
    ReportKey,
    ReportStore,
    safe_run,
    storage_uri,
    valid_name,
)


def key(run_id: str = "manual__2026-12-01T10:00:00+00:00", task_id: str = "report", map_index: int = -1):
    return ReportKey(dag_id="nightly", run_id=run_id, task_id=task_id, map_index=map_index)


class Breaks(Mapping):
    """Files whose third one cannot be read: the write fails half way."""

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = files

    def __getitem__(self, name: str) -> bytes:
        return self.files[name]

    def __len__(self) -> int:
        return len(self.files)

    def __iter__(self) -> Iterator[str]:
        for index, name in enumerate(self.files):
            if index == 2:
                raise OSError("the disk went away")
            yield name

    def items(self):
        return [(name, self.files[name]) for name in self]


@pytest.fixture(params=["local", "s3"])
def store(request, tmp_path) -> ReportStore:
    if request.param == "local":
        return ReportStore.open(str(tmp_path / "reports"))
    moto = request.getfixturevalue("moto_endpoint")
    assert moto
    bucket = request.getfixturevalue("s3_bucket")
    conn_id = request.getfixturevalue("aws_moto_connection")
    return ReportStore.open(f"s3://{bucket}/reports", conn_id)


def listing(store: ReportStore, k: ReportKey) -> set[str]:
    (folder,) = store.folders(k.dag_id, k.run, k.task)
    return set(folder.files)


def test_a_report_lands_in_the_documented_layout_with_its_outcome(store):
    k = key(map_index=3)
    uri = store.write(k, {"report.md": b"# R\n", "images/roc.svg": b"<svg/>"}, {"valid": True, "loss": float("nan")})
    assert uri.endswith("/nightly/manual__2026-12-01T10_00_00+00_00/report.3")
    assert "@" not in uri  # no connection id in the URL
    assert listing(store, k) == {"report.md", "images/roc.svg", OUTCOME_FILE}
    outcome = store.outcome(k)
    assert outcome["outcome"] == {"valid": True, "loss": None}  # strict JSON
    assert (outcome["dag_id"], outcome["run_id"], outcome["task_id"], outcome["map_index"]) == (
        "nightly",
        k.run_id,
        "report",
        3,
    )
    assert outcome["files"] == ["images/roc.svg", "report.md"]
    assert store.path(*k.parts, "images", "roc.svg").read_bytes() == b"<svg/>"


def test_a_second_write_replaces_the_report_whole(store):
    k = key()
    store.write(k, {"report.md": b"first", "images/old.svg": b"<svg/>"}, {"try": 1})
    store.write(k, {"report.md": b"second", "validation.json": b"{}"}, {"try": 2})
    assert listing(store, k) == {"report.md", "validation.json", OUTCOME_FILE}  # nothing of the first try left
    assert store.path(*k.parts, "report.md").read_bytes() == b"second"
    assert store.outcome(k)["outcome"] == {"try": 2}


def test_a_write_that_fails_half_way_leaves_no_half_report(store):
    k, other = key(), key(task_id="gate")
    store.write(k, {"report.md": b"good"}, {"try": 1})
    with pytest.raises(OSError, match="the disk went away"):
        store.write(other, Breaks({"a.md": b"a", "b.md": b"b", "c.md": b"c"}), {})
    assert store.outcome(other) is None
    assert [f.task for f in store.folders("nightly")] == ["report"]  # the half-written one is not listed
    if store.local:  # a failed replace keeps the whole previous report; no staging folder is left
        with pytest.raises(OSError, match="the disk went away"):
            store.write(k, Breaks({"a.md": b"a", "b.md": b"b", "c.md": b"c"}), {})
        assert store.path(*k.parts, "report.md").read_bytes() == b"good"
        assert listing(store, k) == {"report.md", OUTCOME_FILE}
        run = Path(store.path(k.dag_id, k.run).path)
        assert sorted(p.name for p in run.iterdir()) == ["gate", "report"] or sorted(p.name for p in run.iterdir()) == [
            "report"
        ]
        assert not [p for p in run.iterdir() if p.name.startswith(".")]


def test_runs_are_listed_a_page_at_a_time_newest_first(store):
    for day in range(1, 8):
        store.write(key(f"scheduled__2026-11-0{day}T00:00:00+00:00"), {"report.md": b"x"}, {"day": day})
    page = store.runs("nightly", limit=3)
    assert page.total == 7
    assert [run for run, _ in page.runs] == [safe_run(f"scheduled__2026-11-0{d}T00:00:00+00:00") for d in (7, 6, 5)]
    assert [f.task for f in page.runs[0][1]] == ["report"]
    older = store.runs("nightly", limit=3, offset=6)
    assert [run for run, _ in older.runs] == [safe_run("scheduled__2026-11-01T00:00:00+00:00")]
    assert store.dags() == ["nightly"]
    assert store.runs("no_such_dag").runs == []


def test_retention_removes_whole_runs_beyond_the_newest_or_before_a_date(store):
    for day in range(1, 6):
        store.write(key(f"scheduled__2026-11-0{day}T00:00:00+00:00"), {"report.md": b"x"}, {})
    would = store.prune(keep_runs=3, dry_run=True)
    assert sorted(would) == [f"nightly/{safe_run(f'scheduled__2026-11-0{d}T00:00:00+00:00')}" for d in (1, 2)]
    assert store.runs("nightly").total == 5  # a dry run removes nothing
    assert store.prune(keep_runs=3) == would
    assert store.runs("nightly").total == 3
    gone = store.prune(older_than=datetime(2026, 11, 4, tzinfo=UTC))
    assert gone == [f"nightly/{safe_run('scheduled__2026-11-03T00:00:00+00:00')}"]
    assert [run for run, _ in store.runs("nightly").runs] == [
        safe_run(f"scheduled__2026-11-0{d}T00:00:00+00:00") for d in (5, 4)
    ]


@pytest.mark.parametrize("name", ["../x.md", "/etc/passwd", ".hidden", "a//b", "", OUTCOME_FILE, "x\n.md"])
def test_a_file_name_that_is_not_a_plain_path_is_refused_naming_it(tmp_path, name):
    store = ReportStore.open(str(tmp_path))
    with pytest.raises(MlciConfigError, match="cannot be a file of a report"):
        store.write(key(), {name: b"x"}, {})
    assert not any(tmp_path.rglob("*"))


def test_names_and_runs():
    assert safe_run("manual__2026-12-01T10:00:00+00:00") == "manual__2026-12-01T10_00_00+00_00"
    assert safe_run(safe_run("a:b/c")) == safe_run("a:b/c")
    assert valid_name("sweep.trial.3", "manual__1")
    assert not any(valid_name(name) for name in ("..", ".git", "a/b", ""))
    with pytest.raises(MlciConfigError):
        ReportStore.open("/tmp").path("..", "x")


def test_the_store_follows_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "configured"))
    store = ReportStore.open()
    store.write(key(), {"report.md": b"x"}, {})
    assert json.loads((tmp_path / "configured" / "nightly" / key().run / "report" / OUTCOME_FILE).read_text())


def test_the_connection_id_does_not_reach_the_stored_uri(tmp_path):
    from airflow.sdk import ObjectStoragePath

    s3 = ObjectStoragePath("s3://reports-bucket/mlci", conn_id="aws_reports") / "dag" / "run" / "task"
    assert str(s3).startswith("s3://aws_reports@")
    assert storage_uri(s3) == "s3://reports-bucket/mlci/dag/run/task"
    local = ObjectStoragePath(f"file://{tmp_path}") / "dag"
    assert storage_uri(local) == f"file://{tmp_path}/dag"


# ------------------------------------------------------------------------------ retention of whole reports


def _next_second() -> datetime:
    """Wait for the next whole second and return it: what is written before is older, what after is not
    (object storage keeps the time of a write to the second)."""
    import math
    import time

    boundary = math.floor(time.time()) + 1
    time.sleep(max(0.0, boundary - time.time()) + 0.02)
    return datetime.fromtimestamp(boundary, UTC)


def _age(store: ReportStore, k: ReportKey, days: int) -> None:
    """Make a local run's folder and files look ``days`` old."""
    import os
    import time

    when = time.time() - days * 86400
    run = Path(store.path(k.dag_id, k.run).path)
    for path in [*run.rglob("*"), run]:
        os.utime(path, (when, when))


def test_old_reports_are_emptied_but_each_task_keeps_its_outcome(store):
    old, new = key("scheduled__2026-11-01T00:00:00+00:00"), key("scheduled__2026-11-02T00:00:00+00:00")
    gate = key(old.run_id, task_id="gate")
    store.write(old, {"report.md": b"# old\n", "images/roc.svg": b"<svg/>"}, {"valid": False})
    store.write(gate, {"decision.md": b"keep the deployed model"}, {"promote": False})
    cutoff = _next_second()
    store.write(new, {"report.md": b"# new\n"}, {"valid": True})

    assert store.expire(older_than=cutoff) == [f"nightly/{old.run}"]
    assert listing(store, old) == {OUTCOME_FILE}
    assert listing(store, gate) == {OUTCOME_FILE}
    record = store.outcome(old)
    assert record["outcome"] == {"valid": False}  # what the task decided is kept
    assert (record["run_id"], record["task_id"], record["files"]) == (old.run_id, "report", [])
    assert record["expired"]["files"] == ["images/roc.svg", "report.md"]
    assert store.outcome(gate)["outcome"] == {"promote": False}
    assert listing(store, new) == {"report.md", OUTCOME_FILE}  # written after the cutoff: whole
    assert store.runs("nightly").total == 2  # both runs' records are still listed
    assert store.expire(older_than=cutoff) == []  # an emptied run is not looked at again


def test_a_report_write_applies_the_retention_setting_at_most_once_an_hour(tmp_path, monkeypatch):
    from airflow_provider_mlci.report_store import store_task_report
    from tests.helpers.task_instance import TaskInstanceStandIn

    base = str(tmp_path / "reports")
    store = ReportStore.open(base)
    first, second = key("scheduled__2026-09-01T00:00:00+00:00"), key("scheduled__2026-09-02T00:00:00+00:00")
    store.write(first, {"report.md": b"old", "images/a.svg": b"<svg/>"}, {"valid": True})
    _age(store, first, days=31)
    monkeypatch.setenv("AIRFLOW__MLCI__REPORT_RETENTION_DAYS", "30")
    ti = TaskInstanceStandIn("report", dag_id="nightly", run_id="manual__2026-12-04T10:00:00+00:00")
    store_task_report({"ti": ti}, {"report.md": b"today"}, {"valid": True}, base=base)
    assert listing(store, first) == {OUTCOME_FILE}
    assert store.outcome(first)["outcome"] == {"valid": True}

    store.write(second, {"report.md": b"old too"}, {"valid": True})
    _age(store, second, days=31)
    store_task_report({"ti": ti}, {"report.md": b"today, again"}, {"valid": True}, base=base)
    assert listing(store, second) == {"report.md", OUTCOME_FILE}  # within the hour: no second pass

    forever = ReportStore.open(str(tmp_path / "kept"))
    forever.write(first, {"report.md": b"old"}, {"valid": True})
    _age(forever, first, days=3650)
    monkeypatch.setenv("AIRFLOW__MLCI__REPORT_RETENTION_DAYS", "0")
    store_task_report({"ti": ti}, {"report.md": b"today"}, {"valid": True}, base=str(tmp_path / "kept"))
    assert listing(forever, first) == {"report.md", OUTCOME_FILE}  # 0 keeps reports forever
