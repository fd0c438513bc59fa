"""The demo project (``example_dags/demo_project``): train it to a chosen number of epochs, give it new
data, copy a trained one."""

from __future__ import annotations

import re
import subprocess
import sys

__all__ = ["new_data", "private_copy", "train"]


def new_data(project, seed: int, *, rows: int = 600, commit: bool = True) -> None:
    """Generate new raw data (``rows`` rows from ``seed``) and track it with DVC; unless told
    otherwise, commit and push it."""
    subprocess.run(
        [sys.executable, "src/generate.py", "data/raw.csv", "--rows", str(rows), "--seed", str(seed)],
        cwd=project.work,
        check=True,
    )
    project.dvc("add", "--quiet", "data/raw.csv")
    if commit:
        project.commit_and_push(f"New data (seed {seed})")


def train(project, epochs: int, branch: str = "main") -> str:
    """Reproduce the pipeline with ``epochs`` training epochs; commit and push it to ``branch``; return the commit."""
    params = project.work / "params.yaml"
    params.write_text(re.sub(r"(?m)^(\s*)epochs: \d+", rf"\g<1>epochs: {epochs}", params.read_text()))
    project.dvc("repro", "--quiet")
    return project.commit_and_push(f"Train for {epochs} epochs", branch=branch)


def private_copy(template, folder, names: tuple[str, ...]):
    """A copy of a module's trained ``template`` project in ``folder``, keeping the commit ids the
    template recorded as the attributes ``names`` (``template.trained``, ...)."""
    copy = template.copy_to(folder)
    for name in names:
        setattr(copy, name, getattr(template, name))
    return copy
