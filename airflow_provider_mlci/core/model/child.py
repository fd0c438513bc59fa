"""The subprocess side of :mod:`airflow_provider_mlci.core.model.checks`: load a model and try it.

Run as ``python model_child.py REQUEST.json RESULT.json`` in the checkout, by the interpreter that
will serve the model, which may be the user's own virtualenv without this package. So this file
imports only the standard library at module level, works on Python 3.9 and newer, and imports
packaging, numpy, pandas, joblib and skops only where a check needs them.

It writes the planned checks to ``RESULT.json`` before doing anything else, then rewrites the file
(atomically) as each check starts and ends, and marks it ``finished`` at the end. A parent that
finds the file unfinished knows which check was running when the process died or timed out. A
watchdog thread that needs no GIL (:func:`faulthandler.dump_traceback_later`) ends the process
at the request's ``timeout_s``, after printing where every thread was.

Loading a pickle or joblib file runs code the file names. It is done here only because the file
comes from the team's own repository, and in a process of its own so that whatever it does stays
out of the Airflow worker.
"""

from __future__ import annotations

import faulthandler
import importlib
import importlib.metadata
import json
import math
import os
import pickle
import random
import statistics
import struct
import sys
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable
from typing import Any

__all__ = ["main", "plan"]

#: Errors that loading a damaged file raises (as opposed to a missing module or a bug).
_CORRUPTION = (
    pickle.UnpicklingError,
    EOFError,
    ValueError,
    KeyError,
    IndexError,
    TypeError,
    zipfile.BadZipFile,
    struct.error,
    UnicodeDecodeError,
    OverflowError,
    MemoryError,
)
_NUMBER_KINDS = {"bool": "b", "int": "iu", "float": "f", "number": "iufc"}
_NO_MODEL = object()


def plan(request: dict[str, Any]) -> list[dict[str, str]]:
    """Return the checks that ``request`` asks for, in order, as ``{"id", "name", "kind"}``.

    The parent calls this too, to account for checks a child never reported.

    :param request: what :func:`airflow_provider_mlci.core.model.checks.check_model` sends
    """
    display = request["display_name"]
    checks = [
        {"id": f"requires:{i}", "name": f"requires {text}", "kind": "dependencies"}
        for i, text in enumerate(request["requirements"])
    ]
    checks.append({"id": "imports", "name": f"dependencies of {display}", "kind": "dependencies"})
    checks.append({"id": "load", "name": f"load {display}", "kind": "load"})
    contract = request.get("contract")
    if contract is None:
        return checks
    output = contract["output"]
    planned = [
        ("sample", f"sample input {request['sample_display']}"),
        ("inference", f"{contract['method']}() on the sample input"),
        ("rows", "output rows"),
        ("shape", "output shape") if output["shape"] is not None else None,
        ("dtype", "output dtype") if output["dtype"] is not None else None,
        ("finite", "output finite") if not output["allow_nan"] else None,
        ("range", "output range") if output["min_value"] is not None or output["max_value"] is not None else None,
        ("deterministic", "deterministic") if contract["deterministic"] else None,
        ("latency", "latency") if contract["latency_budget_ms"] is not None else None,
    ]
    checks += [{"id": ident, "name": name, "kind": "contract"} for ident, name in filter(None, planned)]
    return checks


class _Report:
    """The checks and their states, mirrored to the result file after every change."""

    def __init__(self, path: str, planned: list[dict[str, str]]) -> None:
        self.path = path
        self.checks = [dict(check, passed=None, detail="", value=None, state="pending") for check in planned]
        self._by_id = {check["id"]: check for check in self.checks}
        self.finished = False

    def has(self, ident: str) -> bool:
        return ident in self._by_id

    def start(self, *idents: str) -> None:
        for ident in idents:
            self._by_id[ident]["state"] = "running"
        self.flush()

    def record(self, ident: str, passed: bool | None, detail: str = "", value: Any = None) -> None:
        check = self._by_id[ident]
        check.update(passed=passed, detail=detail, value=_json_safe(value), state="done")
        outcome = {True: "passed", False: "FAILED", None: "not run"}[passed]
        print(f"[mlci] {check['name']}: {outcome}" + (f": {detail}" if detail else ""), flush=True)
        self.flush()

    def skip(self, idents: list[str], detail: str) -> None:
        for ident in idents:
            if self.has(ident) and self._by_id[ident]["state"] != "done":
                self._by_id[ident].update(passed=None, detail=detail, state="done")
        self.flush()

    def fail_running(self, detail: str) -> None:
        for check in self.checks:
            if check["state"] == "running":
                check.update(passed=False, detail=detail, state="done")
        self.flush()

    def finish(self) -> None:
        self.skip([check["id"] for check in self.checks], "not run")
        self.finished = True
        self.flush()

    def flush(self) -> None:
        payload = {"pid": os.getpid(), "python": sys.executable, "finished": self.finished, "checks": self.checks}
        partial = f"{self.path}.partial"
        with open(partial, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, allow_nan=False)
        os.replace(partial, self.path)


