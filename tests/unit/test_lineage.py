"""OpenLineage facets: names of repositories and files, the stages' datasets, and the operators' methods."""

from __future__ import annotations

import sys
import textwrap

import airflow.providers.openlineage  # noqa: F401  (the dev extra installs it: no skip without it)
import pytest
from airflow.providers.common.compat.sdk import AirflowFailException
from airflow.sdk import Asset

from airflow_provider_mlci import lineage
from airflow_provider_mlci.lineage import lock_io, pipeline_io, repository_namespace, storage_dataset
from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.operators.validation import DataValidationOperator
from tests.conftest import DEMO_PROJECT
from tests.helpers.task_instance import TaskInstanceStandIn


@pytest.mark.parametrize(
    ("url", "namespace"),
    [
        ("https://x-access-token:ghp_secret@GitHub.com/acme/fraud.git", "https://github.com/acme/fraud.git"),
        ("https://***@github.com/acme/fraud.git/", "https://github.com/acme/fraud.git"),
        ("git@github.com:acme/fraud.git", "ssh://github.com/acme/fraud.git"),
        ("ssh://git@git.example.com:2222/acme/fraud.git", "ssh://git.example.com:2222/acme/fraud.git"),
        ("/srv/git/fraud.git", "file:///srv/git/fraud.git"),
        ("file:///srv/git/fraud.git", "file:///srv/git/fraud.git"),
        ("https://host/repo.git?token=abc#frag", "https://host/repo.git"),
    ],
)
def test_a_repository_is_named_by_its_url_without_credentials(url, namespace):
    assert repository_namespace(url) == namespace


@pytest.mark.parametrize(
    ("location", "named"),
    [
        ("s3://ml-reports/airflow/dag/run/task", {"namespace": "s3://ml-reports", "name": "airflow/dag/run/task"}),
        ("gcs://bucket/key.csv", {"namespace": "gs://bucket", "name": "key.csv"}),
        ("file:///var/reports/x", {"namespace": "file", "name": "/var/reports/x"}),
        ("/var/reports/x", {"namespace": "file", "name": "/var/reports/x"}),
    ],
)
def test_files_outside_the_repository_are_named_as_openlineage_names_files(location, named):
    assert storage_dataset(location) == named


LOCK = {
    "dvc.lock": {
        "prepare": {
            "deps": [{"path": "data/raw.csv", "md5": "r1"}, {"path": "src/prepare.py", "md5": "p1"}],
            "params": {"params.yaml": {"prepare.split": 0.2}},
            "outs": [{"path": "data/prepared", "md5": "d1.dir"}],
        },
        "train": {
            "deps": [{"path": "data/prepared/train.csv", "md5": "t1"}, {"path": "src/train.py", "md5": "s1"}],
            "params": {"params.yaml": {"train.epochs": 10}},
            "outs": [{"path": "models/model.pkl", "md5": "m1"}],
        },
    },
    "sub/dvc.lock": {"build": {"deps": [{"path": "in.txt", "md5": "i1"}], "outs": [{"path": "out.txt", "md5": "o1"}]}},
}


def test_a_whole_pipeline_reads_its_sources_and_writes_every_output():
    io = lock_io(["prepare", "train"], LOCK)
    assert io["inputs"] == [
        {"path": "data/raw.csv", "version": "r1"},
        {"path": "src/prepare.py", "version": "p1"},
        {"path": "src/train.py", "version": "s1"},
        {"path": "params.yaml", "version": None, "params": True},
    ]  # data/prepared/train.csv is written by prepare: not an input of the whole run
    assert io["outputs"] == [
        {"path": "data/prepared", "version": "d1.dir"},
        {"path": "models/model.pkl", "version": "m1"},
    ]


def test_one_stage_reads_its_upstream_outputs_and_only_its_own_stages_count():
    io = lock_io(["train"], LOCK)
    assert {item["path"] for item in io["inputs"]} == {"data/prepared/train.csv", "src/train.py", "params.yaml"}
    assert io["outputs"] == [{"path": "models/model.pkl", "version": "m1"}]
    looped = {"dvc.lock": {"build@us": {"outs": [{"path": "out.txt", "md5": "u1"}]}}}
    assert lock_io(["build@us"], looped, wdirs={"build@": "work"})["outputs"] == [
        {"path": "work/out.txt", "version": "u1"}
    ]  # a foreach stage's wdir applies to each expansion
    sub = lock_io(["sub/dvc.yaml:build"], LOCK)  # a stage of another dvc.yaml: paths from the repository root
    assert sub == {
        "inputs": [{"path": "sub/in.txt", "version": "i1"}],
        "outputs": [{"path": "sub/out.txt", "version": "o1"}],
    }


