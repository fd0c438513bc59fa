"""How operators and task groups are asked to work: where heavy work runs (:class:`Compute`,
:class:`Ec2Compute`) and whether a person approves a release (:class:`Approval`).

::

    DvcReproOperator(task_id="train", targets=["train"],
                     compute=Ec2Compute(instance_task_id="gpu.launch"))
    SweepTaskGroup(group_id="sweep", ..., compute=Ec2Compute(instance=GpuInstanceSpec(gpu="t4")))

``compute="local"`` (the default) runs on the worker; an :class:`Ec2Compute` runs on a GPU
instance and carries every argument that only means something there. The strings ``"local"``
and ``"ec2"`` are accepted wherever a :class:`Compute` is. Light on purpose: DAG files import it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, fields, replace
from datetime import timedelta
from enum import StrEnum
from typing import Any, ClassVar

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec
from airflow_provider_mlci.exceptions import MlciConfigError

__all__ = ["Approval", "Compute", "Ec2Compute", "resolve_compute"]


class Compute(StrEnum):
    """Where a task's heavy work runs."""

    #: the worker that runs the task
    LOCAL = "local"
    #: a GPU instance on EC2 (see :class:`Ec2Compute`)
    EC2 = "ec2"

    @classmethod
    def of(cls, value: Any) -> Compute:
        """The backend ``value`` names: a :class:`Compute`, its string, an :class:`Ec2Compute`
        (``ec2``), or ``None`` for the provider setting ``[mlci] compute_backend``.

        :param value: what the DAG gave
        :raises MlciConfigError: anything else, naming the choices
        """
        if isinstance(value, Ec2Compute):
            return cls.EC2
        if value is None:
            from airflow_provider_mlci import settings

            value = settings.compute_backend()
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(repr(c.value) for c in cls)
            raise MlciConfigError(f"compute={value!r} is not one of {choices}.") from None


@dataclass(frozen=True, kw_only=True)
class Approval:
    """A person approves a release that passed the gate before it is written (Airflow's human-in-the-loop).

    The approval task shows the candidate's metric deltas and a link to the run's reports; "Approve"
    promotes, "Reject" keeps the deployed model, and no answer within ``timeout`` keeps it too. The
    outcome says which.

    :param timeout: how long to wait for an answer (``None``: forever)
    :param assigned_users: who may answer (``[{"id": ..., "name": ...}]`` as the auth manager knows
        them; ``None``: anyone who may act on the Dag's task instances)
    :param subject: the request's title; ``{model}``, ``{stage}`` and ``{sha}`` are filled in
    """

    timeout: timedelta | None = timedelta(hours=12)
    assigned_users: tuple[Mapping[str, str], ...] | None = None
    subject: str = "Release {model} {sha} to {stage}?"

    @classmethod
    def of(cls, value: Approval | bool | Mapping[str, Any] | None) -> Approval | None:
        """The approval ``value`` asks for: ``None``/``False`` none, ``True`` the defaults, a mapping its fields.

        :param value: what the Dag gave
        :raises MlciConfigError: anything else
        """
        if value is None or value is False:
            return None
        if value is True:
            return cls()
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            try:
                return cls(**value)
            except TypeError as exc:
                raise MlciConfigError(f"approval={dict(value)!r}: {exc}") from None
        raise MlciConfigError(f"approval={value!r} is not True, an Approval or its mapping.")


