"""What compute and storage cost: the dated on-demand table, the EBS gp3 rate, the spot price.

On-demand prices are USD per hour for Linux in us-east-1 (N. Virginia), read from the
AWS EC2 On-Demand pricing page (https://aws.amazon.com/ec2/pricing/on-demand/) on
:data:`PRICE_TABLE_READ_ON` for g4dn and g5. Other regions differ by a few to ~30 %;
the table is an estimate for budgeting, not a bill. The EBS gp3 rate is the us-east-1
storage price per GB-month from the Amazon EBS pricing page
(https://aws.amazon.com/ebs/pricing/), read the same day. Spot prices come from
``DescribeSpotPriceHistory`` (the price in effect at launch in that AZ) when the API answers.

Both the laptop (launch plans, ``invoke cost``) and the instance (the ledger in
training.json, the ``max_cost`` watcher) price from here.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common.timeutil import Clock, utc_now

log = logging.getLogger(__name__)

SPOT_PRODUCT = "Linux/UNIX"  # the DLAMI's product; one product, so one price series per AZ

PRICE_TABLE_READ_ON = "2026-11-25"
PRICE_TABLE_PAGE = "https://aws.amazon.com/ec2/pricing/on-demand/"
PRICE_SOURCE = (
    f"AWS EC2 On-Demand pricing ({PRICE_TABLE_PAGE}), Linux, us-east-1 list prices (USD/hour) "
    f"for g4dn and g5, read {PRICE_TABLE_READ_ON}; other regions differ"
)

# Price sources, as the state's attempts and training.json record them.
SPOT_HISTORY = "spot-history"
ON_DEMAND_TABLE = "on-demand-table"
UNKNOWN = "unknown"

ON_DEMAND_USD_PER_HOUR: dict[str, float] = {
    "g4dn.xlarge": 0.526,
    "g4dn.2xlarge": 0.752,
    "g4dn.4xlarge": 1.204,
    "g4dn.8xlarge": 2.176,
    "g4dn.12xlarge": 3.912,
    "g4dn.16xlarge": 4.352,
    "g4dn.metal": 7.824,
    "g5.xlarge": 1.006,
    "g5.2xlarge": 1.212,
    "g5.4xlarge": 1.624,
    "g5.8xlarge": 2.448,
    "g5.12xlarge": 5.672,
    "g5.16xlarge": 4.096,
    "g5.24xlarge": 8.144,
    "g5.48xlarge": 16.288,
}

EBS_GP3_USD_PER_GB_MONTH = 0.08  # us-east-1, https://aws.amazon.com/ebs/pricing/, read PRICE_TABLE_READ_ON
# EBS storage bills per second of the volume's life; the EBS pricing page's worked example
# prorates a GB-month over a 30-day month (GB x seconds / (86,400 s x 30 days)).
EBS_SECONDS_PER_MONTH = 86_400 * 30


@dataclass(frozen=True, kw_only=True)
class Price:
    """An hourly price and where it came from."""

    usd_per_hour: float | None
    source: str  # SPOT_HISTORY | ON_DEMAND_TABLE | UNKNOWN

    def cost(self, seconds: float) -> float | None:
        """USD for ``seconds`` of running (``None`` when the price is unknown)."""
        if self.usd_per_hour is None:
            return None
        return round(self.usd_per_hour * max(seconds, 0.0) / 3600.0, 4)


def on_demand_price(instance_type: str) -> Price:
    """The list price of ``instance_type`` from the table."""
    value = ON_DEMAND_USD_PER_HOUR.get(instance_type)
    return Price(usd_per_hour=value, source=ON_DEMAND_TABLE if value is not None else UNKNOWN)


def ebs_usd(volume_gb: float, seconds: float, *, usd_per_gb_month: float = EBS_GP3_USD_PER_GB_MONTH) -> float:
    """USD for a gp3 volume of ``volume_gb`` that lived ``seconds`` (prorated per second)."""
    return usd_per_gb_month * max(volume_gb, 0.0) * max(seconds, 0.0) / EBS_SECONDS_PER_MONTH


def newest_per_az(history: Iterable[Mapping[str, Any]]) -> dict[str, Mapping[str, Any]]:
    """The newest ``SpotPriceHistory`` point of each availability zone."""
    newest: dict[str, Mapping[str, Any]] = {}
    for point in history:
        az = point.get("AvailabilityZone")
        stamp = point.get("Timestamp")
        if not az or stamp is None:
            continue
        if az not in newest or stamp > newest[az]["Timestamp"]:
            newest[az] = point
    return newest


def spot_price(ec2: Any, instance_type: str, availability_zone: str, *, now: datetime) -> Price | None:
    """The spot price of ``instance_type`` in effect in ``availability_zone`` at ``now``, or ``None``.

    ``StartTime=now``: without it the history starts at whatever AWS chooses and
    the first page may end long before now. With it, AWS returns the prices since
    then plus "the last price change before the start time, which is the effective
    price as of the start time" (EC2 API Reference, DescribeSpotPriceHistory), so
    the newest point of the AZ is the price now even when it changed days ago.

    Any API failure (no permission, unsupported in the region) gives ``None``:
    the caller falls back to the on-demand table.
    """
    kwargs: dict[str, Any] = {
        "InstanceTypes": [instance_type],
        "ProductDescriptions": [SPOT_PRODUCT],
        "AvailabilityZone": availability_zone,
        "StartTime": now,
        "MaxResults": 20,
    }
    try:
        history = ec2.describe_spot_price_history(**kwargs).get("SpotPriceHistory", [])
    except (ClientError, BotoCoreError) as exc:  # the price is informative only; never fail a launch on it
        log.info("no spot price for %s in %s: %s", instance_type, availability_zone, exc)
        return None
    newest = newest_per_az(h for h in history if h.get("ProductDescription", SPOT_PRODUCT) == SPOT_PRODUCT)
    point = newest.get(availability_zone)
    if point is None:
        return None
    return Price(usd_per_hour=float(point["SpotPrice"]), source=SPOT_HISTORY)


def launch_price(
    ec2: Any | None,
    instance_type: str,
    availability_zone: str,
    market: str,
    *,
    local: bool,
    clock: Clock = utc_now,
) -> Price:
    """The price a launch (or a relaunch) is planned with.

    Spot on AWS: the spot price in effect at ``clock()``, else the on-demand
    table (an upper bound). Local mode never asks the emulator for spot prices:
    it shows the list price of the instance type it stands in for.
    """
    if market == "spot" and not local and ec2 is not None:
        spot = spot_price(ec2, instance_type, availability_zone, now=clock())
        if spot is not None:
            return spot
    return on_demand_price(instance_type)
