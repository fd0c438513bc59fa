"""A model's history: what each run decided about it, its gate metrics night by night, and the registry's story.

Two sources, both readable from anywhere (no worker disk):

- **Run records**: one small JSON per run that judged a candidate (:func:`run_record`), written to
  the report store by the run's last task, whatever happened (promoted, kept, failed). Nights commit
  to their own branches (``mlci/refine/<date>``), so a trend over one branch's commits never sees
  them; the records do. :func:`trend_spec` charts each candidate's gate metrics against the
  deployed model's, night by night, promoted nights marked.
- **The registry**: GTO tags on the git remote (:func:`read_tags` reads them with their messages,
  :func:`model_story` turns them into what is on each stage now and since when, every version with
  its commit and the run that made it, promotions and rollbacks).

A record (``format`` 1)::

    {"format": 1, "model", "stage", "dag_id", "run_id", "night": ISO time the run is for,
     "written_at", "decision": "promoted" | "kept" | "rejected" | "timed_out" | "failed",
     "summary": one line, "version": the version promoted (else None), "sha": the candidate's commit,
     "deployed": {"version", "sha"} compared against (None: nothing deployed), "from_scratch",
     "metrics": [{"metric", "direction", "candidate", "champion", "delta", "passed"}],
     "reasons": [...], "failed_tasks": [...], "report": the run's report folder (task) or None,
     "cost": {"total_usd", "seconds", "instances": [...]} or None, "dvc_conn_id"}
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pathlib import Path

    from airflow_provider_mlci.core.repo.access import GitAccess
    from airflow_provider_mlci.core.runtime.process import CommandRunner

__all__ = [
    "APPROVAL_REASONS",
    "DECISIONS",
    "RECORD_FORMAT",
    "TagInfo",
    "fetch_tags",
    "metric_line",
    "model_story",
    "read_tags",
    "run_record",
    "summary_line",
    "trend_spec",
]

RECORD_FORMAT = 1
#: What a run can come to.
DECISIONS = ("promoted", "kept", "rejected", "timed_out", "failed")
#: Between the fields of one tag in :func:`read_tags`' listing, and after each tag.
_FIELD, _END = "\x00", "\x00\x01\n"


#: Why a candidate that passed the gate was kept, by the approval's answer.
APPROVAL_REASONS = {"rejected": "a reviewer rejected the candidate", "timed_out": "no reviewer answered in time"}


def run_record(
    *,
    model: str,
    stage: str,
    dag_id: str,
    run_id: str,
    night: str,
    outcome: Mapping[str, Any] | None,
    started: Mapping[str, Any] | None = None,
    failed_tasks: Sequence[str] = (),
    report: str | None = None,
    cost: Mapping[str, Any] | None = None,
    dvc_conn_id: str | None = None,
    deployed: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The record of one run: what it decided about ``model`` (see the module's docs).

    :param model: the model
    :param stage: the stage it was judged for
    :param dag_id: the Dag
    :param run_id: the run
    :param night: the time the run is for (its logical date, else when it ran), ISO
    :param outcome: the release outcome (``promoted``, ``version``, ``reasons``, ``metrics``, ...)
        or ``None`` when the run failed before deciding
    :param started: how the candidate was made (``from_scratch``, ``deployed``)
    :param failed_tasks: the tasks that failed (a failed run), the first failures first: the summary
        names those no other failed task led to
    :param report: the report folder (task) of the run's metrics report
    :param cost: what the run's GPU work cost
    :param dvc_conn_id: the connection of the repository whose registry holds the model
    :param deployed: what was on the stage when neither the outcome nor ``started`` says (a run that
        failed before it looked): ``{"version", "sha"}``
    """
    outcome = dict(outcome or {})
    started = dict(started or {})
    champion = outcome.get("champion") or started.get("deployed") or deployed
    deployed = {"version": champion.get("version"), "sha": champion.get("sha")} if champion else None
    if failed_tasks or not outcome:
        decision = "failed"
    elif outcome.get("promoted"):
        decision = "promoted"
    else:
        decision = str(outcome.get("decision") or "kept")
    record = {
        "format": RECORD_FORMAT,
        "model": model,
        "stage": stage,
        "dag_id": dag_id,
        "run_id": run_id,
        "night": night,
        "written_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "decision": decision,
        "version": outcome.get("version") if decision == "promoted" else None,
        "sha": outcome.get("sha"),
        "deployed": deployed,
        "from_scratch": started.get("from_scratch"),
        "metrics": [dict(m) for m in outcome.get("metrics") or []],
        "reasons": [str(r) for r in outcome.get("reasons") or []],
        "failed_tasks": list(failed_tasks),
        "report": report,
        "cost": dict(cost) if cost else None,
        "dvc_conn_id": dvc_conn_id,
    }
    record["summary"] = summary_line(record)
    return record


