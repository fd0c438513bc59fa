"""The operator boundary: our errors become Airflow task failures of the right kind."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from airflow_provider_mlci.exceptions import MlciError


@contextlib.contextmanager
def airflow_failures() -> Iterator[None]:
    """Re-raise a non-retryable :class:`MlciError` as ``AirflowFailException`` (no retries).

    Retryable errors pass through unchanged, so Airflow retries them as configured. The
    original error stays attached as the cause and its class name leads the message.
    """
    try:
        yield
    except MlciError as exc:
        if exc.retryable:
            raise
        from airflow.providers.common.compat.sdk import AirflowFailException

        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc
