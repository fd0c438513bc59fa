"""Helpers for tests against moto's EC2 server: clients, what is left running, what an instance
carries, :class:`ErrorInjection` (the errors moto never raises) and :class:`ClientTokenStub`
(EC2's ``ClientToken`` idempotency, which moto lacks).

Every test that launches ends with :func:`assert_no_instance_left` on its client.
"""

from __future__ import annotations

import base64
import itertools
from collections.abc import Callable
from typing import Any

import boto3
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError

from airflow_provider_mlci.core.compute import ec2

__all__ = [
    "AMI",
    "FAKE_ACCESS_KEY",
    "FAKE_SECRET_KEY",
    "ClientTokenStub",
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


class ClientTokenStub:
    """A stub, named as such, of what moto lacks: EC2's ``ClientToken`` idempotency, and the
    delay before ``DescribeInstances`` lists a new instance (EC2's eventual consistency).

    Hooked (``before-call`` / ``after-call``) on real clients talking to moto, one per try:

    - ``RunInstances`` with a token not seen before reaches moto, which starts the instance; the
      stub remembers the token, the call's parameters and the instance;
    - ``RunInstances`` with a token seen before does not reach moto: with the same parameters
      it is answered with the first call's instance as it is now (what EC2 does), with other
      parameters with ``IdempotentParameterMismatch``;
    - while :attr:`lagging`, ``DescribeInstances`` leaves out every instance the stub saw start;
    - :meth:`lose_next_response`: the next ``RunInstances`` reaches moto but its answer never
      reaches the caller (a connection reset, or a worker that died, after EC2 accepted it).

    Every ``RunInstances`` call's wire parameters are kept in :attr:`calls`, in order.

    :param endpoint: the moto server (the stub describes instances there itself)
    """

    def __init__(self, endpoint: str):
        self.calls: list[dict[str, Any]] = []
        self.lagging = False
        self._tokens: dict[str, tuple[dict[str, Any], str]] = {}
        self._started: set[str] = set()
        self._lose = False
        self._backend = ec2_client(endpoint)
        self._hooked: list[tuple[Any, str]] = []

    def attach(self, client: Any) -> Any:
        """Hook ``client`` (a try's EC2 client); return it."""
        hook_id = f"mlci-token-stub-{next(_counter)}"
        events = client.meta.events
        events.register("before-call.ec2.RunInstances", self._before_run, unique_id=f"{hook_id}-b")
        events.register("after-call.ec2.RunInstances", self._after_run, unique_id=f"{hook_id}-a")
        events.register("after-call.ec2.DescribeInstances", self._after_describe, unique_id=f"{hook_id}-d")
        self._hooked.append((client, hook_id))
        return client

    def remove(self) -> None:
        """Unhook every client."""
        for client, hook_id in self._hooked:
            events = client.meta.events
            events.unregister("before-call.ec2.RunInstances", unique_id=f"{hook_id}-b")
            events.unregister("after-call.ec2.RunInstances", unique_id=f"{hook_id}-a")
            events.unregister("after-call.ec2.DescribeInstances", unique_id=f"{hook_id}-d")
        self._hooked.clear()

    def lose_next_response(self) -> None:
        """The next ``RunInstances`` starts its instance but the caller gets a connection error."""
        self._lose = True

    def _before_run(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> Any:
        body = dict(params.get("body") or {})
        self.calls.append(body)
        token = body.get("ClientToken")
        context["mlci_token_stub"] = {"token": token, "body": body}
        if token not in self._tokens:
            return None  # a new token: moto starts the instance
        context["mlci_token_stub"]["answered"] = True
        first_body, instance_id = self._tokens[token]
        if body != first_body:
            message = f"stub: the client token {token} was used with other parameters"
            error = {"Code": "IdempotentParameterMismatch", "Message": message}
            return AWSResponse("http://stub", 400, {}, None), {
                "Error": error,
                "ResponseMetadata": {"HTTPStatusCode": 400},
            }
        reservation = self._backend.describe_instances(InstanceIds=[instance_id])["Reservations"][0]
        reservation["ResponseMetadata"] = {"HTTPStatusCode": 200}
        return AWSResponse("http://stub", 200, {}, None), reservation

    def _after_run(self, http_response: Any, parsed: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        call = context.get("mlci_token_stub") or {}
        if call.get("answered") or http_response.status_code >= 300:
            return
        instance_id = parsed["Instances"][0]["InstanceId"]
        self._tokens[call["token"]] = (call["body"], instance_id)
        self._started.add(instance_id)
        if self._lose:
            self._lose = False
            raise ConnectionClosedError(endpoint_url=str(http_response.url))

    def _after_describe(self, parsed: dict[str, Any], **_: Any) -> None:
        if not self.lagging:
            return
        reservations = []
        for reservation in parsed.get("Reservations", []):
            reservation["Instances"] = [i for i in reservation["Instances"] if i["InstanceId"] not in self._started]
            if reservation["Instances"]:
                reservations.append(reservation)
        if "Reservations" in parsed:
            parsed["Reservations"] = reservations
