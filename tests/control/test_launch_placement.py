"""Placement: the strategy registry keyed by the spec's market, its order, refusal codes, the
request of a placement, and the fallback a launch walks when RunInstances refuses."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

import schemas
from common.errors import ConfigError
from common.placement import (
    SPOT_REQUEST_TYPE,
    STRATEGIES,
    MarketChoice,
    Placement,
    PlacementStrategy,
    Refusal,
    order,
    refusal,
    run_instances_request,
    strategy_for,
)
from common.pricing import Price
from common.status import Market
from control.launch_apply import try_placements
from control.placement import LaunchError, QuotaError, no_capacity
from infra.spec import tags as spec_tags

SUBNETS = {"us-east-1a": "subnet-a", "us-east-1b": "subnet-b"}
TYPES = ["g5.xlarge", "g4dn.xlarge"]
AZS = ["us-east-1a", "us-east-1b"]
NOW = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)


def _placements(market: str) -> tuple[Placement, ...]:
    return strategy_for(market).placements(TYPES, AZS, SUBNETS, {})


def test_every_market_choice_has_a_strategy_and_the_schema_lists_them():
    assert set(STRATEGIES) == {m.value for m in MarketChoice} == set(schemas.schema_enum("market_choice"))
    assert strategy_for("spot").markets == (Market.SPOT,)
    assert strategy_for("on-demand").markets == (Market.ON_DEMAND,)
    assert strategy_for("spot-then-on-demand").markets == (Market.SPOT, Market.ON_DEMAND)
    # an instance is bought in one purchase market: the state's and the attempts' enum
    assert set(schemas.schema_enum("market")) == {m.value for m in Market}


def test_an_unknown_market_names_the_valid_ones():
    with pytest.raises(
        ConfigError,
        match=r"\$.instance.market: 'cheap' is not one of \['on-demand', 'spot', 'spot-then-on-demand'\]",
    ):
        strategy_for("cheap")


def test_placements_go_type_by_type_over_the_azs_with_their_prices():
    price = Price(usd_per_hour=1.5, source="test")
    placements = strategy_for("spot").placements(
        TYPES, AZS, SUBNETS, {("spot", "g5.xlarge", "us-east-1b"): price}
    )
    assert [(p.instance_type, p.availability_zone, p.subnet_id) for p in placements] == [
        ("g5.xlarge", "us-east-1a", "subnet-a"),
        ("g5.xlarge", "us-east-1b", "subnet-b"),
        ("g4dn.xlarge", "us-east-1a", "subnet-a"),
        ("g4dn.xlarge", "us-east-1b", "subnet-b"),
    ]
    assert {p.market for p in placements} == {Market.SPOT}
    assert (placements[1].price_per_hour, placements[1].price_source) == (1.5, "test")
    assert (placements[0].price_per_hour, placements[0].price_source) == (None, "unknown")


def test_spot_then_on_demand_tries_every_spot_placement_first():
    placements = _placements("spot-then-on-demand")
    assert [p.label for p in placements] == [
        "g5.xlarge spot us-east-1a",
        "g5.xlarge spot us-east-1b",
        "g4dn.xlarge spot us-east-1a",
        "g4dn.xlarge spot us-east-1b",
        "g5.xlarge on-demand us-east-1a",
        "g5.xlarge on-demand us-east-1b",
        "g4dn.xlarge on-demand us-east-1a",
        "g4dn.xlarge on-demand us-east-1b",
    ]


def test_order_puts_the_interrupted_az_last_and_keeps_the_rest_in_order():
    placements = _placements("spot-then-on-demand")
    ordered = order(placements, avoid_azs=["us-east-1a"])
    assert [p.label for p in ordered] == [
        "g5.xlarge spot us-east-1b",
        "g4dn.xlarge spot us-east-1b",
        "g5.xlarge on-demand us-east-1b",
        "g4dn.xlarge on-demand us-east-1b",
        "g5.xlarge spot us-east-1a",
        "g4dn.xlarge spot us-east-1a",
        "g5.xlarge on-demand us-east-1a",
        "g4dn.xlarge on-demand us-east-1a",
    ]
    assert order(placements) == placements == order(placements, avoid_azs=["us-east-1z"])


def test_quota_codes_end_a_market_capacity_codes_fall_back_others_are_errors():
    assert refusal("VcpuLimitExceeded") is Refusal.QUOTA
    assert refusal("MaxSpotInstanceCountExceeded") is Refusal.QUOTA
    for code in ("InsufficientInstanceCapacity", "SpotMaxPriceTooLow", "capacity-not-available"):
        assert refusal(code) is Refusal.CAPACITY
    assert refusal("UnauthorizedOperation") is None


BASE = {
    "MinCount": 1,
    "MaxCount": 1,
    "LaunchTemplate": {"LaunchTemplateId": "lt-1", "Version": "$Latest"},
    "UserData": "#!/bin/bash\n",
    "NetworkInterfaces": [{"DeviceIndex": 0, "Groups": ["sg-1"], "AssociatePublicIpAddress": True}],
    "BlockDeviceMappings": [],
    "TagSpecifications": [
        {"ResourceType": kind, "Tags": [{"Key": "Project", "Value": "Chronos-Training"}]}
        for kind in ("instance", "volume", SPOT_REQUEST_TYPE)
    ],
}


def test_a_placement_becomes_its_run_instances_request():
    spot, *_, on_demand = _placements("spot-then-on-demand")
    request = run_instances_request(BASE, spot)
    assert request["InstanceType"] == "g5.xlarge"
    assert request["NetworkInterfaces"] == [{**BASE["NetworkInterfaces"][0], "SubnetId": "subnet-a"}]
    assert request["InstanceMarketOptions"]["MarketType"] == "spot"
    assert [s["ResourceType"] for s in request["TagSpecifications"]] == [
        "instance",
        "volume",
        SPOT_REQUEST_TYPE,
    ]
    plain = run_instances_request(BASE, on_demand)
    assert "InstanceMarketOptions" not in plain and plain["InstanceType"] == "g4dn.xlarge"
    # an on-demand launch creates no spot request: tagging one would fail it
    assert [s["ResourceType"] for s in plain["TagSpecifications"]] == ["instance", "volume"]
    assert "SubnetId" not in BASE["NetworkInterfaces"][0] and "InstanceType" not in BASE  # base untouched


def test_the_spot_request_type_is_the_one_infra_tags():
    assert SPOT_REQUEST_TYPE == spec_tags.SPOT_REQUEST_TYPE
    assert set(spec_tags.launch_tagged_types("spot")) == {"instance", "volume", SPOT_REQUEST_TYPE}


def test_no_capacity_lists_what_was_tried_and_suggests_another_market():
    tried = ["g5.xlarge on-demand us-east-1a: InsufficientInstanceCapacity"]
    error = no_capacity(strategy_for("on-demand"), tried)
    assert isinstance(error, LaunchError) and error.exit_code == 1
    assert "--market=spot" in str(error) and tried[0] in str(error)
    assert "--market" not in str(no_capacity(strategy_for("spot-then-on-demand"), tried))


# ------------------------------------------------------- the fallback a launch walks


@dataclass
class _Plan:
    """What try_placements reads of a launch plan."""

    placements: tuple[Placement, ...]
    market: str
    region: str = "us-east-1"
    launch_template_id: str = "lt-1"

    def run_instances_request(self, placement: Placement) -> dict:
        return run_instances_request(BASE, placement)


class _Ec2:
    """RunInstances refusing some (market, type, AZ) with a code; records every call."""

    def __init__(self, refuse) -> None:
        self.refuse, self.calls = refuse, []

    def run_instances(self, **kwargs):
        market = "spot" if "InstanceMarketOptions" in kwargs else "on-demand"
        subnet = kwargs["NetworkInterfaces"][0]["SubnetId"]
        az = {v: k for k, v in SUBNETS.items()}[subnet]
        self.calls.append(f"{kwargs['InstanceType']} {market} {az}")
        code = self.refuse(market, kwargs["InstanceType"], az)
        if code:
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "RunInstances")
        return {"Instances": [{"InstanceId": "i-0123456789abcdef0"}]}


def _walk(market: str, refuse):
    ec2 = _Ec2(refuse)
    placement, instance_id, refused = try_placements(
        _Plan(placements=_placements(market), market=market), ec2, lambda: NOW
    )
    return placement, ec2.calls, refused


@pytest.mark.parametrize("market", ["spot", "on-demand", "spot-then-on-demand"])
def test_capacity_refusals_follow_the_markets_fallback_order(market):
    """Every placement refused for capacity but the last: each is tried, in the strategy's order."""
    expected = [p.label for p in _placements(market)]
    last = expected[-1]
    placement, calls, refused = _walk(
        market, lambda m, t, az: None if f"{t} {m} {az}" == last else "InsufficientInstanceCapacity"
    )
    assert calls == expected and placement.label == last
    assert [f"{r['instance_type']} {r['market']} {r['availability_zone']}" for r in refused] == expected[:-1]
    assert refused[0] == {
        "attempt": 1,
        "market": expected[0].split()[1],
        "instance_type": "g5.xlarge",
        "availability_zone": "us-east-1a",
        "code": "InsufficientInstanceCapacity",
        "at": "2026-11-25T14:05:02Z",
    }