def summary_line(record: Mapping[str, Any]) -> str:
    """The run's outcome in one line, with the gate metrics' deltas.

    :param record: a run record
    """
    deployed = record.get("deployed") or {}
    held = deployed.get("version") or (str(deployed.get("sha") or "")[:12] or None)
    stage = record.get("stage")
    decision = record.get("decision")
    deltas = "; ".join(metric_line(m) for m in record.get("metrics") or [])
    if decision == "promoted":
        line = f"Promoted {record.get('version')} to {stage}" + (f", replacing {held}" if held else "")
        return f"{line}: {deltas}" if deltas else line
    kept = f"kept {held} on {stage}" if held else f"nothing on {stage}"
    if decision == "failed":
        failed = list(record.get("failed_tasks") or [])
        where = f"at {failed[0]}" if failed else "before the gate decided"
        more = f" (then {', '.join(failed[1:])})" if failed[1:] else ""
        stays = f", {held} stays on {stage}" if held else ""
        return f"Failed {where}{more}: nothing released{stays}"
    why = APPROVAL_REASONS.get(str(decision))
    reasons = [why] if why else list(record.get("reasons") or [])
    line = kept[0].upper() + kept[1:]
    if reasons:
        line += f": {reasons[0]}" + (f" (+{len(reasons) - 1} more)" if len(reasons) > 1 else "")
    return f"{line} [{deltas}]" if deltas else line


def metric_line(metric: Mapping[str, Any]) -> str:
    """``logloss 0.4743 -> 0.4714 (-0.0029)``: one gate metric, deployed to candidate.

    :param metric: one entry of a gate decision's ``metrics``
    """
    name, new, old, delta = metric.get("metric"), metric.get("candidate"), metric.get("champion"), metric.get("delta")
    if old is None:
        return f"{name} {_num(new)}"
    signed = f"{delta:+.4g}" if isinstance(delta, int | float) else "?"
    return f"{name} {_num(old)} -> {_num(new)} ({signed})"


def _num(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, int | float) and not isinstance(value, bool) else str(value)


def trend_spec(model: str, records: Sequence[Mapping[str, Any]], *, metrics: Sequence[str] = ()) -> dict[str, Any]:
    """A Vega-Lite chart per gate metric: each night's candidate against the deployed model, oldest first.

    Promoted nights are marked (a filled diamond on the candidate); a failed night has no points.

    :param model: the model (the chart's title)
    :param records: run records, oldest first
    :param metrics: the metrics to chart (default: every gate metric the records name)
    """
    names = list(metrics) or list(dict.fromkeys(m["metric"] for r in records for m in r.get("metrics") or []))
    labels = _night_labels(records)
    values = []
    for order, (record, label) in enumerate(zip(records, labels, strict=True)):
        promoted = record.get("decision") == "promoted"
        for metric in record.get("metrics") or []:
            for series, key in (("candidate", "candidate"), ("deployed", "champion")):
                value = metric.get(key)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    values.append(
                        {
                            "night": label,
                            "order": order,
                            "metric": metric["metric"],
                            "series": series,
                            "value": value,
                            "promoted": promoted and series == "candidate",
                            "decision": record.get("decision"),
                        }
                    )
    x = {"field": "night", "type": "ordinal", "sort": {"field": "order"}, "title": "night"}
    charts = []
    for name in names:
        y = {"field": "value", "type": "quantitative", "title": name, "scale": {"zero": False}}
        charts.append(
            {
                "title": name,
                "width": 560,
                "height": 170,
                "transform": [{"filter": {"field": "metric", "equal": name}}],
                "layer": [
                    {
                        "mark": {"type": "line", "point": True},
                        "encoding": {
                            "x": x,
                            "y": y,
                            "color": {
                                "field": "series",
                                "type": "nominal",
                                "scale": {"domain": ["candidate", "deployed"], "range": ["#1565c0", "#9e9e9e"]},
                            },
                        },
                    },
                    {
                        "transform": [{"filter": "datum.promoted"}],
                        "mark": {"type": "point", "shape": "diamond", "size": 170, "filled": True, "color": "#2e7d32"},
                        "encoding": {"x": x, "y": y},
                    },
                ],
            }
        )
    return {
        "$schema": "https://vega.github.io/schema/vega-lite/v5.json",
        "title": f"{model}: gate metrics by night (diamond: promoted)",
        "data": {"values": values},
        "vconcat": charts or [{"mark": "text", "encoding": {"text": {"value": "no metrics recorded"}}}],
    }


