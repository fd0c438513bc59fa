"""Read what a DAG run left in the metadata database beyond its
:class:`~airflow_provider_mlci.testing.airflow.RunRecord`: any XCom of any task."""

from __future__ import annotations

from typing import Any

__all__ = ["xcom"]


def xcom(record: Any, task_id: str, key: str) -> Any:
    """The XCom ``key`` that task ``task_id`` pushed in the run ``record`` names, or ``None``.

    :param record: a :class:`~airflow_provider_mlci.testing.airflow.RunRecord`
    :param task_id: the task
    :param key: the XCom key
    """
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = (
            session.query(XComModel)
            .filter_by(dag_id=record.dag_id, run_id=record.run_id, task_id=task_id, key=key)
            .one_or_none()
        )
        return None if row is None else XComModel.deserialize_value(row)
