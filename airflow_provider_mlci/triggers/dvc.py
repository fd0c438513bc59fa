"""Wait in the triggerer for DVC-tracked data to change."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Sequence
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

__all__ = ["DvcDataChangedTrigger"]


class DvcDataChangedTrigger(BaseEventTrigger):
    """Fire when the fingerprint of DVC-tracked data differs from ``last_digest``.

    The fingerprint comes from checksums that already exist (``.dvc``/``dvc.lock`` md5s at the
    branch head, or the source object's ETag); it is computed in a worker thread, never on the
    triggerer's event loop. As the trigger of a deferred ``DvcDataChangedSensor`` it fires once
    and ends. As the trigger of an ``AssetWatcher`` it keeps watching, fires on every change,
    and keeps the last digest in the asset's state store so a restart does not fire again (Airflow
    3.3+; before 3.3 it keeps it in memory, and a triggerer restart fires once more).

    :param dvc_conn_id: the ``mlci_dvc`` connection of the repository
    :param targets: tracked paths (or their ``.dvc`` files)
    :param rev: the branch to watch
    :param watch: ``tracked`` or ``source``
    :param last_digest: the digest already seen (``None``: fire on the first look)
    :param poll_interval: seconds between looks
    :param cache_dir: the cache root for the repository's mirror on the triggerer
    """

    def __init__(
        self,
        *,
        dvc_conn_id: str,
        targets: Sequence[str],
        rev: str = "HEAD",
        watch: str = "tracked",
        last_digest: str | None = None,
        poll_interval: float = 60.0,
        cache_dir: str | None = None,
    ) -> None:
        super().__init__()
        self.dvc_conn_id = dvc_conn_id
        self.targets = list(targets)
        self.rev = rev
        self.watch = watch
        self.last_digest = last_digest
        self.poll_interval = poll_interval
        self.cache_dir = cache_dir

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "dvc_conn_id": self.dvc_conn_id,
                "targets": self.targets,
                "rev": self.rev,
                "watch": self.watch,
                "last_digest": self.last_digest,
                "poll_interval": self.poll_interval,
                "cache_dir": self.cache_dir,
            },
        )

    def fingerprint(self) -> dict[str, Any]:
        """Look once (blocking: git and the source); the JSON form of the fingerprint."""
        from airflow_provider_mlci.core.data.watch import fingerprint
        from airflow_provider_mlci.hooks.dvc import DvcHook

        hook = DvcHook(self.dvc_conn_id, cache_dir=self.cache_dir)
        return fingerprint(
            hook.get_access(), self.targets, rev=self.rev, watch=self.watch, cache_dir=hook.cache_dir
        ).to_json()

    def _watching_without_store(self) -> bool:
        """Whether an Airflow before 3.3 (no asset state store) runs this trigger for an ``AssetWatcher``.

        The triggerer gives every trigger it runs its job id, and a task's trigger its task instance;
        a watcher's has none. Such a watcher remembers the last digest in memory only, so after a
        triggerer restart its first look fires once more.
        """
        return getattr(self, "triggerer_job_id", None) is not None and self.task_instance is None

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from asgiref.sync import sync_to_async

        from airflow_provider_mlci.exceptions import MlciError

        store = getattr(self, "asset_state_store", None)  # Airflow 3.3+: an AssetWatcher's state store
        watching = store is not None or self._watching_without_store()
        last = self.last_digest
        if store is not None and last is None:
            last = await _remembered(store)
        while True:
            try:
                current = await sync_to_async(self.fingerprint)()
            except MlciError as exc:
                if not watching:
                    yield TriggerEvent({"status": "error", "type": type(exc).__name__, "message": str(exc)})
                    return
                self.log.warning("Could not look at the data (will look again): %s", exc)
            else:
                changed = current["digest"] != last
                self.log.info(
                    "Looked at %s on %s (%s): %s",
                    ", ".join(self.targets),
                    self.rev,
                    self.dvc_conn_id,
                    "changed" if changed else "unchanged",
                )
                if changed:
                    yield TriggerEvent({"status": "changed", **current})
                    if not watching:
                        return
                    last = current["digest"]
                    if store is not None:
                        await _remember(store, last)
            await asyncio.sleep(self.poll_interval)


async def _remembered(store: Any) -> str | None:
    try:
        value = await store.aget("digest")
    except (ValueError, KeyError):  # several watched assets: no single place to remember
        return None
    return value if isinstance(value, str) else None


async def _remember(store: Any, digest: str) -> None:
    with contextlib.suppress(ValueError, KeyError):
        await store.aset("digest", digest)
