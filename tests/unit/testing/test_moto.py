"""testing/moto.py: the one moto server starter, and the testing package importing neither moto nor pytest."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from urllib.parse import urlsplit

import boto3
import pytest

from airflow_provider_mlci.testing.moto import DLAMI_ID, moto_server

#: What the package that ships in the wheel may not import at import time: test dependencies.
TEST_ONLY = ("moto", "pytest", "_pytest", "boto3", "botocore")


def test_importing_the_testing_package_loads_no_test_dependency():
    modules = [
        "airflow_provider_mlci.testing",
        "airflow_provider_mlci.testing.airflow",
        "airflow_provider_mlci.testing.cluster",
        "airflow_provider_mlci.testing.moto",
        "airflow_provider_mlci.testing.procs",
        "airflow_provider_mlci.testing.repos",
    ]
    code = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}:\n"
        "    importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in {TEST_ONLY!r})))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []


def test_the_server_serves_s3_and_ec2_on_loopback_offers_the_deep_learning_ami_and_stops():
    with moto_server() as endpoint:
        url = urlsplit(endpoint)
        assert url.scheme == "http"
        assert url.hostname == "127.0.0.1"
        assert url.port
        session = boto3.Session(aws_access_key_id="testing", aws_secret_access_key="testing", region_name="us-east-1")
        s3 = session.client("s3", endpoint_url=endpoint)
        s3.create_bucket(Bucket="mlci-moto-server")
        assert "mlci-moto-server" in {b["Name"] for b in s3.list_buckets()["Buckets"]}
        images = session.client("ec2", endpoint_url=endpoint).describe_images(ImageIds=[DLAMI_ID])["Images"]
        assert [image["ImageId"] for image in images] == [DLAMI_ID]
        assert images[0]["Name"].startswith("Deep Learning Base OSS Nvidia Driver GPU AMI (Ubuntu 24.04)")
    with pytest.raises(ConnectionRefusedError), socket.create_connection((url.hostname, url.port), timeout=5):
        pass


def test_a_second_server_in_the_process_offers_the_ami_once():
    from moto.ec2.models import amis

    with moto_server(), moto_server():
        assert [ami["ami_id"] for ami in amis.AMIS].count(DLAMI_ID) == 1
