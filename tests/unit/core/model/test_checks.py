from __future__ import annotations

import importlib
import json
import logging
import os
import pickle
import random
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import joblib
import numpy as np
import pandas as pd
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from airflow_provider_mlci.core.model import checks as model_checks
from airflow_provider_mlci.core.model.checks import (
    Check,
    ModelContract,
    ModelFormat,
    OutputContract,
    check_model,
    check_scores,
    model_format_for,
    read_requirements,
)
from airflow_provider_mlci.core.runtime.process import CommandRunner, CommandStoppedError
from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.testing.procs import wait_dead

#: The team's own model code: pickles need an importable module, so it lives in a file.
MODELS_MODULE = "mlci_test_models"
MODELS_SOURCE = '''
import faulthandler
import os
import time

import numpy as np


class Toy:
    """Sums each row; ``behaviour`` makes it misbehave in one way."""

    def __init__(self, behaviour="good"):
        self.behaviour = behaviour

    def predict(self, X):
        X = np.asarray(X, dtype=float)
        out = X.sum(axis=1)
        b = self.behaviour
        if b == "raise":
            raise ValueError("feature 'age' has negative values")
        if b == "bad-output":
            out = np.full((len(X), 3), 5.0)
            out[0, 0] = np.nan
        if b == "short":
            out = out[:-1]
        if b == "noisy":  # os.urandom ignores every seed
            out = out + int.from_bytes(os.urandom(4), "little") / 2**32
        if b == "slow":
            time.sleep(0.05)
        if b == "hang":
            time.sleep(60)
        if b == "hang-no-watchdog":
            faulthandler.cancel_dump_traceback_later()
            time.sleep(60)
        if b == "crash":
            os._exit(3)
        if b == "segfault":
            import ctypes

            ctypes.string_at(0)
        return out
'''

ROWS = 20


@pytest.fixture(scope="module")
def models_code(tmp_path_factory):
    """A folder holding the model module, importable by this process (to pickle) but not by the child."""
    folder = tmp_path_factory.mktemp("team-code")
    (folder / f"{MODELS_MODULE}.py").write_text(MODELS_SOURCE)
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(folder))
        yield folder, importlib.import_module(MODELS_MODULE)
    sys.modules.pop(MODELS_MODULE, None)


@pytest.fixture(scope="module")
def fitted():
    x = np.arange(ROWS * 2, dtype=float).reshape(ROWS, 2)
    y = (x[:, 0] > ROWS).astype(int)
    return LogisticRegression().fit(x, y)


@pytest.fixture
def checkout(tmp_path):
    root = tmp_path / "checkout"
    (root / "models").mkdir(parents=True)
    (root / "data").mkdir()
    x = np.arange(ROWS * 2, dtype=float).reshape(ROWS, 2)
    pd.DataFrame({"label": np.arange(ROWS) % 2, "b": x[:, 1], "a": x[:, 0]}).to_csv(root / "data/test.csv", index=False)
    np.save(root / "data/test.npy", x)
    return root


def toy(checkout: Path, models_code, behaviour: str, **contract) -> dict:
    """Keyword arguments of check_model for a Toy model tried on the .npy sample."""
    folder, module = models_code
    path = checkout / "models" / f"{behaviour}.pkl"
    path.write_bytes(pickle.dumps(module.Toy(behaviour)))
    return {
        "model_path": path,
        "cwd": checkout,
        "code_paths": [folder],
        "contract": ModelContract(sample_input=str(checkout / "data/test.npy"), **contract),
    }


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {check.name: check for check in checks}


def contract_checks(checks: list[Check]) -> list[Check]:
    return [check for check in checks if check.kind == "contract"]


# -- check_model: a good model --------------------------------------------------------------


def test_a_good_model_passes_every_check(checkout, fitted):
    (checkout / "models/model.pkl").write_bytes(pickle.dumps(fitted))
    contract = ModelContract.from_mapping(
        {
            "sample_input": "data/test.csv",
            "input_columns": ["a", "b"],
            "method": "predict_proba",
            "output": {"shape": [2], "dtype": "float", "min_value": 0, "max_value": 1},
            "latency_budget_ms": 2000,
            "latency_repeats": 3,
        },
        root=checkout,
    )
    cwd, path = os.getcwd(), list(sys.path)

    checks = check_model(
        model_path=Path("models/model.pkl"),
        requirements=["scikit-learn>=1.0", "numpy", "pandas>=2; python_version >= '3.9'"],
        contract=contract,
        cwd=checkout,
        display_name="models/model.pkl@abc123",
    )

    assert [(c.name, c.kind, c.passed) for c in checks] == [
        ("requires scikit-learn>=1.0", "dependencies", True),
        ("requires numpy", "dependencies", True),
        ("requires pandas>=2; python_version >= '3.9'", "dependencies", True),
        ("dependencies of models/model.pkl@abc123", "dependencies", True),
        ("load models/model.pkl@abc123", "load", True),
        ("sample input data/test.csv", "contract", True),
        ("predict_proba() on the sample input", "contract", True),
        ("output rows", "contract", True),
        ("output shape", "contract", True),
        ("output dtype", "contract", True),
        ("output finite", "contract", True),
        ("output range", "contract", True),
        ("deterministic", "contract", True),
        ("latency", "contract", True),
    ]
    found = by_name(checks)
    assert found["requires scikit-learn>=1.0"].detail == f"installed {sklearn.__version__}"
    assert found["load models/model.pkl@abc123"].value == "sklearn.linear_model._logistic.LogisticRegression"
    assert found["output shape"].value == [ROWS, 2]
    assert found["output dtype"].value == "float64"
    assert set(found["latency"].value) == {"median_ms", "max_ms", "budget_ms"}
    assert json.loads(json.dumps([c.to_json() for c in checks]))  # JSON all the way
    assert (os.getcwd(), sys.path) == (cwd, path)  # nothing leaked into this process


# -- dependencies ---------------------------------------------------------------------------


def test_missing_and_mismatched_requirements_and_a_model_saved_by_another_sklearn(checkout, fitted):
    # scikit-learn's __getstate__ stamps its own version on every pickle, so editing
    # _sklearn_version before pickling changes nothing: edit the pickled bytes instead.
    path = checkout / "models/model.joblib"
    joblib.dump(fitted, path)
    blob = path.read_bytes()
    assert blob.count(sklearn.__version__.encode()) == 1
    old = "0.1.0".ljust(len(sklearn.__version__), "0")  # same length keeps the pickle's framing
    path.write_bytes(blob.replace(sklearn.__version__.encode(), old.encode()))

    checks = by_name(
        check_model(
            model_path=path,
            requirements=[
                "definitely-not-installed-mlci-package>=1",
                "numpy<1",
                "pyyaml; python_version < '3'",
                "packaging>=20",
            ],
            cwd=checkout,
        )
    )

    missing = checks["requires definitely-not-installed-mlci-package>=1"]
    assert missing.passed is False
    assert missing.detail.startswith("missing: definitely-not-installed-mlci-package is not installed")
    assert checks["requires numpy<1"].passed is False
    assert checks["requires numpy<1"].detail == f"installed {np.__version__}, needs numpy<1"
    skipped = checks["requires pyyaml; python_version < '3'"]
    assert skipped.passed is True  # a requirement for another interpreter is met by not applying
    assert skipped.detail.startswith("skipped: not needed here, the marker 'python_version < \"3\"' is false")
    assert checks["requires packaging>=20"].passed is True
    saved_by = checks["dependencies of models/model.joblib"]
    assert saved_by.passed is False
    assert f"saved with scikit-learn {old}, but scikit-learn {sklearn.__version__} is installed" in saved_by.detail
    assert "LogisticRegression" in saved_by.detail
    assert checks["load models/model.joblib"].passed is True  # it loads: the versions are the problem


def test_a_module_missing_from_code_paths_is_a_dependency_failure_and_loads_once_added(checkout, models_code):
    kwargs = toy(checkout, models_code, "good", output=OutputContract(shape=(), dtype="float"))

    without = by_name(check_model(**{**kwargs, "code_paths": []}))
    deps = without["dependencies of models/good.pkl"]
    assert deps.passed is False
    assert f"needs module '{MODELS_MODULE}'" in deps.detail
    assert deps.value == MODELS_MODULE
    load = without["load models/good.pkl"]
    assert load.passed is False
    assert "corrupted" not in load.detail
    assert all(check.passed is None for check in contract_checks(list(without.values())))

    with_code = check_model(**kwargs)
    assert all(check.passed is True for check in with_code), [c for c in with_code if c.passed is not True]


# -- load -----------------------------------------------------------------------------------


def test_truncated_and_random_files_fail_to_load_naming_the_file(checkout, models_code):
    folder, module = models_code
    truncated = checkout / "models/truncated.pkl"
    blob = pickle.dumps(module.Toy("good"))
    truncated.write_bytes(blob[: len(blob) // 2])
    noise = checkout / "models/noise.joblib"
    noise.write_bytes(random.Random(7).randbytes(4096))
    contract = ModelContract(sample_input=str(checkout / "data/test.npy"))

    for path, display in ((truncated, "models/truncated.pkl@abc123"), (noise, "models/noise.joblib")):
        checks = check_model(
            model_path=path,
            contract=contract,
            cwd=checkout,
            code_paths=[folder],
            display_name=display if "@" in display else None,
        )
        load = by_name(checks)[f"load {display}"]
        assert load.passed is False
        assert load.detail.startswith(f"{display} is corrupted or truncated: "), load.detail
        assert by_name(checks)[f"dependencies of {display}"].passed is None
        assert contract_checks(checks)
        assert all(check.passed is None for check in contract_checks(checks))


def test_a_missing_model_file_fails_the_load_check_and_requirements_are_still_checked(checkout):
    checks = by_name(check_model(model_path=checkout / "models/absent.pkl", requirements=["numpy"], cwd=checkout))
    assert checks["requires numpy"].passed is True
    assert checks["load models/absent.pkl"].passed is False
    assert checks["load models/absent.pkl"].detail == f"no file at {checkout / 'models/absent.pkl'}"


def test_skops_without_skops_installed_fails_the_load_check(checkout, tmp_path):
    # The serving interpreter is a bare virtualenv (no site-packages), so skops is missing there
    # whatever this one has.
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(tmp_path / "bare")], check=True)
    bare = tmp_path / "bare" / "bin" / "python"
    path = checkout / "models/model.skops"
    path.write_bytes(b"PK\x05\x06" + bytes(18))
    checks = by_name(check_model(model_path=path, cwd=checkout, python=str(bare)))
    assert checks["load models/model.skops"].passed is False
    assert checks["load models/model.skops"].detail == f"skops is not installed in {bare}"


def test_skops_loads_only_trusted_types(checkout, fitted):
    import skops.io as sio

    path = checkout / "models/model.skops"
    sio.dump(fitted, path)
    untrusted = sio.get_untrusted_types(file=path)
    contract = ModelContract(sample_input=str(checkout / "data/test.npy"), output=OutputContract(shape=()))
    if untrusted:
        refused = by_name(check_model(model_path=path, cwd=checkout, contract=contract))
        assert refused["load models/model.skops"].passed is False
        assert untrusted[0] in refused["load models/model.skops"].detail
    checks = check_model(model_path=path, cwd=checkout, contract=contract, trusted_types=untrusted)
    assert all(check.passed is True for check in checks), checks


# -- contract -------------------------------------------------------------------------------


