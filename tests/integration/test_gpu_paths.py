"""The GPU paths the examples advertise, end to end: real Airflow (``dag.test()``), moto's EC2 and S3
over HTTP, the agent as a real process (the instance emulator of tests/helpers/ec2_instances.py
plays the machines), DVC pushing to the S3 remote, a bare git remote.

- ``DvcReproOperator(compute=Ec2Compute(...), commit_to=...)``: the branch gains one commit on the
  reproduced revision whose ``dvc.lock`` names what the S3 remote holds (a fresh clone pulls it all);
- the nightly refinement with ``[mlci] compute_backend = ec2``: trains on an instance and releases;
- ``GpuInstanceStateSensor`` deferred inside a DAG run (``dag.test()`` runs the trigger inline).

Every test ends with no instance of ours left running. Stand-ins, where moto cannot answer: the
instance emulator (moto runs no instances) and ``slow_boot`` in tests/helpers/gpu_runs.py (moto's
instances never boot: they are running the moment they launch). The agent sandboxes every job
with bubblewrap, which must be installed (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import boto3
import pendulum
import yaml

from airflow_provider_mlci.core.reports.html import _fmt
from airflow_provider_mlci.report_store import safe_run
from tests.conftest import EXAMPLE_DAGS
from tests.helpers.airflow_records import xcom
from tests.helpers.flagships import GPU_TRAINING_STATES
from tests.helpers.gpu_runs import ours_alive
from tests.helpers.log_lines import log_messages

DVC = [sys.executable, "-m", "dvc"]


def s3_keys(endpoint: str, url: str) -> set[str]:
    """Every key under an ``s3://bucket/prefix`` URL, relative to the prefix."""
    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    keys: set[str] = set()
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/"):
        keys |= {obj["Key"].removeprefix(f"{prefix}/") for obj in page.get("Contents", [])}
    return keys


def state_of(endpoint: str, instance_id: str) -> str:
    """The state moto's EC2 gives ``instance_id``."""
    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
    (reservation,) = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"]
    (instance,) = reservation["Instances"]
    return instance["State"]["Name"]


def lock_outs(lock: dict) -> dict[str, str]:
    """``{path: md5}`` of every cached output a ``dvc.lock`` names."""
    return {out["path"]: out["md5"] for stage in lock["stages"].values() for out in stage.get("outs", [])}


def fresh_clone(project, branch: str, folder: Path, endpoint: str) -> Path:
    """A fresh clone of ``branch`` pointed (locally, as a user would) at the project's S3 DVC remote."""
    subprocess.run(["git", "clone", "--quiet", "--branch", branch, str(project.remote), str(folder)], check=True)
    run_dvc(folder, "remote", "modify", "--local", "storage", "url", project.dvc_remote_url)
    run_dvc(folder, "remote", "modify", "--local", "storage", "endpointurl", endpoint)
    return folder


def run_dvc(folder: Path, *args: str) -> str:
    done = subprocess.run([*DVC, *args], cwd=folder, capture_output=True, text=True)
    assert done.returncode == 0, f"dvc {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


# ------------------------------------------------------------------------------ ec2 repro + commit_to


