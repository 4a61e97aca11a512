"""Prices: every instance type the stack allows has a list price; spot history is used when it answers."""

from __future__ import annotations

from datetime import UTC, datetime

from control.cost import ON_DEMAND_USD_PER_HOUR, PRICE_SOURCE, Price, launch_price
from infra.spec import GPU_INSTANCE_TYPES


def test_every_allowed_instance_type_has_an_on_demand_price():
    assert set(ON_DEMAND_USD_PER_HOUR) == set(GPU_INSTANCE_TYPES)
    assert all(0.1 < p < 50 for p in ON_DEMAND_USD_PER_HOUR.values())
    assert "us-east-1" in PRICE_SOURCE


class _Ec2:
    def __init__(self, history=None, fail=False):
        self.history, self.fail = history or [], fail

    def describe_spot_price_history(self, **kwargs):
        if self.fail:
            raise RuntimeError("UnauthorizedOperation")
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
