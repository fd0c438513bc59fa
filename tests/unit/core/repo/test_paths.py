"""Paths from a repository stay inside it: the helper, then every reader of a checkout.

Each reader test commits a link that leads out of a real git repository to a sentinel file,
checks the repository out as a task would (:class:`Workspace`), and asserts that the reader
refuses the path with :class:`UnsafePathError` naming it as the repository writes it, and that
the sentinel's content shows nowhere: not in the error, the log, the result or the report.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

import pandera.pandas as pa
import pytest

from airflow_provider_mlci.core.data.validation import load_schema, validate_table
from airflow_provider_mlci.core.dvc import ops as dvc_ops
from airflow_provider_mlci.core.model.checks import ModelContract, check_model
from airflow_provider_mlci.core.model.registry import GitRegistry, artifact_path
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.paths import git_link_reader, inside, inside_commit
from airflow_provider_mlci.core.repo.workspace import Workspace
from airflow_provider_mlci.core.reports.html import build_report
from airflow_provider_mlci.exceptions import MlciConfigError, UnsafePathError
from airflow_provider_mlci.operators.validation import DataValidationOperator

#: What every file outside the repositories here holds; it must never show.
SENTINEL = "top-secret-7f3a9c"
PNG = b"\x89PNG\r\n\x1a\n"
ENV = {
    "GIT_AUTHOR_NAME": "t",
    "GIT_AUTHOR_EMAIL": "t@example.invalid",
    "GIT_COMMITTER_NAME": "t",
    "GIT_COMMITTER_EMAIL": "t@example.invalid",
}


def run(cwd: Path, *argv: str) -> str:
    return subprocess.run(argv, cwd=cwd, env={**os.environ, **ENV}, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def outside(tmp_path: Path) -> Path:
    """A folder outside every repository whose files hold the sentinel."""
    folder = tmp_path / "outside"
    folder.mkdir()
    (folder / "secret.csv").write_text(f"secret\n{SENTINEL}\n")
    (folder / "secret.txt").write_text(f"{SENTINEL}==1.0\n")
    (folder / "secret.yaml").write_text(f"stages: [{SENTINEL}]\nartifacts:\n  fraud:\n    path: {SENTINEL}.pkl\n")
    (folder / "secret.pkl").write_bytes(pickle.dumps({"weights": SENTINEL}))
    (folder / "secret.png").write_bytes(PNG + SENTINEL.encode())
    (folder / "secret.json").write_text(json.dumps({"auc": SENTINEL}))
    return folder


def up_to(tmp_path: Path, link: str, target: Path) -> str:
    """A relative link target that climbs from ``link`` in a checkout out to ``target``: checkouts
    live at ``<worker>/checkouts/<name>/`` (see :mod:`airflow_provider_mlci.core.repo.workspace`)."""
    return os.path.relpath(target, tmp_path / "worker" / "checkouts" / "name" / os.path.dirname(link))


def make_repo(
    tmp_path: Path,
    files: Mapping[str, str | bytes],
    links: Mapping[str, str],
    *,
    dvc: bool = False,
    branches: Mapping[str, Mapping[str, str]] | None = None,
) -> RepoAccess:
    """A bare remote whose ``main`` holds ``files`` and the links ``{path: target as written}``;
    each of ``branches`` adds its own links on top of ``main``."""
    remote, work = tmp_path / "remote.git", tmp_path / "work"
    run(tmp_path, "git", "init", "--quiet", "--bare", "-b", "main", str(remote))
    run(tmp_path, "git", "init", "--quiet", "-b", "main", str(work))
    run(work, "git", "remote", "add", "origin", str(remote))
    if dvc:  # what `dvc init` writes that DVC needs, without starting it
        (work / ".dvc").mkdir()
        (work / ".dvc" / "config").write_text("[core]\n    analytics = false\n")
        (work / ".dvc" / ".gitignore").write_text("/config.local\n/tmp\n/cache\n")
    for name, content in files.items():
        (work / name).parent.mkdir(parents=True, exist_ok=True)
        (work / name).write_bytes(content if isinstance(content, bytes) else content.encode())

    def commit(branch: str, links: Mapping[str, str]) -> None:
        for name, target in links.items():
            (work / name).parent.mkdir(parents=True, exist_ok=True)
            (work / name).unlink(missing_ok=True)
            os.symlink(target, work / name)
        run(work, "git", "add", "-A")
        run(work, "git", "commit", "--quiet", "-m", branch)
        run(work, "git", "push", "--quiet", "origin", f"HEAD:{branch}")

    commit("main", links)
    for branch, extra in (branches or {}).items():
        run(work, "git", "checkout", "--quiet", "-b", branch, "main")
        commit(branch, extra)
    return RepoAccess.local(str(remote))


@contextlib.contextmanager
def checkout(tmp_path: Path, access: RepoAccess, rev: str = "main") -> Iterator[Workspace]:
    with Workspace.open(access, rev, cache_dir=tmp_path / "worker") as workspace:
        yield workspace


def said(text: str) -> str:
    """A ``match=`` pattern for exactly ``text``."""
    return re.escape(text)


def assert_unseen(*texts: object) -> None:
    for text in texts:
        assert SENTINEL not in str(text)


# -- the helper -------------------------------------------------------------------------------


@pytest.fixture
def tree(tmp_path: Path, outside: Path) -> Path:
    """A folder with links that stay inside it and links that lead out."""
    root = tmp_path / "repo"
    (root / "data").mkdir(parents=True)
    (root / "data" / "real.csv").write_text("a\n1\n")
    os.symlink("real.csv", root / "data" / "alias.csv")
    os.symlink("data", root / "same")
    os.symlink("../same/alias.csv", root / "data" / "chain.csv")
    os.symlink(outside / "secret.csv", root / "data" / "abs.csv")
    os.symlink("../../outside/secret.csv", root / "data" / "up.csv")
    os.symlink(outside, root / "linked")
    os.symlink("hop", root / "hop2")
    os.symlink("linked", root / "hop")
    return root


@pytest.mark.parametrize(
    "path", ["data/real.csv", "data/alias.csv", "same/alias.csv", "data/chain.csv", "same/../data/x"]
)
def test_links_that_stay_inside_the_repository_are_followed(tree, path):
    expected = "x" if path.endswith("/x") else "real.csv"
    assert inside(tree, path) == (tree / "data" / expected).resolve()
    assert inside(tree, tree / path) == inside(tree, path)  # an absolute path under the root: the same


@pytest.mark.parametrize(
    ("path", "named"),
    [
        ("/etc/passwd", "'/etc/passwd' is outside the repository"),
        ("../outside/secret.csv", "'../outside/secret.csv' is outside the repository"),
        ("data/../../x", "'data/../../x' is outside the repository"),
        ("data/abs.csv", "'data/abs.csv' is a link that leads out of the repository"),
        ("data/up.csv", "'data/up.csv' is a link that leads out of the repository"),
        ("linked/secret.csv", "'linked/secret.csv' leads out of the repository through the link 'linked'"),
        ("hop2/secret.csv", "'hop2/secret.csv' leads out of the repository through the link 'hop2'"),
        ("", "names no file"),
    ],
)
def test_paths_and_links_that_lead_out_are_refused_naming_the_path_as_written(tree, outside, path, named):
    with pytest.raises(UnsafePathError, match=said(named)) as caught:
        inside(tree, path, what="dataset")
    assert str(caught.value).startswith("The dataset ")
    assert str(outside) not in str(caught.value)  # where the link leads is not told
    assert isinstance(caught.value, MlciConfigError)
    assert not caught.value.retryable


def test_for_a_file_about_to_be_replaced_only_its_folders_are_followed(tree):
    assert inside(tree, "data/abs.csv", follow_last=False) == tree.resolve() / "data" / "abs.csv"
    assert inside(tree, "same/new.csv", follow_last=False) == tree.resolve() / "data" / "new.csv"
    for path, named in (("linked/x", "through the link 'linked'"), ("data/..", "names no file"), (".", "names no")):
        with pytest.raises(UnsafePathError, match=named):
            inside(tree, path, follow_last=False)


def test_a_commits_links_are_followed_in_its_tree_and_those_leading_out_refused(tmp_path, outside):
    access = make_repo(
        tmp_path,
        {"plots/real.png": PNG},
        {
            "plots/alias.png": "real.png",
            "mirror": "plots",
            "plots/abs.png": str(outside / "secret.png"),
            "plots/up.png": "../../outside/secret.png",
            "linked": str(outside),
            "loop": "loop",
        },
    )
    with checkout(tmp_path, access) as workspace:
        read_link = git_link_reader(workspace.path, workspace.sha)
        assert inside_commit("plots/real.png", read_link) == "plots/real.png"
        assert inside_commit("plots/alias.png", read_link) == "plots/real.png"
        assert inside_commit("mirror/alias.png", read_link) == "plots/real.png"
        assert inside_commit("plots/absent.png", read_link) == "plots/absent.png"
        for path, named in (
            ("plots/abs.png", "'plots/abs.png' is a link that leads out"),
            ("plots/up.png", "'plots/up.png' is a link that leads out"),
            ("mirror/up.png", "'mirror/up.png' is a link that leads out"),
            ("linked/secret.png", "through the link 'linked'"),
            ("../x.png", "is outside the repository"),
            ("loop/x", "more than 40 links"),
        ):
            with pytest.raises(UnsafePathError, match=named):
                inside_commit(path, read_link, what="plot image")
            if not path.startswith("loop"):  # the checkout of the same commit says the same
                with pytest.raises(UnsafePathError, match=named):
                    inside(workspace.path, path, what="plot image")
        assert git_link_reader(workspace.path, "0" * 40)("plots/abs.png") is None  # no such commit: no link


# -- every reader of a checkout ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("dataset", "named"),
    [
        ("data/abs.csv", "The dataset 'data/abs.csv' is a link that leads out of the repository"),
        ("data/up.csv", "The dataset 'data/up.csv' is a link that leads out of the repository"),
        ("linked/secret.csv", "The dataset 'linked/secret.csv' leads out of the repository through the link 'linked'"),
    ],
)
def test_a_dataset_that_is_a_link_out_of_the_repository_is_refused_unread(tmp_path, outside, caplog, dataset, named):
    access = make_repo(
        tmp_path,
        {"data/real.csv": "secret\n1\n"},
        {
            "data/abs.csv": str(outside / "secret.csv"),
            "data/up.csv": up_to(tmp_path, "data/up.csv", outside / "secret.csv"),
            "linked": str(outside),
        },
    )
    schema = pa.DataFrameSchema({"secret": pa.Column("int64")})
    operator = DataValidationOperator(task_id="validate", dataset=dataset, schema=schema)
    with checkout(tmp_path, access) as workspace:
        assert (workspace.path / dataset).read_text().endswith(f"{SENTINEL}\n")  # the link does reach it
        with (
            pytest.raises(UnsafePathError) as caught,
            operator.open_dataset(dataset, None, workspace=workspace) as (reader, _),
        ):
            # What happened before: the sentinel was read, validated and put in the report.
            pytest.fail(f"read through the link: {validate_table(reader, schema).describe()}")
    assert named in str(caught.value)
    assert_unseen(caught.value, caplog.text)


def test_a_dataset_or_schema_behind_a_link_inside_the_repository_is_read_and_a_schema_link_out_refused(
    tmp_path, outside
):
    schema_yaml = pa.DataFrameSchema({"a": pa.Column("int64")}).to_yaml()
    access = make_repo(
        tmp_path,
        {"data/real.csv": "a\n1\n2\n", "schemas/real.yaml": schema_yaml},
        {
            "data/alias.csv": "real.csv",
            "schemas/alias.yaml": "real.yaml",
            "schemas/out.yaml": str(outside / "secret.yaml"),
        },
    )
    operator = DataValidationOperator(task_id="validate", dataset="data/alias.csv", schema="schemas/alias.yaml")
    with checkout(tmp_path, access) as workspace:
        schema = load_schema("schemas/alias.yaml", base_dir=workspace.path)
        with operator.open_dataset("data/alias.csv", None, workspace=workspace) as (reader, where):
            report = validate_table(reader, schema)
        assert (report.valid, report.rows_checked, where) == (True, 2, f"data/alias.csv@{workspace.sha[:12]}")
        with pytest.raises(UnsafePathError, match=said("The schema file 'schemas/out.yaml' is a link")) as caught:
            load_schema("schemas/out.yaml", base_dir=workspace.path)
    assert_unseen(caught.value)


def test_a_model_file_or_sample_input_that_is_a_link_out_is_refused_before_anything_loads(tmp_path, outside, capfd):
    access = make_repo(
        tmp_path,
        {"models/real.pkl": pickle.dumps({"weights": [1, 2]})},
        {
            "models/model.pkl": str(outside / "secret.pkl"),
            "models/current.pkl": "real.pkl",
            "data/sample.csv": up_to(tmp_path, "data/sample.csv", outside / "secret.csv"),
        },
    )
    with checkout(tmp_path, access) as workspace:
        with pytest.raises(
            UnsafePathError, match=said("The model file 'models/model.pkl' is a link that leads out")
        ) as model:
            check_model(model_path=workspace.path / "models/model.pkl", cwd=workspace.path)
        contract = ModelContract(sample_input=str(workspace.path / "data/sample.csv"))
        with pytest.raises(
            UnsafePathError, match=said("The sample input 'data/sample.csv' is a link that leads out")
        ) as sample:
            check_model(model_path=Path("models/current.pkl"), cwd=workspace.path, contract=contract)
        # A link that stays inside the repository loads what it points at.
        checks = {c.name: c for c in check_model(model_path=Path("models/current.pkl"), cwd=workspace.path)}
    assert checks["load models/current.pkl"].passed is True
    assert_unseen(model.value, sample.value, capfd.readouterr())


def test_a_requirements_file_or_one_it_includes_that_is_a_link_out_is_refused_unread(tmp_path, outside):
    access = make_repo(
        tmp_path,
        {"reqs/base.txt": "numpy\n-r extra.txt\n"},
        {
            "requirements.txt": str(outside / "secret.txt"),
            "reqs/extra.txt": up_to(tmp_path, "reqs/extra.txt", outside / "secret.txt"),
        },
    )
    from airflow_provider_mlci.core.model.verdict import requirements_in

    with checkout(tmp_path, access) as workspace:
        with pytest.raises(UnsafePathError, match=said("The requirements file 'requirements.txt' is a link")) as direct:
            requirements_in(workspace, "requirements.txt")
        with pytest.raises(UnsafePathError, match=r"'reqs/extra\.txt' is a link that leads out.*named at") as included:
            requirements_in(workspace, "reqs/base.txt")
    assert_unseen(direct.value, included.value)


def test_a_gto_or_dvc_yaml_that_is_a_link_out_is_refused_and_one_inside_read(tmp_path, outside):
    access = make_repo(
        tmp_path,
        {"conf/gto.yaml": "stages: [staging, prod]\n", "conf/dvc.yaml": "artifacts:\n  fraud:\n    path: m.pkl\n"},
        {".gto": str(outside / "secret.yaml"), "dvc.yaml": up_to(tmp_path, "dvc.yaml", outside / "secret.yaml")},
        branches={"inside": {".gto": "conf/gto.yaml", "dvc.yaml": "conf/dvc.yaml"}},
    )
    with checkout(tmp_path, access) as workspace:
        with pytest.raises(UnsafePathError, match=said("The GTO config '.gto' is a link that leads out")) as gto:
            GitRegistry(workspace=workspace).check_stage("prod")
        with pytest.raises(UnsafePathError, match=said("'dvc.yaml' is a link that leads out")) as dvc_yaml:
            artifact_path(workspace.path, "fraud")
    assert_unseen(gto.value, dvc_yaml.value)
    with checkout(tmp_path, access, "inside") as workspace:
        assert GitRegistry(workspace=workspace).check_stage("prod") == "prod"
        with pytest.raises(MlciConfigError, match="allows staging, prod"):
            GitRegistry(workspace=workspace).check_stage("qa")
        assert artifact_path(workspace.path, "fraud") == "m.pkl"


def test_a_plot_image_that_is_a_link_out_is_refused_in_the_report_and_the_others_shown(tmp_path, outside):
    access = make_repo(
        tmp_path,
        {"dvc.yaml": "plots:\n  - images/out.png\n  - images/ok.png\n", "images/ok.png": PNG + b"ok"},
        {"images/out.png": str(outside / "secret.png")},
        dvc=True,
    )
    with checkout(tmp_path, access) as workspace:
        out = tmp_path / "report-inputs"
        inputs = dvc_ops.report_inputs(workspace, [workspace.sha], out)
        report = build_report(
            title="T", rev="main", sha=workspace.sha, baseline_rev=None, baseline_sha=None, inputs=inputs
        )
    assert [plot["name"] for plot in inputs["plots"]] == ["images/ok.png"]
    refused = [p for p in inputs["problems"] if "images/out.png" in p]
    assert refused == [
        "Plot images/out.png: The plot image 'images/out.png' is a link that leads out of the repository: only "
        f"links that stay inside the repository are followed. [at {workspace.sha[:12]}]"
    ]
    assert [image.name for image in report.images] == ["images/ok.png"]
    assert refused[0] in report.problems
    written = [path.read_bytes() for path in out.rglob("*") if path.is_file()]
    assert str(outside) not in json.dumps(inputs)
    assert not any(str(outside).encode() in data for data in written)
    assert_unseen(json.dumps(inputs), report.markdown, report.html, *(image.data for image in report.images), *written)


def test_metrics_a_stage_left_behind_a_link_out_of_the_repository_are_refused_not_returned(tmp_path, outside):
    from dvc.repo import Repo

    from airflow_provider_mlci.core.dvc.child import metrics_of

    access = make_repo(
        tmp_path,
        {"dvc.yaml": "metrics:\n  - metrics.json\n  - eval/inside.json\n", "eval/real.json": '{"auc": 0.9}'},
        {"metrics.json": str(outside / "secret.json"), "eval/inside.json": "real.json"},
        dvc=True,
    )
    with checkout(tmp_path, access) as workspace:
        # What a repro returns (into XCom), from the files DVC read in the workspace, through their links.
        refused = said("The metrics file 'metrics.json' is a link")
        with Repo(str(workspace.path)) as repo:
            with pytest.raises(UnsafePathError, match=refused) as caught:
                metrics_of(repo)
            (workspace.path / "metrics.json").unlink()  # not written (by a stage in another task): skipped
            assert metrics_of(repo) == {"eval/inside.json": {"auc": 0.9}}
    assert_unseen(caught.value)