def test_ec2_repro_commits_one_lock_on_the_reproduced_revision_that_the_s3_remote_backs(
    run_dag, gpu_setup, moto_endpoint, capfd, tmp_path
):
    from tests.helpers.ec2_instances import InstanceEmulator

    project = gpu_setup
    base = project.head()
    branch = "mlci/gpu-train"
    with InstanceEmulator(moto_endpoint) as machines:
        record = run_dag(
            "example_gpu_training",
            path=EXAMPLE_DAGS / "example_gpu_training.py",
            conf={"rev": "main", "commit_to": branch},
        )
        launched = list(machines.agents)
    out = capfd.readouterr().out
    assert record.state == "success", out[-4000:]
    assert record.task_states == GPU_TRAINING_STATES
    instance = record.xcom["gpu.launch"]
    result = record.xcom["gpu.train"]
    refs = project.remote_refs()
    head = refs.get(f"refs/heads/{branch}")
    assert launched == [instance["instance_id"]]
    assert result == {
        "repo": str(project.remote),
        "rev": "main",
        "sha": base,
        "stages": {"prepare": "ran", "train": "ran"},
        "metrics": {},
        "pushed": True,
        "commit": {"branch": branch, "commit": head, "created": True},
        "compute": {"backend": "ec2", "instance_id": instance["instance_id"], "job_id": result["compute"]["job_id"]},
    }
    # Exactly one commit on the branch, on the reproduced revision: the lock file and the
    # .gitignore entries of the new outputs, as `dvc repro` + `git add -A` + `git commit` by hand.
    assert project.git("rev-list", f"{base}..{head}", cwd=project.remote).split() == [head]
    assert project.git("rev-parse", f"{head}^", cwd=project.remote).strip() == base
    changed = project.git("diff-tree", "--no-commit-id", "--name-status", "-r", head, cwd=project.remote)
    assert changed.splitlines() == ["M\tdata/.gitignore", "A\tdvc.lock", "M\tmodels/.gitignore"]
    assert refs["refs/heads/main"] == base  # main itself is untouched
    # What dvc.lock names is on the S3 remote: every output, by content.
    lock = yaml.safe_load(project.git("show", f"{head}:dvc.lock", cwd=project.remote))
    assert sorted(lock["stages"]) == ["prepare", "train"]
    outs = lock_outs(lock)
    assert sorted(outs) == ["data/prepared", "models/model.pkl"]
    stored = s3_keys(moto_endpoint, project.dvc_remote_url)
    assert {path: md5 for path, md5 in outs.items() if f"files/md5/{md5[:2]}/{md5[2:]}" not in stored} == {}
    # A fresh clone of the branch: DVC's own commands find everything on the remote, in sync.
    clone = fresh_clone(project, branch, tmp_path / "clone", moto_endpoint)
    before = json.loads(run_dvc(clone, "status", "--cloud", "--json", "--with-deps", "train"))
    # "deleted": on the remote, not in this clone's cache ("missing" would be: on neither).
    assert before == {
        "data/raw.csv": "deleted",
        "data/prepared/train.csv": "deleted",
        "models/base.pkl": "deleted",
        "models/model.pkl": "deleted",
    }
    run_dvc(clone, "pull", "--quiet", "--with-deps", "train")
    assert json.loads(run_dvc(clone, "status", "--cloud", "--json", "--with-deps", "train")) == {}
    assert json.loads(run_dvc(clone, "status", "--json", "--with-deps", "train")) == {}  # lock == code and data
    assert state_of(moto_endpoint, instance["instance_id"]) == "terminated"
    assert ours_alive(moto_endpoint) == []


# ------------------------------------------------------------------------------ nightly refinement on ec2

#: A night of its own (the local-compute refinement test runs other nights of the same DAG).
NIGHT = pendulum.datetime(2026, 10, 15, 2, tz="UTC")