def main(argv: list[str] | None = None) -> int:
    """Check the model that the request file describes; write the results file.

    :param argv: ``[REQUEST.json, RESULT.json]`` (default: the command line)
    """
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python model_child.py REQUEST.json RESULT.json", file=sys.stderr)
        return 2
    with open(args[0], encoding="utf-8") as fh:
        request = json.load(fh)
    faulthandler.enable()  # a crash in native code still says where it happened
    if request.get("timeout_s"):
        faulthandler.dump_traceback_later(float(request["timeout_s"]), exit=True)
    report = _Report(args[1], plan(request))
    report.flush()
    print(f"[mlci] checking {request['display_name']} with {sys.executable} (process {os.getpid()})", flush=True)
    _set_sys_path(request["code_paths"])
    try:
        _check_requirements(request, report)
        model = _load(request, report)
        if request.get("contract") is not None:
            _check_contract(request, report, model)
    except Exception as exc:  # a bug here, not in the model: fail what ran, keep what was found
        traceback.print_exc()
        report.fail_running(f"the check itself failed: {type(exc).__name__}: {exc}")
    report.finish()
    faulthandler.cancel_dump_traceback_later()
    return 0


def _set_sys_path(code_paths: list[str]) -> None:
    """Put the team's code first and take this file's own folder (our package's modules) off."""
    here = os.path.dirname(os.path.abspath(__file__))
    sys.path[:] = [p for p in sys.path if not p or os.path.abspath(p) != here]
    for path in reversed(code_paths):
        sys.path.insert(0, path)


# -- dependencies ---------------------------------------------------------------------------


def _packaging() -> tuple[Any, Any]:
    """Return packaging's ``Requirement`` and ``InvalidVersion``, or pip's vendored copies."""
    try:
        from packaging.requirements import Requirement
        from packaging.version import InvalidVersion
    except ImportError:
        from pip._vendor.packaging.requirements import Requirement  # type: ignore[no-redef]
        from pip._vendor.packaging.version import InvalidVersion  # type: ignore[no-redef]
    return Requirement, InvalidVersion


def _check_requirements(request: dict[str, Any], report: _Report) -> None:
    texts = request["requirements"]
    if not texts:
        return
    try:
        requirement_class, invalid_version = _packaging()
    except ImportError:
        for i in range(len(texts)):
            report.record(
                f"requires:{i}", False, f"cannot check: neither packaging nor pip is installed in {sys.executable}"
            )
        return
    for i, text in enumerate(texts):
        report.start(f"requires:{i}")
        try:
            passed, detail, value = _check_requirement(requirement_class(text), requirement_class, invalid_version)
        except Exception as exc:  # e.g. an older packaging here that reads the line differently
            passed, detail, value = False, f"cannot check: {type(exc).__name__}: {exc}", None
        report.record(f"requires:{i}", passed, detail, value)


