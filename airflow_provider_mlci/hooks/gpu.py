"""GPU instances on EC2 through the Amazon provider's ``aws`` connection.

Credentials, region, role assumption, the endpoint URL (``endpoint_url`` in the connection's
extra, as with MinIO or moto) and async clients all come from the Amazon provider's
``AwsBaseHook``; the logic lives in :mod:`airflow_provider_mlci.core.compute.ec2`. The hook
also gives S3 and SSM clients made from the same connection.

Nothing here puts a credential into an instance's user data: the instance reaches S3 through
its instance profile, and the agent's arguments name only the mailbox, the region and (for
S3-compatible endpoints) the endpoint URL. Nothing here puts the time into a launch request
either: every try of a task sends the same ``RunInstances`` call (see
:mod:`airflow_provider_mlci.core.compute.ec2`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

if TYPE_CHECKING:
    from airflow_provider_mlci.core.compute.cost import InstanceCost
    from airflow_provider_mlci.core.compute.ec2 import LaunchResult, ReapReport
    from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec

__all__ = ["GpuInstanceHook"]

_WAITERS = {"running": "instance_running", "stopped": "instance_stopped", "terminated": "instance_terminated"}


class GpuInstanceHook(AwsBaseHook):
    """Launch, watch, terminate and reap this provider's GPU instances.

    :param aws_conn_id: the ``aws`` connection (``None``: boto3's default credential chain)
    :param region_name: the AWS region; default: the connection's
    :param kwargs: passed to ``AwsBaseHook`` (``verify``, ``config``)
    """

    hook_name = "GPU instances (Amazon EC2)"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs["client_type"] = "ec2"
        super().__init__(*args, **kwargs)

    # ------------------------------------------------------------------ clients

    def _service_client(self, service: str) -> Any:
        """A client of ``service`` on the same session, region and endpoint as the EC2 client."""
        session = self.get_session(region_name=self.region_name)
        return session.client(
            service,
            endpoint_url=self.conn_config.get_service_endpoint_url(service_name=service),
            config=self._get_config(),
            verify=self.verify,
        )

    @cached_property
    def s3_client(self) -> Any:
        """A boto3 S3 client from the same connection (the instances' mailboxes)."""
        return self._service_client("s3")

    @cached_property
    def ssm_client(self) -> Any:
        """A boto3 SSM client from the same connection (the Deep Learning AMI's public parameter)."""
        return self._service_client("ssm")

    @cached_property
    def pricing_client(self) -> Any:
        """A boto3 client of the AWS Price List API from the same connection (on-demand prices).

        The API is served in ``us-east-1`` for every region, whatever region the connection names.
        It is retried once at most: a price is worth less than a teardown's time, and the
        ``[mlci] gpu_prices`` table stands in when it does not answer.
        """
        from botocore.config import Config

        from airflow_provider_mlci.core.compute.cost import PRICING_REGION

        config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=10, read_timeout=20)
        base = self._get_config()
        session = self.get_session(region_name=PRICING_REGION)
        return session.client(
            "pricing",
            region_name=PRICING_REGION,
            endpoint_url=self.conn_config.get_service_endpoint_url(service_name="pricing"),
            config=base.merge(config) if base is not None else config,
            verify=self.verify,
        )

    @property
    def s3_endpoint_url(self) -> str | None:
        """The S3 endpoint URL the connection sets (``None``: AWS's)."""
        return self.conn_config.get_service_endpoint_url(service_name="s3")

    # ------------------------------------------------------------------ instances

    def find_ami(self) -> str:
        """The current AWS Deep Learning AMI of the region (SSM public parameter, else by name)."""
        from airflow_provider_mlci.core.compute.ec2 import find_ami

        return find_ami(self.conn, self.ssm_client)

    def find_instances(
        self, tags: Mapping[str, str], states: Sequence[str] = ("pending", "running")
    ) -> list[dict[str, Any]]:
        """Instances carrying all of ``tags`` in one of ``states``.

        :param tags: tag key -> value
        :param states: instance states
        """
        from airflow_provider_mlci.core.compute.ec2 import find_instances

        return find_instances(self.conn, tags=tags, states=states)

    def instance_state(self, instance_id: str) -> str | None:
        """The instance's state name (``running``, ``terminated``...); ``None`` if EC2 does not know it.

        :param instance_id: the instance
        """
        from airflow_provider_mlci.core.compute.ec2 import find_instances

        states = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
        found = find_instances(self.conn, tags={}, states=states, instance_ids=[instance_id])
        return found[0]["State"]["Name"] if found else None

    def describe(self, instance_ids: Sequence[str]) -> list[dict[str, Any]]:
        """The instances as ``DescribeInstances`` gives them, in any state (ids EC2 does not know are left out).

        :param instance_ids: the instances
        """
        from airflow_provider_mlci.core.compute.ec2 import find_instances

        ids = [i for i in instance_ids if i]
        if not ids:
            return []
        states = ("pending", "running", "shutting-down", "terminated", "stopping", "stopped")
        return find_instances(self.conn, tags={}, states=states, instance_ids=ids)

    def costs(
        self, instance_ids: Sequence[str], *, terminated_at: datetime, prices: Mapping[str, float] | None = None
    ) -> list[InstanceCost]:
        """What each instance cost from its launch to its termination (see
        :func:`airflow_provider_mlci.core.compute.cost.instance_cost`).

        :param instance_ids: the instances
        :param terminated_at: when they were terminated
        :param prices: instance type -> USD per hour when AWS gives no price (default: ``[mlci] gpu_prices``)
        """
        from airflow_provider_mlci.core.compute.cost import instance_cost

        if prices is None:
            from airflow_provider_mlci import settings

            prices = settings.gpu_prices()
        region = self.conn_region_name
        return [
            instance_cost(
                instance,
                region=region,
                ended_at=terminated_at,
                ec2_client=self.conn,
                pricing_client=self.pricing_client,
                table=prices,
                log=self.log,
            )
            for instance in self.describe(instance_ids)
        ]

    def launch(
        self,
        spec: GpuInstanceSpec,
        *,
        run_key: str,
        tags: Mapping[str, str],
        user_data: str,
        generation: int = 0,
        expires_at: datetime | None = None,
    ) -> LaunchResult:
        """Launch (or adopt) one instance; see :func:`airflow_provider_mlci.core.compute.ec2.launch`.

        :param spec: the instance (its AMI, if not set, is the current Deep Learning AMI)
        :param run_key: the launching task's run key
        :param tags: the instance's tags
        :param user_data: the boot script
        :param generation: the first generation of client tokens
        :param expires_at: the deadline to tag a new instance with; default: its ``LaunchTime`` +
            ``max_lifetime``
        """
        from airflow_provider_mlci.core.compute.ec2 import launch

        ami = spec.ami or self.find_ami()
        return launch(
            self.conn,
            spec,
            run_key=run_key,
            tags=tags,
            user_data=user_data,
            generation=generation,
            ami=ami,
            log=self.log.info,
            expires_at=expires_at,
        )

    def launch_for_task(
        self,
        spec: GpuInstanceSpec,
        *,
        dag_id: str,
        run_id: str,
        task_id: str,
        map_index: int = -1,
        group: str | None = None,
        job_base: str | None = None,
        mailbox: str | None = None,
        generation: int = 0,
        now: datetime | None = None,
    ) -> dict[str, Any]:
        """Launch (or adopt) the instance of one task instance; return its XCom description.

        The description: ``{"instance_id", "instance_type", "availability_zone", "market",
        "region", "run_key", "mailbox", "expires_at", "spec", "adopted", "group", "generation",
        "attempts"}``. The mailbox is ``<job_base>/<run_key>`` unless given; with neither a
        mailbox nor a job base (argument or ``[mlci] compute_job_base``) no agent is started.

        Every try of one task instance sends the same ``RunInstances`` parameters (client token,
        boot script, tags): they hold no time, so EC2 answers a retry's repeated token with the
        first try's instance. The deadline (``expires_at``) is the instance's ``LaunchTime`` +
        ``spec.max_lifetime``, as its boot script counts it.

        :param spec: the instance
        :param dag_id: the task's DAG
        :param run_id: the DAG run
        :param task_id: the task
        :param map_index: the task's map index
        :param group: the setup task the instance belongs to; default: ``task_id``
        :param job_base: ``s3://bucket/prefix`` the mailbox goes under
        :param mailbox: the mailbox itself (a replacement keeps its predecessor's)
        :param generation: the first generation of client tokens
        :param now: the time the deadline of a newly launched instance counts from (default:
            its ``LaunchTime``); it only sets the ``mlci:expires_at`` tag written after the launch
        """
        from airflow_provider_mlci.core.compute.ec2 import boot_script, expires_at_for, instance_tags
        from airflow_provider_mlci.core.compute.ec2 import run_key as make_run_key

        key = make_run_key(dag_id, run_id, task_id, map_index)
        if mailbox is None:
            base = job_base if job_base is not None else job_base_setting()
            if base:
                from airflow_provider_mlci.core.compute.jobs import parse_s3_url

                parse_s3_url(base)
                mailbox = f"{base.rstrip('/')}/{key}"
        region = self.conn_region_name
        args: list[str] = []
        if mailbox:
            args = ["--mailbox", mailbox, "--region", region, "--idle-timeout", str(spec.idle_timeout)]
            if self.s3_endpoint_url:
                args += ["--endpoint-url", self.s3_endpoint_url]
        tags = instance_tags(
            spec,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            run_key=key,
            group=group or task_id,
        )
        wheel: str | None = None
        requirements: list[str] = []
        if mailbox and spec.agent_requirement is None:
            wheel, requirements = self.upload_agent(mailbox)
        user_data = boot_script(spec, agent_args=args, agent_wheel=wheel, agent_requirements=requirements)
        result = self.launch(
            spec,
            run_key=key,
            tags=tags,
            user_data=user_data,
            generation=generation,
            expires_at=expires_at_for(spec, now) if now is not None else None,
        )
        return {
            "instance_id": result.instance_id,
            "instance_type": result.instance_type,
            "availability_zone": result.availability_zone,
            "market": result.market,
            "region": region,
            "run_key": key,
            "mailbox": mailbox,
            "expires_at": result.expires_at,
            "spec": spec.to_json(),
            "adopted": result.adopted,
            "group": result.tags.get("mlci:group", group or task_id),
            "generation": result.generation,
            "attempts": result.attempts,
        }

    def upload_agent(self, mailbox: str) -> tuple[str, list[str]]:
        """Put a wheel of the code this worker runs under ``<mailbox>/agent/``, for the instance's
        boot script; return its URL and the agent's requirements (pinned to this worker's versions).

        The same code gives the same bytes, so a retry uploads (and names) the same wheel.

        :param mailbox: the job mailbox, ``s3://bucket/prefix``
        """
        from botocore.exceptions import ClientError

        from airflow_provider_mlci.core.compute.agent_dist import agent_requirements, package_wheel, wheel_name
        from airflow_provider_mlci.core.compute.jobs import parse_s3_url
        from airflow_provider_mlci.exceptions import MlciConfigError

        bucket, prefix = parse_s3_url(mailbox)
        key = f"{prefix.rstrip('/')}/agent/{wheel_name()}".lstrip("/")
        try:
            self.s3_client.put_object(Bucket=bucket, Key=key, Body=package_wheel())
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code in ("NoSuchBucket", "AccessDenied", "AllAccessDisabled"):
                raise MlciConfigError(
                    f"Cannot put the agent's wheel at s3://{bucket}/{key} ({code}): the job base must be a bucket "
                    "the worker can write to (and the instance profile read)."
                ) from exc
            raise
        return f"s3://{bucket}/{key}", agent_requirements()

    def launch_replacement(
        self, previous: Mapping[str, Any], *, dag_id: str, run_id: str, task_id: str, map_index: int = -1
    ) -> dict[str, Any]:
        """Launch an instance in place of one that went away (a spot reclaim, its deadline).

        Same spec (on-demand if the previous one was spot and the spec allows the fallback), same
        ``mlci:group`` (so the group's teardown terminates it) and the same mailbox, so the
        agent on the new instance serves the jobs the old one would have. Launched under the
        calling task's run key, so a retry of that task adopts it rather than starting another.

        :param previous: the XCom description of the instance being replaced
        :param dag_id: the calling task's DAG
        :param run_id: the DAG run
        :param task_id: the calling task
        :param map_index: the calling task's map index
        """
        from airflow_provider_mlci.core.compute.ec2 import run_key as make_run_key
        from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec

        spec = GpuInstanceSpec.from_mapping(previous["spec"])
        if previous.get("market") == "spot" and spec.spot and spec.spot_fallback_on_demand:
            spec = spec.on_demand()
        key = make_run_key(dag_id, run_id, task_id, map_index)
        generation = int(previous.get("generation") or 0) + 1 if previous.get("run_key") == key else 0
        return self.launch_for_task(
            spec,
            dag_id=dag_id,
            run_id=run_id,
            task_id=task_id,
            map_index=map_index,
            group=previous.get("group"),
            mailbox=previous.get("mailbox"),
            generation=generation,
        )

    def wait_for_state(
        self, instance_id: str, target_state: str = "running", *, poll_interval: float = 15, timeout: float = 600
    ) -> None:
        """Block until the instance reaches ``target_state`` (boto3's waiter).

        :param instance_id: the instance
        :param target_state: ``running``, ``stopped`` or ``terminated``
        :param poll_interval: seconds between looks
        :param timeout: seconds before giving up
        :raises botocore.exceptions.WaiterError: the instance cannot reach the state, or the time is up
        """
        import math

        waiter = self.conn.get_waiter(_WAITERS[target_state])
        attempts = max(1, math.ceil(timeout / max(poll_interval, 0.001)))
        waiter.wait(InstanceIds=[instance_id], WaiterConfig={"Delay": poll_interval, "MaxAttempts": attempts})

    def terminate(self, instance_ids: Sequence[str]) -> list[str]:
        """Terminate instances without waiting (idempotent); return the ids EC2 accepted.

        :param instance_ids: the instances
        """
        from airflow_provider_mlci.core.compute.ec2 import terminate

        ids = [i for i in instance_ids if i]
        if not ids:
            return []
        self.log.info("Terminating instances %s", ids)
        return terminate(self.conn, ids)

    def reap(
        self, *, run_is_active: Callable[[str, str], bool | None], dry_run: bool = True, now: datetime | None = None
    ) -> ReapReport:
        """Find (and unless ``dry_run`` terminate) our instances that expired or outlived their run.

        :param run_is_active: whether a DAG run (dag_id, run_id) is still queued or running
        :param dry_run: only report
        :param now: the current time (default: now)
        """
        from airflow_provider_mlci.core.compute.ec2 import reap

        return reap(self.conn, now=now or datetime.now(UTC), run_is_active=run_is_active, dry_run=dry_run)


def job_base_setting() -> str:
    """The provider setting ``[mlci] compute_job_base`` (empty when unset)."""
    from airflow_provider_mlci import settings

    return settings.compute_job_base()
