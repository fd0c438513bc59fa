"""What the GPU DAG runs against moto share: the AWS connection's keys, and what is left of ours.

The fixture that sets such a run up (``gpu_setup``) is in ``tests/integration/conftest.py``.
"""

from __future__ import annotations

__all__ = ["ACCESS_KEY", "SECRET_KEY", "ours_alive"]

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