def test_the_nightly_refinement_on_the_ec2_backend_trains_on_an_instance_and_releases(
    run_dag, gpu_setup, moto_endpoint, monkeypatch, capfd, tmp_path
):
    from tests.helpers.ec2_instances import InstanceEmulator

    project = gpu_setup
    base = project.head()
    monkeypatch.setenv("AIRFLOW__MLCI__COMPUTE_BACKEND", "ec2")
    monkeypatch.setenv("AIRFLOW__MLCI__REPORTS_DIR", str(tmp_path / "reports"))
    with InstanceEmulator(moto_endpoint) as machines:
        record = run_dag(
            "example_nightly_refinement",
            path=EXAMPLE_DAGS / "example_nightly_refinement.py",
            conf={"rev": "main"},
            logical_date=NIGHT,
        )
        launched = list(machines.agents)
    out = capfd.readouterr().out
    assert record.state == "success", out[-4000:]
    assert record.task_states == {
        "refine.validate_data": "success",
        "refine.start": "success",
        "refine.drift": "skipped",  # nothing deployed yet
        "refine.gpu.will_it_run": "success",
        "refine.gpu.launch": "success",
        "refine.gpu.refine": "success",
        "refine.gpu.terminate": "success",
        "refine.validate_model": "success",
        "refine.gate": "success",
        "refine.promote": "success",
        "refine.keep_deployed": "skipped",
        "refine.outcome": "success",
        "refine.report": "success",
        "refine.record": "success",
    }
    instance = record.xcom["refine.gpu.launch"]
    result = record.xcom["refine.gpu.refine"]
    branch = "mlci/refine/20261015T020000"
    head = project.remote_refs().get(f"refs/heads/{branch}")
    # The training ran on the instance launched for this run, and only there.
    assert launched == [instance["instance_id"]]
    assert result == {
        "repo": str(project.remote),
        "rev": base,  # nothing deployed: the refinement starts from main as it is
        "sha": base,
        "stages": {"prepare": "ran", "train": "ran", "evaluate": "ran"},
        "metrics": {"metrics.json": json.loads(project.git("show", f"{head}:metrics.json", cwd=project.remote))},
        "pushed": True,
        "commit": {"branch": branch, "commit": head, "created": True},
        "compute": {"backend": "ec2", "instance_id": instance["instance_id"], "job_id": result["compute"]["job_id"]},
    }
    assert project.git("rev-parse", f"{head}^", cwd=project.remote).strip() == base
    # What the instance trained is on the S3 remote, and it was released: one tag push.
    lock = yaml.safe_load(project.git("show", f"{head}:dvc.lock", cwd=project.remote))
    model = lock_outs(lock)["models/model.pkl"]
    assert f"files/md5/{model[:2]}/{model[2:]}" in s3_keys(moto_endpoint, project.dvc_remote_url)
    started = {
        "repo": str(project.remote),
        "rev": "main",
        "sha": base,
        "model": "fraud-detector",
        "stage": "prod",
        "deployed": None,
        "from_scratch": True,
        "base_model": "models/base.pkl",
        "refine_sha": base,
        "commit": None,
    }
    assert record.xcom["refine.start"] == started
    scores = result["metrics"]["metrics.json"]
    first = {"champion": None, "delta": None, "relative_delta": None, "passed": True, "reasons": []}
    assert record.xcom["refine.outcome"] == {
        "promoted": True,
        "decision": "promoted",
        "approval": None,
        "model": "fraud-detector",
        "stage": "prod",
        "sha": head,
        "version": "v0.1.0",
        "tags": ["fraud-detector@v0.1.0", "fraud-detector#prod#1"],
        "replaced": None,
        "reasons": [],
        "champion": None,
        "metrics": [
            {"metric": "logloss", "direction": "lower", "candidate": scores["logloss"], **first},
            {"metric": "accuracy", "direction": "higher", "candidate": scores["accuracy"], **first},
        ],
        "from": started,
    }
    assert project.remote_tags("fraud-detector") == {"fraud-detector@v0.1.0": head, "fraud-detector#prod#1": head}
    # What the GPU work cost: in the teardown's XCom, the run record, its page and the model page.
    cost = xcom(record, "refine.gpu.terminate", "gpu_cost")
    (spent,) = cost["instances"]
    assert (spent["instance_id"], spent["instance_type"], spent["market"]) == (
        instance["instance_id"], "g4dn.xlarge", "spot"
    )  # fmt: skip
    assert spent["price_source"] == "spot-price-history"  # moto's spot price history
    assert 0 < spent["seconds"] < 600
    assert cost["total_usd"] == spent["cost_usd"] == round(spent["seconds"] / 3600 * spent["hourly_usd"], 4)
    outcome = record.xcom["refine.record"]
    assert outcome["cost"] == cost
    folder = tmp_path / "reports" / "example_nightly_refinement" / safe_run(record.run_id) / "refine.record"
    assert f"GPU cost: {_fmt(cost['total_usd'])} USD" in (folder / "report.md").read_text()
    from airflow_provider_mlci.plugins.history import model_data
    from tests.unit.plugins.test_reports import Allow

    night = model_data(Allow("*"), "/mlci", "fraud-detector")["nights"][0]
    assert (night["decision"], night["cost"]) == ("promoted", cost["total_usd"])
    assert state_of(moto_endpoint, instance["instance_id"]) == "terminated"
    assert ours_alive(moto_endpoint) == []


