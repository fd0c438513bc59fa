"""moto's S3/EC2/SSM/IAM server over HTTP on this machine, for tests and benchmarks.

One starter for the test suite (fixture ``moto_endpoint``) and ``bench/``::

    with moto_server() as endpoint:
        boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1").create_bucket(Bucket="b")

moto is imported when a server starts, not when this module is imported: it is a test
dependency (the ``dev`` extra), and this package ships in the wheel.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["DLAMI_ID", "moto_server"]

#: The AWS Deep Learning AMI the server offers (moto does not publish it; AWS does).
DLAMI_ID = "ami-0d1a7e5f00d1a4e1"

_DLAMI = {
    "ami_id": DLAMI_ID,
    "state": "available",
    "public": True,
    "owner_id": "898082745236",
    "image_location": "amazon/dlami",
    "root_device_type": "ebs",
    "root_device_name": "/dev/sda1",
    "description": "Deep Learning Base AMI (a stand-in: moto does not publish it)",
    "image_type": "machine",
    "architecture": "x86_64",
    "name": "Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04) 20261120",
    "virtualization_type": "hvm",
    "hypervisor": "xen",
    "creation_date": "2026-11-20T00:00:00.000Z",
}


@contextmanager
def moto_server() -> Iterator[str]:
    """Start moto's server on 127.0.0.1 at a free port; yield its endpoint URL; stop it.

    The server offers the Deep Learning AMI :data:`DLAMI_ID` that ``GpuInstanceSpec(ami=None)``
    looks up, besides moto's own images. Clients need credentials (any will do) and a region.
    """
    from moto.ec2.models import amis
    from moto.server import ThreadedMotoServer

    # Registered before the server's EC2 backend loads its images (once per process).
    if not any(ami["ami_id"] == DLAMI_ID for ami in amis.AMIS):
        amis.AMIS.append(dict(_DLAMI))
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()