def test_a_model_that_raises_fails_inference_and_the_rest_is_not_run(checkout, models_code):
    checks = check_model(**toy(checkout, models_code, "raise", output=OutputContract(shape=())))
    inference = by_name(checks)["predict() on the sample input"]
    assert inference.passed is False
    assert inference.detail == "predict() raised ValueError: feature 'age' has negative values (on data/test.npy)"
    rest = contract_checks(checks)[2:]
    assert [c.name for c in rest] == ["output rows", "output shape", "output finite", "deterministic"]
    assert all(check.passed is None for check in rest)


def test_wrong_shape_dtype_nan_and_out_of_range_output_each_fail(checkout, models_code):
    output = OutputContract(shape=(), dtype="int", min_value=0, max_value=1)
    checks = by_name(check_model(**toy(checkout, models_code, "bad-output", output=output)))
    assert checks["output rows"].passed is True
    shape = checks["output shape"]
    assert (shape.passed, shape.value) == (False, [ROWS, 3])
    assert "per row (3,), expected per row ()" in shape.detail
    assert checks["output dtype"].passed is False
    assert checks["output dtype"].detail == "dtype float64, expected int"
    finite = checks["output finite"]
    assert (finite.passed, finite.value) == (False, 1)
    assert finite.detail == f"1 of {ROWS * 3} values are not finite (1 NaN, 0 infinite)"
    in_range = checks["output range"]
    assert in_range.passed is False
    assert in_range.detail == f"{ROWS * 3 - 1} of {ROWS * 3 - 1} values outside [0, 1]; worst 5"
    assert in_range.value == {"outside": ROWS * 3 - 1, "worst": 5.0}
    assert checks["deterministic"].passed is True  # NaN equals NaN between the two calls


def test_one_output_row_short_fails_the_row_check(checkout, models_code):
    checks = by_name(check_model(**toy(checkout, models_code, "short", deterministic=False)))
    assert checks["output rows"].passed is False
    assert checks["output rows"].detail == f"{ROWS - 1} rows out for {ROWS} in"
    assert "deterministic" not in checks


def test_nan_is_accepted_when_allowed(checkout, models_code):
    output = OutputContract(allow_nan=True, min_value=0)
    checks = by_name(check_model(**toy(checkout, models_code, "bad-output", output=output)))
    assert "output finite" not in checks
    assert checks["output range"].passed is True  # NaN is the finite check's business


def test_a_model_with_unseeded_noise_is_not_deterministic(checkout, models_code):
    checks = by_name(check_model(**toy(checkout, models_code, "noisy")))
    deterministic = checks["deterministic"]
    assert deterministic.passed is False
    assert deterministic.detail.startswith(f"{ROWS} of {ROWS} values differ between two calls seeded with 0")


def test_a_slow_model_exceeds_its_latency_budget(checkout, models_code):
    checks = by_name(
        check_model(**toy(checkout, models_code, "slow", latency_budget_ms=10, latency_repeats=3, deterministic=False))
    )
    latency = checks["latency"]
    assert latency.passed is False
    assert latency.value["median_ms"] >= 45
    assert latency.detail.startswith("median ")
    assert latency.detail.endswith(f"over 3 calls on {ROWS} rows; budget 10 ms")


def test_sample_input_columns_are_selected_in_order_and_a_missing_one_fails(checkout, models_code):
    frame = pd.DataFrame({"c": ["x"] * ROWS, "b": np.ones(ROWS), "a": np.arange(ROWS, dtype=float)})
    frame.to_parquet(checkout / "data/test.parquet")
    frame.drop(columns="b").to_json(checkout / "data/test.jsonl", orient="records", lines=True)
    kwargs = toy(checkout, models_code, "good")

    parquet = ModelContract(sample_input=str(checkout / "data/test.parquet"), input_columns=("a", "b"))
    assert all(check.passed is True for check in check_model(**{**kwargs, "contract": parquet}))

    jsonl = ModelContract(sample_input=str(checkout / "data/test.jsonl"), input_columns=("a", "b"))
    checks = check_model(**{**kwargs, "contract": jsonl})
    sample = by_name(checks)["sample input data/test.jsonl"]
    assert sample.passed is False
    assert sample.detail == "data/test.jsonl has no column 'b' (columns: c, a)"
    assert all(check.passed is None for check in contract_checks(checks)[1:])


