"""Helpers to test DAGs that use this provider against real, local git and DVC remotes."""

from __future__ import annotations

from airflow_provider_mlci.testing.repos import DEMO_DATA, LocalDvcProject, create_demo_project, create_dvc_project

__all__ = ["DEMO_DATA", "LocalDvcProject", "create_demo_project", "create_dvc_project"]
