"""Fingerprints of DVC-tracked data, from the checksums that already exist.

Nothing is downloaded or hashed on the way when the data is in a DVC remote:

- ``tracked``: the md5 DVC recorded for each target at a branch head (a ``.dvc`` file, or an
  output in ``dvc.lock``), read from git; a commit that re-adds identical data (a touch) keeps
  the fingerprint;
- ``source``: for targets made with ``dvc import-url``, what their source holds now: the object's
  ETag for ``s3://`` (one HEAD request), ETag or Last-Modified for ``http(s)://``, and an md5 of
  the content for a local file (read in chunks; callers run this off any event loop).

A fingerprint's ``digest`` changes exactly when one of its items does.
"""

from __future__ import annotations

import enum
import hashlib
import json
import posixpath
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.git import Git
from airflow_provider_mlci.core.repo.workspace import WorkerCache
from airflow_provider_mlci.core.runtime.process import CommandRunner
from airflow_provider_mlci.exceptions import DvcFileError, DvcStageNotFoundError, MlciConfigError, MlciError

__all__ = ["DataFingerprint", "Watch", "fingerprint"]


class Watch(enum.Enum):
    """What a data watch compares."""

    #: the checksums DVC recorded at the branch head
    TRACKED = "tracked"
    #: the current state of the sources of ``dvc import-url`` targets
    SOURCE = "source"


@dataclass(frozen=True, kw_only=True)
class DataFingerprint:
    """What the watched data looks like now.

    :param digest: one hash over every item
    :param sha: the commit the checksums were read at
    :param items: ``{target: checksum}`` (``md5:...``, ``etag:...``)
    """

    digest: str
    sha: str
    items: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, sha: str, items: dict[str, str]) -> DataFingerprint:
        """Compute the digest of ``items``.

        :param sha: the commit
        :param items: ``{target: checksum}``
        """
        digest = hashlib.sha256(json.dumps(items, sort_keys=True).encode()).hexdigest()
        return cls(digest=digest, sha=sha, items=items)

    def to_json(self) -> dict[str, Any]:
        """The JSON form (XCom, trigger events, asset event extras)."""
        return asdict(self)


def fingerprint(
    access: RepoAccess,
    targets: Sequence[str],
    *,
    rev: str = "HEAD",
    watch: Watch | str = Watch.TRACKED,
    cache_dir: str,
    runner: CommandRunner | None = None,
) -> DataFingerprint:
    """Fingerprint ``targets`` of the repository at the head of ``rev``.

    :param access: the repository and DVC remote
    :param targets: tracked paths (``data/raw.csv``) or their ``.dvc`` files
    :param rev: the branch (or any revision) to read
    :param watch: ``tracked`` or ``source`` (see the module docstring)
    :param cache_dir: the cache root holding the repository's mirror
    :param runner: runs git
    :raises DvcStageNotFoundError: a target that no ``.dvc`` file or ``dvc.lock`` output tracks
    """
    mode = Watch(watch)
    if not targets:
        raise MlciConfigError("Name at least one DVC-tracked target to watch.")
    cache = WorkerCache(cache_dir)
    with Git(access.git, runner or CommandRunner()) as git:
        mirror, sha = cache.resolve(git, rev)
        items = {}
        for target in targets:
            record = _record_at(git, mirror, sha, target)
            items[target] = (
                _tracked_checksum(record, target) if mode is Watch.TRACKED else _source_checksum(record, target, access)
            )
    return DataFingerprint.of(sha, items)


def _show(git: Git, mirror: Path, sha: str, path: str) -> str | None:
    result = git.run(["show", f"{sha}:{path}"], cwd=mirror, capture=True)
    return result.stdout if result.returncode == 0 else None