# -- the child process ----------------------------------------------------------------------


def test_a_hanging_model_times_out_and_every_unfinished_check_fails(checkout, models_code):
    started = time.monotonic()
    checks = check_model(**toy(checkout, models_code, "hang"), timeout_s=2)
    assert time.monotonic() - started < 2 + model_checks._BACKSTOP_S
    found = by_name(checks)
    assert found["load models/hang.pkl"].passed is True  # what finished is kept
    inference = found["predict() on the sample input"]
    assert inference.passed is False
    assert inference.detail.startswith("timed out after 2 s (while running this check)")
    assert "in predict" in inference.detail  # the watchdog's traceback says where it hung
    rest = contract_checks(checks)[2:]
    assert rest
    assert all((check.passed, check.detail) == (False, "timed out after 2 s") for check in rest)


def test_a_child_that_silences_its_watchdog_is_killed_by_the_parent(checkout, models_code, monkeypatch):
    monkeypatch.setattr(model_checks, "_BACKSTOP_S", 0.5)
    started = time.monotonic()
    checks = by_name(check_model(**toy(checkout, models_code, "hang-no-watchdog"), timeout_s=1))
    assert time.monotonic() - started < 10
    assert checks["predict() on the sample input"].passed is False
    assert checks["predict() on the sample input"].detail.startswith("timed out after 1 s")


@pytest.mark.parametrize(("behaviour", "status"), [("crash", "exit status 3"), ("segfault", "signal SIGSEGV")])
def test_a_child_that_dies_keeps_what_it_found_and_fails_the_running_check(checkout, models_code, behaviour, status):
    checks = by_name(check_model(**toy(checkout, models_code, behaviour)))
    assert checks[f"load models/{behaviour}.pkl"].passed is True
    inference = checks["predict() on the sample input"]
    assert inference.passed is False
    assert inference.detail.startswith(f"the check process ended with {status} during this check")
    assert "[mlci] sample input data/test.npy: passed" in inference.detail  # the tail of its output
    assert checks["output rows"].passed is None
    assert checks["output rows"].detail == f"not run: the check process ended with {status}"


def test_a_child_that_writes_nothing_fails_the_load_check(checkout, tmp_path):
    python = tmp_path / "broken-python"
    python.write_text("#!/bin/sh\necho 'cannot start: no such interpreter' >&2\nexit 5\n")
    python.chmod(0o755)
    (checkout / "models/model.pkl").write_bytes(b"unused")
    checks = by_name(check_model(model_path=checkout / "models/model.pkl", cwd=checkout, python=str(python)))
    load = checks["load models/model.pkl"]
    assert load.passed is False
    assert "exit status 5" in load.detail
    assert "cannot start: no such interpreter" in load.detail
    assert checks["dependencies of models/model.pkl"].passed is None


