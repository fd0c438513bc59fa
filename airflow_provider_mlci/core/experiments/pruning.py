"""Early stopping without changing the training code: watch the per-step values a stage writes.

The pruning signal is a table the training writes as it goes, by default DVCLive's
``dvclive/plots/metrics/<name>.tsv`` (tab-separated, a header naming ``step`` and the metric). While
a trial's stage runs, :class:`PruneWatch` reads the rows added since its last look, reports each
step's value to the study's trial, and when the pruner says the trial will not win it calls
``stop`` (the trial task stops the stage's process group) and remembers the last step and value.

Values are turned to the study's direction first (``PruneOn.direction`` against the objective's
goal): pruning on a loss for an accuracy objective reports the negated loss. A trial on a GPU
instance is pruned the same way from the triggerer (:class:`StepReporter` on the table the
instance's agent copies to the job's mailbox: :class:`~airflow_provider_mlci.triggers.compute.RemoteJobTrigger`).
"""

from __future__ import annotations

import csv
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from airflow_provider_mlci.core.repo.paths import inside
from airflow_provider_mlci.exceptions import MlciConfigError

__all__ = ["PruneOn", "PruneWatch", "StepReporter", "parse_steps", "read_steps"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class PruneOn:
    """Where a trial's per-step values are, and which way is better.

    :param file: the table, relative to the repository root
    :param column: the column of the values (``step`` is the step's)
    :param direction: ``max`` or ``min``: which way the values are better
    """

    file: str
    column: str
    direction: str = "max"

    @classmethod
    def of(cls, value: Any, *, metric: str, goal: str) -> PruneOn:
        """From ``(file, column, direction)``, a mapping of those, or ``None`` for DVCLive's file of
        the objective metric.

        :param value: what the sweep was given
        :param metric: the objective metric
        :param goal: the objective's goal (``max``/``min``)
        :raises MlciConfigError: another shape, a path out of the repository or a bad direction
        """
        if value is None:
            value = {"file": f"dvclive/plots/metrics/{metric}.tsv", "column": metric, "direction": goal}
        elif isinstance(value, list | tuple):
            if len(value) != 3:
                raise MlciConfigError(f"prune_on={value!r}: give (file, column, direction).")
            value = dict(zip(("file", "column", "direction"), value, strict=True))
        if not isinstance(value, dict):
            raise MlciConfigError(f"prune_on={value!r}: give (file, column, direction) or a mapping of those.")
        direction = {"maximize": "max", "minimize": "min"}.get(str(value.get("direction")), value.get("direction"))
        if direction not in ("max", "min"):
            raise MlciConfigError(f"prune_on direction={value.get('direction')!r} is not 'max' or 'min'.")
        file = str(value.get("file") or "")
        if not file or file.startswith("/") or ".." in Path(file).parts:
            raise MlciConfigError(f"prune_on file={file!r} must be a path inside the repository.")
        if not value.get("column"):
            raise MlciConfigError("prune_on needs the column of the per-step values.")
        return cls(file=file, column=str(value["column"]), direction=str(direction))


def read_steps(path: Path, column: str) -> list[tuple[int, float]]:
    """``[(step, value)]`` of a DVCLive-style table (what is there so far; a half-written last line is left).

    :param path: the table
    :param column: the values' column
    :raises MlciConfigError: the table has no ``step`` or no ``column`` column, naming the file
    """
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return parse_steps(text, column, name=path.name)


def parse_steps(text: str, column: str, *, name: str) -> list[tuple[int, float]]:
    """``[(step, value)]`` of a DVCLive-style table's text (a half-written last line is left).

    :param text: the table as written so far
    :param column: the values' column
    :param name: the table's name, for messages
    :raises MlciConfigError: the table has no ``step`` or no ``column`` column, naming it
    """
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]  # the writer is mid-line: leave it for the next look
    rows = list(csv.reader(text.splitlines(), delimiter="\t"))
    if not rows:
        return []
    header = rows[0]
    for needed in ("step", column):
        if needed not in header:
            raise MlciConfigError(f"{name}: no column {needed!r} (columns: {', '.join(header)}).")
    step_at, value_at = header.index("step"), header.index(column)
    found = []
    for row in rows[1:]:
        try:
            found.append((int(float(row[step_at])), float(row[value_at])))
        except (IndexError, ValueError):
            continue
    return found


