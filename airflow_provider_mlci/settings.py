"""The provider's settings: every ``[mlci]`` option, read here and nowhere else.

The options are declared once, with their types, defaults and descriptions, in the provider
info (:func:`~airflow_provider_mlci.get_provider_info.get_provider_info`, so ``airflow config
list`` shows them); this module reads them through Airflow's configuration (``airflow.cfg`` or
``AIRFLOW__MLCI__<OPTION>``) and returns them typed. An option set to an empty value counts as
unset. Each call reads afresh, so a changed environment is seen at once; reading is cheap (no
I/O beyond what Airflow's configuration already holds) and loads no heavy library.

Example::

    from airflow_provider_mlci import settings

    settings.cache_dir()          # '/var/cache/airflow-mlci', or the default under ~/.cache
    settings.reports_location()   # ('s3://ml-reports/airflow', 'aws_reports')
"""

from __future__ import annotations

import functools
import os
from typing import Any

__all__ = [
    "SECTION",
    "cache_dir",
    "cache_max_bytes",
    "compute_backend",
    "compute_job_base",
    "declared",
    "gpu_prices",
    "optuna_conn_id",
    "report_retention_days",
    "report_templates",
    "reports_location",
    "study_retention_days",
]

#: The section of ``airflow.cfg`` the provider's options live in.
SECTION = "mlci"


@functools.cache
def declared() -> dict[str, dict[str, Any]]:
    """The options as the provider info declares them: ``{name: {"type", "default", ...}}``."""
    from airflow_provider_mlci.get_provider_info import get_provider_info

    return get_provider_info()["config"][SECTION]["options"]


def _conf() -> Any:
    # The Task SDK's configuration where it has one (Airflow 3.2+), else Airflow's own.
    from airflow.providers.common.compat.sdk import conf

    return conf


def _raw(name: str) -> str:
    """The option's text: the configured value, else its declared default ("" when none)."""
    if name not in declared():
        raise KeyError(f"[{SECTION}] {name} is not an option the provider declares")
    default = declared()[name].get("default") or ""
    value = _conf().get(SECTION, name, fallback=default)
    return str(value).strip() if value not in (None, "") else str(default)


def cache_dir() -> str:
    """``[mlci] cache_dir``: each worker's root for mirrors, checkouts and the DVC cache
    (default: ``~/.cache/airflow-provider-mlci``)."""
    from airflow_provider_mlci.core.repo.workspace import default_cache_dir

    return _raw("cache_dir") or default_cache_dir()


def cache_max_bytes() -> int:
    """``[mlci] cache_max_size_gb`` in bytes (0: no cap).

    :raises MlciConfigError: the value is not a number of gigabytes, or is negative
    """
    from airflow_provider_mlci.exceptions import MlciConfigError

    text = _raw("cache_max_size_gb") or "0"
    try:
        gigabytes = float(text)
    except ValueError as exc:
        raise MlciConfigError(f"[{SECTION}] cache_max_size_gb={text!r} is not a number of gigabytes.") from exc
    if gigabytes < 0 or gigabytes != gigabytes:
        raise MlciConfigError(f"[{SECTION}] cache_max_size_gb={text!r} must be 0 (no cap) or more.")
    return int(gigabytes * 1e9)


def reports_location() -> tuple[str, str | None]:
    """``[mlci] reports_dir`` and ``[mlci] reports_conn_id``: where reports are stored, as a URL
    (``s3://bucket/prefix``, ``file:///folder``) or a local folder, and the connection to
    reach it with (``None``: the storage's default). The default folder is
    ``$AIRFLOW_HOME/mlci-reports``."""
    base = _raw("reports_dir")
    if not base:
        home = os.environ.get("AIRFLOW_HOME") or os.path.join(os.path.expanduser("~"), "airflow")
        base = os.path.join(home, "mlci-reports")
    return base, _raw("reports_conn_id") or None


def report_retention_days() -> int:
    """``[mlci] report_retention_days``: how many days a stored report is kept whole (0: forever).

    :raises MlciConfigError: the value is not a whole number of days, or is negative
    """
    return _days("report_retention_days")


