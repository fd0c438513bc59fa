"""The model release DAG for real (dag.test()) against a bare git remote and a DVC remote: a better
candidate is promoted and a worse one is not (the tags show it), a stage that changed after the gate
aborts the promotion, a broken model fails validation naming it, and rollback is one tag."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from airflow_provider_mlci.core.model.registry import GitRegistry
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.workspace import Workspace
from tests.conftest import EXAMPLE_DAGS
from tests.helpers.airflow_records import xcom
from tests.helpers.demo_project import train
from tests.helpers.log_lines import error_lines

DAG_ID = "example_model_release"
MODEL = "fraud-detector"


@pytest.fixture
def project(dvc_project, dvc_connection, worker_cache, monkeypatch, tmp_path):
    """The demo project (nothing trained yet) behind the default connection."""
    return _serve(dvc_project, dvc_connection, worker_cache, monkeypatch, tmp_path)


def _serve(project, dvc_connection, worker_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(project.remote), extra={"dvc_remote_url": project.dvc_remote_url})
    return project


@pytest.fixture(scope="module")
def released_template(demo_project_template, tmp_path_factory):
    """Trained once per module: a model of 10 epochs on main, released to prod as v0.1.0."""
    root = tmp_path_factory.mktemp("released")
    template = demo_project_template.copy_to(root / "project")
    champion = train(template, 10)
    with Workspace.open(RepoAccess.local(str(template.remote)), "main", cache_dir=root / "cache") as ws:
        GitRegistry(workspace=ws).promote(name=MODEL, sha=champion, stage="prod")
    template.champion = champion
    return template


@pytest.fixture
def released(released_template, dvc_connection, worker_cache, monkeypatch, tmp_path):
    """A private copy of the released project behind the default connection."""
    copy = released_template.copy_to(tmp_path / "project")
    copy.champion = released_template.champion
    return _serve(copy, dvc_connection, worker_cache, monkeypatch, tmp_path)


def deployed(project, tmp_path, name: str) -> str:
    """The commit ``dvc.api.artifacts_show`` resolves for prod, from a fresh clone."""
    clone = tmp_path / name
    project.git("clone", "--quiet", str(project.remote), str(clone))
    code = f"import dvc.api; print(dvc.api.artifacts_show({MODEL!r}, stage='prod', repo={str(clone)!r})['rev'])"
    return subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout.strip()


def test_a_better_model_is_promoted_and_a_worse_one_is_not(run_dag, released, tmp_path):
    better = train(released, 150)
    record = run_dag(DAG_ID, path=EXAMPLE_DAGS / "example_model_release.py", conf={"rev": better})
    assert record.state == "success", record.task_states
    assert record.task_states == {
        "validate_model": "success",
        "gate": "success",
        "promote": "success",
        "keep_deployed": "skipped",
        "summary": "success",
    }
    verdict = record.xcom["validate_model"]
    assert verdict["passed"] is True
    assert {c["kind"] for c in verdict["checks"]} >= {"dependencies", "load", "contract", "scores"}
    decision = xcom(record, "gate", "decision")
    assert decision["promote"] is True
    assert decision["champion"]["version"] == "v0.1.0"
    assert decision["evaluation"]["same"] is True
    report = xcom(record, "gate", "mlci_report_uri")
    assert report.startswith(f"file://{tmp_path / 'reports'}/{DAG_ID}/")
    markdown = Path(report.removeprefix("file://"), "decision.md").read_text()
    assert "Decision: **promote**" in markdown
    assert "| logloss | lower |" in markdown
    assert Path(xcom(record, "validate_model", "mlci_report_uri").removeprefix("file://"), "verdict.json").is_file()
    logloss = next(m for m in decision["metrics"] if m["metric"] == "logloss")
    assert logloss["delta"] < -0.01
    assert record.xcom["promote"]["version"] == "v0.2.0"
    assert record.xcom["summary"] == {"promoted": True, "version": "v0.2.0"}
    assert released.remote_tags() == {
        f"{MODEL}@v0.1.0": released.champion,
        f"{MODEL}#prod#1": released.champion,
        f"{MODEL}@v0.2.0": better,
        f"{MODEL}#prod#2": better,
    }
    message = released.git("tag", "-l", "--format=%(contents)", f"{MODEL}#prod#2", cwd=released.remote)
    assert '"replaced"' in message
    assert '"run_id"' in message
    assert deployed(released, tmp_path, "after-better") == better

    worse = train(released, 2)
    before = released.remote_tags()
    record = run_dag(DAG_ID, path=EXAMPLE_DAGS / "example_model_release.py", conf={"rev": worse})
    assert record.state == "success", record.task_states
    assert record.task_states["promote"] == "skipped"
    assert record.task_states["keep_deployed"] == "success"
    decision = xcom(record, "gate", "decision")
    assert decision["promote"] is False
    assert decision["champion"]["version"] == "v0.2.0"
    assert any("logloss" in reason for reason in decision["reasons"])
    assert record.xcom["summary"] == {"promoted": False, "version": None}
    assert released.remote_tags() == before
    assert deployed(released, tmp_path, "after-worse") == better


RACE_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    from airflow_provider_mlci.operators.model import ModelGateOperator, PromoteModelOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        gate = ModelGateOperator(task_id="gate", model="fraud-detector", rev="{candidate}",
                                 rules={{"logloss": {{"direction": "lower"}}}})

        @task
        def someone_else_promotes():
            from airflow_provider_mlci.core.repo.access import RepoAccess
            from airflow_provider_mlci.core.model.registry import GitRegistry
            from airflow_provider_mlci.core.repo.workspace import Workspace

            with Workspace.open(RepoAccess.local("{remote}"), "main", cache_dir="{cache}") as ws:
                return GitRegistry(workspace=ws).promote(name="fraud-detector", sha="{other}", stage="prod").to_json()

        promote = PromoteModelOperator(
            task_id="promote", model="fraud-detector", rev="{candidate}", gate_task_id="gate"
        )
        gate >> someone_else_promotes() >> promote
    """
)