def test_stopping_the_runner_stops_the_child(checkout, models_code, caplog):
    """What ``on_kill`` does: stop the runner the checks run through, from another thread."""
    runner = CommandRunner(log=logging.getLogger("test.model_checks"), grace_seconds=1)
    started = threading.Event()
    pids: list[int] = []

    class Watch(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            message = record.getMessage()
            if message.startswith("[mlci] checking "):
                pids.append(int(message.rsplit("process ", 1)[1].rstrip(")")))
            if message.startswith("[mlci] sample input"):
                started.set()

    def stop_when_predicting() -> None:
        if started.wait(20):
            time.sleep(0.2)
            runner.stop()

    caplog.set_level(logging.INFO, logger="test.model_checks")
    handler = Watch()
    logging.getLogger("test.model_checks").addHandler(handler)
    stopper = threading.Thread(target=stop_when_predicting)
    stopper.start()
    try:
        with pytest.raises(CommandStoppedError):
            check_model(**toy(checkout, models_code, "hang"), runner=runner, timeout_s=30)
    finally:
        stopper.join()
        logging.getLogger("test.model_checks").removeHandler(handler)
    assert started.is_set()
    assert wait_dead(pids[0])


def test_bad_arguments_are_refused_before_the_child_starts(checkout):
    model = checkout / "models/model.pkl"
    with pytest.raises(MlciConfigError, match=r"model\.onnx"):
        check_model(model_path=checkout / "models/model.onnx", cwd=checkout)
    with pytest.raises(MlciConfigError, match="model_format must be one of auto, pickle, joblib, skops"):
        check_model(model_path=model, model_format="torch", cwd=checkout)
    with pytest.raises(MlciConfigError, match="not a requirement"):
        check_model(model_path=model, requirements=["numpy>>1"], cwd=checkout)
    with pytest.raises(MlciConfigError, match="code_paths must be absolute"):
        check_model(model_path=model, code_paths=[Path("src")], cwd=checkout)
    with pytest.raises(MlciConfigError, match="python='/nonexistent/python'"):
        check_model(model_path=model, cwd=checkout, python="/nonexistent/python")
    with pytest.raises(MlciConfigError, match="method must be the name of a method"):
        ModelContract(sample_input=str(checkout / "data/test.csv"), method="predict; import os")
    with pytest.raises(MlciConfigError, match=r"test\.xlsx"):
        ModelContract(sample_input=str(checkout / "data/test.xlsx"))
    assert model_format_for(Path("m.PKL")) is ModelFormat.PICKLE
    assert model_format_for(Path("m.bin"), "joblib") is ModelFormat.JOBLIB


def test_importing_model_checks_loads_no_heavy_library():
    code = (
        "import sys, json, airflow_provider_mlci.core.model.checks\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('numpy', 'pandas', 'sklearn', 'scipy', 'pyarrow', 'joblib', 'dvc', 'airflow'))))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout) == []


# -- the contract's argument ----------------------------------------------------------------


def test_contract_from_mapping(tmp_path):
    contract = ModelContract.from_mapping(
        {"sample_input": "data/../data/x.csv", "input_columns": ["b", "a"], "output": {"shape": [2], "max_value": 1}},
        root=tmp_path,
    )
    assert contract.sample_input == str(tmp_path / "data/x.csv")
    assert contract.input_columns == ("b", "a")
    assert contract.output == OutputContract(shape=(2,), max_value=1)
    assert ModelContract.from_mapping({"sample_input": "x.npy"}, root=tmp_path).output == OutputContract()

    with pytest.raises(MlciConfigError, match=r"Unknown key\(s\) in the model contract: sample, timeout"):
        ModelContract.from_mapping({"sample": "x.csv", "timeout": 3}, root=tmp_path)
    with pytest.raises(MlciConfigError, match=r"Unknown key\(s\) in the output contract: dtypes"):
        ModelContract.from_mapping({"sample_input": "x.csv", "output": {"dtypes": "float"}}, root=tmp_path)
    with pytest.raises(MlciConfigError, match="climbs out of the repository root"):
        ModelContract.from_mapping({"sample_input": "data/../../secrets.csv"}, root=tmp_path)
    with pytest.raises(MlciConfigError, match="must be relative to the repository root"):
        ModelContract.from_mapping({"sample_input": "/etc/data.csv"}, root=tmp_path)
    with pytest.raises(MlciConfigError, match="needs sample_input"):
        ModelContract.from_mapping({"method": "predict"}, root=tmp_path)
    with pytest.raises(MlciConfigError, match="min_value 2 is above max_value 1"):
        ModelContract.from_mapping({"sample_input": "x.csv", "output": {"min_value": 2, "max_value": 1}}, root=tmp_path)


# -- requirements files ---------------------------------------------------------------------


def test_read_requirements_follows_includes_and_skips_what_names_no_version(tmp_path):
    (tmp_path / "reqs").mkdir()
    (tmp_path / "reqs/base.txt").write_text("numpy==2.4.6  # pinned\n-r base.txt\n--requirement=extra.txt\n")
    (tmp_path / "reqs/extra.txt").write_text("#nothing but comments\n-rbase.txt\npandas\n")
    (tmp_path / "requirements.txt").write_text(
        textwrap.dedent(
            """\
            # the model's needs
            --index-url https://pypi.example.invalid/simple
            -c constraints.txt

            scikit-learn>=1.5
            -r reqs/base.txt
            -e ./local-package
            pyyaml ; python_version >= "3.9"
            requests==2.32.0 \\
                --hash=sha256:0000
            mypkg @ https://example.invalid/mypkg-1.0.whl
            ./wheels/other-1.0-py3-none-any.whl
            """
        )
    )
    assert read_requirements(tmp_path / "requirements.txt") == [
        "scikit-learn>=1.5",
        "numpy==2.4.6",
        "pandas",
        'pyyaml ; python_version >= "3.9"',
        "requests==2.32.0",
    ]

    (tmp_path / "bad.txt").write_text("numpy\n\nscikit-learn>>1.5\n")
    with pytest.raises(MlciConfigError, match=r"bad\.txt:3: 'scikit-learn>>1\.5' is not a requirement"):
        read_requirements(tmp_path / "bad.txt")
    (tmp_path / "dangling.txt").write_text("-r missing.txt\n")
    with pytest.raises(MlciConfigError, match=r"missing\.txt \(named at .*dangling\.txt:1\)"):
        read_requirements(tmp_path / "dangling.txt")


# -- scores ---------------------------------------------------------------------------------

METRICS = {"metrics.json": {"accuracy": 0.91, "eval": {"auc": 0.95, "loss": None}}}


def test_scores_pass_and_fail_against_their_bounds():
    checks = check_scores(METRICS, {"accuracy": {"min": 0.9}, "eval.auc": {"min": 0.5, "max": 0.9}})
    assert [(c.name, c.kind, c.passed, c.value) for c in checks] == [
        ("score accuracy", "scores", True, 0.91),
        ("score eval.auc", "scores", False, 0.95),
    ]
    assert checks[1].detail == "0.95 in metrics.json, needs >= 0.5 and <= 0.9"


def test_missing_and_nan_scores_fail_naming_the_known_metrics():
    missing, nan = check_scores(METRICS, {"f1": {"min": 0.5}, "metrics.json:eval.loss": {"max": 1}})
    assert missing.passed is False
    assert missing.detail.startswith("metric 'f1' not found (metrics: metrics.json:accuracy, metrics.json:eval.auc")
    assert nan.passed is False
    assert nan.detail == "metric 'metrics.json:eval.loss' in metrics.json is None, not a number; needs <= 1"


@pytest.mark.parametrize(
    "bounds", [{}, {"minimum": 0.5}, {"min": 0.5, "mx": 1}, {"min": "high"}, {"min": True}, 0.5, {"min": 2, "max": 1}]
)
def test_a_bad_threshold_spec_is_a_config_error_naming_the_metric(bounds):
    with pytest.raises(MlciConfigError, match="'accuracy'"):
        check_scores(METRICS, {"accuracy": bounds})


def test_check_to_json_makes_non_finite_values_null():
    check = Check(name="latency", kind="contract", passed=False, value={"median_ms": float("inf")})
    assert check.to_json() == {
        "name": "latency",
        "kind": "contract",
        "passed": False,
        "detail": "",
        "value": {"median_ms": None},
    }
    assert Check.from_json(check.to_json()).value == {"median_ms": None}
    with pytest.raises(MlciConfigError, match="kind"):
        Check(name="x", kind="speed", passed=True)
