"""The report store: where tasks keep their reports, in what layout, and how they are written.

The store's root is ``[mlci] reports_dir`` (a local folder, or any object storage URL Airflow's
``ObjectStoragePath`` reads, such as ``s3://bucket/prefix`` through ``[mlci] reports_conn_id``;
default ``$AIRFLOW_HOME/mlci-reports``). Under it, one folder per task instance that stored a
report::

    <root>/<dag_id>/<run>/<task>/
        outcome.json            written last: what the task decided, the files of the report
        report.md  report.html  images/*.svg      (metrics reports, leaderboards)
        validation.json  failure_cases.parquet    (data validation)
        verdict.md  decision.md  ...              (model checks, gates)

A run that judged a model also leaves a **run record** (see
:mod:`airflow_provider_mlci.core.model.history`): in its last task's folder as ``run-outcome.json``
(what the run view and the index show), and, per model, in a hidden folder the model page and the
trend read without listing any run::

    <root>/.models/<model>/<night>@<dag_id>@<run>.json     (@ is in no Dag id nor run folder name)

``<run>`` is the run id with every character outside ``[A-Za-z0-9._+-]`` as ``_``
(``manual__2026-12-04T15_03_26+00_00``); ``<task>`` is the task id, with ``.<map index>`` for a
mapped task instance (``sweep.trial.3``). ``outcome.json`` holds ``{"format": 1, "dag_id",
"run_id", "task_id", "map_index", "written_at", "files": [...], "outcome": {...}}``: ``outcome``
is the task's own small summary (valid or not, the gate's decision, the metrics that changed).

**Writing is atomic**: a reader never sees half a report. In a local folder the report is
written into a hidden sibling folder and renamed into place (a retry's report replaces the
first one in one rename; between the two renames the folder is briefly absent, never mixed).
On object storage, where there is no rename, every file goes to its final key and
``outcome.json`` last; readers (:meth:`ReportStore.runs`, :meth:`ReportStore.report`, the UI
plugin) count a folder as a report only once its ``outcome.json`` is there, and a replaced
report's files that the new one no longer has are removed after. Hidden names (``.partial``
folders) are never listed.

**Listing is paged**: :meth:`ReportStore.runs` lists one Dag's folder one level deep (no walk
of the store), orders runs newest first (by when each run's folder was last written where the
storage keeps that, as a local folder does; on object storage, by the time in the run id) and
reads only the page asked for.

**Retention**: a report is kept whole for ``[mlci] report_retention_days`` (default 90; 0 keeps
reports forever). After that :meth:`ReportStore.expire` removes its files but keeps each task's
``outcome.json``, which then says ``"files": []`` and ``"expired": {"at", "files"}`` (what was
there): the record of what every run decided stays. It runs when a task writes a report
(:func:`store_task_report`), at most once an hour per process and store, and empties at most
:data:`RETENTION_BATCH` runs a pass: it lists the Dags and each Dag's runs one level deep, reads
one small index per Dag (``<dag>/.expired.json``: the runs already emptied, never listed as a
run), and looks inside only the runs that are old and not emptied yet. A run's age is when its
folder was last written where the storage says (a local folder), else the time in its run id;
before a run is emptied, its files' own times are checked, so a backfill's report (an old run id,
written today) is kept. :meth:`ReportStore.prune` removes whole runs (records included) beyond
the newest N of a Dag or older than a date, when asked.

Importing this module is cheap: ``ObjectStoragePath`` and storage backends load when a store
is opened.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "MODELS_DIR",
    "OUTCOME_FILE",
    "RETENTION_BATCH",
    "RETENTION_INTERVAL_S",
    "RUN_OUTCOME_FILE",
    "ReportFolder",
    "ReportKey",
    "ReportStore",
    "RunPage",
    "apply_retention",
    "read_markdown",
    "safe_run",
    "store_task_report",
    "valid_name",
]

#: The file that makes a folder a report, written last.
OUTCOME_FILE = "outcome.json"
#: The run record in the folder of the task that wrote it: what the run came to.
RUN_OUTCOME_FILE = "run-outcome.json"
#: The per-model copies of run records (a hidden name: never listed as a Dag).
MODELS_DIR = ".models"
#: The version of ``outcome.json``'s fields.
OUTCOME_FORMAT = 1
#: One name in a report path: no separators, no leading dot, nothing that needs quoting in a shell.
_NAME = re.compile(r"[\w+=@,~ -][\w.+=@,~ -]*")
#: How often one process applies ``[mlci] report_retention_days`` to one store, at most (seconds).
RETENTION_INTERVAL_S = 3600.0
#: How many runs one retention pass empties at most; the rest wait for the next pass.
RETENTION_BATCH = 50
#: Per Dag: the runs whose reports retention emptied (a hidden name: never listed as a run).
_EXPIRED_INDEX = ".expired.json"
_retention_lock = threading.Lock()
#: When this process last applied retention to each store (by the store's URL; monotonic seconds).
_retention_done: dict[str, float] = {}
log = logging.getLogger(__name__)
#: The time in an Airflow run id (``manual__2026-12-04T15:03:26.9+00:00``), in its stored form too.
_RUN_TIME = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2})[:_](\d{2})[:_](\d{2})(\.\d+)?")


def valid_name(*names: str) -> bool:
    """Whether every one of ``names`` may be a part of a report path (not empty, ``.``/``..``,
    hidden, or holding a separator or a character outside ``[\\w.+=@,~ -]``).

    :param names: path parts
    """
    return all(isinstance(name, str) and _NAME.fullmatch(name) for name in names)


def safe_run(run_id: str) -> str:
    """A run id as its folder is named (idempotent on such names).

    :param run_id: the run id as Airflow spells it
    """
    return "".join(c if c.isalnum() or c in "-_.+" else "_" for c in str(run_id))


@dataclass(frozen=True, kw_only=True)
class ReportKey:
    """Which task instance a report belongs to.

    :param dag_id: the Dag
    :param run_id: the run, as Airflow spells it
    :param task_id: the task
    :param map_index: the map index of a mapped task instance (``-1``: not mapped)
    """

    dag_id: str
    run_id: str
    task_id: str
    map_index: int = -1

    @classmethod
    def of(cls, ti: Any) -> ReportKey:
        """The key of a task instance (anything with ``dag_id``, ``run_id``, ``task_id``, ``map_index``).

        :param ti: the task instance
        """
        index = getattr(ti, "map_index", -1)
        return cls(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, map_index=-1 if index is None else index)

    @property
    def run(self) -> str:
        """The run's folder name."""
        return safe_run(self.run_id)

    @property
    def task(self) -> str:
        """The task instance's folder name."""
        return self.task_id if self.map_index in (None, -1) else f"{self.task_id}.{self.map_index}"

    @property
    def parts(self) -> tuple[str, str, str]:
        """``(dag_id, run, task)``: the folder under the store's root."""
        return (self.dag_id, self.run, self.task)


