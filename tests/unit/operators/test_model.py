"""Arguments of the model operators: stored as given, refused before any checkout when they cannot work."""

from __future__ import annotations

import pytest
from airflow.providers.common.compat.sdk import AirflowFailException

from airflow_provider_mlci.operators.model import (
    ModelGateBranchOperator,
    ModelGateOperator,
    ModelValidationOperator,
    PromoteModelOperator,
    RollbackModelOperator,
)

RULES = {"logloss": {"direction": "lower"}}


def test_constructors_only_store_their_arguments():
    validate = ModelValidationOperator(task_id="v", model="fraud", rev="{{ params.rev }}", contract={"x": 1})
    assert (validate.model, validate.rev, validate.contract, validate.code_paths) == (
        "fraud",
        "{{ params.rev }}",
        {"x": 1},
        ("src",),
    )
    gate = ModelGateBranchOperator(task_id="g", model="fraud", rules=RULES, if_promote="p", if_skip="s")
    assert (gate.stage, gate.allow_different_data) == ("prod", False)
    promote = PromoteModelOperator(task_id="p", model="fraud", gate_task_id="g")
    assert (promote.bump, promote.stage) == ("minor", "prod")
    assert set(promote.template_fields) >= {"model", "rev", "stage", "version"}


@pytest.mark.parametrize(
    ("op", "named"),
    [
        (ModelValidationOperator(task_id="t", model="fraud", model_format="onnx"), "model_format='onnx'"),
        (ModelValidationOperator(task_id="t", model=" "), "names no artifact"),
        (ModelValidationOperator(task_id="t", model="m", code_paths=["../outside"]), "../outside"),
        (ModelValidationOperator(task_id="t", model="m", thresholds=[0.8]), "thresholds must be a mapping"),
        (ModelGateOperator(task_id="t", model="fraud", rules={"auc": {"direction": "up"}}), "direction='up'"),
        (ModelGateOperator(task_id="t", model="fraud", rules={}), "at least one metric rule"),
        (ModelGateOperator(task_id="t", model="fraud", rules=RULES, stage="pr od"), "not a valid stage"),
        (PromoteModelOperator(task_id="t", model="fraud", version="2.0"), "'2.0' is not a semantic version"),
        (PromoteModelOperator(task_id="t", model="fraud", bump="large"), "bump='large'"),
        (PromoteModelOperator(task_id="t", model="-fraud"), "not a valid model name"),
        (RollbackModelOperator(task_id="t", model="fraud", expected_version="latest"), "'latest' is not a semantic"),
    ],
)
def test_arguments_that_cannot_work_fail_before_any_checkout(op, named):
    op.dvc_conn_id = "no_such_connection"  # reaching the connection would fail differently
    with pytest.raises(AirflowFailException, match=named):
        op.execute({})


def test_the_branching_gate_checks_its_rules_before_any_checkout():
    op = ModelGateBranchOperator(
        task_id="g", model="fraud", rules={"auc": {"floor": 0.5}}, if_promote="p", if_skip="s", dvc_conn_id="none"
    )
    with pytest.raises(AirflowFailException, match="needs a direction"):
        op.choose_branch({})


# ------------------------------------------------------------------ what the release decision reads is verified

THRESHOLD_MODEL = """
class Threshold:
    def __init__(self, cut):
        self.cut = cut

    def predict(self, frame):
        return (frame["x"] > self.cut).astype(int).to_numpy()
"""
MAKE_MODEL = (
    "import pickle, sys; sys.path.insert(0, 'src'); import threshold; "
    "pickle.dump(threshold.Threshold(float(sys.argv[1])), open(sys.argv[2], 'wb'))"
)
EVALUATE = "import json\njson.dump({'acc': 0.5}, open('metrics.json', 'w'))\n"
PIPELINE = (
    "stages:\n  evaluate:\n    cmd: python src/evaluate.py\n    deps: [src/evaluate.py]\n"
    "    metrics:\n      - metrics.json\n"  # cached: the gate reads it from the DVC cache or remote
    "artifacts:\n  threshold:\n    path: models/model.pkl\n    type: model\n"
)


def _small_project(root, endpoint: str):
    """A tiny git + DVC project whose DVC remote is a new bucket on the moto server: a pickled
    model and a sample (``dvc add``), and a stage whose metrics file DVC caches, all pushed.

    Built with DVC's Python API in this process: one import of DVC instead of one per command.
    Returns ``(bare git remote, working copy, bucket)``.
    """
    import contextlib
    import subprocess
    import sys
    import uuid

    import boto3
    from dvc.repo import Repo

    bucket = f"mlci-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket=bucket)
    remote, work = root / "remote.git", root / "work"
    subprocess.run(["git", "init", "--quiet", "--bare", "-b", "main", str(remote)], check=True)
    subprocess.run(["git", "init", "--quiet", "-b", "main", str(work)], check=True)
    for folder in ("src", "data", "models"):
        (work / folder).mkdir()
    (work / "src" / "threshold.py").write_text(THRESHOLD_MODEL)
    (work / "src" / "evaluate.py").write_text(EVALUATE)
    (work / "dvc.yaml").write_text(PIPELINE)
    (work / "data" / "sample.csv").write_text("x\n0.1\n0.6\n0.9\n")
    subprocess.run([sys.executable, "-c", MAKE_MODEL, "0.5", "models/model.pkl"], cwd=work, check=True)
    Repo.init(str(work))
    (work / ".dvc" / "config").write_text(
        f"[core]\n    remote = storage\n    analytics = false\n['remote \"storage\"']\n"
        f"    url = s3://{bucket}/store\n    endpointurl = {endpoint}\n"
    )
    with contextlib.chdir(work), Repo(str(work)) as repo:  # DVC finds dvc.yaml from the working directory
        repo.add(["models/model.pkl", "data/sample.csv"])
        repo.reproduce()
        repo.push()
    for args in (["add", "-A"], ["commit", "--quiet", "-m", "Evaluate"], ["remote", "add", "origin", str(remote)]):
        subprocess.run(["git", *args], cwd=work, check=True)
    subprocess.run(["git", "push", "--quiet", "origin", "main"], cwd=work, check=True)
    return remote, work, bucket


