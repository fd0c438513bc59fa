"""DVC projects as their authors write them, against ``dvc repro`` by hand (see
tests/helpers/dvc_corpus.py). This file: templating (vars, foreach, matrix, ``${}``), params in
four formats, directory and binary uncached outputs."""

from __future__ import annotations

import shutil

from tests.helpers import dvc_corpus

TEMPLATED_DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(dag_id="corpus_templated", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    DvcPipelineTaskGroup(group_id="pipeline", project_dir="corpus_templated", rev="main", commit_to="mlci/corpus")
"""


def install(project, dags_folder, name):
    shutil.copytree(project.work, dags_folder / name, ignore=shutil.ignore_patterns(".git"))


def test_templated_project_per_stage_equals_dvc_repro_by_hand(
    run_dag, tmp_path, dags_folder, dvc_connection, separate_workers
):
    project = dvc_corpus.templated_project(tmp_path / "templated")
    install(project, dags_folder, "corpus_templated")
    dvc_connection(str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url})
    sha = project.head()
    hand = dvc_corpus.by_hand(project, tmp_path / "by-hand")
    assert hand.ran == {"split@a", "split@b", "featurize@small", "featurize@large", "train@lin", "train@tree"}
    assert {"data/split/.gitignore", "models/lin.bin", "metrics/tree.json"} <= hand.changed

    record = run_dag("corpus_templated", source=TEMPLATED_DAG)
    assert record.state == "success", record.task_states
    assert dvc_corpus.ran(record.xcom, "pipeline") == hand.ran
    # Two parallel stages each added their output to data/split/.gitignore: both lines are kept.
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/corpus", scratch=tmp_path)