# ------------------------------------------------------------------------------ the instance-state sensor, deferred

SENSOR_DAG = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.gpu import GpuCreateInstanceOperator, GpuTerminateInstanceOperator
from airflow_provider_mlci.sensors.gpu import GpuInstanceStateSensor

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    launch = GpuCreateInstanceOperator(
        task_id="launch",
        spec={{"gpu": "t4", "max_lifetime": 3600}},
        aws_conn_id="aws_moto",
        wait_for_running=False,  # the sensor waits
    )
    running = GpuInstanceStateSensor(
        task_id="running",
        instance_id="{{{{ ti.xcom_pull(task_ids='launch', key='instance')['instance_id'] }}}}",
        target_state="running",
        aws_conn_id="aws_moto",
        deferrable=True,
        poll_interval=0.2,
        timeout=60,
    )
    terminate = GpuTerminateInstanceOperator(task_id="terminate", create_task_id="launch", aws_conn_id="aws_moto")
    launch >> running >> terminate.as_teardown(setups=launch)
"""


def test_the_instance_state_sensor_defers_to_its_trigger_in_a_dag_run(
    run_dag, aws_moto_connection, moto_endpoint, capfd
):
    from tests.helpers.gpu_runs import slow_boot

    dag_id = "gpu_paths_state_sensor"
    # moto's instances are running the moment they launch, so nothing would ever wait for one:
    # slow_boot, a stand-in for the boot, keeps each pending for its first two looks by id.
    begun = time.time()
    with slow_boot(looks=2) as looks:
        record = run_dag(dag_id, source=SENSOR_DAG.format(dag_id=dag_id))
    ended = time.time()
    out = capfd.readouterr().out
    assert record.state == "success", out[-4000:]
    assert record.task_states == {"launch": "success", "running": "success", "terminate": "success"}
    instance_id = record.xcom["launch"]["instance_id"]
    assert record.xcom["running"] == "running"
    assert record.xcom["terminate"] == [instance_id]
    # The sensor's own look saw it pending, the trigger's first look too, its second saw it running;
    # then the teardown looked once more, to say what the instance cost.
    assert looks == {instance_id: ["pending", "pending", "running", "terminated"]}
    # The task deferred: its trigger is in the metadata database, and it ran and logged its wait.
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id=dag_id, run_id=record.run_id, task_id="running").one()
        assert ti.trigger_id is not None
        trigger = session.get(Trigger, ti.trigger_id)
        classpath, kwargs = trigger.classpath, dict(trigger.kwargs)
    assert classpath == "airflow_provider_mlci.triggers.gpu.GpuInstanceStateTrigger"
    assert kwargs == {
        "instance_id": instance_id,
        "target_state": "running",
        "aws_conn_id": "aws_moto",
        "region_name": None,
        "poll_interval": 0.2,
        "timeout": 60.0,
        "started": kwargs["started"],
    }
    assert begun < kwargs["started"] < ended  # when the deferral began, in this run
    assert log_messages(out, "airflow_provider_mlci.triggers.gpu.GpuInstanceStateTrigger") == [
        f"Instance {instance_id} is pending; waiting for running"
    ]
    assert log_messages(out, "airflow.task.operators.airflow_provider_mlci.sensors.gpu.GpuInstanceStateSensor") == [
        f"Instance {instance_id} is pending (waiting for running)"
    ]
    assert state_of(moto_endpoint, instance_id) == "terminated"
    assert ours_alive(moto_endpoint) == []