def _check_requirement(req: Any, requirement_class: Any, invalid_version: Any) -> tuple[bool | None, str, Any]:
    if req.marker is not None and not req.marker.evaluate():
        # Skipped, and so no failure: a requirement for another platform or Python is met by not applying.
        return True, f"skipped: not needed here, the marker '{req.marker}' is false for {sys.executable}", None
    installed = _installed(req.name)
    if installed is None:
        return False, f"missing: {req.name} is not installed in {sys.executable}", None
    if not _satisfies(req.specifier, installed, invalid_version):
        return False, f"installed {installed}, needs {req.name}{req.specifier}", installed
    problems = []
    for extra in sorted(req.extras):
        for dep_text in importlib.metadata.requires(req.name) or []:
            dep = requirement_class(dep_text)
            if dep.marker is None or "extra" not in str(dep.marker) or not dep.marker.evaluate({"extra": extra}):
                continue
            dep_version = _installed(dep.name)
            if dep_version is None:
                problems.append(f"{dep.name} (for [{extra}]) is missing")
            elif not _satisfies(dep.specifier, dep_version, invalid_version):
                problems.append(f"{dep.name} (for [{extra}]) is {dep_version}, needs {dep.specifier}")
    if problems:
        return False, f"installed {installed}, but " + "; ".join(problems), installed
    return True, f"installed {installed}", installed


