"""Where an adaptive sweep's Optuna study lives: :class:`StudyHook`.

With ``optuna_conn_id``, a database of its own named by an Airflow connection (``postgres``,
``mysql`` or ``sqlite``; never Airflow's metadata database): every worker reaches it. Without one,
a journal file under the Airflow home (``$AIRFLOW_HOME/mlci-studies/studies.journal``), shared by
every task on this machine: fine for the local executors, refused on a distributed one (Celery,
Kubernetes, Edge), whose workers share no disk. A deployment names its study database once, as
``[mlci] optuna_conn_id``: the connection of every sweep that names none.
"""

from __future__ import annotations

import os
from typing import Any

from airflow.sdk import BaseHook

__all__ = ["StudyHook", "open_sweep_study"]

#: Executors whose tasks run on other machines: a journal file would not be shared.
_DISTRIBUTED = ("celery", "kubernetes", "edge")


class StudyHook(BaseHook):
    """The storage of adaptive sweeps' studies.

    :param optuna_conn_id: a ``postgres``, ``mysql`` or ``sqlite`` connection to the studies'
        database; ``None``: ``[mlci] optuna_conn_id``, and when that is unset a journal file under
        the Airflow home (local executors only)
    """

    def __init__(self, optuna_conn_id: str | None = None, **kwargs: Any) -> None:
        from airflow_provider_mlci import settings

        super().__init__(**kwargs)
        self.optuna_conn_id = optuna_conn_id or settings.optuna_conn_id()

    def storage(self) -> str:
        """The study storage as :func:`~airflow_provider_mlci.core.experiments.study.open_study`
        takes it (holds the database's password: never log it or put it in XCom).

        :raises MlciConfigError: no connection on a distributed executor, or a connection that is no
            database Optuna can use
        """
        from airflow.configuration import AIRFLOW_HOME, conf

        from airflow_provider_mlci.core.experiments.study import storage_url
        from airflow_provider_mlci.exceptions import MlciConfigError

        if self.optuna_conn_id:
            conn = self.get_connection(self.optuna_conn_id)
            try:
                return storage_url(
                    conn_type=conn.conn_type,
                    host=conn.host,
                    port=conn.port,
                    login=conn.login,
                    password=conn.password,
                    schema=conn.schema,
                )
            except MlciConfigError as exc:
                raise MlciConfigError(f"optuna_conn_id={self.optuna_conn_id!r}: {exc}") from None
        executor = str(conf.get("core", "executor", fallback="")).lower()
        if any(kind in executor for kind in _DISTRIBUTED):
            raise MlciConfigError(
                f"An adaptive sweep on the {conf.get('core', 'executor')} needs optuna_conn_id (or [mlci] "
                "optuna_conn_id): a database every worker reaches (its workers share no disk for a journal file)."
            )
        folder = os.path.join(AIRFLOW_HOME, "mlci-studies")
        os.makedirs(folder, exist_ok=True)
        return f"journal://{os.path.join(folder, 'studies.journal')}"

    def where(self) -> str:
        """Where the studies are, for logs: the connection's id, or the journal file."""
        if self.optuna_conn_id:
            return f"the database of connection {self.optuna_conn_id!r}"
        return self.storage().removeprefix("journal://")


def open_sweep_study(spec: Any, *, key: str = "") -> Any:
    """Open the study a sweep's slots describe (``{"name", "space", "optuna_conn_id", "search", ...}``)
    in its storage: what the trials, the trigger and the leaderboard all open.

    :param spec: a slot's ``study``
    :param key: seeds the sampler (see :func:`~airflow_provider_mlci.core.experiments.study.open_study`)
    """
    from airflow_provider_mlci.core.experiments.study import open_study, study_config
    from airflow_provider_mlci.core.experiments.sweep import SearchSpace

    storage = StudyHook(spec.get("optuna_conn_id")).storage()
    return open_study(storage, spec["name"], study_config(spec), SearchSpace.of(spec["space"]), key=key)
