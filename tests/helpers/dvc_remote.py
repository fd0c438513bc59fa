"""Helpers for tests on a DVC project with a local DVC remote: what the remote holds, and the
:class:`~airflow_provider_mlci.core.repo.access.RepoAccess` that reaches the project."""

from __future__ import annotations

from pathlib import Path

from airflow_provider_mlci.core.repo.access import RepoAccess

__all__ = ["access_for", "remote_files"]


def remote_files(root: str | Path) -> set[str]:
    """Every file under a local DVC remote ``root``, relative to it (none if it does not exist)."""
    root = Path(root)
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()} if root.exists() else set()


def access_for(project) -> RepoAccess:
    """Access to ``project``'s bare git remote and its DVC remote."""
    return RepoAccess.local(str(project.remote), url=project.dvc_remote_url)
