"""OpenLineage events of a real run: Airflow's OpenLineage provider, configured with its file
transport, records what validation, a pipeline rendered as tasks, and a report read and wrote.

The run happens in a child process, as a worker would run it: the provider's listener is
installed when Airflow loads its plugins, which must see the OpenLineage settings first.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import airflow.providers.openlineage  # noqa: F401  (the dev extra installs it: no skip without it)
import pytest

from tests.conftest import DEMO_PROJECT

DAG_ID = "mlci_openlineage"
DAG_SOURCE = textwrap.dedent(
    f"""
    import pendulum
    from airflow.sdk import DAG

    from airflow_provider_mlci.operators.report import MetricsReportOperator
    from airflow_provider_mlci.operators.validation import DataValidationOperator
    from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup

    with DAG(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
        validate = DataValidationOperator(
            task_id="validate", dataset="data/raw.csv", schema="schemas/raw.yaml", rev="main"
        )
        pipeline = DvcPipelineTaskGroup(
            group_id="pipeline", project_dir={str(DEMO_PROJECT)!r}, rev="main", asset_namespace="Fraud"
        )
        report = MetricsReportOperator(
            task_id="report", rev="{{{{ ti.xcom_pull(task_ids='pipeline.resolve')['sha'] }}}}", baseline_rev="main"
        )
        validate >> pipeline >> report
    """
)

_DRIVER = """
import sys
from airflow_provider_mlci.testing.airflow import dag_bag
bag = dag_bag(sys.argv[1])
assert not bag.import_errors, bag.import_errors
print("RUN_ID", bag.dags[sys.argv[2]].test().run_id)
"""


def run_with_openlineage(dag_file, events_file) -> str:
    """Run the DAG with ``dag.test()`` in a child process that sends OpenLineage events to a file.

    The child runs isolated (``-I``, in another folder): with this checkout on ``sys.path``, its
    ``.egg-info`` lists the provider's plugin a second time, and Airflow 3.3 stops loading
    entry-point plugins at a repeated name, which can leave OpenLineage's listener out.
    """
    env = {
        **os.environ,
        "AIRFLOW__OPENLINEAGE__TRANSPORT": json.dumps(
            {"type": "file", "log_file_path": str(events_file), "append": True}
        ),
        "AIRFLOW__OPENLINEAGE__NAMESPACE": "mlci-tests",
        "AIRFLOW__OPENLINEAGE__EXECUTE_IN_THREAD": "True",
    }
    proc = subprocess.run(
        [sys.executable, "-I", "-c", _DRIVER, str(dag_file), DAG_ID],
        cwd=events_file.parent,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    (events_file.parent / "driver.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return next(line.split()[1] for line in proc.stdout.splitlines() if line.startswith("RUN_ID "))


def completions(events_file) -> dict[str, dict]:
    """The COMPLETE event of each task, by task id."""
    found = {}
    for line in events_file.read_text().splitlines():
        event = json.loads(line)
        name = event["job"]["name"]
        if event["eventType"] == "COMPLETE" and name.startswith(f"{DAG_ID}."):
            found[name.removeprefix(f"{DAG_ID}.")] = event
    return found


def datasets(event: dict, side: str) -> dict[tuple[str, str], dict]:
    return {(d["namespace"], d["name"]): d for d in event[side]}


@pytest.mark.timeout(600, method="thread")
def test_a_run_records_repository_commit_and_dvc_datasets(
    airflow_db, dags_folder, dvc_project, dvc_connection, worker_cache, tmp_path, monkeypatch
):
    from airflow_provider_mlci.testing.airflow import latest_run

    monkeypatch.setenv("AIRFLOW__MLCI__CACHE_DIR", str(worker_cache))
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    dvc_connection(str(dvc_project.remote), extra={"dvc_remote_url": dvc_project.dvc_remote_url})
    dag_file = dags_folder / f"{DAG_ID}.py"
    dag_file.write_text(DAG_SOURCE)
    events_file = tmp_path / "openlineage.jsonl"

    run_id = run_with_openlineage(dag_file, events_file)

    record = latest_run(DAG_ID, run_id)
    assert record.state == "success", record.task_states
    sha = dvc_project.head()
    repo = f"file://{dvc_project.remote}"
    events = completions(events_file)
    assert {"validate", "pipeline.prepare", "pipeline.train", "pipeline.evaluate", "report"} <= set(events)

    # Every task names the repository and the commit it worked on.
    for task_id in ("validate", "pipeline.prepare", "pipeline.train", "pipeline.evaluate", "report"):
        event = events[task_id]
        location = event["job"]["facets"]["sourceCodeLocation"]
        assert (location["type"], location["repoUrl"], location["version"]) == ("git", repo, sha), task_id
        mlci = event["run"]["facets"]["mlci"]
        assert (mlci["repository"], mlci["sha"]) == (repo, sha), task_id
        assert mlci["_schemaURL"].endswith("lineage_facet.json#/$defs/MlciRunFacet")

    # Validation: the dataset it read, with the verdict as data-quality facets.
    validate = events["validate"]
    (raw,) = validate["inputs"]
    assert (raw["namespace"], raw["name"]) == (repo, "data/raw.csv")
    rows = record.xcom["validate"]["rows_checked"]
    assert raw["inputFacets"]["dataQualityMetrics"]["rowCount"] == rows > 0
    assertions = raw["inputFacets"]["dataQualityAssertions"]["assertions"]
    assert assertions == [{"assertion": "schema schemas/raw.yaml", "success": True, "params": {}}]
    assert validate["run"]["facets"]["mlci"]["validation"]["valid"] is True

    # Stage tasks: each stage's dependencies in, its outputs out, with DVC's object ids; the
    # upstream stage's output is the next one's input (that is what joins them in a lineage graph).
    lock = {
        stage: {item["path"]: item.get("md5") for side in ("deps", "outs") for item in entry.get(side, [])}
        for lockfile in record.xcom["pipeline.evaluate"]["handoff"]["lock"].values()
        for stage, entry in lockfile.items()
    }
    train = events["pipeline.train"]
    inputs, outputs = datasets(train, "inputs"), datasets(train, "outputs")
    assert set(inputs) == {
        (repo, "src/train.py"),
        (repo, "data/prepared/train.csv"),
        (repo, "models/base.pkl"),
        (repo, "params.yaml"),
    }
    assert set(outputs) == {(repo, "models/model.pkl")}
    model = outputs[repo, "models/model.pkl"]
    assert model["facets"]["version"]["datasetVersion"] == lock["evaluate"]["models/model.pkl"]
    assert model["facets"]["symlinks"]["identifiers"] == [
        {"namespace": "x-dvc://fraud", "name": "models/model.pkl", "type": "asset"}
    ]
    assert train["run"]["facets"]["mlci"]["stages"] == {"train": "ran"}
    assert (repo, "data/prepared") in datasets(events["pipeline.prepare"], "outputs")
    evaluate_outputs = set(datasets(events["pipeline.evaluate"], "outputs"))
    assert {(repo, "metrics.json"), (repo, "eval/roc.csv")} <= evaluate_outputs
    assert (repo, "models/model.pkl") in datasets(events["pipeline.evaluate"], "inputs")

    # The report: the files it read at the commit (metrics.json is not committed there, so it
    # could not be read and is no input), and the report folder it wrote.
    report = events["report"]
    assert any("metrics.json" in problem for problem in record.xcom["report"]["problems"])
    assert set(datasets(report, "inputs")) == {(repo, "params.yaml")}
    ((namespace, name),) = datasets(report, "outputs")
    assert namespace == "file"
    assert name.startswith(str(tmp_path / "reports"))
    assert report["run"]["facets"]["mlci"]["report"] == record.xcom["report"]["report_uri"]
