"""Airflow Asset URIs for what a DVC repository tracks.

Two schemes, registered under ``asset-uris`` in the provider info:

- ``x-dvc://<namespace>/<path>``: an output of a pipeline stage (``DvcPipelineTaskGroup`` gives
  each stage task one per output), ``<path>`` relative to the repository root;
- ``x-dvc-data://<namespace>/<targets>``: tracked data a ``DvcDataChangedSensor`` watches,
  several targets joined with ``+``.

A promotion emits an event of ``x-mlci-model://<model>/<stage>`` (:func:`model_asset`), so a deployment
Dag can be scheduled on releases; the promote task is skipped when nothing is released, so an event
means a release.

``<namespace>`` names the repository (the project folder's name, ``asset_namespace`` or the
connection id): letters, digits, ``.``, ``_`` and ``-``, case-insensitive. The normal form has
a lower-case scheme and namespace, a path without empty, ``.`` or trailing segments, and no
user, port, query or fragment; :func:`sanitize_uri` refuses (``ValueError``) a URI that has no
namespace or path, or whose path climbs out of the repository (``..``).

Airflow leaves URIs whose scheme starts with ``x-`` as they are written when an ``Asset`` is
made; it applies the handler when asked for ``Asset.normalized_uri`` (the OpenLineage provider
asks for it), and Assets this provider makes are in normal form already (:func:`dvc_asset_uri`).

Importing this module loads nothing beyond the standard library.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any
from urllib.parse import SplitResult, urlsplit

if TYPE_CHECKING:
    from airflow.sdk import Asset

__all__ = [
    "DATA_SCHEME",
    "MODEL_SCHEME",
    "OUTPUT_SCHEME",
    "SCHEMES",
    "convert_asset_to_openlineage",
    "create_asset",
    "dvc_asset_uri",
    "model_asset",
    "sanitize_uri",
]

#: Stage outputs: ``x-dvc://<namespace>/<path>``.
OUTPUT_SCHEME = "x-dvc"
#: Watched data: ``x-dvc-data://<namespace>/<target>[+<target>...]``.
DATA_SCHEME = "x-dvc-data"
SCHEMES = (OUTPUT_SCHEME, DATA_SCHEME)
#: Releases: ``x-mlci-model://<model>/<stage>``.
MODEL_SCHEME = "x-mlci-model"

_NAMESPACE = re.compile(r"[a-z0-9][a-z0-9._-]*")


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Return the normal form of an ``x-dvc`` or ``x-dvc-data`` URI (Airflow's URI handler).

    :param uri: the URI, split by :func:`urllib.parse.urlsplit`
    :raises ValueError: when it is not a valid URI of these schemes (Airflow's convention)
    """
    scheme = uri.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"{uri.geturl()!r}: not an {' or '.join(SCHEMES)} URI")
    if "@" in uri.netloc:
        raise ValueError(f"{uri.geturl()!r}: an {scheme} URI has no user part")
    namespace = uri.netloc.lower()
    if not namespace:
        raise ValueError(f"{uri.geturl()!r}: an {scheme} URI needs a namespace: {scheme}://<namespace>/<path>")
    if not _NAMESPACE.fullmatch(namespace):
        raise ValueError(
            f"{uri.geturl()!r}: the namespace {uri.netloc!r} may hold only letters, digits, '.', '_' and '-' "
            "(and no port)"
        )
    if uri.query or uri.fragment:
        raise ValueError(f"{uri.geturl()!r}: an {scheme} URI has no query or fragment")
    path = _normal_path(uri.path, scheme, uri.geturl())
    return SplitResult(scheme=scheme, netloc=namespace, path=path, query="", fragment="")


def _normal_path(path: str, scheme: str, shown: str) -> str:
    targets = path.split("+") if scheme == DATA_SCHEME else [path]
    normal = []
    for target in targets:
        segments = [segment for segment in target.split("/") if segment not in ("", ".")]
        if ".." in segments:
            raise ValueError(f"{shown!r}: the path may not leave the repository ('..')")
        if not segments:
            raise ValueError(f"{shown!r}: an {scheme} URI needs a path inside the repository")
        normal.append("/".join(segments))
    return "/" + "+".join(normal)


def dvc_asset_uri(namespace: str, path: str, *, scheme: str = OUTPUT_SCHEME) -> str:
    """Return the normal ``x-dvc`` (or ``x-dvc-data``) URI of ``path`` in the repository ``namespace``.

    :param namespace: the repository's name in Asset URIs
    :param path: a path relative to the repository root (``x-dvc-data``: targets joined with ``+``)
    :param scheme: ``x-dvc`` or ``x-dvc-data``
    :raises ValueError: naming what is wrong with ``namespace`` or ``path``
    """
    if scheme not in SCHEMES:
        raise ValueError(f"scheme={scheme!r}: use one of {', '.join(SCHEMES)}")
    return sanitize_uri(SplitResult(scheme, namespace, "/" + path, "", "")).geturl()


def create_asset(*, namespace: str, path: str, extra: dict[str, Any] | None = None) -> Asset:
    """Make the Asset of a DVC-tracked ``path`` (Airflow's Asset factory for ``x-dvc``).

    :param namespace: the repository's name in Asset URIs
    :param path: a path relative to the repository root
    :param extra: the Asset's extra
    """
    from airflow.sdk import Asset

    uri = dvc_asset_uri(namespace, path)
    return Asset(uri=uri, name=uri, group="dvc", extra=extra or {})


def convert_asset_to_openlineage(asset: Asset, lineage_context: Any = None) -> Any:
    """Translate an ``x-dvc`` Asset into an OpenLineage dataset (namespace ``x-dvc://<namespace>``, name the path).

    :param asset: the Asset (its URI in normal form, as Airflow passes it)
    :param lineage_context: unused; part of Airflow's converter signature
    """
    from openlineage.client.event_v2 import Dataset

    parts = sanitize_uri(urlsplit(asset.uri))
    return Dataset(namespace=f"{parts.scheme}://{parts.netloc}", name=parts.path.lstrip("/"))


def model_asset(model: str, stage: str) -> Asset:
    """The Asset a promotion of ``model`` to ``stage`` emits an event of: ``x-mlci-model://<model>/<stage>``.

    A model name GTO writes with ``:`` (``path:name``) has it as ``=``, as in its tags.

    :param model: the model's name in the registry
    :param stage: the stage
    """
    from airflow.sdk import Asset

    return Asset(uri=f"{MODEL_SCHEME}://{model.replace(':', '=')}/{stage}", name=f"{model}#{stage}")
