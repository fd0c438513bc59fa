"""Check a model artifact before it is trusted: its dependencies, that it loads, its I/O contract.

:func:`check_model` checks three groups and returns every check, failed or not:

- **dependencies**: each pip requirement is installed, at a matching version, in the interpreter
  that will run the model; loading it raises no missing-module error and no version warning
  (scikit-learn's ``InconsistentVersionWarning``: the model was saved with another version).
- **load**: the file loads (pickle, joblib or skops) and is not corrupted or truncated.
- **contract**: the model's method runs on a sample input and its output has one row per input
  row, the expected shape and dtype, no NaN, values in range, is deterministic under a fixed
  seed, and meets a latency budget.

Loading and inference run in a subprocess (:mod:`airflow_provider_mlci.core.model.child`), with
the interpreter that will serve the model, so that the model's code and its imports stay out of
the Airflow worker, a crash or a hang costs only that process, and ``on_kill`` can stop it.
:func:`check_scores` checks metrics against thresholds.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from airflow_provider_mlci.core.dvc.metrics import lookup_metric
from airflow_provider_mlci.core.dvc.ops import json_safe
from airflow_provider_mlci.core.model import child as model_child
from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.core.runtime.process import CommandResult, CommandRunner, private_tempdir
from airflow_provider_mlci.core.runtime.sandbox import SandboxConfig, confine
from airflow_provider_mlci.exceptions import MlciConfigError, UnsafePathError

__all__ = [
    "CHECK_KINDS",
    "SAMPLE_SUFFIXES",
    "Check",
    "ModelContract",
    "ModelFormat",
    "OutputContract",
    "check_model",
    "check_scores",
    "model_format_for",
    "read_requirements",
]

log = logging.getLogger(__name__)

#: The groups a :class:`Check` belongs to.
CHECK_KINDS = ("dependencies", "load", "contract", "scores")
#: The sample input formats, by file suffix.
SAMPLE_SUFFIXES = (".csv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json", ".npy")
_DTYPE_KINDS = ("bool", "int", "float", "number")
#: How long after ``timeout_s`` the parent kills a child whose own watchdog did not end it.
_BACKSTOP_S = 5.0
_TAIL_LINES = 12
_COMMENT = re.compile(r"(^|\s)#.*$")


class ModelFormat(enum.StrEnum):
    """How a model file is serialised."""

    AUTO = "auto"
    PICKLE = "pickle"
    JOBLIB = "joblib"
    SKOPS = "skops"


_SUFFIX_FORMATS = {
    ".pkl": ModelFormat.PICKLE,
    ".pickle": ModelFormat.PICKLE,
    ".joblib": ModelFormat.JOBLIB,
    ".skops": ModelFormat.SKOPS,
}


@dataclass(frozen=True, kw_only=True)
class OutputContract:
    """What the model's output must look like.

    :param shape: the shape of the output for one row (``()`` for one value per row, ``(2,)`` for
        ``predict_proba`` with two classes); ``None`` does not check it
    :param dtype: ``"float"``, ``"int"``, ``"bool"``, ``"number"``, or an exact numpy dtype name
        such as ``"float32"``; ``None`` does not check it
    :param min_value: no value may be below this
    :param max_value: no value may be above this
    :param allow_nan: accept NaN and infinite values
    """

    shape: tuple[int, ...] | None = None
    dtype: str | None = None
    min_value: float | None = None
    max_value: float | None = None
    allow_nan: bool = False

    def __post_init__(self) -> None:
        if self.shape is not None:
            if isinstance(self.shape, str | bytes) or not isinstance(self.shape, Sequence):
                raise MlciConfigError(f"output shape must be a list of sizes such as [2], not {self.shape!r}.")
            if not all(isinstance(size, int) and not isinstance(size, bool) and size >= 0 for size in self.shape):
                raise MlciConfigError(f"output shape must hold sizes (whole numbers >= 0), not {self.shape!r}.")
            object.__setattr__(self, "shape", tuple(self.shape))
        if self.dtype is not None and (not isinstance(self.dtype, str) or not self.dtype.strip()):
            raise MlciConfigError(
                f"output dtype must be one of {', '.join(_DTYPE_KINDS)} or a numpy dtype name, not {self.dtype!r}."
            )
        for name in ("min_value", "max_value"):
            value = getattr(self, name)
            if value is not None and (not _is_number(value) or math.isnan(value)):
                raise MlciConfigError(f"output {name} must be a number, not {value!r}.")
        if self.min_value is not None and self.max_value is not None and self.min_value > self.max_value:
            raise MlciConfigError(f"output min_value {self.min_value} is above max_value {self.max_value}.")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> OutputContract:
        """Build from a dict such as ``{"shape": [2], "dtype": "float", "min_value": 0}``.

        :param data: the output part of the operator's contract argument
        :raises MlciConfigError: naming keys that are not fields
        """
        return cls(**_known_keys(cls, data, "output contract"))


@dataclass(frozen=True, kw_only=True)
class ModelContract:
    """How to try the model, and what its output must be.

    :param sample_input: the absolute path of the sample input: CSV, Parquet, JSON lines (read with
        pandas) or ``.npy`` (numpy)
    :param input_columns: keep only these columns of the sample, in this order
    :param method: the model's method to call with the sample
    :param output: what the output must look like
    :param deterministic: two calls with the same seed must give the same output
    :param seed: what :mod:`random`, ``numpy.random`` and, if the model imported it, ``torch`` are
        seeded with before each call
    :param latency_budget_ms: the most the median call may take, in milliseconds; ``None`` does
        not time the model
    :param latency_repeats: how many calls are timed
    """

    sample_input: str
    input_columns: tuple[str, ...] | None = None
    method: str = "predict"
    output: OutputContract = field(default_factory=OutputContract)
    deterministic: bool = True
    seed: int = 0
    latency_budget_ms: float | None = None
    latency_repeats: int = 5

    def __post_init__(self) -> None:
        object.__setattr__(self, "sample_input", os.fspath(self.sample_input))
        if not os.path.isabs(self.sample_input):
            raise MlciConfigError(f"sample_input must be an absolute path here, not {self.sample_input!r}.")
        if not self.sample_input.lower().endswith(SAMPLE_SUFFIXES):
            raise MlciConfigError(
                f"Cannot read sample input {self.sample_input}: the file name must end with one of "
                f"{', '.join(SAMPLE_SUFFIXES)}."
            )
        if self.input_columns is not None:
            if isinstance(self.input_columns, str) or not all(isinstance(c, str) for c in self.input_columns):
                raise MlciConfigError(f"input_columns must be a list of column names, not {self.input_columns!r}.")
            object.__setattr__(self, "input_columns", tuple(self.input_columns))
            if self.sample_input.lower().endswith(".npy"):
                raise MlciConfigError(f"input_columns cannot select from {self.sample_input}: a .npy file has none.")
        if not isinstance(self.method, str) or not self.method.isidentifier():
            raise MlciConfigError(f"method must be the name of a method of the model, not {self.method!r}.")
        if not isinstance(self.output, OutputContract):
            raise MlciConfigError(f"output must be an OutputContract, not {type(self.output).__name__}.")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**32:
            raise MlciConfigError(f"seed must be a whole number from 0 to 2**32 - 1, not {self.seed!r}.")
        if self.latency_budget_ms is not None and not (
            _is_number(self.latency_budget_ms) and self.latency_budget_ms > 0
        ):
            raise MlciConfigError(f"latency_budget_ms must be a number > 0, not {self.latency_budget_ms!r}.")
        if (
            isinstance(self.latency_repeats, bool)
            or not isinstance(self.latency_repeats, int)
            or self.latency_repeats < 1
        ):
            raise MlciConfigError(f"latency_repeats must be a whole number >= 1, not {self.latency_repeats!r}.")

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any], *, root: Path) -> ModelContract:
        """Build from the operator's dict argument, with ``sample_input`` relative to ``root``.

        For example ``{"sample_input": "data/eval.csv", "input_columns": ["a", "b"],
        "method": "predict_proba", "output": {"shape": [2], "dtype": "float", "min_value": 0,
        "max_value": 1}, "latency_budget_ms": 50}``.

        :param data: the contract as the user wrote it
        :param root: the checkout that ``sample_input`` is relative to
        :raises MlciConfigError: naming unknown keys, a missing ``sample_input``, or a path that is
            absolute or climbs out of ``root``
        """
        values = _known_keys(cls, data, "model contract")
        if "sample_input" not in values:
            raise MlciConfigError("The model contract needs sample_input: a file relative to the repository root.")
        values["sample_input"] = str(Path(root) / _inside_root(values["sample_input"]))
        output = values.get("output")
        if output is None:
            values.pop("output", None)
        elif isinstance(output, Mapping):
            values["output"] = OutputContract.from_mapping(output)
        if isinstance(values.get("input_columns"), list):
            values["input_columns"] = tuple(values["input_columns"])
        return cls(**values)


@dataclass(frozen=True, kw_only=True)
class Check:
    """The outcome of one check.

    :param name: what was checked, e.g. ``requires scikit-learn>=1.5``, ``load models/model.pkl``,
        ``output dtype``
    :param kind: its group: ``dependencies``, ``load``, ``contract`` or ``scores``
    :param passed: ``True`` or ``False``; ``None`` when it was not run because an earlier check failed
        (a check that does not apply, such as a requirement whose marker is false, passes)
    :param detail: what was found, in words
    :param value: the measured value, as JSON (e.g. latency in ms, the output's shape as a list)
    """

    name: str
    kind: str
    passed: bool | None
    detail: str = ""
    value: Any = None

    def __post_init__(self) -> None:
        if self.kind not in CHECK_KINDS:
            raise MlciConfigError(f"Check kind must be one of {', '.join(CHECK_KINDS)}, not {self.kind!r}.")

    def to_json(self) -> dict[str, Any]:
        """The check as small JSON (what goes into XCom); non-finite floats become ``null``."""
        return {
            "name": self.name,
            "kind": self.kind,
            "passed": self.passed,
            "detail": self.detail,
            "value": json_safe(self.value),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Check:
        """Rebuild a check from :meth:`to_json`'s output.

        :param data: a dict with ``name``, ``kind``, ``passed`` and optionally ``detail`` and ``value``
        """
        return cls(
            name=data["name"],
            kind=data["kind"],
            passed=data["passed"],
            detail=data.get("detail", ""),
            value=data.get("value"),
        )


# -- requirements ---------------------------------------------------------------------------


def read_requirements(path: Path, *, root: Path | None = None) -> list[str]:
    """Return the requirement strings of a pip requirements file.

    Follows ``-r`` / ``--requirement`` (relative to the file that names it); skips comments, blank
    lines, options (``-e``, ``--index-url``, ``-c`` and the like, and per-line ``--hash``) and
    requirements given as a URL or a path, which name no version to check.

    :param path: the requirements file
    :param root: the checkout the file belongs to: then the file and every file it includes are
        read only where they really lie inside it (no link, ``..`` or absolute path out of it)
    :raises MlciConfigError: naming the file and line of a line that is no requirement, or a
        missing file
    :raises UnsafePathError: with ``root``, naming a file (or an included one) that leads out of it
    """
    from packaging.requirements import InvalidRequirement, Requirement

    found: list[str] = []
    seen: set[Path] = set()

    def read(file: Path, named_at: str | None) -> None:
        if root is not None:
            try:
                file = inside(root, file, what="requirements file")
            except UnsafePathError as exc:
                if named_at:
                    raise UnsafePathError(f"{exc} (named at {named_at})") from None
                raise
        resolved = file.resolve()
        if resolved in seen:
            return
        seen.add(resolved)
        try:
            text = file.read_text(encoding="utf-8")
        except OSError as exc:
            where = f" (named at {named_at})" if named_at else ""
            raise MlciConfigError(f"Cannot read requirements file {file}{where}: {exc.strerror or exc}") from exc
        for number, line in _logical_lines(text):
            if line.startswith("-"):
                included = _included_file(line)
                if included == "":
                    raise MlciConfigError(f"{file}:{number}: {line!r} names no file.")
                if included is not None:
                    read(file.parent / included, f"{file}:{number}")
                continue
            spec = _strip_line_options(line)
            if _is_url_or_path(spec):
                continue
            try:
                requirement = Requirement(spec)
            except InvalidRequirement as exc:
                raise MlciConfigError(f"{file}:{number}: {line!r} is not a requirement: {exc}") from exc
            if requirement.url is None:
                found.append(spec)

    read(Path(path), None)
    return found


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Join continued lines and drop comments; return ``(first line number, text)`` pairs."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        line = _COMMENT.sub("", raw)
        if not pending:
            start = number
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        joined = (pending + line).strip()
        pending = ""
        if joined:
            out.append((start, joined))
    if pending.strip():
        out.append((start, pending.strip()))
    return out


def _included_file(line: str) -> str | None:
    """The file that a ``-r FILE`` / ``-rFILE`` / ``--requirement[=| ]FILE`` line names, else ``None``."""
    for option in ("--requirement", "-r"):
        if line.startswith(option):
            rest = line[len(option) :]
            if option == "--requirement" and rest[:1] not in ("", " ", "\t", "="):
                return None
            return rest.lstrip(" \t=").strip()
    return None


def _strip_line_options(line: str) -> str:
    """Drop per-requirement options such as ``--hash=sha256:...`` from a requirement line."""
    head, sep, _ = line.partition(" --")
    return head.strip() if sep else line.strip()


def _is_url_or_path(spec: str) -> bool:
    lowered = spec.lower()
    return (
        "://" in spec
        or spec.startswith((".", "/", "~"))
        or lowered.startswith("file:")
        or lowered.endswith((".whl", ".tar.gz", ".zip", ".tar.bz2"))
    )


def _requirement_error(text: Any) -> str | None:
    from packaging.requirements import InvalidRequirement, Requirement

    if not isinstance(text, str):
        return f"{text!r} is not a requirement string"
    try:
        Requirement(text)
    except InvalidRequirement as exc:
        return f"{text!r} is not a requirement: {exc}"
    return None


# -- the model ------------------------------------------------------------------------------


def model_format_for(model_path: Path, model_format: str | ModelFormat = ModelFormat.AUTO) -> ModelFormat:
    """Return the format to load ``model_path`` with, from its suffix when ``model_format`` is auto.

    :param model_path: the model file
    :param model_format: ``auto``, ``pickle``, ``joblib`` or ``skops``
    :raises MlciConfigError: an unknown format, or a suffix that says none
    """
    try:
        chosen = ModelFormat(model_format)
    except ValueError:
        choices = ", ".join(f.value for f in ModelFormat)
        raise MlciConfigError(f"model_format must be one of {choices}, not {model_format!r}.") from None
    if chosen is not ModelFormat.AUTO:
        return chosen
    by_suffix = _SUFFIX_FORMATS.get(Path(model_path).suffix.lower())
    if by_suffix is None:
        raise MlciConfigError(
            f"Cannot tell the format of model file {model_path} from its name: expected one of "
            f"{', '.join(_SUFFIX_FORMATS)}, or give model_format (pickle, joblib or skops)."
        )
    return by_suffix


def check_model(
    *,
    model_path: Path,
    model_format: str | ModelFormat = ModelFormat.AUTO,
    requirements: Sequence[str] = (),
    contract: ModelContract | None = None,
    code_paths: Sequence[Path] = (),
    cwd: Path,
    display_name: str | None = None,
    python: str | None = None,
    trusted_types: Sequence[str] = (),
    timeout_s: float = 600.0,
    runner: CommandRunner | None = None,
    sandbox: SandboxConfig | None = None,
) -> list[Check]:
    """Run dependency, load and contract checks in a child process; return every check.

    Pickle and joblib files run code when they load: they are acceptable here only because the
    file comes from the team's own repository, and they load in a process of its own. A skops
    file loads only if every type it holds is one of skops' trusted types or in ``trusted_types``.

    A check that never finished (the child timed out, crashed or was killed) is reported as
    failed, saying why; one that could not run because an earlier one failed has ``passed=None``.

    :param model_path: the model file, inside the checkout
    :param model_format: ``auto`` (by suffix: ``.pkl``/``.pickle``, ``.joblib``, ``.skops``),
        ``pickle``, ``joblib`` or ``skops``
    :param requirements: pip requirement strings the model needs, e.g. ``scikit-learn>=1.5``
    :param contract: how to try the model; ``None`` only loads it
    :param code_paths: absolute folders put first on the child's ``sys.path`` (e.g.
        ``<checkout>/src``), so that pickles of the team's own classes load
    :param cwd: the checkout, the child's working directory
    :param display_name: how messages name the model, e.g. ``models/model.pkl@abc123`` (default:
        its path relative to ``cwd``)
    :param python: the interpreter that will serve the model (default: this one)
    :param trusted_types: types a skops file may hold beyond skops' defaults
    :param timeout_s: stop the child after this many seconds; unfinished checks fail
    :param runner: runs the child and streams its output to the log; pass one that ``on_kill``
        can stop
    :param sandbox: how the revision's own code runs: the child always gets the allow-listed
        environment only, and with the sandbox on it runs under bubblewrap, reading the
        checkout and writing nothing but its result
    :raises MlciConfigError: a bad format, requirement, path or contract, before the child starts
    :raises UnsafePathError: the model file or the sample input leads out of ``cwd`` (a link out
        of the checkout, or ``..``)
    :raises CommandStoppedError: ``runner`` was stopped (the task is being killed)
    """
    model_path = Path(model_path)
    requirements, code_paths, trusted_types = requirements or (), code_paths or (), trusted_types or ()
    fmt = model_format_for(model_path, model_format)
    cwd = Path(cwd)
    if not cwd.is_dir():
        raise MlciConfigError(f"cwd {cwd} is not a folder.")
    problems = [problem for problem in map(_requirement_error, requirements) if problem]
    if problems:
        raise MlciConfigError("Invalid requirements: " + "; ".join(problems) + ".")
    relative = [str(path) for path in code_paths if not Path(path).is_absolute()]
    if relative:
        raise MlciConfigError(f"code_paths must be absolute folders, not {', '.join(relative)}.")
    if not _is_number(timeout_s) or timeout_s <= 0:
        raise MlciConfigError(f"timeout_s must be a number > 0, not {timeout_s!r}.")
    if contract is not None and not isinstance(contract, ModelContract):
        raise MlciConfigError(f"contract must be a ModelContract, not {type(contract).__name__}.")
    if isinstance(trusted_types, str):
        raise MlciConfigError(f"trusted_types must be a list of type names, not the string {trusted_types!r}.")
    model_abs = model_path if model_path.is_absolute() else cwd / model_path
    # The files are read where they really are, which must be inside the checkout (no link out).
    model_real = inside(cwd, model_abs, what="model file")
    sample_real = inside(cwd, contract.sample_input, what="sample input") if contract is not None else None
    request: dict[str, Any] = {
        "model_path": str(model_real),
        "format": fmt.value,
        "display_name": display_name or _display(model_abs, cwd),
        "requirements": list(dict.fromkeys(requirements)),
        "code_paths": [str(path) for path in code_paths],
        "trusted_types": list(trusted_types),
        "contract": {**asdict(contract), "sample_input": str(sample_real)} if contract is not None else None,
        "sample_display": _display(Path(contract.sample_input), cwd) if contract is not None else None,
        "timeout_s": float(timeout_s),
    }
    python = python or sys.executable
    runner = runner or CommandRunner(log=log)
    with private_tempdir("model") as tmp:
        request_path, result_path = Path(tmp) / "request.json", Path(tmp) / "result.json"
        request_path.write_text(json.dumps(request), encoding="utf-8")
        argv, env = confine(
            sandbox or SandboxConfig(),
            [python, model_child.__file__, str(request_path), str(result_path)],
            cwd=cwd,
            environ={**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONDONTWRITEBYTECODE": "1"},
            writable=[tmp],
            readable=[model_child.__file__, *code_paths],
            python=python,
        )
        backstop = _Backstop(result_path, timeout_s + _BACKSTOP_S)
        started = time.monotonic()
        backstop.start()
        try:
            completed = runner.run(argv, cwd=cwd, env=env)
        except OSError as exc:
            raise MlciConfigError(f"Cannot run python={python!r} to check the model: {exc}") from exc
        finally:
            backstop.cancel()
        elapsed = time.monotonic() - started
        payload = _read_result(result_path)
    if payload is not None and payload.get("finished"):
        return [Check.from_json(check) for check in payload["checks"]]
    timed_out = backstop.fired or elapsed >= timeout_s
    return _unfinished(request, payload, completed, timed_out=timed_out, timeout_s=timeout_s)


class _Backstop:
    """Kill the child's process group if its own watchdog has not ended it in time."""

    def __init__(self, result_path: Path, delay_s: float) -> None:
        self._result_path = result_path
        self._timer = threading.Timer(delay_s, self._fire)
        self._timer.daemon = True
        self._lock = threading.Lock()
        self._done = False
        self.fired = False

    def start(self) -> None:
        self._timer.start()

    def cancel(self) -> None:
        with self._lock:
            self._done = True
        self._timer.cancel()

    def _fire(self) -> None:
        payload = _read_result(self._result_path)
        with self._lock:
            if self._done or payload is None:
                return
            self.fired = True
            # The child leads its own process group (CommandRunner starts a new session).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(payload["pid"]), signal.SIGKILL)


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _unfinished(
    request: dict[str, Any],
    payload: dict[str, Any] | None,
    completed: CommandResult,
    *,
    timed_out: bool,
    timeout_s: float,
) -> list[Check]:
    """Turn what a child that did not finish left behind into checks."""
    if payload is None:
        states = [
            dict(check, passed=None, detail="", value=None, state="pending") for check in model_child.plan(request)
        ]
        if not timed_out:  # it died before it could say anything: blame the load
            for check in states:
                if check["id"] == "load":
                    check["state"] = "running"
    else:
        states = payload["checks"]
        if not timed_out and not any(check["state"] == "running" for check in states):
            pending = [check for check in states if check["state"] == "pending"]
            if pending:
                pending[0]["state"] = "running"
    tail = "\n".join(completed.tail[-_TAIL_LINES:])
    if timed_out:
        reason = f"timed out after {timeout_s:g} s"
        for check in states:
            if check["state"] == "running":
                check.update(passed=False, detail=f"{reason} (while running this check); last output:\n{tail}")
            elif check["state"] == "pending":
                check.update(passed=False, detail=reason)
    else:
        status = _exit_status(completed.returncode)
        for check in states:
            if check["state"] == "running":
                check.update(
                    passed=False,
                    detail=f"the check process ended with {status} during this check; last output:\n{tail}",
                )
            elif check["state"] == "pending":
                check.update(passed=None, detail=f"not run: the check process ended with {status}")
    return [Check.from_json(check) for check in states]


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"signal {signal.Signals(-returncode).name}"
        except ValueError:
            return f"signal {-returncode}"
    return f"exit status {returncode}"


