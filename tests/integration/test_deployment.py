"""The production topology, for real: PostgreSQL, Redis, the CeleryExecutor and two Celery workers
that stand in for two machines (each its own Unix user, home, caches and logs, none readable by the
other), DAGs from the git DAG bundle, task logs and reports on S3 (the moto server).

Started once for this module (:class:`airflow_provider_mlci.testing.deployment.Deployment`); these
tests run in ``make test``'s serial stage, after the parallel run. They need root (the workers are
users), PostgreSQL's server binaries and ``redis-server`` (``.ci/run`` installs it).
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import pytest

from airflow_provider_mlci.report_store import ReportKey, ReportStore, read_markdown
from airflow_provider_mlci.testing.deployment import S3_CONN_ID, Deployment, dvc_connection
from airflow_provider_mlci.testing.git_http import GitHttpServer
from tests.conftest import ARTIFACTS, EXAMPLE_DAGS, ROOT
from tests.helpers import dvc_corpus
from tests.helpers.browser import chrome, png_size
from tests.helpers.flagships import PR_IN_SYNC_STATES, REFINE_NIGHT_1_STATES, REFINE_TASKS
from tests.helpers.github_server import GitHubServer
from tests.helpers.gpu_runs import ours_alive
from tests.helpers.tools import require_tool, wait_for

pytestmark = pytest.mark.deployment

TOKEN = "deploy-token-0123456789"
BUCKET = "mlci-deployment"

PIPELINE_DAG = """
import pendulum
from airflow.sdk import DAG, task

from airflow_provider_mlci.operators.dvc import DvcMetricsOperator, DvcWillItRunOperator
from airflow_provider_mlci.operators.report import MetricsReportOperator
from airflow_provider_mlci.task_groups.dvc import DvcPipelineTaskGroup
from airflow_provider_mlci.task_groups.sweep import SweepTaskGroup

CORPUS = {"dvc_conn_id": "mlci_dvc_corpus"}

