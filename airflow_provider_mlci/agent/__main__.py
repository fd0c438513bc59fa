"""``python -m airflow_provider_mlci.agent``: see :mod:`airflow_provider_mlci.agent`."""

from __future__ import annotations

from airflow_provider_mlci.agent import main

if __name__ == "__main__":
    raise SystemExit(main())