def test_spot_only_without_capacity_fails_listing_what_was_tried():
    codes = {"g5.xlarge": "InsufficientInstanceCapacity", "g4dn.xlarge": "SpotMaxPriceTooLow"}
    with pytest.raises(LaunchError) as caught:
        _walk("spot", lambda m, t, az: codes[t])
    message = str(caught.value)
    for label in (p.label for p in _placements("spot")):
        assert label in message
    assert "SpotMaxPriceTooLow" in message and "--market=spot-then-on-demand" in message
    assert "\n" not in message


def test_spot_then_on_demand_falls_to_on_demand():
    placement, calls, refused = _walk(
        "spot-then-on-demand", lambda m, t, az: "capacity-not-available" if m == "spot" else None
    )
    assert placement.market is Market.ON_DEMAND and placement.label == "g5.xlarge on-demand us-east-1a"
    assert len(calls) == 5 and {r["market"] for r in refused} == {"spot"}


def test_a_spot_quota_ends_spot_and_moves_to_on_demand_but_stops_a_spot_only_launch():
    """A quota counts every placement of its market: none of them is tried again."""
    quota = lambda m, t, az: "MaxSpotInstanceCountExceeded" if m == "spot" else None  # noqa: E731
    placement, calls, refused = _walk("spot-then-on-demand", quota)
    assert calls == ["g5.xlarge spot us-east-1a", "g5.xlarge on-demand us-east-1a"]
    assert placement.market is Market.ON_DEMAND and refused[0]["code"] == "MaxSpotInstanceCountExceeded"
    with pytest.raises(QuotaError, match="All G and VT Spot Instance Requests"):
        _walk("spot", quota)
    both = lambda m, t, az: "VcpuLimitExceeded"  # noqa: E731
    with pytest.raises(QuotaError, match=r"quota \(VcpuLimitExceeded\).*Spot") as caught:
        _walk("spot-then-on-demand", both)
    assert "g5.xlarge on-demand us-east-1a: VcpuLimitExceeded" in str(caught.value)


def test_another_error_is_not_a_refusal_of_the_place():
    with pytest.raises(ClientError):
        _walk("spot-then-on-demand", lambda m, t, az: "InvalidParameterValue")


def test_a_new_strategy_is_one_registry_entry():
    """What a new market entry gets from the registry's one class."""
    both = PlacementStrategy(name="both", markets=(Market.ON_DEMAND, Market.SPOT), instead=None)
    assert [p.market for p in both.placements(["g5.xlarge"], ["us-east-1a"], SUBNETS, {})] == [
        Market.ON_DEMAND,
        Market.SPOT,
    ]
