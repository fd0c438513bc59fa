"""Operators that start, end and sweep up GPU instances on EC2.

``GpuCreateInstanceOperator`` is a setup task and ``GpuTerminateInstanceOperator`` its
teardown (``GpuRunTaskGroup`` wires them around the work). A launch is idempotent: a retry
adopts the instance an earlier try started. The instance id reaches XCom before any wait, so
teardown and ``on_kill`` always know what to terminate; the instance also carries its own
deadline, and ``GpuReaperOperator`` terminates whatever all of that missed.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.links.gpu import GpuInstanceLink
from airflow_provider_mlci.operators.base import GpuHookMixin, airflow_failures, map_index_of, terminate_without_waiting

if TYPE_CHECKING:
    from airflow.sdk import Context

__all__ = [
    "COST_XCOM_KEY",
    "INSTANCE_XCOM_KEY",
    "GpuCreateInstanceOperator",
    "GpuReaperOperator",
    "GpuTerminateInstanceOperator",
]

#: The XCom key the create task pushes its instance under, before waiting for it.
INSTANCE_XCOM_KEY = "instance"
#: The XCom key the teardown pushes what its instances cost under (see ``GpuTerminateInstanceOperator``).
COST_XCOM_KEY = "gpu_cost"

_EC2_ORANGE = "#ec7211"


class GpuCreateInstanceOperator(GpuHookMixin, BaseOperator):
    """Launch a GPU instance for this DAG run (a setup task), or adopt the one an earlier try launched.

    The launch is idempotent: a look for the instance by its tags first, and a deterministic
    ``ClientToken`` (from DAG, run, task and map index) on a ``RunInstances`` call that is the
    same on every try (nothing in it depends on when the try runs), mean a retry never starts a
    second instance, even when the first try's instance is not listed yet. Capacity errors fall
    back over the spec's instance types, zones and markets. The instance terminates itself at
    ``spec.max_lifetime`` after its launch; ``expires_at`` is that time.

    Returns (and pushes under the key ``instance`` before waiting) ``{"instance_id",
    "instance_type", "availability_zone", "market", "region", "run_key", "mailbox",
    "expires_at", "spec", "adopted", "group", "generation", "attempts"}``. If the instance does
    not become ``running`` in time, it is terminated and the task fails (and is retried as
    configured). ``on_kill`` terminates it without waiting; a deferred wait has no ``on_kill``,
    which is what the teardown task and the instance's deadline are for.

    :param spec: the instance (a :class:`~airflow_provider_mlci.core.compute.spec.GpuInstanceSpec`
        or its mapping)
    :param job_base: ``s3://bucket/prefix`` for the instance's mailbox (templated); default: the
        provider setting ``[mlci] compute_job_base``; with neither, no agent is started
    :param aws_conn_id: the ``aws`` connection (credentials, region, role, endpoint)
    :param region_name: the AWS region; default: the spec's, else the connection's
    :param wait_for_running: wait until the instance is ``running``
    :param deferrable: wait in the triggerer, holding no worker slot
    :param poll_interval: seconds between looks at the instance
    :param timeout: seconds the instance may take to become ``running``
    :param group: the ``mlci:group`` tag (templated): which setup the instance belongs to, as
        teardown looks for it; default: this task's id
    """

    template_fields: Sequence[str] = ("job_base", "region_name", "group")
    operator_extra_links = (GpuInstanceLink(),)
    ui_color = _EC2_ORANGE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        spec: GpuInstanceSpec | Mapping[str, Any],
        job_base: str | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        wait_for_running: bool = True,
        deferrable: bool = True,
        poll_interval: float = 15,
        timeout: float = 600,
        group: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.spec = GpuInstanceSpec.from_mapping(spec)
        self.job_base = job_base
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.wait_for_running = wait_for_running
        self.deferrable = deferrable
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.group = group
        self._instance_ids: list[str] = []

    def hook_region(self) -> str | None:
        """``region_name``, else the spec's region, else the connection's."""
        return self.region_name or self.spec.region

    def execute(self, context: Context) -> dict[str, Any]:
        ti = context["ti"]
        with airflow_failures():
            instance = self.hook.launch_for_task(
                self.spec,
                dag_id=ti.dag_id,
                run_id=ti.run_id,
                task_id=ti.task_id,
                map_index=map_index_of(ti),
                group=self.group or self.task_id,
                job_base=self.job_base,
            )
        instance_id = instance["instance_id"]
        self._instance_ids = [instance_id]
        # From here on a failure of this task is the instance's end: a teardown only runs after
        # its setup succeeded, so nothing else would terminate it before its deadline.
        try:
            return self._publish_and_wait(context, instance)
        except Exception as exc:  # TaskDeferred is a BaseException: a deferral passes
            self._terminate_after_failure(instance, f"the launch task failed ({type(exc).__name__}: {exc})")
            raise

    def _publish_and_wait(self, context: Context, instance: dict[str, Any]) -> dict[str, Any]:
        ti = context["ti"]
        instance_id = instance["instance_id"]
        ti.xcom_push(key=INSTANCE_XCOM_KEY, value=instance)
        GpuInstanceLink.persist(context, self, instance_id=instance_id, region_name=instance["region"])
        self.log.info(
            "%s instance %s: %s in %s (%s), deadline %s, mailbox %s",
            "Adopted" if instance["adopted"] else "Launched",
            instance_id,
            instance["instance_type"],
            instance["availability_zone"] or "a zone EC2 chose",
            instance["market"],
            instance["expires_at"],
            instance["mailbox"],
        )
        if not self.wait_for_running:
            return instance
        if self.deferrable:
            from airflow_provider_mlci.triggers.gpu import GpuInstanceStateTrigger

            self.defer(
                trigger=GpuInstanceStateTrigger(
                    instance_id=instance_id,
                    target_state="running",
                    aws_conn_id=self.aws_conn_id,
                    region_name=instance["region"],
                    poll_interval=self.poll_interval,
                    timeout=self.timeout,
                ),
                method_name="execute_complete",
                # The trigger times out first (and this task then terminates the instance);
                # Airflow's own limit only backs it up.
                timeout=timedelta(seconds=self.timeout + max(120, 4 * self.poll_interval)),
            )
        from botocore.exceptions import WaiterError

        try:
            self.hook.wait_for_state(instance_id, "running", poll_interval=self.poll_interval, timeout=self.timeout)
        except WaiterError:
            self.log.error("Instance %s did not become running", instance_id)
            raise
        self.log.info("Instance %s is running", instance_id)
        return instance

    def execute_complete(self, context: Context, event: dict[str, Any]) -> dict[str, Any]:
        """Resume after the trigger fired: the instance if it runs; else terminate it and fail (retryable)."""
        # From the XCom pushed before deferring: dag.test() passes the event alone, not defer's kwargs.
        ti = context["ti"]
        instance = ti.xcom_pull(task_ids=ti.task_id, key=INSTANCE_XCOM_KEY, map_indexes=ti.map_index)
        if not isinstance(instance, dict) or not instance.get("instance_id"):
            # The XCom pushed before deferring is gone (never seen): the event names the instance.
            instance_id = event.get("instance_id")
            self._terminate_after_failure({"instance_id": instance_id}, "its description is missing from XCom")
            from airflow_provider_mlci.exceptions import GpuProvisioningError

            raise GpuProvisioningError(
                f"The launch task resumed without the XCom it pushed before deferring; instance "
                f"{instance_id} was terminated."
            )
        if event.get("status") == "success":
            self.log.info("Instance %s is running", instance["instance_id"])
            return instance
        self._terminate_after_failure(instance, "it did not become running")
        from airflow_provider_mlci.exceptions import GpuProvisioningError

        # Raised past the operator boundary on purpose: a launch that did not come up is worth a retry.
        raise GpuProvisioningError(
            f"Instance {instance['instance_id']} ({instance['instance_type']} in "
            f"{instance['availability_zone'] or 'any zone'}, {instance['market']}) did not become running: "
            f"{event.get('message', event.get('status'))}. It was terminated."
        )

    def _terminate_after_failure(self, instance: dict[str, Any], why: str) -> None:
        if not instance.get("instance_id"):
            return
        self.log.error("Terminating instance %s: %s", instance["instance_id"], why)
        self._instance_ids = []
        terminate_without_waiting(self.hook, [instance["instance_id"]], self.log, others="the teardown and the reaper")

    def on_kill(self) -> None:
        """Terminate the instance this try launched or adopted, without waiting."""
        ids, self._instance_ids = self._instance_ids, []
        if not ids:
            return
        self.log.warning("Task killed: terminating instance(s) %s", ids)
        terminate_without_waiting(self.hook, ids, self.log, others="the teardown and the reaper")


class GpuTerminateInstanceOperator(GpuHookMixin, BaseOperator):
    """Terminate the instances of a setup task (a teardown task). Idempotent.

    Terminates the instance in ``create_task_id``'s XCom and every instance of this DAG run
    tagged as belonging to that setup (``mlci:group``) in any state short of terminated: a
    replacement launched after a spot reclaim, or an instance whose id never reached XCom (the
    worker died right after the launch), dies too. Use it with ``.as_teardown(setups=...)``.
    Returns the ids it terminated.

    It then logs what each instance it terminated cost (type, market, seconds from launch to
    termination, hourly price: the spot price at launch, the AWS price list, else ``[mlci]
    gpu_prices``) and pushes it under the key ``gpu_cost``: ``{"instances": [{"instance_id",
    "instance_type", "market", "region", "availability_zone", "launched_at", "ended_at",
    "seconds", "hourly_usd", "price_source", "cost_usd"}], "total_usd", "seconds", "unpriced",
    "error"}``. An instance with no price has ``cost_usd`` ``None``; what could not be found out
    is logged and named in ``error``; a cost never fails the teardown.

    :param create_task_id: the ``GpuCreateInstanceOperator`` task (templated)
    :param instance_ids: more instance ids to terminate (templated)
    :param aws_conn_id: the ``aws`` connection
    :param region_name: the AWS region; default: the instance's, else the connection's
    :param wait_for_completion: wait until the instances are terminated
    :param poll_interval: with ``wait_for_completion``: seconds between looks
    :param timeout: with ``wait_for_completion``: seconds to wait
    """

    template_fields: Sequence[str] = ("create_task_id", "instance_ids", "region_name")
    operator_extra_links = (GpuInstanceLink(),)
    ui_color = _EC2_ORANGE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        create_task_id: str | None = None,
        instance_ids: str | Sequence[str] | None = None,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        wait_for_completion: bool = False,
        poll_interval: float = 15,
        timeout: float = 600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.create_task_id = create_task_id
        self.instance_ids = instance_ids
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.wait_for_completion = wait_for_completion
        self.poll_interval = poll_interval
        self.timeout = timeout

    def execute(self, context: Context) -> list[str]:
        from airflow_provider_mlci.core.compute.ec2 import NOT_TERMINATED_STATES, OWNER

        ti = context["ti"]
        given = self.instance_ids
        ids: list[str] = [given] if isinstance(given, str) else list(given or [])
        if self.create_task_id:
            launched = ti.xcom_pull(task_ids=self.create_task_id, key=INSTANCE_XCOM_KEY)
            # A mapped setup task gives one instance per map index (a list or a lazy sequence).
            items = [launched] if launched is None or isinstance(launched, Mapping) else list(launched)
            for item in items:
                if isinstance(item, Mapping) and item.get("instance_id"):
                    ids.append(item["instance_id"])
                    if self.region_name is None and item.get("region"):
                        self.region_name = item["region"]
            tags = {
                "mlci:owner": OWNER,
                "mlci:dag_id": ti.dag_id,
                "mlci:run_id": ti.run_id,
                "mlci:group": self.create_task_id,
            }
            ids += [i["InstanceId"] for i in self.hook.find_instances(tags, states=NOT_TERMINATED_STATES)]
        ids = list(dict.fromkeys(ids))
        if not ids:
            self.log.info("No instance to terminate")
            return []
        terminated_at = datetime.now(UTC)
        terminated = self.hook.terminate(ids)
        self.log.info("Terminated %s", terminated)
        self._push_costs(context, terminated, terminated_at)
        if len(ids) == 1:
            GpuInstanceLink.persist(context, self, instance_id=ids[0], region_name=self.hook.conn_region_name)
        if self.wait_for_completion:
            for instance_id in terminated:
                self.hook.wait_for_state(
                    instance_id, "terminated", poll_interval=self.poll_interval, timeout=self.timeout
                )
        return ids

    def _push_costs(self, context: Context, instance_ids: Sequence[str], terminated_at: datetime) -> None:
        """Log what each terminated instance cost and push it under ``gpu_cost``; never raise."""
        from airflow_provider_mlci import settings
        from airflow_provider_mlci.core.compute.cost import cost_summary

        costs: list[Any] = []
        errors: list[str] = []
        try:
            prices = settings.gpu_prices()
        except Exception as exc:  # a bad table: price from AWS alone
            errors.append(f"{exc} It was not used.")
            self.log.warning("%s", errors[-1])
            prices = {}
        try:
            costs = self.hook.costs(instance_ids, terminated_at=terminated_at, prices=prices)
        except Exception as exc:  # the instances are terminated: a cost never fails the teardown
            errors.append(f"Cannot tell what instance(s) {list(instance_ids)} cost: {type(exc).__name__}: {exc}")
            self.log.warning("%s", errors[-1])
        error = " ".join(errors) or None
        for cost in costs:
            self.log.info("%s", cost.describe())
        summary = cost_summary(costs, error=error)
        try:
            context["ti"].xcom_push(key=COST_XCOM_KEY, value=summary)
        except Exception as exc:
            self.log.warning("Cannot push the GPU cost to XCom: %s: %s", type(exc).__name__, exc)


def _as_bool(value: Any) -> bool:
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off", ""):
            return False
        from airflow_provider_mlci.exceptions import MlciConfigError

        raise MlciConfigError(f"dry_run={value!r} is not a boolean.")
    return bool(value)


class GpuReaperOperator(GpuHookMixin, BaseOperator):
    """Find this provider's instances that should be gone; terminate them unless ``dry_run``.

    An instance is a leak when its deadline (its ``mlci:expires_at`` tag, or its launch time +
    ``mlci:max_lifetime``) has passed or its DAG run is no longer queued or running (asked
    through the Task SDK). Dry-run by default: it reports and terminates nothing. With
    ``fail_on_leaks`` the task fails (not retried) when it finds any, listing them, so a
    scheduled run shows red; the report is pushed under the key ``report`` first. Returns
    ``{"checked", "leaks", "terminated", "dry_run"}``.

    :param aws_conn_id: the ``aws`` connection
    :param region_name: the AWS region to sweep; default: the connection's
    :param dry_run: only report (templated: ``"{{ params.dry_run }}"`` works)
    :param fail_on_leaks: fail the task when leaks are found
    """

    template_fields: Sequence[str] = ("dry_run", "region_name")
    ui_color = _EC2_ORANGE
    ui_fgcolor = "#ffffff"

    def __init__(
        self,
        *,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        dry_run: bool | str = True,
        fail_on_leaks: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.dry_run = dry_run
        self.fail_on_leaks = fail_on_leaks

    def run_is_active(self, ti: Any, dag_id: str, run_id: str) -> bool | None:
        """Whether the DAG run is queued or running (``None``: cannot tell), asked through the
        running task instance (the Task SDK's ``get_dr_count`` and ``get_dagrun_state``).

        :param ti: the running task instance
        :param dag_id: the DAG
        :param run_id: the run
        """
        try:
            if ti.get_dr_count(dag_id=dag_id, run_ids=[run_id]) == 0:
                return False
            state = ti.get_dagrun_state(dag_id=dag_id, run_id=run_id)
        except Exception as exc:
            self.log.warning(
                "Cannot tell whether run %s/%s is active (%s); leaving it to its deadline", dag_id, run_id, exc
            )
            return None
        return str(getattr(state, "value", state)) in ("queued", "running")

    def execute(self, context: Context) -> dict[str, Any]:
        from airflow_provider_mlci.exceptions import GpuInstanceLeakError

        with airflow_failures():
            dry_run = _as_bool(self.dry_run)
            report = self.hook.reap(run_is_active=functools.partial(self.run_is_active, context["ti"]), dry_run=dry_run)
            result = report.to_json()
            self.log.info("Checked %d instance(s) of ours; %d leak(s)", report.checked, len(report.leaks))
            if not report.leaks:
                return result
            self.log.warning("Leaked instances:\n%s", report.describe())
            if report.terminated:
                self.log.warning("Terminated %s", report.terminated)
            if not self.fail_on_leaks:
                return result
            context["ti"].xcom_push(key="report", value=result)
            done = (
                "dry run: nothing was terminated (set dry_run=False to terminate them)"
                if dry_run
                else f"terminated {report.terminated}"
            )
            raise GpuInstanceLeakError(
                f"Found {len(report.leaks)} leaked GPU instance(s); {done}:\n{report.describe()}"
            )
