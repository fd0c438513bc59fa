"""The GPU instance a DAG asks for, in names familiar to CML users.

Light on purpose: DAG files import it, so it loads nothing but the standard library and the
provider's exceptions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from airflow_provider_mlci.exceptions import MlciConfigError

__all__ = ["DEFAULT_INSTANCE_TYPE", "GPU_INSTANCE_TYPES", "GpuInstanceSpec", "LaunchCandidate", "Market"]

#: CML's GPU names (``--cloud-gpu``) and the smallest instance type that carries one.
GPU_INSTANCE_TYPES: dict[str, str] = {
    "t4": "g4dn.xlarge",
    "a10g": "g5.xlarge",
    "l4": "g6.xlarge",
    "v100": "p3.2xlarge",
    "k80": "p2.xlarge",
    "a100": "p4d.24xlarge",
    "h100": "p5.48xlarge",
}

#: The instance type when neither ``instance_type`` nor ``gpu`` is given (one NVIDIA T4).
DEFAULT_INSTANCE_TYPE = "g4dn.xlarge"

_RESERVED_TAG_PREFIXES = ("mlci:", "aws:")
_TUPLE_FIELDS = ("availability_zones", "fallback_instance_types", "security_group_ids")


class Market(StrEnum):
    """How an instance is bought."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"


@dataclass(frozen=True, kw_only=True)
class LaunchCandidate:
    """One way to launch: an instance type, a zone (``None``: EC2 chooses) and a market."""

    instance_type: str
    availability_zone: str | None
    market: Market

    def describe(self) -> str:
        """``g5.xlarge in us-east-1b (spot)``."""
        return f"{self.instance_type} in {self.availability_zone or 'any zone'} ({self.market.value})"


