"""Train the demo project (``example_dags/demo_project``) to a chosen number of epochs."""

from __future__ import annotations

import re

__all__ = ["train"]


def train(project, epochs: int, branch: str = "main") -> str:
    """Reproduce the pipeline with ``epochs`` training epochs; commit and push it to ``branch``; return the commit."""
    params = project.work / "params.yaml"
    params.write_text(re.sub(r"epochs: \d+", f"epochs: {epochs}", params.read_text()))
    project.dvc("repro", "--quiet")
    return project.commit_and_push(f"Train for {epochs} epochs", branch=branch)
