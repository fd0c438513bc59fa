"""A sweep whose trials each run on a GPU instance of their own, for real: moto's EC2 and S3 over HTTP,
the agent as a real process (the instance emulator of tests/helpers/ec2_instances.py plays the
machines), DVC pushing to the S3 remote, experiments pushed to a bare git remote."""

from __future__ import annotations

import json
import subprocess
import sys

import boto3
import pytest

from tests.helpers.gpu_runs import ACCESS_KEY, SECRET_KEY, ours_alive

DAG_ID = "sweep_on_gpu"
SWEEP_ON_GPU = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.config import Ec2Compute
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

with DAG("sweep_on_gpu", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    SweepTaskGroup(
        group_id="sweep",
        space={"train.learning_rate": [0.01, 0.5, "oops"]},  # "oops": the training stage fails
        objective="accuracy",
        goal="max",
        rev="main",
        compute=Ec2Compute(
            instance=GpuInstanceSpec(gpu="t4", instance_profile="mlci-gpu-runner", idle_timeout=600, max_lifetime=3600),
            poll_interval=0.5,
            heartbeat_timeout=120,
            start_timeout=300,
        ),
    )
"""


def test_each_trial_runs_on_its_own_instance_and_is_an_experiment_on_the_remote(
    run_dag, gpu_setup, moto_endpoint, capfd, tmp_path
):
    from tests.helpers.ec2_instances import InstanceEmulator

    project = gpu_setup
    baseline = project.head()
    with InstanceEmulator(moto_endpoint) as machines:
        record = run_dag(DAG_ID, source=SWEEP_ON_GPU)
        launched = list(machines.agents)
    out = capfd.readouterr().out
    assert record.state == "success", out[-4000:]
    assert record.task_states == {
        "sweep.generate": "success",
        "sweep.trial[0]": "success",
        "sweep.trial[1]": "success",
        "sweep.trial[2]": "success",  # a failed trial is a result (fail_on_trial_failure=False)
        "sweep.leaderboard": "success",
        "sweep.terminate": "success",
    }
    planned = record.xcom["sweep.generate"]
    failed = record.xcom["sweep.trial[2]"]
    results = [record.xcom[f"sweep.trial[{i}]"] for i in range(2)]
    # One instance per trial, each terminated, the failed trial's too.
    instances = [result["compute"]["instance_id"] for result in [*results, failed]]
    assert len(set(instances)) == 3
    assert set(instances) <= set(launched), (instances, launched)
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    described = ec2.describe_instances(InstanceIds=instances)["Reservations"]
    tags = {i["InstanceId"]: {t["Key"]: t["Value"] for t in i["Tags"]} for r in described for i in r["Instances"]}
    assert {tags[i]["mlci:map_index"] for i in instances} == {"0", "1", "2"}
    assert {tags[i]["mlci:group"] for i in instances} == {"sweep.trial"}  # what the teardown looks for
    assert sorted(record.xcom["sweep.terminate"]) == sorted(instances)
    assert ours_alive(moto_endpoint) == []
    assert "[instance]" in out

    # Every successful trial is an experiment on the git remote: a commit on the baseline with its
    # params and metrics; the failed one says why and left no experiment.
    refs = project.remote_refs()
    assert failed["status"] == "failed"
    assert "train" in failed["error"]
    assert failed["exp_ref"] not in refs
    for trial, result in zip(planned, results, strict=False):
        assert result["status"] == "success", result
        assert result["compute"]["backend"] == "ec2"
        assert result["exp_ref"] == f"refs/exps/{baseline[:2]}/{baseline[2:]}/{trial['name']}"
        assert refs[result["exp_ref"]] == result["sha"]
        assert result["value"] == result["metrics"]["metrics.json"]["accuracy"]
        parent = project.git("rev-parse", f"{result['sha']}^", cwd=project.remote).strip()
        assert parent == baseline
        params = project.git("show", f"{result['sha']}:params.yaml", cwd=project.remote)
        assert f"learning_rate: {trial['params']['train.learning_rate']}" in params
        metrics = json.loads(project.git("show", f"{result['sha']}:metrics.json", cwd=project.remote))
        assert metrics["accuracy"] == result["value"]

    # The leaderboard picked the best, as for local trials.
    summary = record.xcom["sweep.leaderboard"]
    assert summary["best"]["name"] == max(results, key=lambda r: r["value"])["name"]
    assert (summary["succeeded"], summary["failed"]) == (2, 1)

    # A fresh clone lists both with DVC's own commands, params and metrics included.
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(project.remote), str(clone)], check=True)
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "exp", "pull", "origin", *[t["name"] for t in planned[:2]]], cwd=clone, check=True)
    shown = subprocess.run([*dvc, "exp", "show", "--json"], cwd=clone, check=True, capture_output=True, text=True)
    found = {}
    for entry in json.loads(shown.stdout):
        for exp in entry.get("experiments") or []:
            for rev in exp.get("revs") or []:
                found[rev.get("name")] = rev.get("data") or {}
    for trial, result in zip(planned, results, strict=False):
        data = found[trial["name"]]
        assert data["params"]["params.yaml"]["data"]["train"]["learning_rate"] == trial["params"]["train.learning_rate"]
        assert data["metrics"]["metrics.json"]["data"]["accuracy"] == result["value"]

    # The connection's keys appear nowhere: task output, XCom, user data.
    seen = out + json.dumps(record.xcom)
    for instance_id in instances:
        seen += json.dumps(ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="userData"), default=str)
    for secret in (ACCESS_KEY, SECRET_KEY):
        assert secret not in seen


PRUNED_ON_GPU = """
import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.config import Ec2Compute
from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

with DAG("pruned_on_gpu", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    SweepTaskGroup(
        group_id="sweep",
        space={"train.learning_rate": {"uniform": [0.05, 0.95]}},
        objective="accuracy",
        goal="max",
        max_trials=2,
        parallel_trials=1,
        rev="main",
        search="random",
        pruner="median",
        pruner_options={"n_startup_trials": 1, "n_warmup_steps": 1},
        enqueue=[{"train.learning_rate": 0.1}, {"train.learning_rate": 0.9}],
        compute=Ec2Compute(
            instance=GpuInstanceSpec(gpu="t4", instance_profile="mlci-gpu-runner", idle_timeout=600, max_lifetime=3600),
            poll_interval=0.5,
            heartbeat_timeout=120,
            start_timeout=300,
        ),
    )
"""


def test_an_adaptive_trial_on_its_instance_is_pruned_from_the_triggerer_and_the_instance_terminated(
    run_dag, gpu_setup, s3_bucket, moto_endpoint, capfd
):
    """The agent copies the per-step table to the mailbox, the trigger reports it to the study,
    the pruner stops the bad trial: its instance is terminated, and with it its agent and stage."""
    from optuna.trial import TrialState

    from airflow_provider_mlci.core.experiments.pruning import parse_steps
    from airflow_provider_mlci.core.experiments.study import StudyConfig, open_study
    from airflow_provider_mlci.core.experiments.sweep import SearchSpace
    from airflow_provider_mlci.hooks.study import StudyHook
    from tests.helpers.ec2_instances import InstanceEmulator, process_group_alive
    from tests.helpers.slow_training import install_slow_training

    install_slow_training(gpu_setup, None, steps=12, pause=0.5)  # 6 s a trial, if nothing stops it
    with InstanceEmulator(moto_endpoint) as machines:
        record = run_dag("pruned_on_gpu", source=PRUNED_ON_GPU)
        out = capfd.readouterr().out
        assert record.state == "success", (record.task_states, out[-4000:])
        # One trial at a time, the enqueued points in order; the scheduler may start either map
        # index first, so the trials are told apart by the point the study gave them.
        good, bad = sorted(
            (record.xcom[f"sweep.trial[{i}]"] for i in range(2)), key=lambda t: t["params"]["train.learning_rate"]
        )
        assert (good["status"], good["params"]) == ("success", {"train.learning_rate": 0.1})
        assert good["value"] == pytest.approx(0.5 + 0.4 * 11 / 10)  # its 12th step
        assert (bad["status"], bad["params"]) == ("pruned", {"train.learning_rate": 0.9})
        step = bad["pruned_at"]
        assert bad["error"] == f"pruned at step {step} (accuracy = {0.5 - 0.4 * step / 10:g})"
        # Its instance is terminated, and with it (as on EC2) the agent, DVC and the stage.
        instance = bad["compute"]["instance_id"]
        assert machines.wait_for_state(instance, ("terminated",)) == "terminated"
        agent = machines.agents[instance]
        agent.proc.wait(30)
        assert agent.killed
        assert not process_group_alive(agent.pid)
        assert machines.processes(instance) == []
    # The agent's last copy of the table (it copies every 0.5 s, and once more when a stage ends):
    # the stage was stopped long before its 12th step.
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    (key,) = [
        o["Key"]
        for o in s3.list_objects_v2(Bucket=s3_bucket, Prefix="jobs/")["Contents"]
        if o["Key"].endswith(f"/jobs/{bad['compute']['job_id']}/progress")
    ]
    copied = parse_steps(s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode(), "accuracy", name=key)
    assert step <= copied[-1][0] < 10, copied
    # The study saw the pruned trial's steps (reported from the trigger) and how both ended.
    name = record.xcom["sweep.generate"][0]["study"]["name"]
    study = open_study(StudyHook().storage(), name, StudyConfig(), SearchSpace.of({"train.learning_rate": [0.1]}))
    trials = study.get_trials(deepcopy=False)
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.PRUNED]
    assert max(trials[1].intermediate_values) == step
    summary = record.xcom["sweep.leaderboard"]
    assert (summary["succeeded"], summary["pruned"], summary["best"]["name"]) == (1, 1, good["name"])
    assert ours_alive(moto_endpoint) == []