def _record_at(git: Git, mirror: Path, sha: str, target: str) -> dict[str, Any]:
    """The ``.dvc`` file content, or the ``dvc.lock`` output entry, tracking ``target``."""
    path = posixpath.normpath(target.removesuffix(".dvc"))
    if path.startswith(("..", "/")):
        raise MlciConfigError(f"{target!r} is outside the repository")
    text = _show(git, mirror, sha, f"{path}.dvc")
    if text is not None:
        data = _yaml(text, f"{path}.dvc")
        return {"kind": "dvc_file", "file": f"{path}.dvc", "data": data}
    # An output of a pipeline stage: the dvc.lock next to any dvc.yaml above the target.
    folder = posixpath.dirname(path)
    while True:
        lock_path = posixpath.join(folder, "dvc.lock") if folder else "dvc.lock"
        text = _show(git, mirror, sha, lock_path)
        if text is not None:
            relative = posixpath.relpath(path, folder or ".")
            for stage in (_yaml(text, lock_path).get("stages") or {}).values():
                for out in stage.get("outs") or ():
                    if out.get("path") == relative:
                        return {"kind": "lock", "file": lock_path, "data": {"outs": [out]}}
        if not folder:
            break
        folder = posixpath.dirname(folder)
    raise DvcStageNotFoundError(f"No .dvc file or dvc.lock output tracks {target!r} at {sha[:12]}")


def _yaml(text: str, name: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise DvcFileError(f"{name} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise DvcFileError(f"{name} is not a DVC file")
    return data


def _tracked_checksum(record: dict[str, Any], target: str) -> str:
    outs = record["data"].get("outs") or []
    if not outs:
        raise DvcFileError(f"{record['file']} tracks no output for {target!r}")
    out = outs[0]
    for key in ("md5", "etag", "checksum"):
        if out.get(key):
            return f"{key}:{out[key]}"
    raise DvcFileError(f"{record['file']}: the output of {target!r} has no recorded checksum (was it committed?)")


def _source_checksum(record: dict[str, Any], target: str, access: RepoAccess) -> str:
    deps = record["data"].get("deps") or []
    if record["kind"] != "dvc_file" or not deps or "path" not in deps[0]:
        raise DvcFileError(f"{target!r} was not made by 'dvc import-url': it has no external source to watch")
    url = str(deps[0]["path"])
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme == "s3":
        return _s3_etag(url, access)
    if scheme in ("http", "https"):
        return _http_checksum(url)
    if scheme in ("", "file"):
        return _file_md5(urllib.parse.unquote(urllib.parse.urlsplit(url).path) if scheme else url)
    raise MlciConfigError(f"Watching sources of scheme {scheme!r} ({url}) is not supported; watch 'tracked' instead")


def _s3_etag(url: str, access: RepoAccess) -> str:
    import boto3

    parts = urllib.parse.urlsplit(url)
    dvc = access.dvc
    session = boto3.session.Session(
        aws_access_key_id=dvc.aws_access_key_id,
        aws_secret_access_key=dvc.aws_secret_access_key,
        aws_session_token=dvc.aws_session_token,
        region_name=dvc.region_name,
    )
    verify = dvc.verify if dvc.verify is not None else None
    client = session.client("s3", endpoint_url=dvc.endpoint_url, verify=verify)
    try:
        head = client.head_object(Bucket=parts.netloc, Key=parts.path.lstrip("/"))
    except Exception as exc:  # botocore's errors: name the URL, keep the cause
        raise MlciError(f"Cannot read the source {url}: {exc}") from exc
    return f"etag:{head['ETag'].strip(chr(34))}"


def _http_checksum(url: str) -> str:
    request = urllib.request.Request(url, method="HEAD")  # noqa: S310 (the user's own data source)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            etag = response.headers.get("ETag")
            modified = response.headers.get("Last-Modified")
            length = response.headers.get("Content-Length")
    except OSError as exc:
        raise MlciError(f"Cannot read the source {url}: {exc}") from exc
    if etag:
        return f"etag:{etag.strip(chr(34))}"
    if modified:
        return f"modified:{modified}|{length}"
    raise MlciError(f"The source {url} sends neither ETag nor Last-Modified: its changes cannot be seen")


def _file_md5(path: str) -> str:
    source = Path(path)
    if not source.is_absolute():
        raise MlciConfigError(f"The source {path!r} is a relative path: only absolute local sources can be watched")
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with source.open("rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise MlciError(f"Cannot read the source {source}: {exc}") from exc
    return f"md5:{digest.hexdigest()}"