def _change_on_remote(work, bucket: str, endpoint: str, tracked: str, data: bytes) -> str:
    """Replace the bytes of ``tracked``'s object on the S3 remote, under the same md5 name."""
    import boto3
    import yaml

    lock = yaml.safe_load((work / "dvc.lock").read_text())
    entries = [o for s in lock["stages"].values() for o in s.get("outs", [])]
    dvc_file = work / f"{tracked}.dvc"
    if dvc_file.exists():
        entries += yaml.safe_load(dvc_file.read_text())["outs"]
    md5 = next(o["md5"] for o in entries if o["path"] in (tracked, tracked.rsplit("/", 1)[-1]))
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
    s3.put_object(Bucket=bucket, Key=f"store/files/md5/{md5[:2]}/{md5[2:]}", Body=data)
    return md5


def _context(task_id: str):
    from tests.helpers.task_instance import TaskInstanceStandIn

    return {"ti": TaskInstanceStandIn(task_id, dag_id="verify_inputs")}


def test_bytes_changed_on_the_remote_stop_the_gate_and_the_model_check_naming_the_file(
    dvc_connection, aws_moto_connection, moto_endpoint, tmp_path
):
    import subprocess
    import sys

    from airflow_provider_mlci.exceptions import DvcCorruptObjectError

    remote, work, bucket = _small_project(tmp_path, moto_endpoint)
    metrics_md5 = _change_on_remote(work, bucket, moto_endpoint, "metrics.json", b'{"acc": 0.99}\n')  # it said 0.5
    other = tmp_path / "other.pkl"  # a valid model, but not the one the commit names
    subprocess.run([sys.executable, "-c", MAKE_MODEL, "0.05", str(other)], cwd=work, check=True)
    model_md5 = _change_on_remote(work, bucket, moto_endpoint, "models/model.pkl", other.read_bytes())
    extra = {"aws_conn_id": aws_moto_connection}  # the committed config names the remote; nothing sets verify
    dvc_connection(str(remote), extra=extra)
    rules = {"acc": {"direction": "higher", "floor": 0.9}}
    gate = ModelGateOperator(task_id="gate", model="threshold", rules=rules, cache_dir=str(tmp_path / "w1"))
    with pytest.raises(AirflowFailException) as info:
        gate.execute(_context("gate"))
    refused = info.value.__cause__
    assert isinstance(refused, DvcCorruptObjectError), repr(refused)
    assert "metrics.json" in str(refused)
    assert metrics_md5 in str(refused)

    check = ModelValidationOperator(task_id="validate", model="threshold", cache_dir=str(tmp_path / "w2"))
    with pytest.raises(AirflowFailException) as info:
        check.execute(_context("validate"))
    refused = info.value.__cause__
    assert isinstance(refused, DvcCorruptObjectError), repr(refused)
    assert "models/model.pkl" in str(refused)
    assert model_md5 in str(refused)


@pytest.mark.parametrize(
    ("op", "connection", "expected"),
    [
        (ModelValidationOperator(task_id="t", model="m"), {}, True),
        (ModelGateOperator(task_id="t", model="m", rules=RULES), {}, True),
        (ModelGateBranchOperator(task_id="t", model="m", rules=RULES, if_promote="p", if_skip="s"), {}, True),
        (PromoteModelOperator(task_id="t", model="m"), {}, True),
        (RollbackModelOperator(task_id="t", model="m"), {}, True),
        (ModelGateOperator(task_id="t", model="m", rules=RULES), {"verify_objects": False}, False),
        (ModelValidationOperator(task_id="t", model="m"), {"verify_objects": "false"}, False),
    ],
    ids=lambda v: type(v).__name__ if not isinstance(v, dict | bool) else str(v),
)
def test_the_release_operators_verify_what_they_download_unless_the_connection_says_no(
    op, connection, expected, dvc_connection
):
    dvc_connection("/srv/repo.git", extra=connection)
    assert op.hook.get_access().dvc.verify_objects is expected


def test_other_operators_keep_the_connection_or_repository_setting(dvc_connection):
    from airflow_provider_mlci.operators.dvc import DvcCheckoutOperator, DvcReproOperator

    dvc_connection("/srv/repo.git")
    for op in (DvcCheckoutOperator(task_id="c"), DvcReproOperator(task_id="r")):
        assert op.hook.get_access().dvc.verify_objects is None
    dvc_connection("/srv/repo.git", extra={"verify_objects": True})
    assert DvcCheckoutOperator(task_id="c").hook.get_access().dvc.verify_objects is True
