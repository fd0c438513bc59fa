"""A sensor on a GPU instance's state."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseSensorOperator

from airflow_provider_mlci.exceptions import MlciConfigError
from airflow_provider_mlci.operators.base import GpuHookMixin, airflow_failures
from airflow_provider_mlci.triggers.gpu import TARGET_STATES, unreachable

if TYPE_CHECKING:
    from airflow.sdk import Context


__all__ = ["GpuInstanceStateSensor"]


class GpuInstanceStateSensor(GpuHookMixin, BaseSensorOperator):
    """Wait until an EC2 instance reaches ``target_state``.

    Looks once; if the instance is not there yet, waits in the triggerer (``deferrable=True``,
    the default) and holds no worker slot. Fails, without retries, as soon as the state can no
    longer be reached (waiting for ``running`` on a terminated instance). Returns the state.

    :param instance_id: the instance (templated), e.g.
        ``"{{ ti.xcom_pull(task_ids='gpu.launch', key='instance')['instance_id'] }}"``
    :param target_state: ``running``, ``stopped`` or ``terminated`` (templated)
    :param aws_conn_id: the ``aws`` connection
    :param region_name: the instance's region; default: the connection's
    :param deferrable: wait in the triggerer rather than in a worker slot
    :param poll_interval: seconds between looks
    """

    template_fields: Sequence[str] = ("instance_id", "target_state", "region_name")
    ui_color = "#ec7211"
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        instance_id: str,
        target_state: str = "running",
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        deferrable: bool = True,
        poll_interval: float = 15.0,
        **kwargs: Any,
    ) -> None:
        if target_state not in TARGET_STATES and "{{" not in target_state:
            raise MlciConfigError(f"target_state={target_state!r}: expected one of {list(TARGET_STATES)}.")
        super().__init__(poke_interval=poll_interval, **kwargs)
        self.instance_id = instance_id
        self.target_state = target_state
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.deferrable = deferrable

    def _check(self, state: str | None) -> bool:
        from airflow_provider_mlci.exceptions import GpuProvisioningError

        self.log.info("Instance %s is %s (waiting for %s)", self.instance_id, state, self.target_state)
        if unreachable(state, self.target_state):
            with airflow_failures():
                raise GpuProvisioningError(
                    f"Instance {self.instance_id} is {state} and can no longer become {self.target_state}."
                )
        return state == self.target_state

    def poke(self, context: Context) -> bool:
        return self._check(self.hook.instance_state(self.instance_id))

    def execute(self, context: Context) -> Any:
        if self.target_state not in TARGET_STATES:
            raise MlciConfigError(f"target_state={self.target_state!r}: expected one of {list(TARGET_STATES)}.")
        if self.poke(context):
            return self.target_state
        if not self.deferrable:
            super().execute(context)
            return self.target_state
        from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger

        self.defer(
            trigger=GpuInstanceStateTrigger(
                instance_id=self.instance_id,
                target_state=self.target_state,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                poll_interval=self.poke_interval,
                timeout=self.timeout,
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout + max(60, 4 * self.poke_interval)),
        )
        return None

    def execute_complete(self, context: Context, event: dict[str, Any]) -> str:
        """Resume after the trigger fired: the state, or the error it reported."""
        status = event.get("status")
        if status == "success":
            return str(event.get("state"))
        if status == "timeout":
            from airflow.providers.common.compat.sdk import AirflowSensorTimeout

            raise AirflowSensorTimeout(event.get("message", "timed out"))
        if status == "failed":
            self._check(event.get("state"))
        from airflow_provider_mlci.exceptions import GpuProvisioningError

        raise GpuProvisioningError(event.get("message", f"waiting for instance {self.instance_id} failed"))
