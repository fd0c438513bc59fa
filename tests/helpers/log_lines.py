"""Whole-line checks of an Airflow task (or trigger) log as ``capfd`` captures it under ``dag.test()``.

A logged line reads ``<timestamp> [<level>   ] <message> [<logger>] loc=<file:line>``; a task that
fails for good logs ``airflow.sdk.exceptions.AirflowFailException: <ErrorClass>: <message>``.
"""

from __future__ import annotations

import re

FAILED = "airflow.sdk.exceptions.AirflowFailException: "
RAISED = "airflow_provider_mlci.exceptions."
OPERATORS = "airflow.task.operators.airflow_provider_mlci.operators."


def error_lines(out: str, exception: str) -> list[str]:
    """Each message with which ``exception`` failed the task for good, as logged: its
    ``AirflowFailException`` line joined with the lines after it up to the next timestamped line,
    so a message of several lines comes back whole."""
    return _messages(out, f"{FAILED}{exception}: ")


def raised_lines(out: str, exception: str) -> list[str]:
    """Each message of the provider's ``exception`` as the last line(s) of a logged traceback:
    the one a retryable failure ends with, or the cause of an ``AirflowFailException``."""
    return _messages(out, f"{RAISED}{exception}: ")


def _messages(out: str, start: str) -> list[str]:
    lines = out.splitlines()
    found = []
    for index, line in enumerate(lines):
        if line.startswith(start):
            end = index + 1
            while end < len(lines) and lines[end] and not _TIMESTAMPED.match(lines[end]):
                end += 1
            found.append("\n".join(lines[index:end]))
    return found


_TIMESTAMPED = re.compile(r"\d{4}-\d\d-\d\dT\S+ \[")


def logged(out: str, level: str, message: str, logger: str) -> int:
    """How many times the log holds exactly ``message`` (of one line or several), logged at
    ``level`` by ``logger``: ``<timestamp> [<level>   ] <message> [<logger>] loc=<file:line>``."""
    pattern = rf"^\S+ \[{re.escape(level)}\s*\] {re.escape(message)} \[{re.escape(logger)}\] loc=\S+$"
    return len(re.findall(pattern, out, flags=re.MULTILINE))


#: A log line as the task and trigger logs print it: time, level, message, ``[logger]``, fields.
_LINE = re.compile(r"^\S+ \[(?P<level>\w+)\s*\] (?P<message>.*?)\s+\[(?P<logger>[\w.]+)\]( \S+=.*)?$")


def log_messages(out: str, logger: str) -> list[str]:
    """The messages that ``logger`` printed in ``out``, whole, in order."""
    found = (_LINE.match(line) for line in out.splitlines())
    return [match["message"] for match in found if match and match["logger"] == logger]
