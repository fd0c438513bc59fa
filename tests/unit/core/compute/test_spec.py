from __future__ import annotations

import json

import pytest

from airflow_provider_mlci.core.compute.spec import GpuInstanceSpec, LaunchCandidate, Market
from airflow_provider_mlci.exceptions import MlciConfigError


def test_the_instance_type_comes_from_the_type_then_the_gpu_then_the_default():
    assert GpuInstanceSpec().resolved_instance_type == "g4dn.xlarge"
    assert GpuInstanceSpec(gpu="a10g").resolved_instance_type == "g5.xlarge"
    assert GpuInstanceSpec(gpu="V100").resolved_instance_type == "p3.2xlarge"
    assert GpuInstanceSpec(instance_type="g6e.xlarge").resolved_instance_type == "g6e.xlarge"
    assert GpuInstanceSpec(gpu="l4", instance_type="g6.xlarge").resolved_instance_type == "g6.xlarge"


def test_defaults_match_the_issue():
    spec = GpuInstanceSpec()
    assert (spec.hdd_size_gb, spec.idle_timeout, spec.max_lifetime) == (35, 300, 6 * 3600)
    assert spec.spot is False
    assert spec.spot_fallback_on_demand is True
    assert spec.spot_max_price is None
    assert spec.agent_requirement is None  # the worker's own code, as a wheel (core.compute.agent_dist)


def test_candidates_go_market_then_type_then_zone():
    spec = GpuInstanceSpec(
        gpu="t4",
        fallback_instance_types=("g5.xlarge", "g4dn.xlarge"),
        availability_zones=("us-east-1a", "us-east-1b"),
        spot=True,
    )
    tried = [(c.market.value, c.instance_type, c.availability_zone) for c in spec.candidates()]
    assert tried == [
        ("spot", "g4dn.xlarge", "us-east-1a"),
        ("spot", "g4dn.xlarge", "us-east-1b"),
        ("spot", "g5.xlarge", "us-east-1a"),
        ("spot", "g5.xlarge", "us-east-1b"),
        ("on-demand", "g4dn.xlarge", "us-east-1a"),
        ("on-demand", "g4dn.xlarge", "us-east-1b"),
        ("on-demand", "g5.xlarge", "us-east-1a"),
        ("on-demand", "g5.xlarge", "us-east-1b"),
    ]
    assert GpuInstanceSpec(spot=True, spot_fallback_on_demand=False).candidates() == [
        LaunchCandidate(instance_type="g4dn.xlarge", availability_zone=None, market=Market.SPOT)
    ]
    assert [c.market for c in GpuInstanceSpec().candidates()] == [Market.ON_DEMAND]


def test_on_demand_drops_spot_and_its_price():
    spec = GpuInstanceSpec(spot=True, spot_max_price=0.5)
    again = spec.on_demand()
    assert again.spot is False
    assert again.spot_max_price is None
    assert [c.market for c in again.candidates()] == [Market.ON_DEMAND]


def test_json_round_trips_through_from_mapping():
    spec = GpuInstanceSpec(
        gpu="t4",
        availability_zones=("us-east-1a",),
        fallback_instance_types=("g5.xlarge",),
        security_group_ids=("sg-1",),
        tags={"team": "fraud"},
        spot=True,
        spot_max_price=0.4,
        startup_script="nvidia-smi",
    )
    data = json.loads(json.dumps(spec.to_json()))
    assert data["availability_zones"] == ["us-east-1a"]
    assert GpuInstanceSpec.from_mapping(data) == spec
    assert GpuInstanceSpec.from_mapping(spec) is spec


def test_a_single_zone_given_as_a_string_is_one_zone():
    assert GpuInstanceSpec(availability_zones="us-east-1c").availability_zones == ("us-east-1c",)


@pytest.mark.parametrize(
    ("fields", "names"),
    [
        ({"gpu": "rtx4090"}, "rtx4090"),
        ({"gpu": "t4", "instance_type": "p3.2xlarge"}, "instance_type"),
        ({"hdd_size_gb": 0}, "hdd_size_gb"),
        ({"max_lifetime": -5}, "max_lifetime"),
        ({"idle_timeout": 3600, "max_lifetime": 600}, "idle_timeout"),
        ({"spot_max_price": 0.3}, "spot_max_price"),
        ({"spot": True, "spot_max_price": -1.0}, "spot_max_price"),
        ({"tags": {"mlci:owner": "me"}}, "mlci:owner"),
        ({"tags": {"aws:cloudformation": "x"}}, "aws:cloudformation"),
        ({"max_launch_attempts": 0}, "max_launch_attempts"),
        ({"instance_type": ""}, "instance_type"),
    ],
)
def test_bad_values_are_refused_naming_the_field(fields, names):
    with pytest.raises(MlciConfigError, match=names):
        GpuInstanceSpec(**fields)


def test_an_unknown_key_is_refused_by_name():
    with pytest.raises(MlciConfigError, match="'cloud_gpu'"):
        GpuInstanceSpec.from_mapping({"gpu": "t4", "cloud_gpu": "t4"})
    with pytest.raises(MlciConfigError, match="mapping"):
        GpuInstanceSpec.from_mapping(["t4"])


def test_importing_the_spec_is_light():
    import subprocess
    import sys

    code = (
        "import sys; import airflow_provider_mlci.core.compute.spec; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('airflow', 'boto3', 'botocore')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
