"""DVC projects as their authors write them, against ``dvc repro`` by hand (see
tests/helpers/dvc_corpus.py). This file: data brought in with ``dvc import`` (from another
git + DVC repository) and ``dvc import-url`` (from an HTTP server on 127.0.0.1, which every
worker reaches; a local path would not)."""

from __future__ import annotations

import functools
import http.server
import shutil
import threading

import pytest

from tests.helpers import dvc_corpus

DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

with DAG(dag_id="corpus_imports", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    DvcPipelineTaskGroup(group_id="pipeline", project_dir="corpus_imports", rev="main", commit_to="mlci/corpus")
"""


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):
        pass


@pytest.fixture
def http_folder(tmp_path):
    """A folder served over HTTP on 127.0.0.1; yields ``(folder, base URL)``."""
    folder = tmp_path / "served"
    folder.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield folder, f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_imported_data_per_stage_equals_dvc_repro_by_hand(
    run_dag, tmp_path, dags_folder, dvc_connection, separate_workers, http_folder
):
    project = dvc_corpus.imports_project(tmp_path / "imports", *http_folder)
    shutil.copytree(project.work, dags_folder / "corpus_imports", ignore=shutil.ignore_patterns(".git"))
    dvc_connection(str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url})
    sha = project.head()
    hand = dvc_corpus.by_hand(project, tmp_path / "by-hand")
    assert hand.ran == {"join", "score"}
    assert hand.metrics[""]["data"]["score.json"]["data"]["rows"] == 12

    record = run_dag("corpus_imports", source=DAG)
    assert record.state == "success", record.task_states
    assert dvc_corpus.stage_outcomes(record.xcom, "pipeline") == {"join": "ran", "score": "ran"}
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/corpus", scratch=tmp_path)
