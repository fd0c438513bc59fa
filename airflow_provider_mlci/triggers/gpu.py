"""Wait in the triggerer for a GPU instance to reach a state."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

if TYPE_CHECKING:
    from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

__all__ = ["TARGET_STATES", "GpuInstanceStateTrigger", "unreachable"]

#: States a wait can aim at.
TARGET_STATES = ("running", "stopped", "terminated")
#: For each target, the states from which it can no longer be reached.
_DEAD_ENDS = {
    "running": ("shutting-down", "terminated", "stopping", "stopped"),
    "stopped": ("shutting-down", "terminated"),
    "terminated": (),
}


def unreachable(state: str | None, target_state: str) -> bool:
    """Whether an instance in ``state`` can no longer reach ``target_state``."""
    return state in _DEAD_ENDS.get(target_state, ())


class GpuInstanceStateTrigger(BaseTrigger):
    """Fire once when an instance reaches ``target_state``, cannot any more, or time is up.

    The event is ``{"status": "success" | "failed" | "timeout" | "error", "instance_id",
    "state", "message"}``. Looks happen in a worker thread, never on the triggerer's event loop.

    :param instance_id: the instance
    :param target_state: ``running``, ``stopped`` or ``terminated``
    :param aws_conn_id: the ``aws`` connection
    :param region_name: the instance's region; default: the connection's
    :param poll_interval: seconds between looks
    :param timeout: seconds before a ``timeout`` event (``None``: no limit)
    :param started: when the wait began (epoch seconds; default: now)
    """

    def __init__(
        self,
        *,
        instance_id: str,
        target_state: str = "running",
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 15.0,
        timeout: float | None = None,
        started: float | None = None,
    ) -> None:
        super().__init__()
        self.instance_id = instance_id
        self.target_state = target_state
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.started = started if started is not None else time.time()

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "instance_id": self.instance_id,
                "target_state": self.target_state,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
                "started": self.started,
            },
        )

    @cached_property
    def hook(self) -> GpuInstanceHook:
        """The hook for the connection (made on first use, in a worker thread)."""
        from airflow_provider_mlci.hooks.gpu import GpuInstanceHook

        return GpuInstanceHook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)

    def look(self) -> str | None:
        """Look once (blocking): the instance's state, ``None`` while EC2 does not show it."""
        return self.hook.instance_state(self.instance_id)

    def _event(self, status: str, state: str | None, message: str) -> TriggerEvent:
        return TriggerEvent({"status": status, "instance_id": self.instance_id, "state": state, "message": message})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        state: str | None = None
        while True:
            try:
                state = await asyncio.to_thread(self.look)
            except Exception as exc:
                yield self._event("error", state, f"could not read the state of {self.instance_id}: {exc}")
                return
            if state == self.target_state:
                yield self._event("success", state, f"instance {self.instance_id} is {state}")
                return
            if unreachable(state, self.target_state):
                yield self._event(
                    "failed", state, f"instance {self.instance_id} is {state} and cannot become {self.target_state}"
                )
                return
            if self.timeout is not None and time.time() - self.started >= self.timeout:
                yield self._event(
                    "timeout",
                    state,
                    f"instance {self.instance_id} is still {state} after {self.timeout:.0f} s "
                    f"(waiting for {self.target_state})",
                )
                return
            self.log.info("Instance %s is %s; waiting for %s", self.instance_id, state, self.target_state)
            await asyncio.sleep(self.poll_interval)