def _night_labels(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """``2026-11-02`` per record; a second run of the same day gets its time too."""
    days = [str(r.get("night") or "")[:10] for r in records]
    return [
        str(r.get("night") or "")[:16].replace("T", " ") if days.count(day) > 1 else day
        for r, day in zip(records, days, strict=True)
    ]


# ------------------------------------------------------------------------------------ the registry


@dataclass(frozen=True, kw_only=True)
class TagInfo:
    """A registry tag with what its message and tagger say.

    :param tag: the tag's name
    :param sha: the commit it points at
    :param time: the tagger time (Unix seconds)
    :param tagger: the tagger's name
    :param evidence: the JSON its message carries (``{}`` for a tag not written here)
    """

    tag: str
    sha: str
    time: int
    tagger: str = ""
    evidence: dict[str, Any] = field(default_factory=dict)


#: ``git for-each-ref`` format of :func:`read_tags`.
TAG_FORMAT = (
    "%(refname:lstrip=2)%00%(objecttype)%00%(*objectname)%00%(taggerdate:unix)%00%(taggername)%00%(contents)%00%01"
)


def read_tags(listing: str) -> list[TagInfo]:
    """The annotated tags in the output of ``git for-each-ref --format=TAG_FORMAT refs/tags``.

    :param listing: that output
    """
    from airflow_provider_mlci.core.model.registry import read_evidence

    found = []
    for entry in listing.split(_END):
        parts = entry.lstrip("\n").split(_FIELD)
        if len(parts) < 6 or parts[1] != "tag":
            continue
        name, _, sha, when, tagger, message = parts[:6]
        found.append(TagInfo(tag=name, sha=sha, time=int(when or 0), tagger=tagger, evidence=read_evidence(message)))
    return found


def fetch_tags(access: GitAccess, mirror: Path, runner: CommandRunner) -> list[TagInfo]:
    """Fetch the remote's tags (and their commits, shallow) into a bare ``mirror``; return them.

    Reads only tags: no branch, no history, no checkout; the mirror is made on first use and
    kept, so later fetches move only new tags.

    :param access: the repository
    :param mirror: a folder for the bare mirror (this process's own)
    :param runner: runs git
    :raises GitRemoteError: the remote cannot be reached
    """
    from airflow_provider_mlci.core.repo.git import Git

    with Git(access, runner) as git:
        if not (mirror / "HEAD").is_file():
            mirror.parent.mkdir(parents=True, exist_ok=True)
            git.check(["init", "--quiet", "--bare", str(mirror)])
        fetch = ["fetch", "--quiet", "--force", "--prune", "--no-tags", "--depth=1"]
        git.check([*fetch, "--", access.url, "+refs/tags/*:refs/tags/*"], cwd=mirror, remote=True)
        listing = git.check(["for-each-ref", f"--format={TAG_FORMAT}", "refs/tags"], cwd=mirror, capture=True)
    return read_tags(listing)


def model_story(tags: Sequence[TagInfo], model: str) -> dict[str, Any]:
    """What the registry says of ``model``: each stage now, every version, every stage event.

    Returns ``{"model", "stages": [{"stage", "version", "sha", "since", "tag", "run"}],
    "versions": [{"version", "sha", "registered_at", "run", "metrics", "stages"}] newest first,
    "events": [{"time", "action", "stage", "version", "sha", "tag", "by", "run"}] newest first}``
    where ``action`` is ``promoted``, ``rolled back``, ``unassigned`` or ``registered``, ``run`` the
    Airflow run that wrote it (``{"dag_id", "run_id", "task_id"}``) and ``by`` the tagger.

    :param tags: the repository's tags (:func:`read_tags`)
    :param model: the model
    """
    from airflow_provider_mlci.core.model.registry import parse_tag, parse_version

    parsed = []
    for info in tags:
        tag = parse_tag(info.tag, sha=info.sha, time=info.time)
        if tag is not None and tag.name == model:
            parsed.append((tag, info))
    parsed.sort(key=lambda pair: (pair[0].time, pair[0].counter))
    versions: dict[str, dict[str, Any]] = {}
    for tag, info in parsed:
        if tag.action == "register" and tag.version:
            versions[tag.version] = {
                "version": tag.version,
                "sha": tag.sha,
                "registered_at": _iso(tag.time),
                "run": _run_of(info.evidence),
                "metrics": _flat(info.evidence.get("metrics")),
                "stages": [],
            }
        elif tag.action == "deregister" and tag.version:
            versions.pop(tag.version, None)
    by_sha = {v["sha"]: name for name, v in versions.items()}
    events, current = [], {}
    for tag, info in parsed:
        if tag.action not in ("assign", "unassign") or not tag.stage:
            continue
        version = by_sha.get(tag.sha)
        if tag.action == "unassign":
            action = "unassigned"
            current.pop(tag.stage, None)
        else:
            action = "rolled back" if info.evidence.get("rollback") else "promoted"
            current[tag.stage] = {
                "stage": tag.stage,
                "version": version,
                "sha": tag.sha,
                "since": _iso(tag.time),
                "tag": tag.tag,
                "run": _run_of(info.evidence),
            }
            if version and tag.stage not in versions[version]["stages"]:
                versions[version]["stages"].append(tag.stage)
        events.append(
            {
                "time": _iso(tag.time),
                "action": action,
                "stage": tag.stage,
                "version": version,
                "sha": tag.sha,
                "tag": tag.tag,
                "by": info.tagger,
                "run": _run_of(info.evidence),
            }
        )
    ordered = sorted(versions.values(), key=lambda v: parse_version(v["version"]), reverse=True)
    return {
        "model": model,
        "stages": [current[s] for s in sorted(current)],
        "versions": ordered,
        "events": list(reversed(events)),
    }


def models_in(tags: Sequence[TagInfo]) -> list[str]:
    """The models the registry tags name, sorted.

    :param tags: the repository's tags
    """
    from airflow_provider_mlci.core.model.registry import parse_tag

    return sorted({t.name for t in (parse_tag(i.tag) for i in tags) if t is not None})


def _flat(metrics: Any) -> dict[str, Any]:
    """``{"accuracy": 0.78}`` from evidence's ``{file: nested values}`` (the file named only when there are several)."""
    from airflow_provider_mlci.core.dvc.metrics import flatten_metrics

    if not isinstance(metrics, Mapping) or not all(isinstance(v, Mapping) for v in metrics.values()):
        return dict(metrics) if isinstance(metrics, Mapping) else {}
    flat = flatten_metrics(metrics)
    return flat if len(metrics) > 1 else {key.split(":", 1)[1]: value for key, value in flat.items()}


def _run_of(evidence: Mapping[str, Any]) -> dict[str, str] | None:
    if evidence.get("dag_id") and evidence.get("run_id"):
        return {k: str(evidence[k]) for k in ("dag_id", "run_id", "task_id") if evidence.get(k)}
    return None


def _iso(seconds: int) -> str | None:
    return datetime.fromtimestamp(seconds, tz=UTC).isoformat(timespec="seconds") if seconds else None


def dumps(record: Mapping[str, Any]) -> bytes:
    """A record as stored: sorted JSON, non-finite floats refused.

    :param record: a run record
    """
    return (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
