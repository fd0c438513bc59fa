"""OpenLineage for the DVC operators, through Airflow's OpenLineage provider when it is installed.

An operator records what it read and wrote while it runs (:meth:`OpenLineageMixin.record_lineage`,
small plain data kept on the operator object) and the OpenLineage listener asks for it when the
task ends (``get_openlineage_facets_on_complete``, and ``..._on_failure``: a dataset that failed
validation was still read). Without ``apache-airflow-providers-openlineage`` nothing is built and
nothing is imported.

What an event carries:

- datasets tracked by the repository: namespace = the repository URL without any user or
  credentials (``https://github.com/acme/fraud.git``, ``ssh://github.com/acme/fraud.git`` for
  ``git@github.com:acme/fraud.git``, ``file:///srv/git/fraud.git`` for a path), name = the path in
  the repository; the object id DVC records (``md5``) as the ``version`` facet where it is known;
  an output that the task also emits as an ``x-dvc`` Asset names that Asset in a ``symlinks`` facet;
- datasets outside it (object storage, report folders): namespace and name as OpenLineage names
  files (``s3://bucket`` + key, ``file`` + path);
- the ``sourceCodeLocation`` job facet (``git``, repository URL, commit id) and the ``mlci`` run
  facet (repository, revision as asked, commit id, and what the task decided: stage outcomes,
  validation verdict, report location);
- data validation: ``dataQualityMetrics`` (rows checked) and ``dataQualityAssertions`` (the schema
  as a whole, and each failing check by column) on the validated dataset.

Importing this module loads nothing beyond the standard library.
"""

from __future__ import annotations

import functools
import logging
import os
import posixpath
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = [
    "FACET_SCHEMA_URL",
    "OpenLineageMixin",
    "build_lineage",
    "lineage_wanted",
    "lock_io",
    "pipeline_io",
    "repository_namespace",
    "stage_io",
    "storage_dataset",
]

log = logging.getLogger(__name__)

#: The JSON schema of the ``mlci`` run facet.
FACET_SCHEMA_URL = (
    "https://raw.githubusercontent.com/airflow-provider-mlci/airflow-provider-mlci/main/"
    "airflow_provider_mlci/lineage_facet.json#/$defs/MlciRunFacet"
)

