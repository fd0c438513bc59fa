"""Helpers to test DAGs that use this provider against real, local git and DVC remotes."""

from __future__ import annotations

from airflow_provider_mlci.testing.repos import LocalDvcProject, create_dvc_project

__all__ = ["LocalDvcProject", "create_dvc_project"]