def study_retention_days() -> int:
    """``[mlci] study_retention_days``: how many days an adaptive sweep's per-run study is kept (0: forever).

    :raises MlciConfigError: the value is not a whole number of days, or is negative
    """
    return _days("study_retention_days")


def _days(option: str) -> int:
    from airflow_provider_mlci.exceptions import MlciConfigError

    text = _raw(option) or "0"
    try:
        days = int(text)
    except ValueError as exc:
        raise MlciConfigError(f"[{SECTION}] {option}={text!r} is not a whole number of days.") from exc
    if days < 0:
        raise MlciConfigError(f"[{SECTION}] {option}={text!r} must be 0 (keep forever) or more.")
    return days


def report_templates() -> str:
    """``[mlci] report_templates``: a folder whose templates replace the packaged ones of the same name
    (``report.html.j2`` and the reports UI's pages; "" when unset: the packaged ones only)."""
    return _raw("report_templates")


def optuna_conn_id() -> str | None:
    """``[mlci] optuna_conn_id``: the connection to the database of adaptive sweeps' studies when a
    sweep names none (``None`` when unset: a journal file under the Airflow home)."""
    return _raw("optuna_conn_id") or None


def compute_job_base() -> str:
    """``[mlci] compute_job_base``: the ``s3://bucket/prefix`` of GPU instances' mailboxes ("" when unset)."""
    return _raw("compute_job_base")


def gpu_prices() -> dict[str, float]:
    """``[mlci] gpu_prices``: instance type -> USD per hour, the prices used when AWS gives none
    (empty when unset).

    :raises MlciConfigError: the value is not a JSON object of positive numbers
    """
    import json
    import math

    from airflow_provider_mlci.exceptions import MlciConfigError

    text = _raw("gpu_prices")
    if not text:
        return {}
    try:
        table = json.loads(text)
    except ValueError as exc:
        raise MlciConfigError(
            f'[{SECTION}] gpu_prices={text!r} is not JSON (expected an object such as {{"g4dn.xlarge": 0.526}}): {exc}'
        ) from exc
    if not isinstance(table, dict):
        raise MlciConfigError(f"[{SECTION}] gpu_prices={text!r} is not a JSON object of instance type -> USD per hour.")
    prices: dict[str, float] = {}
    for name, price in table.items():
        if isinstance(price, bool) or not isinstance(price, int | float) or not math.isfinite(price) or price < 0:
            raise MlciConfigError(
                f"[{SECTION}] gpu_prices: the price of {name!r} is {price!r}, not a number of USD per hour (0 or more)."
            )
        prices[str(name)] = float(price)
    return prices


def compute_backend() -> str:
    """``[mlci] compute_backend``: where task groups given ``compute=None`` run (``local`` or ``ec2``).

    :raises MlciConfigError: another value
    """
    from airflow_provider_mlci.exceptions import MlciConfigError

    value = _raw("compute_backend") or "local"
    if value not in ("local", "ec2"):
        raise MlciConfigError(f"[{SECTION}] compute_backend={value!r} is not one of 'local', 'ec2'.")
    return value


def sandbox() -> Any:
    """``[mlci] sandbox`` and ``[mlci] stage_env``: how a revision's own code runs by default.

    Returns a :class:`~airflow_provider_mlci.core.runtime.sandbox.SandboxConfig`.

    :raises MlciConfigError: ``sandbox`` is not a boolean, or ``stage_env`` not a list of names
    """
    from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig
    from airflow_provider_mlci.exceptions import MlciConfigError

    text = (_raw("sandbox") or "false").lower()
    if text not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
        raise MlciConfigError(f"[{SECTION}] sandbox={text!r} must be true or false.")
    names = tuple(name.strip() for name in _raw("stage_env").split(",") if name.strip())
    try:
        return SandboxConfig(enabled=text in ("true", "1", "yes", "on"), env=names)
    except MlciConfigError as exc:
        raise MlciConfigError(f"[{SECTION}] stage_env={_raw('stage_env')!r}: {exc}") from exc