_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>(?!//).+)$")


def repository_namespace(url: str) -> str:
    """Return the OpenLineage namespace of a repository: its URL without user, credentials, query or fragment.

    :param url: the repository's URL, ``user@host:path`` form or local path
    """
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme and parts.netloc and len(parts.scheme) > 1:
        host = parts.netloc.rpartition("@")[2].lower()
        return urlunsplit((parts.scheme.lower(), host, parts.path.rstrip("/") or "/", "", ""))
    if parts.scheme == "file":
        return urlunsplit(("file", "", parts.path.rstrip("/") or "/", "", ""))
    if not os.path.isabs(url) and (match := _SCP_LIKE.match(url)):
        return f"ssh://{match['host'].lower()}/{match['path'].lstrip('/').rstrip('/')}"
    return "file://" + os.path.abspath(url).rstrip("/")


def storage_dataset(location: str) -> dict[str, str]:
    """Return ``{"namespace", "name"}`` of a file outside the repository, as OpenLineage names files.

    :param location: an object storage URL (``s3://bucket/key``) or a local path
    """
    parts = urlsplit(location)
    if parts.scheme in ("", "file") or len(parts.scheme) == 1:  # a path (or a Windows drive letter)
        path = parts.path if parts.scheme == "file" else location
        return {"namespace": "file", "name": os.path.abspath(path)}
    scheme = "gs" if parts.scheme == "gcs" else parts.scheme.lower()
    host = parts.netloc.rpartition("@")[2]
    return {"namespace": f"{scheme}://{host}", "name": parts.path.lstrip("/") or "/"}


def lock_io(
    stages: Iterable[str], lock: Mapping[str, Mapping[str, Any]], *, wdirs: Mapping[str, str] | None = None
) -> dict[str, list[dict[str, Any]]]:
    """What the stages read and wrote, from their ``dvc.lock`` entries alone.

    A lock entry's paths are relative to the stage's ``wdir``: the lock file's folder unless
    ``wdirs`` says otherwise (:func:`pipeline_io` reads them from ``dvc.yaml``).

    :param stages: the stages' DVC addresses (``train``, ``sub/dvc.yaml:train``, ``build@us``)
    :param lock: ``{lock file: {stage name: lock entry}}`` as a reproduction hands it on
    :param wdirs: ``{stage address: its wdir, relative to its dvc.yaml's folder}``
    """
    wanted = set(stages)
    deps: dict[str, Any] = {}
    outs: dict[str, Any] = {}
    params: set[str] = set()
    for lockfile, entries in lock.items():
        folder = posixpath.dirname(lockfile)
        prefix = "" if lockfile == "dvc.lock" else f"{posixpath.splitext(lockfile)[0]}.yaml:"
        for name, entry in entries.items():
            address = f"{prefix}{name}"
            if address not in wanted or not isinstance(entry, Mapping):
                continue
            wdir = _join(folder, _wdir_of(address, wdirs or {}))
            for key, into in (("deps", deps), ("outs", outs)):
                for item in entry.get(key) or ():
                    if isinstance(item, Mapping) and item.get("path"):
                        into[_join(wdir, str(item["path"]))] = _object_id(item)
            params |= {_join(wdir, str(path)) for path in entry.get("params") or {}}
    return _io(deps, outs, params)


def pipeline_io(
    root: str | os.PathLike[str],
    stages: Iterable[str],
    lock: Mapping[str, Mapping[str, Any]] | None = None,
    *,
    render_cache: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """What the stages read and wrote, from the ``dvc.yaml`` files of a checkout (and versions from the lock).

    :param root: the checkout's root
    :param stages: the stages' DVC addresses
    :param lock: their ``dvc.lock`` entries, for the object ids (``{lock file: {stage: entry}}``)
    :param render_cache: where templated ``dvc.yaml`` files' expansions are kept
    """
    from airflow_provider_mlci.core.dvc.pipeline import load_pipeline

    wanted = list(stages)
    files = sorted({name.rpartition(":")[0] or "dvc.yaml" for name in wanted})
    specs = {}
    wdirs: dict[str, str] = {}
    for dvc_file in files:
        specs.update(load_pipeline(root, dvc_file, render_cache=render_cache).stages)
        wdirs.update(_wdirs(root, dvc_file))
    versions = lock_io(wanted, lock or {}, wdirs=wdirs)
    known = {item["path"]: item.get("version") for side in ("inputs", "outputs") for item in versions[side]}
    deps: dict[str, Any] = {}
    outs: dict[str, Any] = {}
    for name in wanted:
        stage = specs.get(name)
        if stage is None:
            continue
        deps |= {path: known.get(path) for path in stage.deps}
        outs |= {out.path: known.get(out.path) for out in stage.outs}
    params = {item["path"] for item in versions["inputs"] if item.get("params")}
    return _io(deps, outs, params)


def _wdirs(root: str | os.PathLike[str], dvc_file: str) -> dict[str, str]:
    """``{stage address: wdir}`` of the stages of ``dvc_file`` that set one (plainly, not templated)."""
    import yaml

    with open(os.path.join(root, dvc_file)) as fh:
        data = yaml.safe_load(fh) or {}
    prefix = "" if dvc_file == "dvc.yaml" else f"{dvc_file}:"
    found = {}
    for name, body in (data.get("stages") or {}).items():
        if not isinstance(body, dict):
            continue
        looped = "foreach" in body or "matrix" in body
        stage = body.get("do") if "foreach" in body else body
        wdir = stage.get("wdir") if isinstance(stage, dict) else None
        if isinstance(wdir, str) and "${" not in wdir:
            found[f"{prefix}{name}@" if looped else f"{prefix}{name}"] = wdir  # name@: every expansion
    return found


def _wdir_of(address: str, wdirs: Mapping[str, str]) -> str:
    if address in wdirs:
        return wdirs[address]
    looped = address.rpartition("@")[0]
    return wdirs.get(f"{looped}@", ".") if looped else "."


def _io(deps: Mapping[str, Any], outs: Mapping[str, Any], params: set[str]) -> dict[str, list[dict[str, Any]]]:
    """Inputs: what the stages read that none of them wrote; outputs: all they wrote."""
    inputs = [
        {"path": path, "version": version}
        for path, version in sorted(deps.items())
        if not any(_within(path, out) for out in outs)
    ]
    inputs += [{"path": path, "version": None, "params": True} for path in sorted(params - set(deps))]
    outputs = [{"path": path, "version": version} for path, version in sorted(outs.items())]
    return {"inputs": inputs, "outputs": outputs}


def _join(folder: str, path: str) -> str:
    return posixpath.normpath(posixpath.join(folder, path)).removeprefix("./")


def _within(path: str, out: str) -> bool:
    return path == out or path.startswith(out.rstrip("/") + "/")


def _object_id(item: Mapping[str, Any]) -> str | None:
    for key in ("md5", "etag", "checksum"):
        if item.get(key):
            return str(item[key])
    return None


# ------------------------------------------------------------------------ OpenLineage objects


def build_lineage(record: Mapping[str, Any], *, outlets: Sequence[Any] = ()) -> Any:
    """Turn a lineage record into the provider's ``OperatorLineage`` (``None`` without the provider).

    :param record: ``{"repo", "rev", "sha", "inputs", "outputs", "run"}``: datasets are
        ``{"path", "version"}`` in the repository or ``{"namespace", "name"}`` outside it, and may
        carry ``"quality"``: ``{"rows", "valid", "schema", "failures": [{"column", "check", "count"}]}``
    :param outlets: the task's outlets (``x-dvc`` Assets among them become ``symlinks``)
    """
    try:
        from airflow.providers.openlineage.extractors import OperatorLineage
        from openlineage.client.event_v2 import InputDataset, OutputDataset
        from openlineage.client.facet_v2 import source_code_location_job
    except ImportError:
        return None
    repo = record.get("repo")
    namespace = repository_namespace(repo) if repo else None
    aliases = _asset_aliases(outlets)

    def dataset(item: Mapping[str, Any], cls: Any) -> Any:
        if "path" in item and namespace:
            where = {"namespace": namespace, "name": item["path"]}
        else:
            where = {"namespace": item["namespace"], "name": item["name"]}
        facets = _dataset_facets(item, aliases.get(item.get("path", "")))
        if cls is InputDataset:
            return cls(**where, facets=facets, inputFacets=_quality_facets(item.get("quality")))
        return cls(**where, facets=facets)

    job_facets = {}
    if namespace and record.get("sha"):
        job_facets["sourceCodeLocation"] = source_code_location_job.SourceCodeLocationJobFacet(
            type="git", url=namespace, repoUrl=namespace, version=str(record["sha"])
        )
    run = {"repository": namespace, "rev": record.get("rev"), "sha": record.get("sha"), **(record.get("run") or {})}
    return OperatorLineage(
        inputs=[dataset(item, InputDataset) for item in record.get("inputs") or ()],
        outputs=[dataset(item, OutputDataset) for item in record.get("outputs") or ()],
        run_facets={"mlci": _run_facet_class()(**_facet_fields(run))},
        job_facets=job_facets,
    )


def _asset_aliases(outlets: Sequence[Any]) -> dict[str, list[tuple[str, str]]]:
    from airflow_provider_mlci.assets import OUTPUT_SCHEME, sanitize_uri

    aliases: dict[str, list[tuple[str, str]]] = {}
    for outlet in outlets:
        uri = getattr(outlet, "uri", None)
        if not isinstance(uri, str) or not uri.lower().startswith(f"{OUTPUT_SCHEME}://"):
            continue
        try:
            parts = sanitize_uri(urlsplit(uri))
        except ValueError:
            continue
        path = parts.path.lstrip("/")
        aliases.setdefault(path, []).append((f"{parts.scheme}://{parts.netloc}", path))
    return aliases


def _dataset_facets(item: Mapping[str, Any], aliases: list[tuple[str, str]] | None) -> dict[str, Any]:
    from openlineage.client.facet_v2 import dataset_version_dataset, symlinks_dataset

    facets: dict[str, Any] = {}
    if item.get("version"):
        facets["version"] = dataset_version_dataset.DatasetVersionDatasetFacet(datasetVersion=str(item["version"]))
    if aliases:
        facets["symlinks"] = symlinks_dataset.SymlinksDatasetFacet(
            identifiers=[symlinks_dataset.Identifier(namespace=ns, name=name, type="asset") for ns, name in aliases]
        )
    return facets


def _quality_facets(quality: Mapping[str, Any] | None) -> dict[str, Any]:
    if not quality:
        return {}
    from openlineage.client.facet_v2 import data_quality_assertions_dataset as dqa
    from openlineage.client.facet_v2 import data_quality_metrics_input_dataset as dqm

    assertions = [dqa.Assertion(assertion=f"schema {quality.get('schema')}", success=bool(quality.get("valid")))]
    assertions += [
        dqa.Assertion(assertion=str(failure["check"]), success=False, column=failure.get("column"))
        for failure in quality.get("failures") or ()
    ]
    return {
        "dataQualityMetrics": dqm.DataQualityMetricsInputDatasetFacet(columnMetrics={}, rowCount=quality.get("rows")),
        "dataQualityAssertions": dqa.DataQualityAssertionsDatasetFacet(assertions=assertions),
    }


def _facet_fields(run: Mapping[str, Any]) -> dict[str, Any]:
    fields = {"repository", "rev", "sha", "stages", "validation", "report"}
    return {key: value for key, value in run.items() if key in fields and value is not None}


@functools.cache
def _run_facet_class() -> type:
    """The ``mlci`` run facet (made on first use: the OpenLineage client is optional)."""
    import attr
    from openlineage.client.facet_v2 import RunFacet

    @attr.define
    class MlciRunFacet(RunFacet):
        """What a task of airflow-provider-mlci worked on and decided.

        :param repository: the repository, as a URL without credentials
        :param rev: the revision the task was asked for (branch, tag, commit id, expression)
        :param sha: the commit id it resolved to
        :param stages: each DVC stage's outcome: ``ran``, ``restored`` or ``skipped``
        :param validation: ``{"schema", "valid", "rows_checked", "failure_cases_total"}``
        :param report: where the task's report is
        """

        repository: str | None = attr.field(default=None)
        rev: str | None = attr.field(default=None)
        sha: str | None = attr.field(default=None)
        stages: dict[str, str] | None = attr.field(default=None)
        validation: dict[str, Any] | None = attr.field(default=None)
        report: str | None = attr.field(default=None)

        @staticmethod
        def _get_schema() -> str:
            return FACET_SCHEMA_URL

    return MlciRunFacet


# ------------------------------------------------------------------------ operators


def stage_io(outcome: Any, *, root: Any = None, render_cache: str | None = None, log: Any) -> dict[str, Any] | None:
    """The datasets a reproduction read and wrote, when OpenLineage is on (``None`` otherwise).

    :param outcome: the :class:`~airflow_provider_mlci.core.dvc.ops.ReproOutcome`
    :param root: the checkout it ran in (``None``: it ran elsewhere; paths come from the lock alone)
    :param render_cache: where templated ``dvc.yaml`` files' expansions are kept
    :param log: where to say why, if they cannot be read (a task never fails on lineage)
    """
    if not lineage_wanted():
        return None
    try:
        if root is None:
            return lock_io(outcome.stages, outcome.handoff.lock)
        return pipeline_io(root, outcome.stages, outcome.handoff.lock, render_cache=render_cache)
    except Exception:
        log.warning("Could not read the stages' datasets for OpenLineage", exc_info=True)
        return None


def lineage_wanted() -> bool:
    """Whether Airflow's OpenLineage provider is installed and configured to send events."""
    try:
        from airflow.providers.openlineage import conf
    except ImportError:
        return False
    try:
        return not conf.is_disabled()
    except Exception:  # an older provider, a broken configuration: say nothing rather than fail
        log.debug("Cannot tell whether OpenLineage is on", exc_info=True)
        return False


class OpenLineageMixin:
    """``get_openlineage_facets_on_complete`` (and ``_on_failure``) from what the operator recorded."""

    _lineage: dict[str, Any] | None = None
    outlets: Any

    def record_lineage(self, record: Mapping[str, Any]) -> None:
        """Keep what the task read and wrote for the OpenLineage listener (see :func:`build_lineage`).

        :param record: the lineage record
        """
        self._lineage = dict(record)

    def get_openlineage_facets_on_complete(self, task_instance: Any) -> Any:
        """The task's OpenLineage facets (``None`` without the OpenLineage provider or a record).

        :param task_instance: the finished task instance
        """
        record = self._lineage
        if record is None:
            return None
        try:
            return build_lineage(record, outlets=list(getattr(self, "outlets", None) or ()))
        except Exception:  # lineage never fails a task
            log.warning("Could not build the OpenLineage facets of this task", exc_info=True)
            return None

    def get_openlineage_facets_on_failure(self, task_instance: Any) -> Any:
        """The facets of a failed task: what it had recorded before failing.

        :param task_instance: the failed task instance
        """
        return self.get_openlineage_facets_on_complete(task_instance)
