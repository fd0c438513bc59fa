"""What the GPU DAG runs against moto share: the AWS connection's keys, and what is left of ours.

The fixture that sets such a run up (``gpu_setup``) is in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

__all__ = ["ACCESS_KEY", "SECRET_KEY", "ours_alive", "slow_boot"]

#: Distinctive connection keys: moto accepts any, and they must never show up anywhere.
ACCESS_KEY = "AKIAMLCITESTKEY00042"
SECRET_KEY = "mlci-secret-Zq9xT7wLp3vR8sK2"


def ours_alive(endpoint: str) -> list[str]:
    """Our instances (tagged ``mlci:owner``) on the moto server at ``endpoint`` that are not gone:
    pending, running, stopping or stopped."""
    import boto3

    ec2 = boto3.client("ec2", endpoint_url=endpoint, region_name="us-east-1")
    pages = ec2.describe_instances(
        Filters=[
            {"Name": "tag-key", "Values": ["mlci:owner"]},
            {"Name": "instance-state-name", "Values": ["pending", "running", "stopping", "stopped"]},
        ]
    )["Reservations"]
    return [i["InstanceId"] for r in pages for i in r["Instances"]]


@contextlib.contextmanager
def slow_boot(looks: int) -> Iterator[dict[str, list[str]]]:
    """A stand-in for an instance's boot: moto's instances are ``running`` the moment they are
    launched, so nothing could ever wait for one. Inside this block every instance launched on
    the moto server starts ``pending`` and is ``running`` from the ``looks + 1``-th time a
    ``DescribeInstances`` names it by id (an ``instance-id`` filter, as the hook's looks do) on.

    Yields ``{instance id: the state each such look was answered with}``. moto's server runs in
    this process (``ThreadedMotoServer``), so its EC2 model can be patched here.

    :param looks: how many looks by id see the instance ``pending``
    """
    from moto.ec2.models.instances import Instance, InstanceBackend, InstanceState

    answered: dict[str, list[str]] = {}
    lock = threading.Lock()
    original_init = Instance.__init__
    original_describe = InstanceBackend.describe_instances

    def init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self._state = InstanceState("pending", 0)
        with lock:
            answered[self.id] = []

    def describe(self: Any, filters: Any = None) -> Any:
        with lock:
            for instance_id in (filters or {}).get("instance-id") or ():
                instance = self.get_instance_by_id(instance_id) if instance_id in answered else None
                if instance is None:
                    continue
                if instance._state.name == "pending" and len(answered[instance_id]) >= looks:
                    instance._state = InstanceState("running", 16)
                answered[instance_id].append(instance._state.name)
        return original_describe(self, filters)

    Instance.__init__ = init  # type: ignore[method-assign]
    InstanceBackend.describe_instances = describe  # type: ignore[method-assign]
    try:
        yield answered
    finally:
        Instance.__init__ = original_init  # type: ignore[method-assign]
        InstanceBackend.describe_instances = original_describe  # type: ignore[method-assign]
