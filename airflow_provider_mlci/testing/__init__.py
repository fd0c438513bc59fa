"""Helpers to test DAGs that use this provider against real, local components.

- :mod:`~airflow_provider_mlci.testing.repos`: DVC projects with a bare git remote and a DVC remote.
- :mod:`~airflow_provider_mlci.testing.airflow`: what a DAG run left in the metadata database.
- :mod:`~airflow_provider_mlci.testing.cluster`: a real scheduler, dag-processor, api-server and triggerer.
- :mod:`~airflow_provider_mlci.testing.moto`: moto's S3/EC2 server over HTTP.
- :mod:`~airflow_provider_mlci.testing.git_http`: a git HTTP remote that demands a token.
- :mod:`~airflow_provider_mlci.testing.deployment`: PostgreSQL, Redis, Celery workers as users of their own.
- :mod:`~airflow_provider_mlci.testing.procs`: whether a process still runs.

None of them imports moto or pytest when imported.
"""

from __future__ import annotations

from airflow_provider_mlci.testing.cluster import AirflowCluster
from airflow_provider_mlci.testing.moto import moto_server
from airflow_provider_mlci.testing.repos import DEMO_DATA, LocalDvcProject, create_demo_project, create_dvc_project

__all__ = ["DEMO_DATA", "AirflowCluster", "LocalDvcProject", "create_demo_project", "create_dvc_project", "moto_server"]
