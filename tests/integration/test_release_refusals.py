"""Every way the release gate and the promotion refuse, for real (dag.test()) against a bare git
remote holding the model registry's tags: a worse candidate, a candidate evaluated on other data
(refused, and compared only when ``allow_different_data`` says so), and a promotion with no
decision, after a refusal, or of a candidate that moved since the gate. Each refusal fails the
task for good (no retry), says why in one line, and leaves every registry tag as it was.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import yaml

from airflow_provider_mlci.core.model.registry import GitRegistry
from airflow_provider_mlci.core.repo.access import RepoAccess
from airflow_provider_mlci.core.repo.workspace import Workspace
from tests.helpers.airflow_records import xcom
from tests.helpers.demo_project import private_copy, train
from tests.helpers.log_lines import FAILED, OPERATORS, error_lines, logged

MODEL = "fraud-detector"
RULES = '{"logloss": {"direction": "lower"}}'

DAG_SOURCE = textwrap.dedent(
    """
    import pendulum
    from airflow.sdk import DAG, task

    from airflow_provider_mlci.operators.model import ModelGateOperator, PromoteModelOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
             default_args={{"retries": 2, "retry_delay": 0}}):
        {tasks}
    """
)


def dag(dag_id: str, *tasks: str) -> str:
    """A DAG file with ``tasks`` (one statement each)."""
    return DAG_SOURCE.format(dag_id=dag_id, tasks="\n    ".join(tasks))


@pytest.fixture(scope="module")
def released_template(demo_project_template, tmp_path_factory):
    """Trained once per module, all on ``main``: ``champion`` (10 epochs, released to prod as
    v0.1.0), ``better`` (150 epochs; branch ``candidate`` points at it), ``worse`` (2 epochs) and
    ``other_data`` (150 epochs, evaluated on another evaluation set)."""
    root = tmp_path_factory.mktemp("refusals")
    template = demo_project_template.copy_to(root / "project")
    template.champion = train(template, 10)
    with Workspace.open(RepoAccess.local(str(template.remote)), "main", cache_dir=root / "cache") as ws:
        GitRegistry(workspace=ws).promote(name=MODEL, sha=template.champion, stage="prod")
    template.better = train(template, 150)
    template.git("push", "--quiet", "origin", f"{template.better}:refs/heads/candidate")
    template.worse = train(template, 2)
    generate = [sys.executable, "src/generate.py", "data/eval.csv", "--rows", "1000", "--seed", "5"]
    subprocess.run(generate, cwd=template.work, check=True)
    template.dvc("add", "--quiet", "data/eval.csv")
    template.other_data = train(template, 150)
    return template


@pytest.fixture
def released(released_template, dvc_connection, worker_cache, monkeypatch, tmp_path):
    """A private copy of the released project behind the default connection."""
    copy = private_copy(released_template, tmp_path / "project", ("champion", "better", "worse", "other_data"))
    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(copy.remote), extra={"dvc_remote_url": copy.dvc_remote_url})
    copy.tags_before = copy.remote_tags()
    assert copy.tags_before == {f"{MODEL}@v0.1.0": copy.champion, f"{MODEL}#prod#1": copy.champion}
    return copy


def metrics_at(project, sha: str) -> dict:
    return json.loads(project.git("show", f"{sha}:metrics.json", cwd=project.remote))


def evaluated_on(project, sha: str) -> dict[str, str]:
    """What the evaluate stage read at ``sha`` (less the model), from its dvc.lock."""
    lock = yaml.safe_load(project.git("show", f"{sha}:dvc.lock", cwd=project.remote))
    return {dep["path"]: dep["md5"] for dep in lock["stages"]["evaluate"]["deps"] if dep["path"] != "models/model.pkl"}


def logloss_refusal(project, sha: str) -> str:
    """The gate's reason for a candidate whose logloss is above the champion's."""
    old, new = metrics_at(project, project.champion)["logloss"], metrics_at(project, sha)["logloss"]
    assert new > old
    return f"logloss: logloss regressed by {new - old:g} (from {old:g} to {new:g}); no regression is allowed"


def test_a_worse_candidate_is_refused_for_good_and_no_tag_moves(run_dag, released, capfd):
    gate = f'ModelGateOperator(task_id="gate", model="{MODEL}", rev="{released.worse}", rules={RULES})'
    record = run_dag("refuse_worse", source=dag("refuse_worse", gate))
    out = capfd.readouterr().out
    assert record.task_states == {"gate": "failed"}  # for good: the AirflowFailException line below
    reason = logloss_refusal(released, released.worse)
    assert error_lines(out, "GateRefusedError") == [
        f"{FAILED}GateRefusedError: {MODEL} at {released.worse[:12]} does not replace the model on prod: {reason}"
    ]
    decision = xcom(record, "gate", "decision")
    assert (decision["promote"], decision["reasons"]) == (False, [reason])
    assert decision["evaluation"]["same"] is True
    assert released.remote_tags() == released.tags_before


def test_a_candidate_evaluated_on_other_data_is_refused_unless_allowed(run_dag, released, capfd):
    record = run_dag(
        "refuse_other_data",
        source=dag(
            "refuse_other_data",
            f'ModelGateOperator(task_id="refused", model="{MODEL}", rev="{released.other_data}", rules={RULES})',
            f'ModelGateOperator(task_id="allowed", model="{MODEL}", rev="{released.other_data}", rules={RULES}, '
            "allow_different_data=True)",
        ),
    )
    out = capfd.readouterr().out
    assert record.task_states == {"refused": "failed", "allowed": "success"}

    theirs, ours = evaluated_on(released, released.champion), evaluated_on(released, released.other_data)
    assert theirs["src/evaluate.py"] == ours["src/evaluate.py"]
    assert theirs["data/eval.csv"] != ours["data/eval.csv"]
    difference = (
        f"data/eval.csv: {theirs['data/eval.csv'][:12]} for the deployed model, "
        f"{ours['data/eval.csv'][:12]} for the candidate"
    )
    assert error_lines(out, "GateRefusedError") == [
        f"{FAILED}GateRefusedError: {MODEL} at {released.other_data[:12]} does not replace the model on prod: "
        f"the candidate and the deployed model were not evaluated on the same data and code: {difference}"
    ]

    old = metrics_at(released, released.champion)
    new = metrics_at(released, released.other_data)
    delta = round(new["logloss"] - old["logloss"], 12)
    assert delta < 0  # better on its own evaluation set: only the data stands in the way
    assert record.xcom["allowed"] == {
        "repo": str(released.remote),
        "rev": released.other_data,
        "sha": released.other_data,
        "model": MODEL,
        "stage": "prod",
        "promote": True,
        "reasons": [],
        "metrics": [
            {
                "metric": "logloss",
                "direction": "lower",
                "candidate": new["logloss"],
                "champion": old["logloss"],
                "delta": delta,
                "relative_delta": delta / old["logloss"],
                "passed": True,
                "reasons": [],
            }
        ],
        "candidate": {"rev": released.other_data, "sha": released.other_data, "metrics": {"metrics.json": new}},
        "champion": {
            "name": MODEL,
            "stage": "prod",
            "version": "v0.1.0",
            "sha": released.champion,
            "tag": f"{MODEL}#prod#1",
            "metrics": {"metrics.json": old},
        },
        "evaluation": {"same": False, "differences": [difference], "fingerprint": ours},
    }
    assert xcom(record, "allowed", "decision") == record.xcom["allowed"]
    warning = f"Comparing metrics from different evaluations (allowed): {difference}"
    assert logged(out, "warning", warning, f"{OPERATORS}gate.ModelGateOperator") == 1
    assert released.remote_tags() == released.tags_before


def test_a_promotion_with_no_decision_or_a_refused_one_writes_nothing(run_dag, released, capfd):
    record = run_dag(
        "promote_undecided",
        source=dag(
            "promote_undecided",
            # A gate that fails before deciding (its rules are wrong) leaves no decision.
            f'broken = ModelGateOperator(task_id="broken_gate", model="{MODEL}", rev="{released.better}", '
            'rules={"logloss": {"direction": "down"}})',
            f'refusing = ModelGateOperator(task_id="refusing_gate", model="{MODEL}", rev="{released.worse}", '
            f"rules={RULES})",
            f'broken >> PromoteModelOperator(task_id="promote_undecided", model="{MODEL}", rev="{released.better}", '
            'gate_task_id="broken_gate", trigger_rule="all_done")',
            f'refusing >> PromoteModelOperator(task_id="promote_refused", model="{MODEL}", rev="{released.worse}", '
            'gate_task_id="refusing_gate", trigger_rule="all_done")',
        ),
    )
    out = capfd.readouterr().out
    assert record.task_states == dict.fromkeys(
        ("broken_gate", "refusing_gate", "promote_undecided", "promote_refused"), "failed"
    )
    assert xcom(record, "broken_gate", "decision") is None
    assert sorted(error_lines(out, "MlciConfigError")) == [
        f"{FAILED}MlciConfigError: Gate rule for 'logloss': direction='down' is not one of higher, lower "
        "(or maximize, minimize).",
        f"{FAILED}MlciConfigError: Task 'broken_gate' left no gate decision.",
    ]
    reason = logloss_refusal(released, released.worse)
    assert sorted(error_lines(out, "GateRefusedError")) == [
        f"{FAILED}GateRefusedError: The gate refused this candidate: {reason}",
        f"{FAILED}GateRefusedError: {MODEL} at {released.worse[:12]} does not replace the model on prod: {reason}",
    ]
    assert released.remote_tags() == released.tags_before


def test_a_candidate_that_moved_since_the_gate_is_not_promoted(run_dag, released, capfd):
    branch = "refs/heads/candidate"
    assert released.remote_refs()[branch] == released.better
    record = run_dag(
        "promote_moved",
        source=dag(
            "promote_moved",
            f'gate = ModelGateOperator(task_id="gate", model="{MODEL}", rev="candidate", rules={RULES})',
            "@task\n"
            "    def candidate_moves():\n"
            "        import subprocess\n"
            f'        subprocess.run(["git", "push", "--quiet", "origin", "{released.worse}:{branch}"], '
            f'cwd="{released.work}", check=True)',
            f'promote = PromoteModelOperator(task_id="promote", model="{MODEL}", rev="candidate", gate_task_id="gate")',
            "gate >> candidate_moves() >> promote",
        ),
    )
    out = capfd.readouterr().out
    assert record.task_states == {"gate": "success", "candidate_moves": "success", "promote": "failed"}
    decision = xcom(record, "gate", "decision")
    assert (decision["promote"], decision["candidate"]["sha"]) == (True, released.better)
    assert released.remote_refs()[branch] == released.worse
    assert error_lines(out, "PromotionConflictError") == [
        f"{FAILED}PromotionConflictError: The gate judged {released.better[:12]} but 'candidate' is "
        f"{released.worse[:12]} now; nothing was written."
    ]
    assert released.remote_tags() == released.tags_before
