"""Read what a DAG run left in the Airflow metadata database (outside tasks only).

Tasks may not touch the database; tests and scripts that ran a DAG (``dag.test()``,
``airflow dags test``) may, to check what happened.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

__all__ = ["RunRecord", "dag_bag", "latest_run"]


@dataclass(frozen=True, kw_only=True)
class RunRecord:
    """A DAG run as the metadata database has it.

    :param dag_id: the DAG
    :param run_id: the run
    :param state: the run's state, e.g. ``success``
    :param task_states: each task's state (mapped tasks as ``task_id[index]``)
    :param xcom: each task's return value (``return_value`` XCom), where it pushed one
    """

    dag_id: str
    run_id: str
    state: str
    task_states: dict[str, str] = field(default_factory=dict)
    xcom: dict[str, Any] = field(default_factory=dict)


def dag_bag(folder: str | os.PathLike[str], *, safe_mode: bool = False) -> Any:
    """Parse the DAG files under ``folder`` (a folder or one file) as the dag-processor does.

    :param folder: a DAGs folder, or one DAG file
    :param safe_mode: skip files that do not mention both "airflow" and "dag" (the processor's default)
    :return: Airflow's ``DagBag`` (``dags``, ``import_errors``)
    """
    try:  # Airflow 3.2+
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    return DagBag(dag_folder=os.fspath(folder), safe_mode=safe_mode)


def latest_run(dag_id: str, run_id: str | None = None) -> RunRecord | None:
    """Return the run ``run_id`` of ``dag_id`` (default: its latest), or ``None`` if there is none.

    :param dag_id: the DAG
    :param run_id: a run of it
    """
    from airflow.models import DagRun, TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == dag_id)
        if run_id is not None:
            query = query.where(DagRun.run_id == run_id)
        run = session.scalars(query.order_by(DagRun.id.desc())).first()
        if run is None:
            return None
        task_states: dict[str, str] = {}
        tis = session.scalars(
            select(TaskInstance).where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
        )
        for ti in tis:
            name = ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"
            task_states[name] = str(ti.state)
        xcom: dict[str, Any] = {}
        for row in session.scalars(XComModel.get_many(run_id=run.run_id, dag_ids=dag_id, key="return_value")):
            name = row.task_id if row.map_index < 0 else f"{row.task_id}[{row.map_index}]"
            xcom[name] = XComModel.deserialize_value(row)
        return RunRecord(dag_id=dag_id, run_id=run.run_id, state=str(run.state), task_states=task_states, xcom=xcom)