def _display(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


# -- scores ---------------------------------------------------------------------------------


def check_scores(metrics: Mapping[str, Any], thresholds: Mapping[str, Mapping[str, float]]) -> list[Check]:
    """Check each metric against its bounds; a missing, NaN or non-numeric metric fails.

    :param metrics: ``{file: nested values}`` as ``dvc metrics show`` returns them
    :param thresholds: ``{metric: {"min": x, "max": y}}`` with either bound or both; a metric is
        named as :func:`~airflow_provider_mlci.core.dvc.metrics.lookup_metric` reads it
    :raises MlciConfigError: naming a metric whose bounds are not ``min`` and/or ``max`` numbers
    """
    for key, bounds in thresholds.items():
        if not isinstance(bounds, Mapping) or not bounds or set(bounds) - {"min", "max"}:
            raise MlciConfigError(
                f"Threshold for metric {key!r} must be {{'min': x}}, {{'max': y}} or both, not {bounds!r}."
            )
        for name, bound in bounds.items():
            if not _is_number(bound) or math.isnan(bound):
                raise MlciConfigError(f"Threshold {name!r} for metric {key!r} must be a number, not {bound!r}.")
        if "min" in bounds and "max" in bounds and bounds["min"] > bounds["max"]:
            raise MlciConfigError(f"Threshold for metric {key!r}: min {bounds['min']} is above max {bounds['max']}.")
    checks = []
    for key, bounds in thresholds.items():
        wanted = " and ".join(
            f"{sign} {bounds[name]:g}" for name, sign in (("min", ">="), ("max", "<=")) if name in bounds
        )
        found = lookup_metric(metrics, key)
        if not found.usable:
            checks.append(
                Check(name=f"score {key}", kind="scores", passed=False, detail=f"{found.problem}; needs {wanted}")
            )
            continue
        value = found.value
        assert value is not None
        passed = bounds.get("min", -math.inf) <= value <= bounds.get("max", math.inf)
        checks.append(
            Check(
                name=f"score {key}",
                kind="scores",
                passed=passed,
                detail=f"{value:g} in {found.file}, needs {wanted}",
                value=value,
            )
        )
    return checks


# -- helpers --------------------------------------------------------------------------------


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _known_keys(cls: type, data: Mapping[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(data, Mapping):
        raise MlciConfigError(f"The {what} must be a mapping, not {type(data).__name__}.")
    known = [f.name for f in fields(cls)]
    unknown = sorted(str(key) for key in data if key not in known)
    if unknown:
        raise MlciConfigError(f"Unknown key(s) in the {what}: {', '.join(unknown)} (known: {', '.join(known)}).")
    return dict(data)


def _inside_root(relative: Any) -> str:
    """Return ``relative`` normalised, if it is a relative path that stays inside the root."""
    if not isinstance(relative, str | os.PathLike) or not os.fspath(relative):
        raise MlciConfigError(f"sample_input must be a path relative to the repository root, not {relative!r}.")
    text = os.fspath(relative)
    if os.path.isabs(text) or text.startswith("~"):
        raise MlciConfigError(f"sample_input {text!r} must be relative to the repository root, not absolute.")
    # Lexical, not resolved: DVC may link the file to a cache outside the checkout.
    normal = os.path.normpath(text)
    if normal == os.pardir or normal.startswith(os.pardir + os.sep):
        raise MlciConfigError(f"sample_input {text!r} climbs out of the repository root.")
    return normal
