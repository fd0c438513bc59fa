"""Helpers for tests against moto's EC2 server: clients, what is left running, what an instance
carries, and :class:`ErrorInjection` (the errors moto never raises).

Every test that launches ends with :func:`assert_no_instance_left` on its client.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse

from airflow_provider_mlci.core.compute import ec2

__all__ = [
    "AMI",
    "FAKE_ACCESS_KEY",
    "FAKE_SECRET_KEY",
    "ErrorInjection",
    "assert_no_instance_left",
    "describe",
    "ec2_client",
    "live_instances",
    "state",
    "tags_of",
    "user_data_of",
]

AMI = "ami-12c6146b"  # one of moto's default images
#: Credential-shaped (fake) strings, planted where no credential may go, to show it is refused or kept out.
FAKE_ACCESS_KEY = "AKIAMLCITESTFAKEKEY1"
FAKE_SECRET_KEY = "mlciTestFakeSecret/9f8e7d6c5b4a3f2e1d0c9b8a7"
_counter = itertools.count()


def ec2_client(endpoint: str, region: str = "us-east-1") -> Any:
    """A boto3 EC2 client on the moto server."""
    return boto3.client(
        "ec2", endpoint_url=endpoint, region_name=region, aws_access_key_id="testing", aws_secret_access_key="testing"
    )


def live_instances(client: Any, **tags: str) -> list[dict[str, Any]]:
    """Our pending or running instances (all of them, or those with ``tags``)."""
    return ec2.find_instances(client, tags={"mlci:owner": ec2.OWNER, **tags}, states=("pending", "running"))


def assert_no_instance_left(client: Any) -> None:
    """The end of every test that launches: nothing of ours is pending or running."""
    left = [i["InstanceId"] for i in live_instances(client)]
    assert left == [], f"instances left running: {left}"


def user_data_of(client: Any, instance_id: str) -> str:
    """The instance's user data (its boot script), decoded."""
    value = client.describe_instance_attribute(InstanceId=instance_id, Attribute="userData")["UserData"]["Value"]
    return base64.b64decode(value).decode()


def describe(client: Any, instance_id: str) -> dict[str, Any]:
    """The instance as ``DescribeInstances`` has it."""
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]


def state(client: Any, instance_id: str) -> str:
    """The instance's state name (``pending``, ``running``, ``terminated``, ...)."""
    return client.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"]["Name"]


def tags_of(resource: dict[str, Any]) -> dict[str, str]:
    """An EC2 resource's tags as a mapping."""
    return {t["Key"]: t["Value"] for t in resource.get("Tags", [])}


class ErrorInjection:
    """An injection, named as such: moto never raises capacity errors, so this does.

    A ``before-call`` hook on a real client talking to moto answers the chosen calls of
    ``operation`` with an EC2 error (the call never reaches moto); others pass through. Each
    call is recorded as ``{"instance_type", "availability_zone", "market", "client_token"}``
    for ``RunInstances``, or the raw body otherwise.

    :param client: the boto3 client to hook
    :param refuse: given a call, the error code to answer with, or ``None`` to let it through
    :param operation: the EC2 operation to watch
    """

    def __init__(self, client: Any, refuse: Callable[[dict[str, Any]], str | None], operation: str = "RunInstances"):
        self.refuse = refuse
        self.calls: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self._event = f"before-call.ec2.{operation}"
        self._client = client
        self._id = f"mlci-injection-{next(_counter)}"
        client.meta.events.register(self._event, self._handler, unique_id=self._id)

    def remove(self) -> None:
        """Unhook: later calls reach moto."""
        self._client.meta.events.unregister(self._event, unique_id=self._id)

    def _handler(self, params: dict[str, Any], **_: Any) -> Any:
        body = params.get("body") or {}
        call = {
            "instance_type": body.get("InstanceType"),
            "availability_zone": body.get("Placement.AvailabilityZone"),
            "market": "spot" if body.get("InstanceMarketOptions.MarketType") == "spot" else "on-demand",
            "client_token": body.get("ClientToken"),
            "body": body,
        }
        self.calls.append(call)
        code = self.refuse(call)
        if code is None:
            return None
        self.refused.append(call)
        error = {"Code": code, "Message": f"injected {code}"}
        return AWSResponse("http://injected", 400, {}, None), {
            "Error": error,
            "ResponseMetadata": {"HTTPStatusCode": 400},
        }