@dataclass(frozen=True, kw_only=True)
class GpuInstanceSpec:
    """A GPU instance: what to launch, where, how to pay for it, and when it must die.

    :param instance_type: the EC2 instance type; default: the one for ``gpu``, else ``g4dn.xlarge``
    :param gpu: a GPU name as CML spells it (``t4``, ``a10g``, ``l4``, ``v100``, ``k80``, ``a100``,
        ``h100``), standing for the smallest instance type that carries one
    :param region: the AWS region; default: the ``aws`` connection's
    :param availability_zones: zones to try, in order; default: EC2 chooses
    :param fallback_instance_types: types to try, in order, when the first has no capacity
    :param spot: buy spot capacity (cheaper; can be reclaimed with two minutes' notice)
    :param spot_max_price: the most to pay per hour on the spot market; default: the market price
    :param spot_fallback_on_demand: when no spot capacity is found (or a spot instance was
        reclaimed), use on-demand capacity
    :param hdd_size_gb: the root volume's size
    :param idle_timeout: seconds the agent waits for a job before it shuts the instance down
    :param max_lifetime: the hard deadline, in seconds after boot: the boot script schedules a
        shutdown then, and the instance terminates on shutdown, whether Airflow is there or not
    :param ami: the image; default: the current AWS Deep Learning Base AMI (public SSM
        parameter, else the newest image by name)
    :param instance_profile: the IAM instance profile (name or ARN) that grants the instance S3
        access to the mailbox and the DVC remote, and nothing more (no credentials travel to the
        instance, and anything running on it can use the profile)
    :param subnet_id: the subnet to launch into (it fixes the zone)
    :param security_group_ids: security groups of the instance
    :param tags: more tags for the instance and its volumes (keys starting ``mlci:`` or
        ``aws:`` are reserved)
    :param startup_script: bash run at boot before the agent starts (install drivers, mount
        data...); must hold no credentials
    :param agent_requirement: what pip installs the agent from on the instance; default
        (``None``): the worker's own code, as a wheel the worker uploads beside the job's mailbox,
        with the agent's short requirement list pinned to the worker's versions and no Airflow
        (:mod:`~airflow_provider_mlci.core.compute.agent_dist`); a requirement or URL installs
        that instead (all of the provider's requirements with it)
    :param max_launch_attempts: how many launch calls at most, over all candidates
    """

    instance_type: str | None = None
    gpu: str | None = None
    region: str | None = None
    availability_zones: tuple[str, ...] = ()
    fallback_instance_types: tuple[str, ...] = ()
    spot: bool = False
    spot_max_price: float | None = None
    spot_fallback_on_demand: bool = True
    hdd_size_gb: int = 35
    idle_timeout: int = 300
    max_lifetime: int = 6 * 3600
    ami: str | None = None
    instance_profile: str | None = None
    subnet_id: str | None = None
    security_group_ids: tuple[str, ...] = ()
    tags: Mapping[str, str] = field(default_factory=dict)
    startup_script: str | None = None
    agent_requirement: str | None = None
    max_launch_attempts: int = 8

    def __post_init__(self) -> None:
        for name in _TUPLE_FIELDS:
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,) if value else ()
            object.__setattr__(self, name, tuple(value or ()))
        object.__setattr__(self, "tags", {str(k): str(v) for k, v in dict(self.tags or {}).items()})
        self._check()

    def _check(self) -> None:
        if self.gpu is not None and self.gpu.lower() not in GPU_INSTANCE_TYPES:
            raise MlciConfigError(
                f"GpuInstanceSpec.gpu={self.gpu!r} is not a GPU name we know; use one of "
                f"{sorted(GPU_INSTANCE_TYPES)} or give instance_type."
            )
        if self.gpu is not None and self.instance_type is not None:
            implied = GPU_INSTANCE_TYPES[self.gpu.lower()]
            if implied != self.instance_type:
                raise MlciConfigError(
                    f"GpuInstanceSpec: gpu={self.gpu!r} means instance_type {implied!r}, but "
                    f"instance_type={self.instance_type!r} was given too; give one of them."
                )
        for name in ("hdd_size_gb", "idle_timeout", "max_lifetime", "max_launch_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise MlciConfigError(f"GpuInstanceSpec.{name}={value!r} must be a positive whole number.")
        if self.idle_timeout >= self.max_lifetime:
            raise MlciConfigError(
                f"GpuInstanceSpec.idle_timeout={self.idle_timeout} must be shorter than "
                f"max_lifetime={self.max_lifetime} (seconds)."
            )
        if self.spot_max_price is not None:
            if not self.spot:
                raise MlciConfigError("GpuInstanceSpec.spot_max_price is set but spot is False; set spot=True.")
            if isinstance(self.spot_max_price, bool) or not self.spot_max_price > 0:
                raise MlciConfigError(
                    f"GpuInstanceSpec.spot_max_price={self.spot_max_price!r} must be a positive price per hour."
                )
        for key in self.tags:
            if key.lower().startswith(_RESERVED_TAG_PREFIXES):
                raise MlciConfigError(
                    f"GpuInstanceSpec.tags: the key {key!r} is reserved (keys starting 'mlci:' or 'aws:' are set "
                    "by the provider or by AWS)."
                )
        for name in ("instance_type", "region", "ami", "instance_profile", "subnet_id"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value.strip()):
                raise MlciConfigError(f"GpuInstanceSpec.{name}={value!r} must be a non-empty string or None.")
        if self.agent_requirement is not None and (
            not isinstance(self.agent_requirement, str) or not self.agent_requirement.strip()
        ):
            raise MlciConfigError(
                "GpuInstanceSpec.agent_requirement must name what pip installs the agent from, or be None "
                "(the worker's own code)."
            )

    @classmethod
    def from_mapping(cls, value: Mapping[str, Any] | GpuInstanceSpec) -> GpuInstanceSpec:
        """Build a spec from its JSON form (lists become tuples), or return a spec as it is.

        :param value: a spec, or a mapping of its fields
        :raises MlciConfigError: a key that is no field, or a field with a bad value
        """
        if isinstance(value, GpuInstanceSpec):
            return value
        if not isinstance(value, Mapping):
            raise MlciConfigError(
                f"A GPU instance spec must be a GpuInstanceSpec or a mapping, not {type(value).__name__}."
            )
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(value) - names)
        if unknown:
            raise MlciConfigError(f"GpuInstanceSpec has no field {unknown[0]!r} (fields: {sorted(names)}).")
        kwargs = dict(value)
        for name in _TUPLE_FIELDS:
            if isinstance(kwargs.get(name), list):
                kwargs[name] = tuple(kwargs[name])
        try:
            return cls(**kwargs)
        except TypeError as exc:
            raise MlciConfigError(f"GpuInstanceSpec: {exc}") from exc

    def to_json(self) -> dict[str, Any]:
        """The spec as plain JSON (``from_mapping`` reads it back)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = list(value)
            elif isinstance(value, Mapping):
                value = dict(value)
            out[f.name] = value
        return out

    @property
    def resolved_instance_type(self) -> str:
        """The first instance type to try."""
        if self.instance_type:
            return self.instance_type
        if self.gpu:
            return GPU_INSTANCE_TYPES[self.gpu.lower()]
        return DEFAULT_INSTANCE_TYPE

    @property
    def instance_types(self) -> list[str]:
        """Every instance type to try, in order, without repeats."""
        return list(dict.fromkeys([self.resolved_instance_type, *self.fallback_instance_types]))

    def candidates(self) -> list[LaunchCandidate]:
        """Every (type, zone, market) to try, in order.

        Spot first when ``spot`` (then on-demand when ``spot_fallback_on_demand``); within a
        market each type in order, and within a type each zone in order.
        """
        markets = [Market.SPOT, Market.ON_DEMAND] if self.spot and self.spot_fallback_on_demand else []
        if not markets:
            markets = [Market.SPOT] if self.spot else [Market.ON_DEMAND]
        zones: tuple[str | None, ...] = self.availability_zones or (None,)
        return [
            LaunchCandidate(instance_type=instance_type, availability_zone=zone, market=market)
            for market in markets
            for instance_type in self.instance_types
            for zone in zones
        ]

    def on_demand(self) -> GpuInstanceSpec:
        """A copy that buys on-demand capacity (for the launch after a spot reclaim)."""
        return dataclasses.replace(self, spot=False, spot_max_price=None)
