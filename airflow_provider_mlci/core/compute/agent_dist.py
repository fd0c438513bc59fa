"""What a GPU instance installs to run the agent: the worker's own code, without Airflow.

The agent (``python -m airflow_provider_mlci.agent``) imports this package's ``core`` and
``agent`` modules, DVC and boto3, and no Airflow. So the instance does not install the provider
from an index (a version that may not be published, and all of Airflow with it): the worker builds
a wheel of the code it runs itself (:func:`package_wheel`, the same bytes for the same code),
uploads it beside the job's mailbox, and the boot script installs it with ``pip --no-deps`` after
the agent's own short requirement list (:func:`agent_requirements`, pinned to the versions the
worker runs, so the instance reproduces with the DVC the worker would use).
"""

from __future__ import annotations

import base64
import functools
import hashlib
import io
import zipfile
from pathlib import Path

__all__ = ["AGENT_DISTRIBUTIONS", "agent_requirements", "package_wheel", "wheel_name"]

#: What the agent imports besides this package and the standard library (DVC's own dependencies
#: come with it). ``dvc-s3`` is DVC's S3 remote; ``packaging`` reads a project's requirements.
AGENT_DISTRIBUTIONS = ("dvc", "dvc-s3", "boto3", "packaging")

_DISTRIBUTION = "airflow_provider_mlci"
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)  # the earliest a zip can say: the same code, the same bytes


def agent_requirements() -> list[str]:
    """The agent's requirements, each pinned to the version this process has (unpinned if absent)."""
    from importlib.metadata import PackageNotFoundError, version

    pinned = []
    for name in AGENT_DISTRIBUTIONS:
        try:
            pinned.append(f"{name}=={version(name)}")
        except PackageNotFoundError:
            pinned.append(name)
    return pinned


def wheel_name() -> str:
    """The file name of :func:`package_wheel`'s wheel (pip needs a wheel's name to be its tag)."""
    from airflow_provider_mlci import __version__

    return f"{_DISTRIBUTION}-{__version__}-py3-none-any.whl"


def package_wheel(package_dir: Path | None = None) -> bytes:
    """A wheel of the running ``airflow_provider_mlci`` package: its files (no bytecode) and a
    ``dist-info`` without requirements (the boot script installs it with ``--no-deps``).

    Deterministic: the same files give the same bytes, so the boot script that names it is the
    same on every try of a launch.

    :param package_dir: the package folder (default: the one this module was imported from)
    """
    root = package_dir or Path(__file__).resolve().parents[2]
    return _build(root, _fingerprint(root))


def _fingerprint(root: Path) -> tuple[tuple[str, int, int], ...]:
    """What the cached wheel is keyed on: every file's path, size and modification time."""
    return tuple((str(p), (st := p.stat()).st_size, st.st_mtime_ns) for p in _files(root))


def _files(root: Path) -> list[Path]:
    return sorted(
        p for p in root.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix not in (".pyc", ".pyo")
    )


@functools.lru_cache(maxsize=2)
def _build(root: Path, _key: tuple[tuple[str, int, int], ...]) -> bytes:
    from airflow_provider_mlci import __version__

    info = f"{_DISTRIBUTION}-{__version__}.dist-info"
    entries: list[tuple[str, bytes]] = [
        (f"{root.name}/{path.relative_to(root).as_posix()}", path.read_bytes()) for path in _files(root)
    ]
    entries.append(
        (
            f"{info}/METADATA",
            (
                "Metadata-Version: 2.1\nName: airflow-provider-mlci\n"
                f"Version: {__version__}\n"
                "Summary: The agent's copy of the worker's airflow-provider-mlci (built by the worker).\n"
            ).encode(),
        )
    )
    entries.append(
        (
            f"{info}/WHEEL",
            b"Wheel-Version: 1.0\nGenerator: airflow-provider-mlci\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
    )
    record = [f"{name},sha256={_digest(data)},{len(data)}" for name, data in entries]
    record.append(f"{info}/RECORD,,")
    entries.append((f"{info}/RECORD", ("\n".join(record) + "\n").encode()))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for name, data in entries:
            member = zipfile.ZipInfo(name, date_time=_FIXED_TIME)
            member.external_attr = 0o644 << 16
            member.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(member, data)
    return buffer.getvalue()


def _digest(data: bytes) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