@dataclass(kw_only=True)
class Ec2Compute:
    """A task's work on a GPU instance: which instance, how to reach its mailbox, how long to wait.

    A reproduction runs on the instance a :class:`~airflow_provider_mlci.operators.gpu.GpuCreateInstanceOperator`
    started (``instance_task_id``; a task group fills it in); a sweep trial launches one of its
    own (``instance``).

    :param instance: the instance to launch (a :class:`~airflow_provider_mlci.core.compute.spec.GpuInstanceSpec`
        or its mapping), where the task launches its own
    :param instance_task_id: the task whose instance runs the job, where one is launched upstream (templated)
    :param aws_conn_id: the ``aws`` connection (launches instances, reaches their mailbox)
    :param job_base: ``s3://bucket/prefix`` for the instance's mailbox (templated); default: the
        provider setting ``[mlci] compute_job_base``
    :param poll_interval: seconds between looks at the job
    :param heartbeat_timeout: seconds without a heartbeat after which the job counts as lost
        (the task fails and is retried as configured)
    :param start_timeout: seconds the job may wait for the instance's agent to take it (boot and
        install included)
    """

    #: rendered by Airflow as part of the operator's ``compute`` field
    template_fields: ClassVar[tuple[str, ...]] = ("instance_task_id", "job_base")

    instance: GpuInstanceSpec | Mapping[str, Any] | None = None
    instance_task_id: str | None = None
    aws_conn_id: str | None = "aws_default"
    job_base: str | None = None
    poll_interval: float = 10.0
    heartbeat_timeout: float = 300.0
    start_timeout: float = 1800.0

    def __post_init__(self) -> None:
        if self.instance is not None:
            GpuInstanceSpec.from_mapping(self.instance)  # names the bad field now, at parse time
        for name in ("poll_interval", "heartbeat_timeout", "start_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
                raise MlciConfigError(f"Ec2Compute({name}={value!r}): give a positive number of seconds.")

    @property
    def spec(self) -> GpuInstanceSpec:
        """The instance to launch, as a spec (an empty one when none was given)."""
        return GpuInstanceSpec.from_mapping(self.instance or {})

    @property
    def heartbeat_interval(self) -> float:
        """Seconds between the agent's heartbeats: often enough for ``heartbeat_timeout``."""
        return max(1.0, min(10.0, self.heartbeat_timeout / 6))


#: The ec2-only keyword arguments operators and task groups took before :class:`Ec2Compute`.
LEGACY_EC2_ARGUMENTS = tuple(f.name for f in fields(Ec2Compute))


def resolve_compute(
    compute: Any, legacy: MutableMapping[str, Any], *, owner: str, default: Any = Compute.LOCAL
) -> tuple[Compute, Ec2Compute | None]:
    """Turn a ``compute`` argument (and any ec2-only keyword arguments of the old signature,
    popped from ``legacy``) into the backend and its :class:`Ec2Compute`.

    The old keywords (``compute="ec2", instance_task_id=..., aws_conn_id=...``) still work for
    this release, with a :class:`DeprecationWarning`; given beside an :class:`Ec2Compute`, they
    replace its fields.

    :param compute: a :class:`Compute`, its string, an :class:`Ec2Compute`, or ``None`` (``default``)
    :param legacy: the caller's remaining keyword arguments; the old ec2-only ones are removed
    :param owner: the operator or task group, for messages
    :param default: what ``None`` means (``None`` here: the provider setting)
    :raises MlciConfigError: an unknown backend, or ec2-only arguments with ``local``
    """
    old = {name: legacy.pop(name) for name in LEGACY_EC2_ARGUMENTS if name in legacy}
    backend = Compute.of(default if compute is None else compute)
    if old:
        where_given = [old.get("instance"), old.get("instance_task_id")]
        if backend is Compute.LOCAL and any(value is not None for value in where_given):
            raise MlciConfigError(
                f"{owner}: {', '.join(sorted(old))} given but compute='local': use compute=Ec2Compute(...)."
            )
        warnings.warn(
            f"{owner}: {', '.join(sorted(old))} beside compute= is deprecated; "
            f"give compute=Ec2Compute({', '.join(f'{k}=...' for k in sorted(old))}).",
            DeprecationWarning,
            stacklevel=3,
        )
        if isinstance(compute, Ec2Compute):  # e.g. a task group's Ec2Compute and a trial's own waits
            compute = replace(compute, **old)
    if isinstance(compute, Ec2Compute):
        return backend, replace(compute)  # the operator's own: Airflow renders its fields in place
    if backend is Compute.EC2:
        return backend, Ec2Compute(**old)
    return backend, None
