"""core/compute/cost.py: spot and on-demand prices, the table fallback, an instance's cost.

The EC2 and Price List responses are given through botocore's ``Stubber`` (a stub, named as
such): it checks each request's parameters and each response against the services' models,
so the shapes are the real ones. moto's spot price history has one fixed price and moto has no
Price List API at all; ``tests/integration/test_gpu_cost.py`` runs against moto's server.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from botocore.exceptions import ClientError
from botocore.stub import ANY, Stubber

from airflow_provider_mlci.core.compute import cost as cost_module
from airflow_provider_mlci.core.compute.cost import (
    InstanceCost,
    clear_price_cache,
    cost_summary,
    ended_at_of,
    hourly_price,
    instance_cost,
    on_demand_price,
    spot_price,
)

LAUNCH = datetime(2026, 11, 30, 2, 0, 0, tzinfo=UTC)


@pytest.fixture(autouse=True)
def _fresh_price_cache():
    clear_price_cache()
    yield
    clear_price_cache()


def client(service: str) -> object:
    return boto3.client(service, region_name="us-east-1", aws_access_key_id="testing", aws_secret_access_key="testing")


def history_entry(price: str, when: datetime, az: str = "eu-west-1a", instance_type: str = "g4dn.xlarge") -> dict:
    return {
        "AvailabilityZone": az,
        "InstanceType": instance_type,
        "ProductDescription": "Linux/UNIX",
        "SpotPrice": price,
        "Timestamp": when,
    }


def spot_stub(ec2: object, entries: list[dict], az: str = "eu-west-1a") -> Stubber:
    stub = Stubber(ec2)
    expected = {
        "InstanceTypes": ["g4dn.xlarge"],
        "ProductDescriptions": ["Linux/UNIX"],
        "AvailabilityZone": az,
        "StartTime": LAUNCH - timedelta(hours=1),
        "EndTime": LAUNCH + timedelta(hours=1),
    }
    stub.add_response("describe_spot_price_history", {"SpotPriceHistory": entries}, expected)
    return stub


def price_list_product(usd: str, instance_type: str = "g4dn.xlarge", region: str = "eu-west-1") -> str:
    """One ``PriceList`` item as AWS documents it: a JSON string with product, OnDemand and Reserved terms."""
    return json.dumps(
        {
            "product": {
                "productFamily": "Compute Instance",
                "attributes": {
                    "instanceType": instance_type,
                    "regionCode": region,
                    "operatingSystem": "Linux",
                    "tenancy": "Shared",
                    "preInstalledSw": "NA",
                    "capacitystatus": "Used",
                    "gpu": "1",
                },
                "sku": "CMTHC5GCXZ3YVTAC",
            },
            "serviceCode": "AmazonEC2",
            "terms": {
                "OnDemand": {
                    "CMTHC5GCXZ3YVTAC.JRTCKXETXF": {
                        "priceDimensions": {
                            "CMTHC5GCXZ3YVTAC.JRTCKXETXF.6YS6EN2CT7": {
                                "unit": "Hrs",
                                "endRange": "Inf",
                                "description": f"${usd} per On Demand Linux {instance_type} Instance Hour",
                                "appliesTo": [],
                                "rateCode": "CMTHC5GCXZ3YVTAC.JRTCKXETXF.6YS6EN2CT7",
                                "beginRange": "0",
                                "pricePerUnit": {"USD": usd},
                            }
                        },
                        "sku": "CMTHC5GCXZ3YVTAC",
                        "effectiveDate": "2026-11-01T00:00:00Z",
                        "offerTermCode": "JRTCKXETXF",
                        "termAttributes": {},
                    }
                },
                "Reserved": {
                    "CMTHC5GCXZ3YVTAC.38NPMPTW36": {
                        "priceDimensions": {
                            "CMTHC5GCXZ3YVTAC.38NPMPTW36.2TG2D8R56U": {
                                "unit": "Quantity",
                                "pricePerUnit": {"USD": "2765"},
                                "description": "Upfront Fee",
                            }
                        },
                        "offerTermCode": "38NPMPTW36",
                        "termAttributes": {"LeaseContractLength": "1yr", "PurchaseOption": "All Upfront"},
                    }
                },
            },
            "version": "20261101000000",
            "publicationDate": "2026-11-01T00:00:00Z",
        }
    )


def pricing_stub(pricing: object, price_list: list[str], instance_type: str = "g4dn.xlarge") -> Stubber:
    stub = Stubber(pricing)
    filters = [
        {"Type": "TERM_MATCH", "Field": field, "Value": value}
        for field, value in (
            ("instanceType", instance_type),
            ("regionCode", "eu-west-1"),
            ("operatingSystem", "Linux"),
            ("tenancy", "Shared"),
            ("preInstalledSw", "NA"),
            ("capacitystatus", "Used"),
        )
    ]
    stub.add_response(
        "get_products",
        {"FormatVersion": "aws_v1", "PriceList": price_list},
        {"ServiceCode": "AmazonEC2", "Filters": filters, "MaxResults": ANY},
    )
    return stub


def described(**overrides: object) -> dict:
    """One instance as ``DescribeInstances`` gives it (the fields the cost reads, and a few more)."""
    instance = {
        "InstanceId": "i-0abc1234def567890",
        "InstanceType": "g4dn.xlarge",
        "LaunchTime": LAUNCH,
        "Placement": {"AvailabilityZone": "eu-west-1a", "Tenancy": "default"},
        "State": {"Code": 32, "Name": "shutting-down"},
        "StateTransitionReason": "User initiated (2026-11-30 02:20:34 GMT)",
        "InstanceLifecycle": "spot",
    }
    instance.update(overrides)
    return {key: value for key, value in instance.items() if value is not None}


# ---------------------------------------------------------------------------------- spot


def test_the_spot_price_is_the_newest_change_not_after_the_launch():
    ec2 = client("ec2")
    entries = [
        history_entry("0.2100", LAUNCH + timedelta(minutes=20)),  # after the launch
        history_entry("0.1578", LAUNCH - timedelta(minutes=50)),  # in effect at the launch
        history_entry("0.1490", LAUNCH - timedelta(hours=3)),  # the change before that
        history_entry("0.9999", LAUNCH - timedelta(minutes=5), az="eu-west-1b"),  # another zone
    ]
    with spot_stub(ec2, entries) as stub:
        assert spot_price(ec2, "g4dn.xlarge", "eu-west-1a", LAUNCH) == 0.1578
        stub.assert_no_pending_responses()


def test_with_only_later_changes_the_spot_price_is_the_oldest_one():
    ec2 = client("ec2")
    entries = [
        history_entry("0.2200", LAUNCH + timedelta(minutes=40)),
        history_entry("0.2100", LAUNCH + timedelta(minutes=10)),
    ]
    with spot_stub(ec2, entries):
        assert spot_price(ec2, "g4dn.xlarge", "eu-west-1a", LAUNCH) == 0.21


def test_no_spot_history_is_no_price():
    ec2 = client("ec2")
    with spot_stub(ec2, []):
        assert spot_price(ec2, "g4dn.xlarge", "eu-west-1a", LAUNCH) is None


# ---------------------------------------------------------------------------------- on-demand


def test_the_on_demand_price_is_read_from_the_price_lists_on_demand_terms_and_asked_once():
    pricing = client("pricing")
    with pricing_stub(pricing, [price_list_product("0.5870000000")]) as stub:
        assert on_demand_price(pricing, "g4dn.xlarge", "eu-west-1") == 0.587
        # The stub holds one response: a second request would fail with "Unexpected call".
        assert on_demand_price(pricing, "g4dn.xlarge", "eu-west-1") == 0.587
        stub.assert_no_pending_responses()
    # Another type is another question.
    with pricing_stub(pricing, [price_list_product("1.1230000000", "g5.xlarge")], "g5.xlarge"):
        assert on_demand_price(pricing, "g5.xlarge", "eu-west-1") == 1.123


def test_a_price_list_with_no_product_is_no_price_and_is_remembered():
    pricing = client("pricing")
    with pricing_stub(pricing, []):
        assert on_demand_price(pricing, "g4dn.xlarge", "eu-west-1") is None
        assert on_demand_price(pricing, "g4dn.xlarge", "eu-west-1") is None


def test_a_failed_price_list_request_is_raised_and_not_asked_again_for_a_while(monkeypatch):
    pricing = client("pricing")
    stub = Stubber(pricing)
    stub.add_client_error("get_products", service_error_code="ThrottlingException", http_status_code=400)
    stub.add_response("get_products", {"FormatVersion": "aws_v1", "PriceList": [price_list_product("0.5870000000")]})
    with stub:
        with pytest.raises(ClientError, match="ThrottlingException"):
            on_demand_price(pricing, "g4dn.xlarge", "eu-west-1")
        with pytest.raises(ClientError, match="ThrottlingException"):  # remembered: not asked
            on_demand_price(pricing, "g4dn.xlarge", "eu-west-1")
        monkeypatch.setattr(cost_module, "_FAILURE_MEMORY_S", 0.0)
        assert on_demand_price(pricing, "g4dn.xlarge", "eu-west-1") == 0.587
        stub.assert_no_pending_responses()


# ---------------------------------------------------------------------------------- fallback


def test_the_table_stands_in_when_the_api_fails_and_the_warning_names_the_type_and_why(caplog):
    pricing = client("pricing")
    stub = Stubber(pricing)
    stub.add_client_error("get_products", service_error_code="AccessDeniedException", http_status_code=400)
    args = {"market": "on-demand", "region": "eu-west-1", "availability_zone": "eu-west-1a", "launched_at": LAUNCH}
    with stub, caplog.at_level(logging.WARNING):
        price = hourly_price(instance_type="g4dn.xlarge", pricing_client=pricing, table={"g4dn.xlarge": 0.526}, **args)
    assert price == (0.526, "table")
    assert "g4dn.xlarge" in caplog.text
    assert "AccessDeniedException" in caplog.text
    assert "[mlci] gpu_prices" in caplog.text


def test_the_table_stands_in_for_an_empty_spot_history():
    ec2 = client("ec2")
    with spot_stub(ec2, []):
        price = hourly_price(
            instance_type="g4dn.xlarge",
            market="spot",
            region="eu-west-1",
            availability_zone="eu-west-1a",
            launched_at=LAUNCH,
            ec2_client=ec2,
            table={"g4dn.xlarge": 0.3},
        )
    assert price == (0.3, "table")


def test_no_price_anywhere_is_none_and_the_log_says_so(caplog):
    pricing = client("pricing")
    with pricing_stub(pricing, []), caplog.at_level(logging.WARNING):
        price = hourly_price(
            instance_type="g4dn.xlarge",
            market="on-demand",
            region="eu-west-1",
            availability_zone="eu-west-1a",
            launched_at=LAUNCH,
            pricing_client=pricing,
            table={"g5.xlarge": 1.0},
        )
    assert price == (None, None)
    assert "its cost is unknown" in caplog.text
    assert "lists no Linux on-demand price in eu-west-1" in caplog.text


# ---------------------------------------------------------------------------------- one instance


def test_a_spot_instance_costs_its_seconds_at_the_spot_price_at_launch():
    ec2 = client("ec2")
    ended = LAUNCH + timedelta(seconds=1234)
    instance = described(StateTransitionReason="User initiated (2026-11-30 02:20:34 GMT)")
    with spot_stub(ec2, [history_entry("0.1578", LAUNCH - timedelta(minutes=50))]):
        cost = instance_cost(instance, region="eu-west-1", ended_at=ended, ec2_client=ec2)
    assert cost == InstanceCost(
        instance_id="i-0abc1234def567890",
        instance_type="g4dn.xlarge",
        market="spot",
        region="eu-west-1",
        availability_zone="eu-west-1a",
        launched_at="2026-11-30T02:00:00+00:00",
        ended_at="2026-11-30T02:20:34+00:00",
        seconds=1234.0,
        hourly_usd=0.1578,
        price_source="spot-price-history",
    )
    assert cost.cost_usd == 0.0541  # 1234 / 3600 * 0.1578 = 0.05409
    assert json.loads(json.dumps(cost.to_json()))["cost_usd"] == 0.0541
    assert cost.describe() == (
        "Instance i-0abc1234def567890 (g4dn.xlarge, spot, eu-west-1a) ran 1234 s at 0.1578 USD/h "
        "(spot-price-history): 0.0541 USD"
    )


def test_an_on_demand_instance_is_priced_from_the_price_list():
    pricing = client("pricing")
    # A naive LaunchTime is UTC; no earlier end recorded: the teardown's time counts.
    instance = described(
        InstanceLifecycle=None,
        LaunchTime=LAUNCH.replace(tzinfo=None) + timedelta(seconds=0.5),
        StateTransitionReason="",
    )
    with pricing_stub(pricing, [price_list_product("0.5870000000")]):
        cost = instance_cost(
            instance, region="eu-west-1", ended_at=LAUNCH + timedelta(hours=2, seconds=0.5), pricing_client=pricing
        )
    assert (cost.market, cost.seconds, cost.hourly_usd, cost.price_source) == (
        "on-demand",
        7200.0,
        0.587,
        "aws-price-list",
    )
    assert cost.cost_usd == 1.174


def test_an_instance_that_ended_before_the_teardown_counts_until_ec2_recorded_its_end():
    reclaimed = described(StateTransitionReason="Service initiated (2026-11-30 02:10:00 GMT)")
    teardown = LAUNCH + timedelta(hours=1)
    assert ended_at_of(reclaimed, teardown) == LAUNCH + timedelta(minutes=10)
    # The teardown's own termination, recorded to the second: the teardown's time counts.
    ours = described(StateTransitionReason="User initiated (2026-11-30 02:59:59 GMT)")
    assert ended_at_of(ours, teardown) == teardown
    assert ended_at_of(described(StateTransitionReason=""), teardown) == teardown


def test_no_price_gives_no_cost_and_the_summary_totals_what_is_known():
    priced = InstanceCost(
        instance_id="i-1",
        instance_type="g4dn.xlarge",
        market="spot",
        region="eu-west-1",
        availability_zone="eu-west-1a",
        launched_at="2026-11-30T02:00:00+00:00",
        ended_at="2026-11-30T03:00:00+00:00",
        seconds=3600.0,
        hourly_usd=0.25,
        price_source="table",
    )
    unpriced = dataclasses.replace(priced, instance_id="i-2", hourly_usd=None, price_source=None)
    assert unpriced.cost_usd is None
    assert "no price is known for g4dn.xlarge in eu-west-1: cost unknown" in unpriced.describe()
    summary = cost_summary([priced, unpriced])
    assert summary["total_usd"] == 0.25
    assert summary["seconds"] == 7200.0
    assert summary["unpriced"] == ["i-2"]
    assert summary["error"] is None
    assert [i["instance_id"] for i in summary["instances"]] == ["i-1", "i-2"]
    assert cost_summary([], error="boom") == {
        "instances": [],
        "total_usd": None,
        "seconds": 0,
        "unpriced": [],
        "error": "boom",
    }