class StepReporter:
    """Report a trial's new per-step values to its Optuna trial and ask the pruner after each.

    :param on: which column, which direction
    :param goal: the study's goal (``max``/``min``): values are turned to it
    :param trial: the Optuna trial (``report``, ``should_prune``)
    :param last: the last step already reported (a watcher that starts again skips up to it)
    """

    def __init__(self, on: PruneOn, *, goal: str, trial: Any, last: int | None = None) -> None:
        self.on = on
        self.sign = 1.0 if (on.direction == "max") == (goal in ("max", "maximize")) else -1.0
        self.trial = trial
        self.last: tuple[int, float] | None = None if last is None else (last, float("nan"))
        self.pruned: tuple[int, float] | None = None

    def feed(self, steps: list[tuple[int, float]], *, may_prune: bool = True) -> bool:
        """Report the steps after the last one reported; return whether the trial is to be pruned
        (then :attr:`pruned` holds its step and value).

        :param steps: ``[(step, value)]``, the whole table so far
        :param may_prune: ``False`` once the trial has run to its end: its last steps are only
            reported (a finished trial is never pruned after the fact)
        """
        if self.pruned is not None:
            return True
        for step, value in steps:
            if self.last is not None and step <= self.last[0]:
                continue
            self.last = (step, value)
            self.trial.report(self.sign * value, step)
            if may_prune and self.trial.should_prune():
                self.pruned = (step, value)
                return True
        return False


class PruneWatch:
    """Report a running trial's per-step values to its Optuna trial; stop it when the pruner says so.

    Use as a context manager around the stage's run. The table is the revision's to write, so a link
    that leads out of the checkout (to a file of the worker) is refused, never read.

    :param path: the table the stage writes (in the checkout ``root``)
    :param on: which column, which direction
    :param goal: the study's goal (``max``/``min``): values are turned to it
    :param trial: the Optuna trial (``report``, ``should_prune``)
    :param stop: called once, from the watching thread, when the trial is pruned
    :param interval: seconds between looks
    :param root: the checkout the table must stay in (links are followed, as opening would)
    """

    def __init__(
        self,
        path: Path,
        on: PruneOn,
        *,
        goal: str,
        trial: Any,
        stop: Callable[[], Any],
        interval: float = 1.0,
        root: Path | None = None,
    ) -> None:
        self.path = path
        self.root = root
        self.on = on
        self.reporter = StepReporter(on, goal=goal, trial=trial)
        self.stop = stop
        self.interval = interval
        self.error: MlciConfigError | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="mlci-prune-watch", daemon=True)

    @property
    def pruned(self) -> tuple[int, float] | None:
        """The step and value at which the trial was pruned, or ``None``."""
        return self.reporter.pruned

    @property
    def last(self) -> tuple[int, float] | None:
        """The last step and value reported."""
        return self.reporter.last

    def __enter__(self) -> PruneWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=30)
        if self.pruned is None and self.error is None:
            self.look(final=True)  # the steps written after the last look still count

    def _watch(self) -> None:
        while not self._done.wait(self.interval):
            if self.look():
                return

    def look(self, *, final: bool = False) -> bool:
        """Report the new steps; return whether the trial was pruned (then ``stop`` was called).

        :param final: the stage has ended: report what it wrote last, prune nothing
        """
        if self.pruned is not None or self.error is not None:
            return True
        try:
            path = self.path if self.root is None else inside(self.root, self.on.file, what="per-step table")
            steps = read_steps(path, self.on.column)
        except MlciConfigError as exc:
            self.error = exc  # a table without the column: say so once the stage ends
            return True
        if self.reporter.feed(steps, may_prune=not final):
            step, value = self.reporter.pruned  # type: ignore[misc]
            log.info("Pruned at step %d (%s = %g): stopping the trial", step, self.on.column, value)
            self.stop()
            return True
        return False
