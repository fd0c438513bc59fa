"""What a GPU instance cost: its type, market, seconds from launch to termination and hourly price.

The hourly price comes from, in order:

- a spot instance: the spot price in effect at its launch (``DescribeSpotPriceHistory``, source
  ``spot-price-history``);
- an on-demand instance: the AWS Price List API (the ``pricing`` service, source
  ``aws-price-list``), asked once per process for each type and region;
- else the user's table, the provider setting ``[mlci] gpu_prices`` (source ``table``), with a
  warning naming the type and why the API gave no price;
- else no price: ``hourly_usd`` and ``cost_usd`` are ``None``, and the log says so.

Example::

    cost = instance_cost(described, region="eu-west-1", ended_at=now, ec2_client=ec2, pricing_client=pricing)
    cost.to_json()  # {"instance_id": "i-...", "market": "spot", "seconds": 1234.0, "cost_usd": 0.0541, ...}

The clients are plain boto3 clients; nothing here imports Airflow or boto3.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

__all__ = [
    "InstanceCost",
    "clear_price_cache",
    "cost_summary",
    "ended_at_of",
    "hourly_price",
    "instance_cost",
    "on_demand_price",
    "spot_price",
]

_LOG = logging.getLogger(__name__)

#: The region whose endpoint serves the Price List API for every region.
PRICING_REGION = "us-east-1"
#: How far around the launch the spot price history is read.
_SPOT_WINDOW = timedelta(hours=1)
#: An end recorded by EC2 this much before the teardown's call means the instance ended earlier.
_EARLIER_END = timedelta(seconds=2)
_REASON_TIME = re.compile(r"\((\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}) (?:GMT|UTC)\)")

#: How long a failed Price List request is remembered (the table stands in meanwhile).
_FAILURE_MEMORY_S = 600.0

#: (type, region) -> the Price List's answer; asked once per process.
_on_demand_cache: dict[tuple[str, str], float | None] = {}
#: (type, region) -> (monotonic time, the error) of the last failed request.
_on_demand_failures: dict[tuple[str, str], tuple[float, Exception]] = {}
_on_demand_lock = threading.Lock()


@dataclass(frozen=True, kw_only=True)
class InstanceCost:
    """What one instance cost from its launch to its termination.

    :param instance_id: the instance
    :param instance_type: its type (``g4dn.xlarge``)
    :param market: ``spot`` or ``on-demand``
    :param region: its region
    :param availability_zone: its zone
    :param launched_at: its launch time (ISO 8601)
    :param ended_at: its termination time (ISO 8601)
    :param seconds: seconds from launch to termination
    :param hourly_usd: the price per hour in USD (``None``: unknown)
    :param price_source: ``spot-price-history``, ``aws-price-list`` or ``table`` (``None``: no price)
    """

    instance_id: str
    instance_type: str
    market: str
    region: str
    availability_zone: str
    launched_at: str
    ended_at: str
    seconds: float
    hourly_usd: float | None = None
    price_source: str | None = None

    @property
    def cost_usd(self) -> float | None:
        """``seconds / 3600 * hourly_usd`` rounded to 4 decimals (``None``: no price)."""
        if self.hourly_usd is None:
            return None
        return round(self.seconds / 3600 * self.hourly_usd, 4)

    def to_json(self) -> dict[str, Any]:
        """The fields and ``cost_usd``, as small JSON."""
        return {**asdict(self), "cost_usd": self.cost_usd}

    def describe(self) -> str:
        """One line for the log: ``Instance i-... (g4dn.xlarge, spot, eu-west-1a) ran 1234 s at
        0.1578 USD/h (spot-price-history): 0.0541 USD``."""
        head = (
            f"Instance {self.instance_id} ({self.instance_type}, {self.market}, {self.availability_zone}) "
            f"ran {self.seconds:.0f} s"
        )
        if self.hourly_usd is None:
            return f"{head}; no price is known for {self.instance_type} in {self.region}: cost unknown"
        return f"{head} at {self.hourly_usd:g} USD/h ({self.price_source}): {self.cost_usd:.4f} USD"


def spot_price(ec2_client: Any, instance_type: str, az: str, at: datetime) -> float | None:
    """The Linux spot price per hour of ``instance_type`` in ``az`` in effect at ``at`` (``None``: no history).

    Reads ``DescribeSpotPriceHistory`` for an hour around ``at`` (EC2 also returns the last change
    before the window's start, the price in effect then) and takes the newest entry not after
    ``at``, else the oldest one.

    :param ec2_client: a boto3 EC2 client in the instance's region
    :param instance_type: the instance type
    :param az: the availability zone
    :param at: the launch time (timezone-aware)
    """
    entries: list[tuple[datetime, float]] = []
    pages = ec2_client.get_paginator("describe_spot_price_history").paginate(
        InstanceTypes=[instance_type],
        ProductDescriptions=["Linux/UNIX"],
        AvailabilityZone=az,
        StartTime=at - _SPOT_WINDOW,
        EndTime=at + _SPOT_WINDOW,
    )
    for page in pages:
        for entry in page.get("SpotPriceHistory", []):
            if entry.get("AvailabilityZone") not in (None, az) or entry.get("InstanceType") != instance_type:
                continue
            entries.append((entry["Timestamp"], float(entry["SpotPrice"])))
    if not entries:
        return None
    entries.sort(key=lambda item: item[0])
    before = [price for timestamp, price in entries if timestamp <= at]
    return before[-1] if before else entries[0][1]


def _price_list_filters(instance_type: str, region: str) -> list[dict[str, str]]:
    fields = {
        "instanceType": instance_type,
        "regionCode": region,
        "operatingSystem": "Linux",
        "tenancy": "Shared",
        "preInstalledSw": "NA",
        "capacitystatus": "Used",
    }
    return [{"Type": "TERM_MATCH", "Field": field, "Value": value} for field, value in fields.items()]


def _on_demand_usd(price_list: Iterable[str | Mapping[str, Any]]) -> float | None:
    """The first positive hourly USD price in the ``OnDemand`` terms of Price List products."""
    for item in price_list:
        product = json.loads(item) if isinstance(item, str) else item
        for term in product.get("terms", {}).get("OnDemand", {}).values():
            for dimension in term.get("priceDimensions", {}).values():
                usd = dimension.get("pricePerUnit", {}).get("USD")
                if usd is not None and dimension.get("unit", "Hrs") in ("Hrs", "Hours") and float(usd) > 0:
                    return float(usd)
    return None


def on_demand_price(pricing_client: Any, instance_type: str, region: str) -> float | None:
    """The Linux on-demand price per hour of ``instance_type`` in ``region`` from the AWS Price List
    API (``None``: it lists none). Asked once per process for each type and region; an error is
    raised, and raised again without asking for the next ten minutes.

    :param pricing_client: a boto3 ``pricing`` client (region ``us-east-1``)
    :param instance_type: the instance type
    :param region: the instance's region code (``eu-west-1``)
    """
    key = (instance_type, region)
    with _on_demand_lock:
        if key in _on_demand_cache:
            return _on_demand_cache[key]
        failed = _on_demand_failures.get(key)
        if failed and time.monotonic() - failed[0] < _FAILURE_MEMORY_S:
            raise failed[1]
    try:
        response = pricing_client.get_products(
            ServiceCode="AmazonEC2", Filters=_price_list_filters(instance_type, region), MaxResults=10
        )
        price = _on_demand_usd(response.get("PriceList", []))
    except Exception as exc:
        with _on_demand_lock:
            _on_demand_failures[key] = (time.monotonic(), exc)
        raise
    with _on_demand_lock:
        _on_demand_cache[key] = price
        _on_demand_failures.pop(key, None)
    return price


def clear_price_cache() -> None:
    """Forget the Price List's answers and failures (the next price is asked for again)."""
    with _on_demand_lock:
        _on_demand_cache.clear()
        _on_demand_failures.clear()


def hourly_price(
    *,
    instance_type: str,
    market: str,
    region: str,
    availability_zone: str,
    launched_at: datetime,
    ec2_client: Any = None,
    pricing_client: Any = None,
    table: Mapping[str, float] | None = None,
    log: logging.Logger | None = None,
) -> tuple[float | None, str | None]:
    """The hourly USD price of an instance and where it came from: the API for its market, else
    ``table``; ``(None, None)`` when neither has one. API errors are logged, never raised.

    :param instance_type: the instance type
    :param market: ``spot`` or ``on-demand``
    :param region: the instance's region
    :param availability_zone: the instance's zone (the spot price is per zone)
    :param launched_at: the launch time (the spot price in effect then)
    :param ec2_client: a boto3 EC2 client in ``region`` (for spot; ``None``: not asked)
    :param pricing_client: a boto3 ``pricing`` client (for on-demand; ``None``: not asked)
    :param table: instance type -> USD per hour, the fallback
    :param log: where warnings go
    """
    log = log or _LOG
    why: str
    try:
        if market == "spot":
            if ec2_client is None:
                why = "no EC2 client to read the spot price history with"
            else:
                price = spot_price(ec2_client, instance_type, availability_zone, launched_at)
                if price is not None:
                    return price, "spot-price-history"
                why = f"the spot price history has no Linux/UNIX price in {availability_zone}"
        elif pricing_client is None:
            why = "no pricing client to ask the AWS Price List API with"
        else:
            price = on_demand_price(pricing_client, instance_type, region)
            if price is not None:
                return price, "aws-price-list"
            why = f"the AWS Price List API lists no Linux on-demand price in {region}"
    except Exception as exc:
        why = f"asking for the price failed ({type(exc).__name__}: {exc})"
    table_price = (table or {}).get(instance_type)
    if table_price is not None:
        log.warning("No %s price from AWS for %s (%s); using [mlci] gpu_prices", market, instance_type, why)
        return float(table_price), "table"
    log.warning(
        "No price for %s (%s, %s) and [mlci] gpu_prices does not list it: its cost is unknown",
        instance_type,
        market,
        why,
    )
    return None, None


def _utc(value: datetime | str) -> datetime:
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def ended_at_of(instance: Mapping[str, Any], terminated_at: datetime) -> datetime:
    """When the instance ended: the time EC2 recorded in its ``StateTransitionReason`` when that is
    before the teardown's call (it ended earlier: a spot reclaim, its own deadline), else ``terminated_at``.

    :param instance: the instance as ``DescribeInstances`` gives it
    :param terminated_at: when the teardown asked EC2 to terminate it
    """
    terminated_at = _utc(terminated_at)
    match = _REASON_TIME.search(instance.get("StateTransitionReason") or "")
    if match:
        recorded = datetime.fromisoformat(match.group(1)).replace(tzinfo=UTC)
        if recorded < terminated_at - _EARLIER_END:
            return recorded
    return terminated_at


def instance_cost(
    instance: Mapping[str, Any],
    *,
    region: str,
    ended_at: datetime,
    ec2_client: Any = None,
    pricing_client: Any = None,
    table: Mapping[str, float] | None = None,
    log: logging.Logger | None = None,
) -> InstanceCost:
    """The cost of one instance from its ``DescribeInstances`` description (``LaunchTime``,
    ``InstanceType``, ``InstanceLifecycle``: ``spot`` means spot, ``Placement.AvailabilityZone``).

    :param instance: the instance as ``DescribeInstances`` gives it
    :param region: its region
    :param ended_at: when the teardown terminated it (see :func:`ended_at_of`)
    :param ec2_client: a boto3 EC2 client in ``region`` (spot prices)
    :param pricing_client: a boto3 ``pricing`` client (on-demand prices)
    :param table: instance type -> USD per hour, the fallback
    :param log: where warnings go
    """
    launched = _utc(instance["LaunchTime"])
    ended = ended_at_of(instance, ended_at)
    market = "spot" if instance.get("InstanceLifecycle") == "spot" else "on-demand"
    zone = (instance.get("Placement") or {}).get("AvailabilityZone", "")
    hourly, source = hourly_price(
        instance_type=instance["InstanceType"],
        market=market,
        region=region,
        availability_zone=zone,
        launched_at=launched,
        ec2_client=ec2_client,
        pricing_client=pricing_client,
        table=table,
        log=log,
    )
    return InstanceCost(
        instance_id=instance["InstanceId"],
        instance_type=instance["InstanceType"],
        market=market,
        region=region,
        availability_zone=zone,
        launched_at=launched.isoformat(),
        ended_at=ended.isoformat(),
        seconds=round(max((ended - launched).total_seconds(), 0.0), 3),
        hourly_usd=hourly,
        price_source=source,
    )


def cost_summary(costs: Sequence[InstanceCost], *, error: str | None = None) -> dict[str, Any]:
    """The XCom of a teardown: ``{"instances": [...], "total_usd", "seconds", "unpriced", "error"}``.

    ``total_usd`` sums the known costs (``None`` when none is known); ``seconds`` sums the
    instances' seconds; ``unpriced`` lists the
    instances without a price; ``error`` says what could not be found out (``None``: nothing).

    :param costs: the instances' costs
    :param error: why some costs are missing
    """
    known = [cost.cost_usd for cost in costs if cost.cost_usd is not None]
    return {
        "instances": [cost.to_json() for cost in costs],
        "total_usd": round(sum(known), 4) if known else None,
        "seconds": round(sum(cost.seconds for cost in costs), 3),
        "unpriced": [cost.instance_id for cost in costs if cost.cost_usd is None],
        "error": error,
    }