def test_a_stage_that_changed_after_the_gate_aborts_the_promotion(run_dag, released, tmp_path, capfd):
    candidate = train(released, 150)
    other = train(released, 40)
    source = RACE_DAG.format(
        dag_id="release_race",
        candidate=candidate,
        other=other,
        remote=released.remote,
        cache=tmp_path / "other-worker",
    )
    record = run_dag("release_race", source=source)
    assert record.task_states == {"gate": "success", "someone_else_promotes": "success", "promote": "failed"}
    out = capfd.readouterr().out
    assert error_lines(out, "PromotionConflictError") == [
        "airflow.sdk.exceptions.AirflowFailException: PromotionConflictError: Stage 'prod' of 'fraud-detector' changed "
        "since the gate compared against it: it held v0.1.0, it holds v0.2.0 (fraud-detector#prod#2) now. Nothing "
        "was written; run the gate again."
    ]
    on_prod = {sha for tag, sha in released.remote_tags().items() if "#prod#" in tag}
    assert candidate not in on_prod
    assert deployed(released, tmp_path, "after-race") == other


TASK_DAG = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.operators.model import ModelValidationOperator, RollbackModelOperator, ModelGateOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        {task}
    """
)


def test_a_broken_model_fails_validation_naming_the_file_and_writes_no_tag(run_dag, released, capfd):
    (released.work / "models" / "broken.pkl").write_bytes((released.work / "models" / "model.pkl").read_bytes()[:40])
    released.git("add", "-f", "models/broken.pkl")
    broken = released.commit_and_push("A truncated model", dvc_push=False)
    before = released.remote_tags()
    task = (
        f'ModelValidationOperator(task_id="validate", model="models/broken.pkl", rev="{broken}", '
        'thresholds={"accuracy": {"min": 0.6}, "f1": {"min": 0.5}})'
    )
    record = run_dag("validate_broken", source=TASK_DAG.format(dag_id="validate_broken", task=task))
    assert record.task_states == {"validate": "failed"}
    out = capfd.readouterr().out
    model = f"models/broken.pkl@{broken[:12]}"
    assert error_lines(out, "ModelValidationError") == [
        "\n".join(
            [
                f"airflow.sdk.exceptions.AirflowFailException: ModelValidationError: Model {model} failed 2 check(s) "
                "(1 not run):",
                f"  - load: load {model}: {model} is corrupted or truncated: UnpicklingError: pickle data was "
                "truncated",
                "  - scores: score f1: metric 'f1' not found (metrics: metrics.json:accuracy, metrics.json:logloss, "
                "metrics.json:precision, metrics.json:recall, metrics.json:rows); needs >= 0.5",
            ]
        )
    ]
    verdict = xcom(record, "validate", "verdict")
    assert verdict["passed"] is False
    report = Path(xcom(record, "validate", "mlci_report_uri").removeprefix("file://"), "verdict.md").read_text()
    assert "| load | load models/broken.pkl@" in report
    assert any(c["kind"] == "load" and c["passed"] is False for c in verdict["checks"])
    assert released.remote_tags() == before


def test_rollback_puts_the_previous_version_back_in_one_tag(run_dag, released, tmp_path, capfd):
    better = train(released, 150)
    access = RepoAccess.local(str(released.remote))
    with Workspace.open(access, "main", cache_dir=tmp_path / "setup-cache") as ws:
        GitRegistry(workspace=ws).promote(name=MODEL, sha=better, stage="prod")
    before = released.remote_tags()
    stale = 'RollbackModelOperator(task_id="rollback", model="fraud-detector", expected_version="v0.1.0")'
    record = run_dag("rollback_stale", source=TASK_DAG.format(dag_id="rollback_stale", task=stale))
    assert record.task_states == {"rollback": "failed"}
    out = capfd.readouterr().out
    assert error_lines(out, "PromotionConflictError") == [
        "airflow.sdk.exceptions.AirflowFailException: PromotionConflictError: Stage 'prod' of 'fraud-detector' holds "
        "v0.2.0, not v0.1.0; nothing was written."
    ]
    assert released.remote_tags() == before

    task = 'RollbackModelOperator(task_id="rollback", model="fraud-detector", expected_version="v0.2.0")'
    record = run_dag("rollback", source=TASK_DAG.format(dag_id="rollback", task=task))
    assert record.state == "success"
    result = record.xcom["rollback"]
    assert (result["version"], result["sha"], result["tags"]) == ("v0.1.0", released.champion, [f"{MODEL}#prod#3"])
    assert set(released.remote_tags()) - set(before) == {f"{MODEL}#prod#3"}
    assert deployed(released, tmp_path, "after-rollback") == released.champion


#: The error class and whole message each bad argument fails with, by the part the test is named by;
#: ``{where}``: the repository and revision.
BAD_ARGUMENT_ERRORS = {
    "direction='down' is not one of higher, lower": (
        "MlciConfigError",
        "Gate rule for 'logloss': direction='down' is not one of higher, lower (or maximize, minimize).",
    ),
    "Unknown stage 'production': the repository's .gto allows staging, prod": (
        "MlciConfigError",
        "Unknown stage 'production': the repository's .gto allows staging, prod.",
    ),
    "'1.x' is not a semantic version": (
        "MlciConfigError",
        "'1.x' is not a semantic version (vMAJOR.MINOR.PATCH, for example v1.4.0).",
    ),
    "DvcStageNotFoundError: 'models/nothing.pkl' does not exist as an output": (
        "DvcStageNotFoundError",
        "'models/nothing.pkl' does not exist as an output or a stage name in 'dvc.yaml' [in {where}]",
    ),
}


@pytest.mark.parametrize(
    ("task", "message"),
    [
        (
            'ModelGateOperator(task_id="t", model="fraud-detector", rules={"logloss": {"direction": "down"}})',
            "direction='down' is not one of higher, lower",
        ),
        (
            'ModelGateOperator(task_id="t", model="fraud-detector", stage="production", '
            'rules={"logloss": {"direction": "lower"}})',
            "Unknown stage 'production': the repository's .gto allows staging, prod",
        ),
        (
            'RollbackModelOperator(task_id="t", model="fraud-detector", to_version="1.x")',
            "'1.x' is not a semantic version",
        ),
        (
            'ModelValidationOperator(task_id="t", model="models/nothing.pkl")',
            "DvcStageNotFoundError: 'models/nothing.pkl' does not exist as an output",
        ),
    ],
)
def test_bad_arguments_fail_typed_and_named_with_no_tag_written(run_dag, project, capfd, task, message):
    record = run_dag("bad_release_input", source=TASK_DAG.format(dag_id="bad_release_input", task=task))
    assert record.task_states == {"t": "failed"}
    out = capfd.readouterr().out
    error, whole = BAD_ARGUMENT_ERRORS[message]
    whole = whole.format(where=f"{project.remote} at HEAD ({project.head()[:12]})")
    assert message in f"{error}: {whole}"
    assert error_lines(out, error) == [f"airflow.sdk.exceptions.AirflowFailException: {error}: {whole}"]
    assert project.remote_tags() == {}