def _installed(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _satisfies(specifier: Any, version: str, invalid_version: Any) -> bool:
    if not str(specifier):
        return True
    try:
        # An installed pre-release counts: the question is what is there, not what pip would pick.
        return bool(specifier.contains(version, prereleases=True))
    except invalid_version:
        return False


def _distribution_of(module: str) -> str:
    """The distribution that provides a top-level module (``sklearn`` -> ``scikit-learn``)."""
    top = module.split(".")[0]
    finder = getattr(importlib.metadata, "packages_distributions", None)
    names = (finder() if finder is not None else {}).get(top) or [top]
    return names[0]


# -- load -----------------------------------------------------------------------------------


class _LoadRefusedError(Exception):
    """Loading was refused before any byte of the model was trusted."""


def _loader(request: dict[str, Any]) -> Callable[[], Any]:
    path = request["model_path"]
    fmt = request["format"]
    if fmt == "pickle":

        def load_pickle() -> Any:
            with open(path, "rb") as fh:
                return pickle.load(fh)  # noqa: S301 - the team's own model, in a process of its own

        return load_pickle
    if fmt == "joblib":
        try:
            import joblib
        except ImportError as exc:
            raise _LoadRefusedError(f"joblib is not installed in {sys.executable}") from exc
        return lambda: joblib.load(path)
    if fmt == "skops":
        try:
            import skops.io as sio
        except ImportError as exc:
            raise _LoadRefusedError(f"skops is not installed in {sys.executable}") from exc

        def load_skops() -> Any:
            found = list(sio.get_untrusted_types(file=path))
            untrusted = sorted(set(found) - set(request["trusted_types"]))
            if untrusted:
                raise _LoadRefusedError(
                    f"{request['display_name']} holds types that are not trusted: {', '.join(untrusted)} "
                    "(add them to trusted_types if the code that defines them is trusted)"
                )
            return sio.load(path, trusted=found)

        return load_skops
    raise _LoadRefusedError(f"unknown model format {fmt!r}")


def _load(request: dict[str, Any], report: _Report) -> Any:
    display = request["display_name"]
    path = request["model_path"]
    not_known = "not known: the model did not load"
    report.start("imports", "load")
    if not os.path.isfile(path):
        report.record("load", False, f"no file at {path}")
        report.record("imports", None, not_known)
        return _NO_MODEL
    try:
        loader = _loader(request)
    except _LoadRefusedError as exc:
        report.record("load", False, str(exc))
        report.record("imports", None, not_known)
        return _NO_MODEL
    started = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            model = loader()
        except _LoadRefusedError as exc:
            report.record("load", False, str(exc))
            report.record("imports", None, not_known)
            return _NO_MODEL
        except ImportError as exc:
            what = f"module '{exc.name}'" if isinstance(exc, ModuleNotFoundError) and exc.name else "an import"
            report.record(
                "imports",
                False,
                f"{display} needs {what}, which cannot be imported by {sys.executable}: {exc}. "
                "Install the package that provides it, or add the folder that holds it to code_paths.",
                exc.name,
            )
            report.record("load", False, f"cannot load {display}: {what} is missing (see the dependencies check)")
            return _NO_MODEL
        except AttributeError as exc:
            if not str(exc).startswith("Can't get attribute"):
                return _load_failed(report, display, exc, corrupted=False)
            report.record(
                "imports",
                False,
                f"{display} refers to code that is not there: {exc} (is code_paths at the right code?)",
            )
            report.record("load", False, f"cannot load {display}: {exc}")
            return _NO_MODEL
        except _CORRUPTION as exc:
            return _load_failed(report, display, exc, corrupted=True)
        except Exception as exc:
            return _load_failed(report, display, exc, corrupted=False)
    elapsed = time.perf_counter() - started
    for warning in caught:
        if type(warning.message).__name__ != "InconsistentVersionWarning":
            print(f"[mlci] warning while loading {display}: {type(warning.message).__name__}: {warning.message}")
    mismatches = _version_mismatches(display, [w.message for w in caught])
    if mismatches:
        report.record("imports", False, "; ".join(mismatches))
    else:
        report.record("imports", True, "every module it needs imported, no version warnings")
    kind = type(model)
    report.record("load", True, f"{kind.__name__} loaded in {elapsed:.2f} s", f"{kind.__module__}.{kind.__qualname__}")
    return model


def _load_failed(report: _Report, display: str, exc: BaseException, *, corrupted: bool) -> object:
    traceback.print_exc()
    problem = "is corrupted or truncated" if corrupted else "could not be loaded"
    report.record("load", False, f"{display} {problem}: {type(exc).__name__}: {exc}")
    report.record("imports", None, "not known: the model did not load")
    return _NO_MODEL


def _version_mismatches(display: str, messages: list[Warning]) -> list[str]:
    """Describe scikit-learn's ``InconsistentVersionWarning`` (or a look-alike) once per version pair."""
    found: dict[tuple[str, str, str], list[str]] = {}
    for message in messages:
        if type(message).__name__ != "InconsistentVersionWarning":
            continue
        package = _distribution_of(type(message).__module__)
        saved = str(getattr(message, "original_sklearn_version", "?"))
        here = str(getattr(message, "current_sklearn_version", "?"))
        estimators = found.setdefault((package, saved, here), [])
        name = getattr(message, "estimator_name", None)
        if name and name not in estimators:
            estimators.append(str(name))
        if saved == "?":
            estimators.append(str(message))
    return [
        f"{display} was saved with {package} {saved}, but {package} {here} is installed here"
        + (f" ({', '.join(estimators)})" if estimators else "")
        for (package, saved, here), estimators in found.items()
    ]


# -- contract -------------------------------------------------------------------------------

_CONTRACT_IDS = ["sample", "inference", "rows", "shape", "dtype", "finite", "range", "deterministic", "latency"]


def _check_contract(request: dict[str, Any], report: _Report, model: Any) -> None:
    contract = request["contract"]
    if model is _NO_MODEL:
        report.skip(_CONTRACT_IDS, "not run: the model did not load")
        return
    sample_name = request["sample_display"]
    report.start("sample")
    try:
        sample = _read_sample(contract["sample_input"], sample_name, contract["input_columns"])
    except _CheckFailedError as exc:
        report.record("sample", False, str(exc))
        report.skip(_CONTRACT_IDS, "not run: no sample input")
        return
    rows = len(sample)
    report.record("sample", True, f"{rows} rows", rows)

    method = contract["method"]
    report.start("inference")
    predict = getattr(model, method, None)
    if not callable(predict):
        report.record("inference", False, f"the model ({type(model).__name__}) has no method {method}()")
        report.skip(_CONTRACT_IDS, "not run: no inference")
        return
    seed = contract["seed"]
    try:
        first, seconds = _timed(predict, sample, seed)
    except (Exception, SystemExit) as exc:
        traceback.print_exc()
        report.record("inference", False, f"{method}() raised {type(exc).__name__}: {exc} (on {sample_name})")
        report.skip(_CONTRACT_IDS, f"not run: {method}() raised")
        return
    report.record("inference", True, f"{method}() ran on {rows} rows in {_ms(seconds * 1000)} ms")

    try:
        import numpy as np
    except ImportError:
        report.record("rows", False, f"numpy is not installed in {sys.executable}: cannot check the output")
        report.skip(_CONTRACT_IDS, "not run: numpy is not installed")
        return
    try:
        output = _as_array(first)
    except Exception as exc:
        report.record("rows", False, f"the output is not an array: {type(exc).__name__}: {exc}")
        report.skip(_CONTRACT_IDS, "not run: the output is not an array")
        return
    _check_output(report, contract["output"], output, rows, np)
    if report.has("deterministic"):
        report.start("deterministic")
        try:
            again, _ = _timed(predict, sample, seed)
            report.record("deterministic", *_compare(output, _as_array(again), seed, np))
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            report.record("deterministic", False, f"the second call raised {type(exc).__name__}: {exc}")
    if report.has("latency"):
        report.start("latency")
        try:
            report.record("latency", *_latency(predict, sample, contract, rows))
        except (Exception, SystemExit) as exc:
            traceback.print_exc()
            report.record("latency", False, f"a timed call raised {type(exc).__name__}: {exc}")


class _CheckFailedError(Exception):
    """The check fails for the reason in the message."""


def _read_sample(path: str, name: str, columns: list[str] | None) -> Any:
    if not os.path.isfile(path):
        raise _CheckFailedError(f"no file at {path}")
    suffix = os.path.splitext(path)[1].lower()
    try:
        if suffix == ".npy":
            import numpy as np

            return np.load(path, allow_pickle=False)
        import pandas as pd
    except ImportError as exc:
        raise _CheckFailedError(f"cannot read {name}: {exc.name} is not installed in {sys.executable}") from exc
    try:
        if suffix == ".csv":
            frame = pd.read_csv(path)
        elif suffix in (".parquet", ".pq"):
            frame = pd.read_parquet(path)
        else:  # JSON lines; a .json file that holds one array of records is read as such
            with open(path, encoding="utf-8") as fh:
                head = fh.read(64).lstrip()
            frame = pd.read_json(path, orient="records", lines=not head.startswith("["))
    except Exception as exc:
        raise _CheckFailedError(f"cannot read {name}: {type(exc).__name__}: {exc}") from exc
    if columns is not None:
        missing = [column for column in columns if column not in frame.columns]
        if missing:
            present = ", ".join(map(str, frame.columns))
            raise _CheckFailedError(f"{name} has no column {', '.join(map(repr, missing))} (columns: {present})")
        frame = frame[list(columns)]
    if len(frame) == 0:
        raise _CheckFailedError(f"{name} has no rows")
    return frame


def _seed(seed: int) -> None:
    random.seed(seed)
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        numpy.random.seed(seed)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(seed)


def _timed(predict: Callable[[Any], Any], sample: Any, seed: int) -> tuple[Any, float]:
    _seed(seed)
    started = time.perf_counter()
    result = predict(sample)
    return result, time.perf_counter() - started


def _as_array(result: Any) -> Any:
    import numpy as np

    if hasattr(result, "detach") and hasattr(result, "cpu"):  # a torch tensor
        result = result.detach().cpu().numpy()
    elif hasattr(result, "to_numpy"):  # pandas
        result = result.to_numpy()
    return np.asarray(result)


def _check_output(report: _Report, output_contract: dict[str, Any], output: Any, rows: int, np: Any) -> None:
    report.start("rows")
    got_rows = output.shape[0] if output.ndim else None
    if got_rows == rows:
        report.record("rows", True, f"{rows} rows out for {rows} in", got_rows)
    elif got_rows is None:
        report.record("rows", False, f"the output is a scalar ({output!r}), not one value per row", None)
    else:
        report.record("rows", False, f"{got_rows} rows out for {rows} in", got_rows)
    if report.has("shape"):
        expected = tuple(output_contract["shape"])
        trailing = tuple(output.shape[1:])
        report.record(
            "shape",
            output.ndim > 0 and trailing == expected,
            f"output shape {tuple(output.shape)}, per row {trailing}, expected per row {expected}",
            list(output.shape),
        )
    if report.has("dtype"):
        report.record("dtype", *_dtype_matches(output.dtype, output_contract["dtype"], np))
    numeric = _numeric(output, np)
    if report.has("finite"):
        if numeric is None:
            report.record("finite", True, f"not numbers (dtype {output.dtype}): no NaN possible")
        else:
            bad = int(numeric.size - np.count_nonzero(np.isfinite(numeric)))
            nans = int(np.count_nonzero(np.isnan(numeric)))
            detail = (
                f"{bad} of {numeric.size} values are not finite ({nans} NaN, {bad - nans} infinite)"
                if bad
                else f"all {numeric.size} values are finite"
            )
            report.record("finite", bad == 0, detail, bad)
    if report.has("range"):
        low, high = output_contract["min_value"], output_contract["max_value"]
        bounds = f"[{'-inf' if low is None else f'{low:g}'}, {'inf' if high is None else f'{high:g}'}]"
        if numeric is None:
            report.record("range", False, f"not numeric (dtype {output.dtype}), cannot be within {bounds}")
            return
        values = numeric.astype(float).ravel()
        values = values[~np.isnan(values)]
        below = (low - values) if low is not None else np.zeros_like(values)
        above = (values - high) if high is not None else np.zeros_like(values)
        distance = np.maximum(below, above)
        outside = int(np.count_nonzero(distance > 0))
        if outside:
            worst = float(values[int(np.argmax(distance))])
            report.record(
                "range",
                False,
                f"{outside} of {values.size} values outside {bounds}; worst {worst:g}",
                {"outside": outside, "worst": worst},
            )
        else:
            report.record("range", True, f"all {values.size} values within {bounds}", {"outside": 0})


def _dtype_matches(dtype: Any, wanted: str, np: Any) -> tuple[bool, str, str]:
    kinds = _NUMBER_KINDS.get(wanted)
    if kinds is not None:
        return dtype.kind in kinds, f"dtype {dtype}, expected {wanted}", str(dtype)
    try:
        expected = np.dtype(wanted)
    except TypeError:
        return False, f"{wanted!r} is no numpy dtype name (nor bool, int, float or number)", str(dtype)
    return dtype == expected, f"dtype {dtype}, expected {expected}", str(dtype)


def _numeric(output: Any, np: Any) -> Any:
    """The output as a real-valued array, or ``None`` when it is not real numbers."""
    if output.dtype.kind in "iuf":
        return output
    if output.dtype.kind in "bO":
        try:
            return output.astype(float)
        except (TypeError, ValueError):
            return None
    return None


def _compare(first: Any, second: Any, seed: int, np: Any) -> tuple[bool, str, Any]:
    if first.shape != second.shape:
        return False, f"two calls seeded with {seed} gave shapes {first.shape} and {second.shape}", None
    try:
        same = np.array_equal(first, second, equal_nan=True)
    except TypeError:  # equal_nan needs numbers
        same = np.array_equal(first, second)
    if same:
        return True, f"two calls seeded with {seed} gave the same output", 0
    a, b = _numeric(first, np), _numeric(second, np)
    if a is None or b is None:
        differ = int(np.count_nonzero(first != second))
        return False, f"{differ} of {first.size} values differ between two calls seeded with {seed}", differ
    a, b = a.astype(float), b.astype(float)
    unequal = ~((a == b) | (np.isnan(a) & np.isnan(b)))
    differ = int(np.count_nonzero(unequal))
    gaps = np.abs(a - b)[unequal]
    largest = float(np.max(np.where(np.isnan(gaps), np.inf, gaps)))
    return (
        False,
        f"{differ} of {first.size} values differ between two calls seeded with {seed}; largest difference {largest:g}",
        differ,
    )


def _latency(predict: Callable[[Any], Any], sample: Any, contract: dict[str, Any], rows: int) -> tuple[bool, str, Any]:
    budget = float(contract["latency_budget_ms"])
    times = []
    for _ in range(int(contract["latency_repeats"])):
        started = time.perf_counter()
        predict(sample)
        times.append((time.perf_counter() - started) * 1000)
    median, worst = statistics.median(times), max(times)
    detail = (
        f"median {_ms(median)} ms, max {_ms(worst)} ms over {len(times)} calls on {rows} rows; budget {budget:g} ms"
    )
    return median <= budget, detail, {"median_ms": round(median, 3), "max_ms": round(worst, 3), "budget_ms": budget}


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 1 else f"{value:.3f}"


def _json_safe(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
