"""Prices: every allowed instance type has a dated list price; spot history is used when it answers."""

from __future__ import annotations

from datetime import UTC, datetime

from botocore.exceptions import ClientError

from common.pricing import ON_DEMAND_USD_PER_HOUR, PRICE_SOURCE, Price, launch_price
from infra.spec.names import GPU_INSTANCE_TYPES


def test_every_allowed_instance_type_has_an_on_demand_price():
    assert set(ON_DEMAND_USD_PER_HOUR) == set(GPU_INSTANCE_TYPES)
    assert all(0.1 < p < 50 for p in ON_DEMAND_USD_PER_HOUR.values())
    assert "us-east-1" in PRICE_SOURCE


class _Ec2:
    def __init__(self, history=None, fail=False):
        self.history, self.fail = history or [], fail

    def describe_spot_price_history(self, **kwargs):
        if self.fail:
            raise ClientError(
                {"Error": {"Code": "UnauthorizedOperation", "Message": "denied"}}, "DescribeSpotPriceHistory"
            )
        return {"SpotPriceHistory": self.history}


def test_spot_price_from_history_else_the_list_price():
    history = [
        {
            "AvailabilityZone": "us-east-1a",
            "SpotPrice": "0.45",
            "Timestamp": datetime(2026, 11, 25, 10, tzinfo=UTC),
        },
        {
            "AvailabilityZone": "us-east-1a",
            "SpotPrice": "0.39",
            "Timestamp": datetime(2026, 11, 25, 12, tzinfo=UTC),
        },
        {
            "AvailabilityZone": "us-east-1b",
            "SpotPrice": "0.10",
            "Timestamp": datetime(2026, 11, 25, 13, tzinfo=UTC),
        },
    ]
    spot = launch_price(_Ec2(history), "g5.xlarge", "us-east-1a", "spot", local=False)
    assert spot == Price(usd_per_hour=0.39, source="spot-history")
    assert (
        launch_price(_Ec2(fail=True), "g5.xlarge", "us-east-1a", "spot", local=False).source
        == "on-demand-table"
    )
    assert (
        launch_price(_Ec2(history), "g5.xlarge", "us-east-1a", "on-demand", local=False).usd_per_hour == 1.006
    )
    assert (
        launch_price(_Ec2(history), "g5.xlarge", "us-east-1a", "spot", local=True).source == "on-demand-table"
    )
    assert Price(usd_per_hour=1.2, source="x").cost(1800) == 0.6


def _stubbed_ec2():
    import boto3
    from botocore.stub import Stubber

    session = boto3.Session(aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1")
    ec2 = session.client("ec2")
    return ec2, Stubber(ec2)


def test_spot_price_asks_for_the_price_in_effect_now_and_takes_the_newest_point():
    from common.pricing import spot_price

    now = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)
    ec2, stub = _stubbed_ec2()
    points = [  # AWS returns the last change before StartTime too: that is the price in effect now
        {
            "AvailabilityZone": "us-east-1a",
            "InstanceType": "g5.xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.52",
            "Timestamp": datetime(2026, 11, 20, 3, tzinfo=UTC),
        },
        {
            "AvailabilityZone": "us-east-1a",
            "InstanceType": "g5.xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.41",
            "Timestamp": datetime(2026, 11, 25, 9, tzinfo=UTC),
        },
        {
            "AvailabilityZone": "us-east-1b",
            "InstanceType": "g5.xlarge",
            "ProductDescription": "Linux/UNIX",
            "SpotPrice": "0.30",
            "Timestamp": datetime(2026, 11, 25, 13, tzinfo=UTC),
        },
    ]
    stub.add_response(
        "describe_spot_price_history",
        {"SpotPriceHistory": points},
        {
            "InstanceTypes": ["g5.xlarge"],
            "ProductDescriptions": ["Linux/UNIX"],
            "AvailabilityZone": "us-east-1a",
            "StartTime": now,
            "MaxResults": 20,
        },
    )
    with stub:
        price = spot_price(ec2, "g5.xlarge", "us-east-1a", now=now)
    stub.assert_no_pending_responses()
    assert price == Price(usd_per_hour=0.41, source="spot-history")


def test_launch_price_passes_its_clock_as_start_time():
    now = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)
    ec2, stub = _stubbed_ec2()
    stub.add_response(
        "describe_spot_price_history",
        {
            "SpotPriceHistory": [
                {
                    "AvailabilityZone": "us-east-1a",
                    "SpotPrice": "0.40",
                    "Timestamp": datetime(2026, 11, 25, 14, tzinfo=UTC),
                }
            ]
        },
        {
            "InstanceTypes": ["g5.xlarge"],
            "ProductDescriptions": ["Linux/UNIX"],
            "AvailabilityZone": "us-east-1a",
            "StartTime": now,
            "MaxResults": 20,
        },
    )
    with stub:
        price = launch_price(ec2, "g5.xlarge", "us-east-1a", "spot", local=False, clock=lambda: now)
    stub.assert_no_pending_responses()
    assert price.usd_per_hour == 0.40


def test_newest_point_per_availability_zone():
    from common.pricing import newest_per_az

    t = datetime(2026, 11, 25, tzinfo=UTC)
    history = [
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.50", "Timestamp": t.replace(hour=1)},
        {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.31", "Timestamp": t.replace(hour=2)},
        {"AvailabilityZone": "us-east-1a", "SpotPrice": "0.45", "Timestamp": t.replace(hour=3)},
        {"AvailabilityZone": "us-east-1b", "SpotPrice": "0.33", "Timestamp": t.replace(hour=1)},
    ]
    assert {az: p["SpotPrice"] for az, p in newest_per_az(history).items()} == {
        "us-east-1a": "0.45",
        "us-east-1b": "0.31",
    }
