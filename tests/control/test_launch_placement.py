"""Placement: the strategy registry keyed by the spec's market, its order, and refusal codes."""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from common.status import Market
from control.cost import Price
from control.placement import (
    STRATEGIES,
    LaunchError,
    PlacementStrategy,
    Refusal,
    refusal,
    strategy_for,
)

SUBNETS = {"us-east-1a": "subnet-a", "us-east-1b": "subnet-b"}


def test_every_market_of_the_spec_has_a_strategy():
    assert set(STRATEGIES) == {m.value for m in Market}
    for market in Market:
        assert strategy_for(market.value).markets == (market,)


def test_an_unknown_market_names_the_valid_ones():
    with pytest.raises(
        ConfigError, match=r"\$.instance.market: 'cheap' is not one of \['on-demand', 'spot'\]"
    ):
        strategy_for("cheap")


def test_placements_go_type_by_type_over_the_azs_with_their_prices():
    price = Price(usd_per_hour=1.5, source="test")
    placements = strategy_for("spot").placements(
        ["g5.xlarge", "g4dn.xlarge"],
        ["us-east-1a", "us-east-1b"],
        SUBNETS,
        {("spot", "g5.xlarge", "us-east-1b"): price},
    )
    assert [(p.instance_type, p.availability_zone, p.subnet_id) for p in placements] == [
        ("g5.xlarge", "us-east-1a", "subnet-a"),
        ("g5.xlarge", "us-east-1b", "subnet-b"),
        ("g4dn.xlarge", "us-east-1a", "subnet-a"),
        ("g4dn.xlarge", "us-east-1b", "subnet-b"),
    ]
    assert {p.market for p in placements} == {Market.SPOT}
    assert placements[1].price == price and placements[0].price.source == "unknown"


def test_a_strategy_over_two_markets_tries_every_spot_placement_first():
    """What a new market entry (e.g. spot, then on-demand) gets from the registry's one class."""
    both = PlacementStrategy(name="both", markets=(Market.SPOT, Market.ON_DEMAND), instead="spot")
    placements = both.placements(["g5.xlarge"], ["us-east-1a", "us-east-1b"], SUBNETS, {})
    assert [(p.market, p.availability_zone) for p in placements] == [
        (Market.SPOT, "us-east-1a"),
        (Market.SPOT, "us-east-1b"),
        (Market.ON_DEMAND, "us-east-1a"),
        (Market.ON_DEMAND, "us-east-1b"),
    ]


def test_quota_codes_stop_capacity_codes_fall_back_others_are_errors():
    assert refusal("VcpuLimitExceeded") is Refusal.QUOTA
    assert refusal("MaxSpotInstanceCountExceeded") is Refusal.QUOTA
    assert refusal("InsufficientInstanceCapacity") is Refusal.CAPACITY
    assert refusal("SpotMaxPriceTooLow") is Refusal.CAPACITY
    assert refusal("UnauthorizedOperation") is None


def test_no_capacity_suggests_the_other_market_and_exits_failed():
    error = strategy_for("on-demand").no_capacity(["g5.xlarge/us-east-1a: InsufficientInstanceCapacity"])
    assert isinstance(error, LaunchError) and error.exit_code == 1
    assert "--market=spot" in str(error) and "g5.xlarge/us-east-1a" in str(error)