def test_the_dvc_yaml_gives_the_paths_a_stage_with_a_wdir_really_uses(tmp_path):
    (tmp_path / "dvc.yaml").write_text(
        textwrap.dedent(
            """
            stages:
              features:
                wdir: pipelines
                cmd: python features.py
                deps: [../data/raw.csv, features.py]
                outs: [../data/features.parquet]
            """
        )
    )
    lock = {"dvc.lock": {"features": {"outs": [{"path": "../data/features.parquet", "md5": "f1"}]}}}
    io = pipeline_io(tmp_path, ["features"], lock)
    assert io["inputs"] == [
        {"path": "data/raw.csv", "version": None},
        {"path": "pipelines/features.py", "version": None},
    ]
    assert io["outputs"] == [{"path": "data/features.parquet", "version": "f1"}]
    demo = pipeline_io(DEMO_PROJECT, ["evaluate"])
    assert {item["path"] for item in demo["inputs"]} == {"src/evaluate.py", "models/model.pkl", "data/eval.csv"}
    assert {"metrics.json", "eval/roc.csv", "eval/importance.svg"} <= {item["path"] for item in demo["outputs"]}


def repro_with_record(**kwargs) -> DvcReproOperator:
    op = DvcReproOperator(task_id="train", **kwargs)
    op._stage_io = lock_io(["train"], LOCK)
    op.record_repro_lineage(
        {"repo": "https://***@github.com/acme/fraud.git", "rev": "main", "sha": "c0ffee", "stages": {"train": "ran"}}
    )
    return op


def test_a_repro_task_names_repository_commit_stages_and_datasets():
    op = repro_with_record(outlets=[Asset("x-dvc://Fraud/models/model.pkl")])
    facets = op.get_openlineage_facets_on_complete(None)
    repo = "https://github.com/acme/fraud.git"
    location = facets.job_facets["sourceCodeLocation"]
    assert (location.type, location.repoUrl, location.version) == ("git", repo, "c0ffee")
    run = facets.run_facets["mlci"]
    assert (run.repository, run.rev, run.sha, run.stages) == (repo, "main", "c0ffee", {"train": "ran"})
    assert {(d.namespace, d.name) for d in facets.inputs} == {
        (repo, "data/prepared/train.csv"),
        (repo, "src/train.py"),
        (repo, "params.yaml"),
    }
    (model,) = facets.outputs
    assert (model.namespace, model.name) == (repo, "models/model.pkl")
    assert model.facets["version"].datasetVersion == "m1"
    (alias,) = model.facets["symlinks"].identifiers
    assert (alias.namespace, alias.name, alias.type) == ("x-dvc://fraud", "models/model.pkl", "asset")
    assert "ghp_" not in repr(facets)
    assert op.get_openlineage_facets_on_failure(None) == facets


def test_nothing_is_built_before_the_task_ran_or_without_the_provider(monkeypatch):
    assert DvcReproOperator(task_id="t").get_openlineage_facets_on_complete(None) is None
    op = repro_with_record()
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage.extractors", None)  # not installed
    assert op.get_openlineage_facets_on_complete(None) is None
    monkeypatch.setitem(sys.modules, "airflow.providers.openlineage", None)
    assert lineage.lineage_wanted() is False


def test_lineage_is_wanted_only_when_openlineage_has_somewhere_to_send_events(monkeypatch):
    from airflow.providers.openlineage import conf

    monkeypatch.setattr(conf, "is_disabled", lambda: True)
    assert lineage.lineage_wanted() is False
    monkeypatch.setattr(conf, "is_disabled", lambda: False)
    assert lineage.lineage_wanted() is True


def test_a_record_that_cannot_be_built_gives_no_facets_and_no_error():
    op = DvcReproOperator(task_id="t")
    op.record_lineage({"repo": "https://github.com/a/b.git", "sha": "1", "outputs": [{"nothing": "here"}]})
    assert op.get_openlineage_facets_on_complete(None) is None


SCHEMA = """
schema_type: dataframe
api: pandas
columns:
  amount: {dtype: float64, nullable: false, greater_than_or_equal_to: 0}
"""


def test_a_dataset_that_fails_validation_is_still_an_input_with_the_failed_checks(tmp_path):
    (tmp_path / "schema.yaml").write_text(SCHEMA)
    (tmp_path / "data.csv").write_text("amount\n1.5\n-2\n3\n-4\n")
    op = DataValidationOperator(
        task_id="validate",
        dataset=f"file://{tmp_path}/data.csv",
        schema=str(tmp_path / "schema.yaml"),
        report_dir=str(tmp_path / "reports"),
    )
    with pytest.raises(AirflowFailException, match="failure case"):
        op.execute({"ti": TaskInstanceStandIn("validate")})
    facets = op.get_openlineage_facets_on_failure(None)
    (dataset,) = facets.inputs
    assert (dataset.namespace, dataset.name) == ("file", f"{tmp_path}/data.csv")
    assert dataset.inputFacets["dataQualityMetrics"].rowCount == 4
    assertions = [(a.assertion, a.success, a.column) for a in dataset.inputFacets["dataQualityAssertions"].assertions]
    assert assertions[0] == (f"schema {tmp_path}/schema.yaml", False, None)
    assert [(column, success) for _, success, column in assertions[1:]] == [("amount", False)]
    assert "greater_than_or_equal_to" in assertions[1][0]
    assert facets.run_facets["mlci"].validation["valid"] is False
    assert facets.job_facets == {}  # no repository involved


def test_the_operators_that_record_lineage():
    for cls in (DvcReproOperator, DataValidationOperator, MetricsReportOperator):
        assert callable(cls.get_openlineage_facets_on_complete)
        assert callable(cls.get_openlineage_facets_on_failure)