@dataclass(kw_only=True)
class ReportFolder:
    """One task instance's report as found in the store.

    :param dag_id: the Dag
    :param run: the run's folder name
    :param task: the task instance's folder name
    :param files: path inside the folder -> size in bytes
    :param newest: when its newest file was written (POSIX seconds; 0 if the storage does not say)
    :param complete: whether its ``outcome.json`` is there (a report still being written has none)
    """

    dag_id: str
    run: str
    task: str
    files: dict[str, int] = field(default_factory=dict)
    newest: float = 0.0
    complete: bool = False


@dataclass(kw_only=True)
class RunPage:
    """One page of a Dag's runs, newest first.

    :param dag_id: the Dag
    :param runs: ``(run, its report folders)`` on this page
    :param total: how many runs the Dag has in the store
    :param offset: where this page starts
    """

    dag_id: str
    runs: list[tuple[str, list[ReportFolder]]]
    total: int
    offset: int


class ReportStore:
    """The reports under one root (see the module's docs for the layout).

    :param root: an ``airflow.sdk.ObjectStoragePath`` (or a ``upath.UPath``) of the store's root
    """

    def __init__(self, root: Any) -> None:
        self.root = root

    @classmethod
    def open(cls, base: str | None = None, conn_id: str | None = None) -> ReportStore:
        """The store at ``base`` (default: ``[mlci] reports_dir``), read and written with ``conn_id``
        (default: ``[mlci] reports_conn_id``).

        :param base: a local folder or an object storage URL
        :param conn_id: the connection to reach it with
        """
        from airflow.sdk import ObjectStoragePath

        from airflow_provider_mlci import settings

        default_base, default_conn = settings.reports_location()
        base = base or default_base
        url = base if "://" in base else f"file://{os.path.abspath(base)}"
        return cls(ObjectStoragePath(url, conn_id=conn_id or default_conn))

    # ------------------------------------------------------------------------------ where

    @property
    def local(self) -> bool:
        """Whether the store is a folder on this machine."""
        return (getattr(self.root, "protocol", "") or "file") in ("file", "local")

    def path(self, *names: str) -> Any:
        """The storage path of ``names`` under the root.

        :param names: path parts, each checked with :func:`valid_name`
        :raises MlciConfigError: a part is not a valid name
        """
        if not valid_name(*names):
            from airflow_provider_mlci.exceptions import MlciConfigError

            raise MlciConfigError(f"{'/'.join(names)!r} is not a path in the report store")
        path = self.root
        for name in names:
            path = path / name
        return path

    def folder(self, key: ReportKey) -> Any:
        """The storage path of one task instance's report folder.

        :param key: the task instance
        """
        return self.path(*key.parts)

    def uri(self, key: ReportKey) -> str:
        """The URL of one task instance's report folder, without any connection id.

        :param key: the task instance
        """
        return storage_uri(self.folder(key))

    # ------------------------------------------------------------------------------ writing

    def write(
        self, key: ReportKey, files: Mapping[str, bytes | str | os.PathLike[str]], outcome: Mapping[str, Any]
    ) -> str:
        """Store a report atomically (see the module's docs); return its folder's URL.

        :param key: the task instance it belongs to
        :param files: name inside the folder (``images/roc.svg``) -> its bytes, or a local file to copy
        :param outcome: the task's small summary, kept in ``outcome.json``
        :raises MlciConfigError: a name is not valid, or is ``outcome.json``
        """
        from airflow_provider_mlci.core.dvc.ops import json_safe
        from airflow_provider_mlci.exceptions import MlciConfigError

        for name in files:
            if name == OUTCOME_FILE or not valid_name(*name.split("/")):
                raise MlciConfigError(f"{name!r} cannot be a file of a report (key {'/'.join(key.parts)})")
        record = {
            "format": OUTCOME_FORMAT,
            "dag_id": key.dag_id,
            "run_id": key.run_id,
            "task_id": key.task_id,
            "map_index": key.map_index,
            "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "files": sorted(files),
            "outcome": json_safe(dict(outcome)),
        }
        body = (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
        if self.local:
            self._write_local(key, files, body)
        else:
            self._write_objects(key, files, body)
        return self.uri(key)

    def _write_local(self, key: ReportKey, files: Mapping[str, Any], body: bytes) -> None:
        parent = self.path(key.dag_id, key.run).path
        final = os.path.join(parent, key.task)
        token = uuid.uuid4().hex[:12]
        staging = os.path.join(parent, f".{key.task}.{token}.partial")
        os.makedirs(staging)
        try:
            for name, content in files.items():
                target = os.path.join(staging, *name.split("/"))
                os.makedirs(os.path.dirname(target), exist_ok=True)
                if isinstance(content, bytes | bytearray):
                    with open(target, "wb") as out:
                        out.write(content)
                else:
                    shutil.copyfile(content, target)
            with open(os.path.join(staging, OUTCOME_FILE), "wb") as out:
                out.write(body)
            old = os.path.join(parent, f".{key.task}.{token}.old")
            if os.path.lexists(final):
                os.rename(final, old)
            os.rename(staging, final)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _write_objects(self, key: ReportKey, files: Mapping[str, Any], body: bytes) -> None:
        folder = self.folder(key)
        before = self._outcome_at(folder)
        for name, content in files.items():
            target = folder
            for part in name.split("/"):
                target = target / part
            if isinstance(content, bytes | bytearray):
                target.write_bytes(bytes(content))
            else:
                with open(content, "rb") as src, target.open("wb") as dst:
                    while block := src.read(8 * 1024 * 1024):
                        dst.write(block)
        (folder / OUTCOME_FILE).write_bytes(body)
        for name in set((before or {}).get("files") or ()) - set(files):
            target = folder
            for part in str(name).split("/"):
                target = target / part
            if valid_name(*str(name).split("/")):
                target.unlink(missing_ok=True)

    # ------------------------------------------------------------------------------ reading

    def outcome(self, key: ReportKey) -> dict[str, Any] | None:
        """The ``outcome.json`` of one task instance's report (``None``: no complete report).

        :param key: the task instance
        """
        return self._outcome_at(self.folder(key))

    def _outcome_at(self, folder: Any) -> dict[str, Any] | None:
        try:
            return json.loads((folder / OUTCOME_FILE).read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def dags(self) -> list[str]:
        """The Dags with reports, sorted (one listing of the root, not a walk)."""
        return sorted(self._children(self.root))

    def runs(self, dag_id: str, *, limit: int = 20, offset: int = 0) -> RunPage:
        """One page of ``dag_id``'s runs with reports, newest first (by when the run's folder was
        last written where the storage says, as in a local folder; else by the time in the run id;
        then by name), with their complete report folders.

        :param dag_id: the Dag
        :param limit: runs per page
        :param offset: runs to skip
        """
        names = self._children(self.path(dag_id))
        page = _newest_first(names)[offset : offset + limit]
        runs = [(run, self.folders(dag_id, run)) for run in page]
        return RunPage(
            dag_id=dag_id, runs=[(run, found) for run, found in runs if found], total=len(names), offset=offset
        )

    def folders(self, dag_id: str, run: str | None = None, task: str | None = None) -> list[ReportFolder]:
        """The complete report folders of a Dag (or one run of it, or one task instance), sorted.

        Lists everything under that folder: ask for a run or a task where you can.

        :param dag_id: the Dag
        :param run: the run's folder name
        :param task: the task instance's folder name (with ``run``)
        """
        names = tuple(n for n in (dag_id, run, task) if n is not None)
        top = self.path(*names)
        base = self.root.path.rstrip("/")
        try:
            found = self.root.fs.find(top.path.rstrip("/"), detail=True)
        except FileNotFoundError:
            return []
        folders: dict[tuple[str, str, str], ReportFolder] = {}
        for name, info in found.items():
            if info.get("type") != "file" or not name.startswith(f"{base}/"):
                continue
            parts = name[len(base) + 1 :].split("/")
            if len(parts) < 4 or tuple(parts[: len(names)]) != names or not valid_name(*parts):
                continue
            dag, run_name, task_name = parts[:3]
            folder = folders.setdefault(
                (dag, run_name, task_name), ReportFolder(dag_id=dag, run=run_name, task=task_name)
            )
            inner = "/".join(parts[3:])
            if inner == OUTCOME_FILE:
                folder.complete = True
            folder.files[inner] = int(info.get("size") or 0)
            folder.newest = max(folder.newest, _modified(info))
        complete = [folder for folder in folders.values() if folder.complete]
        return sorted(complete, key=lambda f: (f.dag_id, f.run, f.task))

    def _children(self, folder: Any) -> dict[str, float]:
        """The valid names one level under ``folder`` (one listing), with when each was last
        written where the storage says (0 where it does not: object storage's folders)."""
        try:
            entries = self.root.fs.ls(folder.path.rstrip("/"), detail=True)
        except FileNotFoundError:
            return {}
        found = {str(entry["name"]).rstrip("/").rsplit("/", 1)[-1]: _modified(entry) for entry in entries}
        return {name: when for name, when in found.items() if valid_name(name)}

    # ------------------------------------------------------------------------------ run records

    def write_record(self, record: Mapping[str, Any]) -> None:
        """Keep a copy of a run record under its model (one small file, replaced by a retry's).

        :param record: a run record (:func:`airflow_provider_mlci.core.model.history.run_record`)
        :raises MlciConfigError: the model, Dag or run cannot be a name in the store
        """
        from airflow_provider_mlci.core.model.history import dumps

        name = f"{_stamp(str(record.get('night') or ''))}@{record['dag_id']}@{safe_run(record['run_id'])}.json"
        self._put(self._model_folder(str(record["model"])) / name, dumps(record))

    def records(
        self, model: str, *, limit: int = 30, dag_filter: Callable[[str], bool] | None = None
    ) -> list[dict[str, Any]]:
        """The newest ``limit`` run records of ``model``, oldest first (one listing, then one read each).

        :param model: the model
        :param limit: how many (0: all)
        :param dag_filter: only records of the Dags it says yes to (``None``: all)
        """
        folder = self._model_folder(model)
        try:
            names = sorted(
                str(entry).rstrip("/").rsplit("/", 1)[-1] for entry in self.root.fs.ls(folder.path, detail=False)
            )
        except FileNotFoundError:
            return []
        if dag_filter is not None:
            names = [n for n in names if n.count("@") == 2 and dag_filter(n.split("@")[1])]
        found = []
        for name in names[-limit:] if limit else names:
            if not name.endswith(".json") or name.startswith("."):
                continue
            try:
                found.append(json.loads((folder / name).read_bytes()))
            except (FileNotFoundError, ValueError):
                continue
        return found

    def models(self) -> list[str]:
        """The models with run records, sorted (``=`` in a name as GTO writes ``:``)."""
        return sorted(self._children(self.root / MODELS_DIR))

    def run_outcome(self, folders: list[ReportFolder]) -> dict[str, Any] | None:
        """The run record among a run's report folders, if one of them holds it.

        :param folders: the run's folders (:meth:`folders`)
        """
        for folder in folders:
            if RUN_OUTCOME_FILE in folder.files:
                try:
                    return json.loads(self.path(folder.dag_id, folder.run, folder.task, RUN_OUTCOME_FILE).read_bytes())
                except (FileNotFoundError, ValueError):
                    return None
        return None

    def _model_folder(self, model: str) -> Any:
        name = model.replace(":", "=")
        if not valid_name(name):
            from airflow_provider_mlci.exceptions import MlciConfigError

            raise MlciConfigError(f"{model!r} cannot be a model's name in the report store")
        return self.root / MODELS_DIR / name

    # ------------------------------------------------------------------------------ retention

    def prune(
        self,
        *,
        dag_id: str | None = None,
        keep_runs: int | None = None,
        older_than: datetime | None = None,
        dry_run: bool = False,
    ) -> list[str]:
        """Remove whole runs' reports: beyond the newest ``keep_runs`` of each Dag (ordered as
        :meth:`runs` orders them), or whose run id's time is before ``older_than``; return
        ``<dag>/<run>`` of each (removed, or that would be).

        A run whose id carries no time is only removed by ``keep_runs``.

        :param dag_id: one Dag (default: every Dag)
        :param keep_runs: how many of each Dag's newest runs to keep
        :param older_than: remove runs from before this time (timezone-aware)
        :param dry_run: only say what would go
        """
        gone: list[str] = []
        for dag in [dag_id] if dag_id else self.dags():
            for index, run in enumerate(_newest_first(self._children(self.path(dag)))):
                when = _run_time(run)
                old = older_than is not None and 0 < when < older_than.timestamp()
                if (keep_runs is not None and index >= keep_runs) or old:
                    gone.append(f"{dag}/{run}")
                    if not dry_run:
                        target = self.path(dag, run)
                        self.root.fs.rm(target.path.rstrip("/"), recursive=True)
        return gone

    def expire(self, *, older_than: datetime, dag_id: str | None = None, limit: int | None = None) -> list[str]:
        """Empty the reports of runs last written before ``older_than``: remove their files but
        keep each task's ``outcome.json``, marked ``expired``; return ``<dag>/<run>`` of each,
        oldest first. A run already emptied is not looked at again (see the module's docs).

        :param older_than: empty runs whose files were all written before this time (timezone-aware)
        :param dag_id: one Dag (default: every Dag)
        :param limit: empty at most this many runs
        """
        cutoff = older_than.timestamp()
        stamp = datetime.now(UTC).isoformat(timespec="seconds")
        done: list[str] = []
        for dag in [dag_id] if dag_id else self.dags():
            if limit is not None and len(done) >= limit:
                break
            runs = self._children(self.path(dag))
            before = self._expired_index(dag)
            emptied = {run: when for run, when in before.items() if run in runs}  # removed runs leave the index
            for run in sorted(runs, key=lambda name: (runs[name] or _run_time(name), name)):
                if limit is not None and len(done) >= limit:
                    break
                when = runs[run] or _run_time(run)
                if run in emptied or when >= cutoff:
                    continue
                files = self._run_files(dag, run)
                times = [t for t in files.values() if t]
                if not files or (times and max(times) >= cutoff) or not (times or when):
                    continue  # written since the cutoff (a backfill, a retry), or nothing says when
                self._empty_run(dag, run, files, stamp)
                emptied[run] = stamp
                done.append(f"{dag}/{run}")
            if emptied != before:
                body = json.dumps({"format": 1, "runs": emptied}, indent=2, sort_keys=True) + "\n"
                self._put(self.path(dag) / _EXPIRED_INDEX, body.encode())
        return done

    def _expired_index(self, dag: str) -> dict[str, str]:
        try:
            runs = json.loads((self.path(dag) / _EXPIRED_INDEX).read_bytes()).get("runs")
        except (FileNotFoundError, ValueError, AttributeError):
            return {}
        return {str(k): str(v) for k, v in runs.items()} if isinstance(runs, dict) else {}

    def _run_files(self, dag: str, run: str) -> dict[str, float]:
        """Every file under a run's folder (hidden leftovers too): path inside it -> when written."""
        top = self.path(dag, run).path.rstrip("/")
        try:
            found = self.root.fs.find(top, detail=True)
        except FileNotFoundError:
            return {}
        return {
            name[len(top) + 1 :]: _modified(info)
            for name, info in found.items()
            if info.get("type") == "file" and name.startswith(f"{top}/")
        }

    def _empty_run(self, dag: str, run: str, files: Mapping[str, float], stamp: str) -> None:
        """Remove a run's files but each task's ``outcome.json``, which is marked ``expired`` first."""
        tasks: dict[str, list[str]] = {}
        for inner in files:
            tasks.setdefault(inner.split("/", 1)[0], []).append(inner)
        gone: list[str] = []
        for task, inners in tasks.items():
            record_path = f"{task}/{OUTCOME_FILE}"
            if valid_name(task) and record_path in inners:
                record = self._outcome_at(self.path(dag, run, task))
                if record is not None and "expired" not in record:
                    record["expired"] = {"at": stamp, "files": list(record.get("files") or [])}
                    record["files"] = []
                    body = json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n"
                    self._put(self.path(dag, run, task, OUTCOME_FILE), body.encode())
            gone += [inner for inner in inners if inner != record_path]
        if not gone:
            return
        top = self.path(dag, run).path.rstrip("/")
        self.root.fs.rm([f"{top}/{inner}" for inner in gone])
        if self.local:  # folders left empty, deepest first (images/, a failed write's staging folder)
            for folder, _, _ in sorted(os.walk(top), key=lambda entry: -len(entry[0])):
                if folder != top and not os.listdir(folder):
                    os.rmdir(folder)

    def _put(self, path: Any, body: bytes) -> None:
        """Write one small file whole: renamed into place in a local folder, one PUT on object storage."""
        if not self.local:
            path.write_bytes(body)
            return
        target = path.path
        os.makedirs(os.path.dirname(target), exist_ok=True)
        staging = os.path.join(os.path.dirname(target), f".{os.path.basename(target)}.{uuid.uuid4().hex[:12]}.tmp")
        with open(staging, "wb") as out:
            out.write(body)
        os.replace(staging, target)


def apply_retention(store: ReportStore) -> list[str]:
    """Apply ``[mlci] report_retention_days`` to ``store`` (see the module's docs), unless this
    process did so in the last :data:`RETENTION_INTERVAL_S`; return the runs emptied.

    Storage errors are logged, not raised: the report being written is already stored.

    :param store: the store a report was just written to
    :raises MlciConfigError: the setting is not a number of days
    """
    from airflow_provider_mlci import settings

    days = settings.report_retention_days()
    if days <= 0:
        return []
    where = storage_uri(store.root)
    now = time.monotonic()
    with _retention_lock:
        last = _retention_done.get(where)
        if last is not None and now - last < RETENTION_INTERVAL_S:
            return []
        _retention_done[where] = now
    try:
        emptied = store.expire(older_than=datetime.now(UTC) - timedelta(days=days), limit=RETENTION_BATCH)
    except Exception as exc:  # the report itself is stored: retention waits for the next pass
        log.warning("Report retention on %s failed; it is tried again within the hour: %s", where, exc)
        return []
    if emptied:
        log.info(
            "Report retention (%d days): emptied %d run(s) in %s, their outcome.json kept: %s",
            days,
            len(emptied),
            where,
            ", ".join(emptied),
        )
    return emptied


def store_task_report(
    context: Context,
    files: Mapping[str, bytes | str | os.PathLike[str]],
    outcome: Mapping[str, Any],
    *,
    base: str | None = None,
    conn_id: str | None = None,
) -> str:
    """Store the running task instance's report and point its "Report" link at it; return its URL.

    Then applies the retention setting to the store, at most once an hour (:func:`apply_retention`).

    :param context: the task's context
    :param files: name inside the folder -> bytes or a local file (see :meth:`ReportStore.write`)
    :param outcome: the task's small summary for ``outcome.json``
    :param base: the store's root (default: ``[mlci] reports_dir``)
    :param conn_id: the connection to reach it with (default: ``[mlci] reports_conn_id``)
    """
    from airflow_provider_mlci.links.report import REPORT_URI_KEY

    ti = context["ti"]
    store = ReportStore.open(base, conn_id)
    uri = store.write(ReportKey.of(ti), files, outcome)
    ti.xcom_push(key=REPORT_URI_KEY, value=uri)
    apply_retention(store)
    return uri


def read_markdown(uri: str, conn_id: str | None = None) -> str:
    """The Markdown of a stored report: ``uri`` is its folder (as a task returned it as
    ``report_uri``; its ``report.md`` is read) or a ``.md`` file.

    :param uri: the folder's or the file's URL
    :param conn_id: the connection to read it with (default: ``[mlci] reports_conn_id``)
    :raises MlciConfigError: nothing there, or not UTF-8 text
    """
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_mlci import settings
    from airflow_provider_mlci.exceptions import MlciConfigError, redact_url

    path = ObjectStoragePath(uri, conn_id=conn_id or settings.reports_location()[1])
    if not uri.rstrip("/").endswith(".md"):
        path = path / "report.md"
    shown = redact_url(str(path))
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise MlciConfigError(
            f"No report at {shown}: give the folder a report task returned as report_uri, or its report.md."
        ) from exc
    except UnicodeDecodeError as exc:
        raise MlciConfigError(f"The report at {shown} is not UTF-8 text.") from exc


def storage_uri(path: object) -> str:
    """The URL of an ``ObjectStoragePath`` without the connection id its text carries.

    ``str()`` of a path made with ``conn_id="aws_reports"`` reads ``s3://aws_reports@bucket/key``;
    this gives ``s3://bucket/key`` (and ``file:///folder`` for local paths).

    :param path: an ``airflow.sdk.ObjectStoragePath``
    """
    protocol = getattr(path, "protocol", "") or "file"
    inner = str(getattr(path, "path", path))
    return f"{protocol}://{inner}" if protocol != "file" or inner.startswith("/") else str(path)


def _newest_first(runs: Mapping[str, float]) -> list[str]:
    """Run folder names, newest first: by when the folder was written where the storage says,
    else by the time in the run id, then by name."""
    return sorted(runs, key=lambda run: (runs[run] or _run_time(run), run), reverse=True)


def _stamp(when: str) -> str:
    """``20261102T020000`` of an ISO time (``00000000T000000`` when it is not one): names sort by time."""
    try:
        moment = datetime.fromisoformat(when.replace("Z", "+00:00"))
    except ValueError:
        return "00000000T000000"
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC)
    return moment.strftime("%Y%m%dT%H%M%S")


def _run_time(run: str) -> float:
    """The time in a run's folder name (0 when it has none)."""
    match = _RUN_TIME.search(run)
    if not match:
        return 0.0
    day, hours, minutes, seconds, fraction = match.groups()
    try:
        moment = datetime.fromisoformat(f"{day}T{hours}:{minutes}:{seconds}{fraction or ''}+00:00")
    except ValueError:
        return 0.0
    return moment.timestamp()


def _modified(info: Mapping[str, Any]) -> float:
    """When a listed file was written: fsspec backends name it differently."""
    for key in ("mtime", "LastModified", "last_modified", "updated", "created"):
        value = info.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
            except ValueError:
                continue
    return 0.0