with DAG(dag_id="deploy_pipeline", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    @task
    def where(i):
        import os
        import time

        time.sleep(3)  # long enough that the two overlap: each worker takes one at a time
        return {"user": os.environ.get("USER"), "cache": os.environ.get("AIRFLOW__MLCI__CACHE_DIR")}

    fan = where.expand(i=[1, 2])
    before = DvcWillItRunOperator(task_id="before", rev="main", **CORPUS)
    pipeline = DvcPipelineTaskGroup(
        group_id="pipeline", project_dir="corpus_dvclive", rev="main", commit_to="mlci/deployed", **CORPUS
    )
    after = DvcWillItRunOperator(task_id="after", rev="mlci/deployed", **CORPUS)
    diff = DvcMetricsOperator(task_id="diff", rev="mlci/deployed", baseline_rev="main", **CORPUS)
    report = MetricsReportOperator(task_id="report", rev="mlci/deployed", baseline_rev="main", **CORPUS)
    sweep = SweepTaskGroup(
        group_id="sweep", space={"train.rate": [0.25, 1.0]}, objective="auc", rev="main", **CORPUS
    )
    [fan, before] >> pipeline >> [after, diff, report] >> sweep
"""

#: A reproduction whose training takes long enough to lose its worker in the middle of it.
LOST_WORKER_DAG = """
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_mlci.operators.dvc import DvcReproOperator

with DAG(dag_id="deploy_lost_worker", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    DvcReproOperator(
        task_id="repro", rev="slow", commit_to="mlci/slow", retries=1, retry_delay=timedelta(seconds=1)
    )
"""

#: Our deferrable sensor, waiting in the triggerer for an instance to end.
SENSOR_DAG = """
import pendulum
from airflow.sdk import DAG, Param

from airflow_provider_mlci.sensors.gpu import GpuInstanceStateSensor

with DAG(
    dag_id="deploy_sensor",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    params={"instance": Param("", type="string")},
):
    GpuInstanceStateSensor(
        task_id="wait",
        instance_id="{{ params.instance }}",
        target_state="terminated",
        aws_conn_id="mlci_s3",
        poll_interval=1,
    )
"""

#: The example DAGs that run on the deployment as users ship them (copied into the DAG bundle).
FLAGSHIPS = ("example_nightly_refinement", "example_hyperparameter_sweep", "example_pr_validation")
MODEL = "fraud-detector"
REPO = "acme/fraud-model"
GITHUB_TOKEN = "ghp_" + "d3pl0y" * 6


def _git(*args: str, cwd: Path) -> None:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    subprocess.run(["git", *args], cwd=cwd, env=env, check=True, capture_output=True)


@pytest.fixture(scope="module")
def deployment(
    moto_endpoint: str, tmp_path_factory: pytest.TempPathFactory, demo_project_template: Any
) -> Iterator[Any]:
    """The deployment, serving over HTTP (git, with a token) a DVCLive project and the demo project
    (their DVC remotes on S3), the DAG bundle (three DAGs of its own and the flagship examples), and
    a GitHub stand-in."""
    if os.geteuid() != 0:
        if os.environ.get("CI"):
            pytest.fail("the deployment tests need root (the workers are users of their own)")
        pytest.skip("the deployment tests need root (the workers are users of their own)")
    require_tool("redis-server", install="apt-get install -y redis-server")
    require_tool("runuser", install="util-linux")
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    s3.create_bucket(Bucket=BUCKET)
    scratch = tmp_path_factory.mktemp("deployment")
    served = scratch / "served"  # every bare repository the git server serves
    corpus = dvc_corpus.dvclive_project(
        served / "dvclive",
        dvc_remote_url=f"s3://{BUCKET}/dvc",
        dvc_remote_options={"endpointurl": moto_endpoint},
    )
    demo = demo_project_template.copy_to(
        served / "demo", dvc_remote_url=f"s3://{BUCKET}/demo", dvc_remote_options={"endpointurl": moto_endpoint}
    )
    demo.dvc("push", "--quiet")
    demo.git("checkout", "--quiet", "-b", "slow")  # a training stage of 12 s, to lose a worker in
    train = demo.work / "src" / "train.py"
    train.write_text(train.read_text() + "\nimport time\n\ntime.sleep(12)\n")
    demo.commit_and_push("Slow training", dvc_push=False, branch="slow")
    demo.git("checkout", "--quiet", "main")
    dags = scratch / "dags-work"
    _git("init", "-q", "-b", "main", str(dags), cwd=scratch)
    (dags / "dags").mkdir()
    sources = {"deploy_pipeline": PIPELINE_DAG, "deploy_lost_worker": LOST_WORKER_DAG, "deploy_sensor": SENSOR_DAG}
    for name, source in sources.items():
        (dags / "dags" / f"{name}.py").write_text(source)
    for name in FLAGSHIPS:
        shutil.copy(EXAMPLE_DAGS / f"{name}.py", dags / "dags" / f"{name}.py")
    shutil.copytree(corpus.work, dags / "dags" / "corpus_dvclive", ignore=shutil.ignore_patterns(".git", ".dvc"))
    _git("add", "-A", cwd=dags)
    _git("commit", "-q", "-m", "DAGs", cwd=dags)
    _git("clone", "-q", "--bare", str(dags), str(served / "dags.git"), cwd=scratch)
    root = Path(tempfile.mkdtemp(prefix="mlci-deployment-", dir="/var/tmp"))  # every worker user reaches it
    with GitHttpServer(served, username="mlci", token=TOKEN) as git, GitHubServer(token=GITHUB_TOKEN) as github:
        deploy = Deployment(
            root=root,
            project_dir=ROOT,
            dags_url=git.url("dags.git"),
            dags_login=("mlci", TOKEN),
            s3_endpoint=moto_endpoint,
            bucket=BUCKET,
            env={
                "AIRFLOW_CONN_MLCI_DVC_DEFAULT": dvc_connection(
                    git.url(str(demo.remote.relative_to(served))),
                    ("mlci", TOKEN),
                    dvc_remote_url=f"s3://{BUCKET}/demo",
                    endpoint=moto_endpoint,
                ),
                "AIRFLOW_CONN_MLCI_DVC_CORPUS": dvc_connection(
                    git.url(str(corpus.remote.relative_to(served))),
                    ("mlci", TOKEN),
                    dvc_remote_url=f"s3://{BUCKET}/dvc",
                    endpoint=moto_endpoint,
                ),
                "AIRFLOW_CONN_GITHUB_DEFAULT": json.dumps(
                    {"conn_type": "github", "host": github.url, "password": GITHUB_TOKEN}
                ),
            },
        )
        try:
            deploy.start()
            yield Setup(deploy=deploy, corpus=corpus, demo=demo, github=github, scratch=scratch)
        finally:
            deploy.stop()
            shutil.copytree(deploy.log_dir, ARTIFACTS / "deployment-logs", dirs_exist_ok=True)
            shutil.rmtree(root, ignore_errors=True)


@dataclass
class Setup:
    """The running deployment and what it serves; ``nights`` keeps the nightly runs' outcomes for
    the tests after it (the pull request is the first night's release)."""

    deploy: Deployment
    corpus: Any
    demo: Any
    github: GitHubServer
    scratch: Path
    nights: dict[str, Any] = field(default_factory=dict)


def run(setup: Setup, dag_id: str, conf: dict | None = None, *, logical_date: str | None = None, timeout: float = 300):
    """Trigger ``dag_id`` and wait for it; return the run id, its state and its task instances
    (``{task_id or task_id[i]: ti}``), failing with the failed tasks' logs."""
    deploy = setup.deploy
    run_id = deploy.trigger(dag_id, conf, logical_date=logical_date)
    state = deploy.wait_for_run(dag_id, run_id, timeout=timeout)
    tis = deploy.task_instances(dag_id, run_id)
    named = {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti for ti in tis}
    return run_id, state, named, failed_logs(deploy.s3_endpoint, tis)


def compact(logical_date: str) -> str:
    """A run's time as the refinement names its branch: ``20261204T020000``."""
    from datetime import UTC, datetime

    return datetime.fromisoformat(logical_date).astimezone(UTC).strftime("%Y%m%dT%H%M%S")


def failed_logs(endpoint: str, tis: list[dict[str, Any]]) -> str:
    """The states of a run's task instances and the S3 task logs of those that failed."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    lines = [f"{ti['task_id']}[{ti['map_index']}]: {ti['state']} on {ti['hostname']!r}" for ti in tis]
    failed = {ti["task_id"] for ti in tis if ti["state"] == "failed"}
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/").get("Contents", []):
        if any(f"task_id={task}/" in item["Key"] for task in failed):
            body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode(errors="replace")
            lines += [f"--- {item['Key']}", body[-6000:]]
    return "\n".join(lines)


def test_a_pipeline_runs_across_two_workers_that_share_no_disk(deployment, moto_endpoint, monkeypatch):
    deploy = deployment.deploy
    run_id, state, tis, logs = run(deployment, "deploy_pipeline", timeout=420)
    assert state == "success", logs
    hosts = {ti["hostname"] for ti in tis.values()}
    assert hosts == {"worker-a", "worker-b"}, hosts  # the run really ran on both "machines"
    # Each worker's folders are its own: owned by its user, mode 0700, and used.
    for worker in deploy.workers:
        for sub in ("", "cache", "tmp", "logs", "bundles", "airflow"):
            info = (worker.home / sub).stat()
            assert stat.S_IMODE(info.st_mode) == 0o700, (worker.user, sub)
            assert info.st_uid == pwd.getpwnam(worker.user).pw_uid
        assert any((worker.home / "cache").iterdir()), f"{worker.user} never used its cache"
    # Task logs and the report are on S3, where the api-server reads them.
    s3 = boto3.client("s3", endpoint_url=moto_endpoint, region_name="us-east-1")
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/").get("Contents", [])]
    assert any("task_id=pipeline.train" in key for key in keys), keys[:20]
    assert any("task_id=report" in key for key in keys), keys[:20]
    variable = f"AIRFLOW_CONN_{S3_CONN_ID.upper()}"
    monkeypatch.setenv(variable, deploy.environment()[variable])
    store = ReportStore.open(f"s3://{BUCKET}/reports", S3_CONN_ID)
    outcome = store.outcome(ReportKey(dag_id="deploy_pipeline", run_id=run_id, task_id="report"))
    assert outcome is not None
    assert outcome["outcome"]["problems"] == []
    status, page = deploy.get(f"/mlci/task-report/deploy_pipeline/{run_id}/report?map_index=-1")
    assert status == 200, page[-2000:]
    assert "eval/metrics.json" in page
    report_uri = deploy.xcom("deploy_pipeline", run_id, "report")["report_uri"]
    assert report_uri.startswith(f"s3://{BUCKET}/reports/")
    markdown = read_markdown(report_uri, S3_CONN_ID)
    # What the workers committed is on the git remote, equal to the by-hand run on the same commit.
    project = deployment.corpus
    sha = project.head()
    scratch = Path(tempfile.mkdtemp(prefix="mlci-by-hand-"))
    hand = dvc_corpus.by_hand(project, scratch / "by-hand")
    assert hand.ran == {"seed", "train", "evaluate"}
    assert "dvc.yaml" in hand.changed  # DVCLive rewrote it
    xcom = {task: deploy.xcom("deploy_pipeline", run_id, task) for task in ("before", "after", "diff", "report")}
    for stage in ("seed", "train", "evaluate"):
        xcom[f"pipeline.{stage}"] = deploy.xcom("deploy_pipeline", run_id, f"pipeline.{stage}")
    assert dvc_corpus.ran(xcom, "pipeline") == hand.ran
    # The first stage does not trip over metrics files that only the last stage writes.
    assert xcom["pipeline.seed"]["metrics"] == {}
    assert xcom["before"]["will_run"] == ["seed", "train", "evaluate"]
    assert xcom["after"]["will_run"] == []
    dvc_corpus.assert_equal_to_by_hand(project, hand, sha=sha, branch="mlci/deployed", scratch=scratch)
    eval_metrics = hand.metrics[""]["data"]["eval/metrics.json"]["data"]
    assert set(xcom["diff"]["metrics"]) == {"dvclive/metrics.json", "eval/metrics.json"}
    assert xcom["diff"]["metrics"]["eval/metrics.json"] == eval_metrics
    # The report on the committed branch against main, which has never run: every plot rendered,
    # and what main does not have yet is stated, not a problem.
    assert xcom["report"]["absent"] == {
        sha: [
            "dvclive/metrics.json",
            "dvclive/plots/metrics",
            "eval/metrics.json",
            "eval/plots/confusion.json",
            "eval/plots/roc.json",
        ]
    }
    assert sorted(xcom["report"]["plots"]) == [
        "images/dvclive-plots-metrics-loss.tsv.svg",
        "images/eval-plots-confusion.json.svg",
        "images/eval-plots-roc.json.svg",
    ]
    assert f"| eval/metrics.json | auc | - | {eval_metrics['auc']} |" in markdown, markdown
    # The sweep: each trial's objective equals what `dvc exp run -S` gives by hand on the same commit.
    dvc_corpus.dvc(project, hand.work, "exp", "run", "--quiet", "-S", "train.rate=1.0")
    by_hand_auc = json.loads((hand.work / "eval" / "metrics.json").read_text())["auc"]
    trials = deploy.xcom("deploy_pipeline", run_id, "sweep.leaderboard")["leaderboard"]["trials"]
    board = {tuple(t["params"].items()): t["value"] for t in trials}
    assert set(board) == {(("train.rate", 0.25),), (("train.rate", 1.0),)}
    assert board[(("train.rate", 1.0),)] == by_hand_auc
    assert board[(("train.rate", 1.0),)] != board[(("train.rate", 0.25),)]


def test_the_nightly_refinement_two_nights_in_a_row(deployment):
    """As test_example_nightly_refinement under dag.test(): night 1 trains from scratch and releases
    v0.1.0; night 2 refines it on a new day of data and the gate decides."""
    deploy, demo = deployment.deploy, deployment.demo
    dag_id = "example_nightly_refinement"
    # Night 1 is the scheduler's own: unpaused (DAGs are paused at creation, Airflow's default), the
    # DAG gets a run for its latest 02:00 (catchup is off), with the DAG's default params.
    deploy.wait_for_dag(dag_id)
    deploy.api("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    runs = wait_for(lambda: deploy.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"], what="the nightly run")
    assert [r["run_type"] for r in runs] == ["scheduled"]
    run_id = runs[0]["dag_run_id"]
    state = deploy.wait_for_run(dag_id, run_id)
    tis = {ti["task_id"]: ti for ti in deploy.task_instances(dag_id, run_id)}
    assert state == "success", failed_logs(deploy.s3_endpoint, list(tis.values()))
    states = {task: tis[f"refine.{task}"]["state"] for task in REFINE_TASKS}
    assert states == REFINE_NIGHT_1_STATES
    started = deploy.xcom(dag_id, run_id, "refine.start")
    assert (started["from_scratch"], started["deployed"], started["commit"]) == (True, None, None)
    first = deploy.xcom(dag_id, run_id, "refine.outcome")
    assert (first["promoted"], first["version"]) == (True, "v0.1.0")
    commit = deploy.xcom(dag_id, run_id, "refine.refine")["commit"]
    assert commit["branch"] == "mlci/refine/" + compact(runs[0]["logical_date"] or runs[0]["run_after"])
    assert demo.remote_tags(MODEL)[f"{MODEL}@v0.1.0"] == commit["commit"] == first["sha"]
    hosts = {ti["hostname"] for ti in tis.values() if ti["state"] == "success"}
    night_1 = run_id

    subprocess.run([sys.executable, "src/generate.py", "--day", "1", "--rows", "300"], cwd=demo.work, check=True)
    demo.dvc("add", "--quiet", "data/raw.csv")
    data_sha = demo.commit_and_push("Data of day 1")
    run_id, state, tis, logs = run(deployment, dag_id, {"rev": "main"})  # night 2, by hand
    assert state == "success", logs
    night_2 = deploy.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
    started = deploy.xcom(dag_id, run_id, "refine.start")
    assert started["sha"] == data_sha
    assert started["from_scratch"] is False
    assert started["deployed"]["version"] == "v0.1.0"
    assert started["commit"]["branch"] == "mlci/refine/" + compact(night_2["logical_date"] or night_2["run_after"])
    assert tis["refine.drift"]["state"] == "success"
    assert deploy.xcom(dag_id, run_id, "refine.refine")["stages"] == {
        "prepare": "ran",
        "train": "ran",
        "evaluate": "ran",
    }
    second = deploy.xcom(dag_id, run_id, "refine.outcome")
    assert second["champion"]["version"] == "v0.1.0"
    assert second["promoted"] is (not second["reasons"])
    expected = {f"{MODEL}@v0.1.0"} | ({f"{MODEL}@v0.2.0"} if second["promoted"] else set())
    assert {tag for tag in demo.remote_tags(MODEL) if "@" in tag} == expected
    assert tis["refine.promote" if second["promoted"] else "refine.keep_deployed"]["state"] == "success"
    assert deploy.xcom(dag_id, run_id, "refine.report")["baseline_sha"] == first["sha"]
    hosts |= {ti["hostname"] for ti in tis.values() if ti["state"] == "success"}
    assert hosts == {"worker-a", "worker-b"}, hosts
    # No other run: catchup is off, and the schedule's next night is still to come.
    runs = deploy.api("GET", f"/api/v2/dags/{dag_id}/dagRuns")["dag_runs"]
    assert sorted(r["run_type"] for r in runs) == ["manual", "scheduled"]
    deployment.nights.update(first=first, second=second, runs=[night_1, run_id])


def test_the_hyperparameter_sweep_runs_two_trials_at_a_time_on_both_workers(deployment):
    """As test_example_hyperparameter_sweep under dag.test(), with 4 trials, released to staging: the
    adaptive sweep's study is in the deployment's studies database (``[mlci] optuna_conn_id``), which
    both workers reach; a trial the pruner stops is a result, never ranked."""
    import optuna

    from airflow_provider_mlci.testing.deployment import STUDIES_DATABASE

    deploy, demo = deployment.deploy, deployment.demo
    dag_id = "example_hyperparameter_sweep"
    before = demo.remote_tags(MODEL)
    conf = {"rev": "main", "max_trials": 4, "seed": 1, "stage": "staging"}
    run_id, state, tis, logs = run(deployment, dag_id, conf)
    assert state == "success", logs
    trials = [tis[f"sweep.trial[{i}]"] for i in range(4)]
    assert all(ti["state"] == "success" for ti in trials), logs
    assert {ti["hostname"] for ti in trials} == {"worker-a", "worker-b"}
    assert max_overlap(trials) == 2  # two at a time: never more (parallel_trials), and really two
    planned = deploy.xcom(dag_id, run_id, "sweep.generate")
    head = demo.head()
    assert {trial["rev"] for trial in planned} == {head}
    refs = demo.remote_refs()
    results = [deploy.xcom(dag_id, run_id, "sweep.trial", map_index=i) for i in range(4)]
    for result in results:
        assert result["status"] in ("success", "pruned"), result
        if result["status"] == "success":
            assert result["exp_ref"] == f"refs/exps/{head[:2]}/{head[2:]}/{result['name']}"
            assert refs[result["exp_ref"]] == result["sha"]
    # Every trial asked and told the one study, in the studies database (not Airflow's), from either worker.
    storage = f"postgresql+psycopg2://airflow@127.0.0.1:{deploy.pg_port}/{STUDIES_DATABASE}"
    study = optuna.load_study(study_name=planned[0]["study"]["name"], storage=storage)
    states = {t.number: t.state.name for t in study.trials}
    assert states == {r["study_trial"]: {"success": "COMPLETE", "pruned": "PRUNED"}[r["status"]] for r in results}
    summary = deploy.xcom(dag_id, run_id, "sweep.leaderboard")
    pruned = sum(r["status"] == "pruned" for r in results)
    assert (summary["succeeded"], summary["failed"], summary["skipped"], summary["pruned"]) == (
        4 - pruned,
        0,
        0,
        pruned,
    )
    values = [t["value"] for t in summary["leaderboard"]["trials"] if t["status"] == "success"]
    assert values == sorted(values)  # logloss: lower is better
    best = summary["best"]
    assert refs[f"refs/heads/sweep/{best['name']}"] == best["sha"]
    outcome = deploy.xcom(dag_id, run_id, "sweep.outcome")
    assert outcome["stage"] == "staging"
    assert outcome["champion"] is None  # nothing on staging yet: the floors alone decided
    versions = sorted(tuple(int(part) for part in tag.split("@v")[1].split(".")) for tag in before if "@v" in tag)
    assert outcome["promoted"] is True
    major, minor, _ = versions[-1] if versions else (0, 0, 0)  # the nightly test's releases, when it ran first
    assert outcome["version"] == f"v{major}.{minor + 1}.0"
    after = demo.remote_tags(MODEL)
    version_tag, stage_tag = outcome["tags"]
    assert version_tag == f"{MODEL}@{outcome['version']}"
    assert stage_tag.startswith(f"{MODEL}#staging#")  # GTO counts assignments over every stage
    assert after == {**before, version_tag: best["sha"], stage_tag: best["sha"]}


def max_overlap(tis: list[dict[str, Any]]) -> int:
    """The most task instances that ran at one moment (from their recorded start and end)."""
    from datetime import datetime

    moments = []
    for ti in tis:
        moments += [(datetime.fromisoformat(ti["start_date"]), 1), (datetime.fromisoformat(ti["end_date"]), -1)]
    running = most = 0
    for _, step in sorted(moments):
        running += step
        most = max(most, running)
    return most


def test_a_pull_request_is_validated_commented_and_given_a_status(deployment):
    """As test_example_pr_validation under dag.test(): a head whose lock is in sync (the first
    night's release) passes, nothing runs again, one comment, one green status; no token in any log."""
    deploy, github = deployment.deploy, deployment.github
    assert deployment.nights, "the nightly test runs first: its first release is the pull request's head"
    head = deployment.nights["first"]["sha"]
    github.add_pull(REPO, 7, head)
    conf = {"repo": REPO, "pr_number": 7, "head_rev": head, "base_rev": "main"}
    run_id, state, tis, logs = run(deployment, "example_pr_validation", conf)
    assert state == "success", logs
    assert {task: ti["state"] for task, ti in tis.items()} == PR_IN_SYNC_STATES
    stages = deploy.xcom("example_pr_validation", run_id, "reproduce")["stages"]
    assert set(stages.values()) <= {"skipped", "restored"}, stages
    (comment,) = github.comments(REPO, pr_number=7)
    assert "accuracy" in comment["body"]
    assert [s["state"] for s in github.statuses(REPO, head)] == ["success"]
    s3 = boto3.client("s3", endpoint_url=deploy.s3_endpoint, region_name="us-east-1")
    for item in s3.list_objects_v2(Bucket=BUCKET, Prefix="logs/").get("Contents", []):
        body = s3.get_object(Bucket=BUCKET, Key=item["Key"])["Body"].read().decode(errors="replace")
        assert GITHUB_TOKEN not in body, item["Key"]
        assert TOKEN not in body, item["Key"]


def test_a_worker_lost_mid_stage_is_retried_on_the_other_and_nothing_is_lost(deployment, moto_endpoint):
    """SIGKILL every process of the worker that runs a training stage; after the scheduler's
    heartbeat timeout, the retry runs on the other worker; the remote is complete, the registry as
    it was; then the lost worker comes back."""
    deploy, demo = deployment.deploy, deployment.demo
    tags = demo.remote_tags(MODEL)
    run_id = deploy.trigger("deploy_lost_worker")
    victim = None
    deadline = time.monotonic() + 180
    while victim is None and time.monotonic() < deadline:
        for worker in deploy.workers:
            if any("src/train.py" in line for line in deploy.processes_of(worker.name)):
                victim = worker
        time.sleep(0.2)
    assert victim is not None, "the training stage never ran"
    deploy.kill_worker(victim.name)
    state = deploy.wait_for_run("deploy_lost_worker", run_id, timeout=300)
    (ti,) = deploy.task_instances("deploy_lost_worker", run_id)
    assert state == "success", failed_logs(moto_endpoint, [ti])
    assert ti["try_number"] == 2
    assert ti["hostname"] != victim.hostname
    result = deploy.xcom("deploy_lost_worker", run_id, "repro")
    assert result["stages"]["train"] == "ran"
    # What the retry committed is complete on the remote: DVC says nothing is missing.
    check = dvc_corpus.clone(demo, deployment.scratch / "after-the-loss", "mlci/slow")
    dvc_corpus.dvc(demo, check, "remote", "modify", "--local", "storage", "endpointurl", moto_endpoint)
    status = json.loads(dvc_corpus.dvc(demo, check, "status", "--cloud", "--json").strip() or "{}")
    assert {path: said for path, said in status.items() if said != "deleted"} == {}
    dvc_corpus.dvc(demo, check, "pull", "--quiet")
    assert demo.remote_tags(MODEL) == tags
    assert ours_alive(moto_endpoint) == []
    deploy.restart_worker(victim.name)


def test_a_deferred_sensor_survives_a_triggerer_restart(deployment, moto_endpoint):
    deploy = deployment.deploy
    ec2 = boto3.client("ec2", endpoint_url=moto_endpoint, region_name="us-east-1")
    instance = ec2.run_instances(
        ImageId="ami-12c6146b",
        MinCount=1,
        MaxCount=1,
        InstanceType="g4dn.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": [{"Key": "mlci:owner", "Value": "deployment-test"}]}],
    )["Instances"][0]["InstanceId"]
    try:
        run_id = deploy.trigger("deploy_sensor", {"instance": instance})
        deadline = time.monotonic() + 120
        while deploy.task_instances("deploy_sensor", run_id)[0]["state"] != "deferred":
            assert time.monotonic() < deadline, "the sensor never deferred"
            time.sleep(0.5)
        deploy.restart("triggerer")
        time.sleep(3)  # the new triggerer took the trigger over: still waiting, not failed
        assert deploy.task_instances("deploy_sensor", run_id)[0]["state"] == "deferred"
    finally:
        ec2.terminate_instances(InstanceIds=[instance])
    state = deploy.wait_for_run("deploy_sensor", run_id, timeout=120)
    (ti,) = deploy.task_instances("deploy_sensor", run_id)
    assert state == "success", failed_logs(moto_endpoint, [ti])
    assert ti["try_number"] == 1
    assert deploy.xcom("deploy_sensor", run_id, "wait") == "terminated"
    assert ours_alive(moto_endpoint) == []


def test_the_ui_in_a_browser_after_logging_in(deployment):
    """Log in to the api-server with a real browser, open a refinement run, its report (the plots
    shown as images), the reports index and a task that stored no report; screenshots kept."""
    from selenium.webdriver.common.by import By

    deploy = deployment.deploy
    assert deployment.nights, "the nightly test runs first: its runs are what the browser opens"
    run_id = deployment.nights["runs"][-1]
    dag_id = "example_nightly_refinement"
    shots = ARTIFACTS / "deployment-ui"
    shots.mkdir(parents=True, exist_ok=True)

    def shot(browser: Any, name: str) -> None:
        path = shots / f"{name}.png"
        assert browser.save_screenshot(str(path))
        width, height = png_size(path)
        assert width == 1400, (path, width)
        assert height > 700, (path, height)  # the window less its frame
        assert path.stat().st_size > 10_000, f"{path} is (nearly) blank"

    def text(browser: Any) -> str:
        return browser.find_element(By.TAG_NAME, "body").text

    with chrome() as browser:
        browser.get(f"{deploy.base_url}/dags/{dag_id}")
        wait_for(lambda: "/auth/login" in browser.current_url, what="the login page")
        user = wait_for(lambda: browser.find_element(By.NAME, "username"), what="the login form")
        user.send_keys(deploy.login[0])
        browser.find_element(By.NAME, "password").send_keys(deploy.login[1])
        shot(browser, "login")
        browser.find_element(By.CSS_SELECTOR, "button[type=submit]").click()
        wait_for(lambda: "/auth/login" not in browser.current_url, what="the login to go through")

        browser.get(f"{deploy.base_url}/dags/{dag_id}/runs/{run_id}")
        wait_for(lambda: run_id in text(browser) and "refine" in text(browser), what="the run page")
        shot(browser, "refinement-run")

        browser.get(f"{deploy.base_url}/mlci/task-report/{dag_id}/{run_id}/refine.report?map_index=-1")
        wait_for(lambda: "accuracy" in text(browser), what="the report")
        images = browser.find_elements(By.TAG_NAME, "img")
        assert images, "the report shows no plot"
        natural = "return [arguments[0].naturalWidth, arguments[0].naturalHeight]"
        sizes = [browser.execute_script(natural, image) for image in images]
        assert all(w > 100 and h > 100 for w, h in sizes), sizes  # every plot loaded and drawn
        shot(browser, "refinement-report")

        browser.get(f"{deploy.base_url}/mlci/reports")
        index = wait_for(lambda: dag_id in text(browser) and text(browser), what="the reports index")
        assert "deploy_pipeline" in index
        shot(browser, "reports-index")

        browser.get(f"{deploy.base_url}/mlci/task-report/{dag_id}/{run_id}/refine.keep_deployed?map_index=-1")
        page = wait_for(lambda: text(browser), what="the no-report page")
        assert "stored no report" in page, page
        shot(browser, "no-report")
