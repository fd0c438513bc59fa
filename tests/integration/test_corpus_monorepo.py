"""DVC projects as their authors write them, against ``dvc repro`` by hand (see
tests/helpers/dvc_corpus.py). This file: a monorepo with a second ``dvc.yaml`` and ``wdir``,
frozen, always_changed, persist, 400-file directories, .dvcignore and a stale committed lock;
``mode="single"`` and a target in the subfolder's ``dvc.yaml``. (Its own file, so the parallel
run can put it beside the templated project rather than after it.)"""

from __future__ import annotations

import shutil

from tests.helpers import dvc_corpus

MONOREPO_DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.dvc import DvcReproOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(dag_id="corpus_monorepo", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    root = DvcPipelineTaskGroup(group_id="root", project_dir="corpus_monorepo", rev="main", commit_to="mlci/corpus")
    sub = DvcPipelineTaskGroup(
        group_id="sub", project_dir="corpus_monorepo", dvc_file="sub/dvc.yaml", rev="main", commit_to="mlci/corpus"
    )
    single = DvcPipelineTaskGroup(
        group_id="single", project_dir="corpus_monorepo", rev="main", mode="single", commit_to="mlci/single"
    )
    again = DvcReproOperator(task_id="again", rev="mlci/corpus", targets=["sub/dvc.yaml:summary"])
    root >> sub >> single >> again
"""


def test_monorepo_per_stage_and_single_equal_dvc_repro_by_hand(
    run_dag, tmp_path, dags_folder, dvc_connection, separate_workers
):
    project = dvc_corpus.monorepo_project(tmp_path / "monorepo")
    shutil.copytree(project.work, dags_folder / "corpus_monorepo", ignore=shutil.ignore_patterns(".git"))
    dvc_connection(str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url})
    sha = project.head()
    hand = dvc_corpus.by_hand(project, tmp_path / "by-hand", "dvc.yaml", "sub/dvc.yaml")
    # The stale lock: count.py changed, so count reruns; stamp always does; legacy is frozen.
    assert hand.ran == {"count", "stamp"}

    record = run_dag("corpus_monorepo", source=MONOREPO_DAG)
    assert record.state == "success", record.task_states
    outcomes = dvc_corpus.stage_outcomes(record.xcom, "root", "sub")
    assert dvc_corpus.ran(record.xcom, "root", "sub") == hand.ran, outcomes
    assert outcomes["legacy"] == "skipped"
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/corpus", scratch=tmp_path / "a")
    # One task for the whole root pipeline commits the same files as the per-stage tasks did for it.
    single = record.xcom["single.repro"]
    assert {s for s, o in single["stages"].items() if o == "ran"} == {"count", "stamp"}
    root_files = {path for path in hand.changed if not path.startswith("sub/")}
    assert dvc_corpus.branch_files(project, sha, "mlci/single") == root_files
    for path in root_files:
        assert dvc_corpus.blob(project, "mlci/single", path) == dvc_corpus.blob(project, "mlci/corpus", path), path
    # A target in the subfolder's dvc.yaml, on the committed branch: in sync, nothing runs.
    assert record.xcom["again"]["stages"] == {"sub/dvc.yaml:tokens": "skipped", "sub/dvc.yaml:summary": "skipped"}
