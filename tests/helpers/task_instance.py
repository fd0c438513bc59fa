"""A stand-in for the Task SDK's task instance, for running operators outside a DAG run.

:class:`TaskInstanceStandIn` (named as such) gives an operator's ``execute`` the task instance's
identity and an XCom store; tests that need the real thing run the operator in a DAG run.
"""

from __future__ import annotations

import json
from typing import Any

__all__ = ["TaskInstanceStandIn"]


class TaskInstanceStandIn:
    """Stands in for the Task SDK's task instance outside a DAG run: identity and XCom."""

    def __init__(self, task_id: str, *, dag_id: str = "gpu_dag", run_id: str = "manual__1", map_index: int = -1):
        self.dag_id, self.run_id, self.task_id, self.map_index = dag_id, run_id, task_id, map_index
        self.xcom: dict[tuple[str, str], Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        json.dumps(value, allow_nan=False)  # XCom holds JSON
        self.xcom[self.task_id, key] = value

    def xcom_pull(self, task_ids: str, key: str = "return_value", **_: Any) -> Any:
        return self.xcom.get((task_ids, key))

    def as_task(self, task_id: str) -> TaskInstanceStandIn:
        other = TaskInstanceStandIn(task_id, dag_id=self.dag_id, run_id=self.run_id, map_index=self.map_index)
        other.xcom = self.xcom
        return other
