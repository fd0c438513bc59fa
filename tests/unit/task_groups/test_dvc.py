from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.dvc import DvcCommitOperator, DvcPipelineResolveOperator, DvcReproOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup, RenderMode
from tests.conftest import DEMO_PROJECT


def make_dag(**group_args):
    with DAG(dag_id="render_test", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        group = DvcPipelineTaskGroup(group_id="pipeline", project_dir=DEMO_PROJECT, rev="main", **group_args)
    return dag, group


def test_one_task_per_stage_wired_by_the_stage_graph():
    dag, group = make_dag()
    assert set(dag.task_ids) == {"pipeline.resolve", "pipeline.prepare", "pipeline.train", "pipeline.evaluate"}
    resolve = dag.get_task("pipeline.resolve")
    assert isinstance(resolve, DvcPipelineResolveOperator)
    assert resolve.expected_stages == {"prepare": [], "train": ["prepare"], "evaluate": ["train"]}
    train = dag.get_task("pipeline.train")
    assert isinstance(train, DvcReproOperator)
    assert train.targets == ["train"]
    assert train.single_stage
    assert train.hand_off
    assert train.handoff_from == ("pipeline.prepare",)
    assert dag.get_task("pipeline.evaluate").handoff_from == ("pipeline.prepare", "pipeline.train")
    assert train.upstream_task_ids == {"pipeline.prepare"}
    assert dag.get_task("pipeline.prepare").upstream_task_ids == {"pipeline.resolve"}
    assert dag.get_task("pipeline.evaluate").upstream_task_ids == {"pipeline.train"}
    assert "xcom_pull(task_ids='pipeline.resolve')" in train.rev
    assert group.stage_task_ids == {"prepare": "prepare", "train": "train", "evaluate": "evaluate"}


def test_every_output_is_an_asset_of_its_stage():
    dag, _ = make_dag(asset_namespace="fraud")
    uris = {task_id: {a.uri for a in dag.get_task(task_id).outlets} for task_id in dag.task_ids}
    assert uris["pipeline.train"] == {"x-dvc://fraud/models/model.pkl"}
    assert uris["pipeline.evaluate"] == {
        f"x-dvc://fraud/{path}"
        for path in ("metrics.json", "eval/predictions.csv", "eval/roc.csv", "eval/scores.csv", "eval/importance.svg")
    }
    no_assets, _ = make_dag(emit_assets=False)
    assert not any(no_assets.get_task(t).outlets for t in no_assets.task_ids)


def test_a_commit_task_follows_the_last_stages():
    dag, _ = make_dag(commit_to="lock-updates", operator_args={"retries": 2})
    commit = dag.get_task("pipeline.commit")
    assert isinstance(commit, DvcCommitOperator)
    assert commit.branch == "lock-updates"
    assert commit.upstream_task_ids == {"pipeline.evaluate"}
    assert set(commit.handoff_from) == {"pipeline.prepare", "pipeline.train", "pipeline.evaluate"}
    assert all(dag.get_task(t).retries == 2 for t in dag.task_ids)


def test_selected_stages_only_and_their_links():
    dag, _ = make_dag(select=["train", "evaluate"])
    assert set(dag.task_ids) == {"pipeline.resolve", "pipeline.train", "pipeline.evaluate"}
    assert dag.get_task("pipeline.train").upstream_task_ids == {"pipeline.resolve"}
    assert dag.get_task("pipeline.evaluate").handoff_from == ("pipeline.train",)


def test_single_mode_is_one_repro_task():
    dag, group = make_dag(mode="single", commit_to="main")
    assert dag.task_ids == ["pipeline.repro"]
    repro = dag.get_task("pipeline.repro")
    assert repro.targets is None
    assert repro.commit_to == "main"
    assert group.mode is RenderMode.SINGLE


def test_a_bad_mode_names_the_choices():
    with pytest.raises(MlciConfigError, match="'per_stage', 'single'"):
        make_dag(mode="parallel")


def test_relative_project_dirs_resolve_against_the_dag_file(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not where the project is
    dag_file = DEMO_PROJECT.parent / "example_dvc_pipeline.py"
    with DAG(dag_id="relative", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        dag.fileloc = str(dag_file)
        DvcPipelineTaskGroup(group_id="pipeline", project_dir="demo_project")
    assert "pipeline.train" in dag.task_ids
