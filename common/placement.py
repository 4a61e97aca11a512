"""Where a launch may run, in which order, and which refusals move on to the next place.

Pure: both the laptop's launch and the recovery handler's relaunch build from it.

A *placement* is one way to run the instance: an instance type in an AZ's subnet, in a
purchase market, at a price. The spec's ``instance.market`` (a :class:`MarketChoice`) names a
:class:`PlacementStrategy` in :data:`STRATEGIES`; the strategy orders the placements
(market, then instance type, then AZ, each in the spec's order) and the launch tries
them one by one. Adding a market is one registry entry. After an interruption
:func:`order` moves the placements in the interrupted AZ to the end.

A refusal with a capacity code (:data:`CAPACITY_CODES`) moves on to the next placement.
A quota code (:data:`QUOTA_CODES`) ends the market: every other placement of that market
counts against the same quota and would be refused the same way.

:func:`run_instances_request` is the one place a placement becomes ``RunInstances``
arguments, on top of the launch's *base* request (everything but the placement), which
the launch stores in ``user-configs/launch-request.json`` (:class:`LaunchRequest`).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum, StrEnum
from typing import Any, Protocol

from common.errors import ConfigError
from common.status import Market
from schemas import validate

# Capacity: the next placement may succeed. "InsufficientInstanceCapacity" / "InsufficientCapacity":
# no capacity of the type in the AZ; "SpotMaxPriceTooLow": the spot price is above the maximum;
# "Unsupported": the type is not offered in the AZ; "UnfulfillableCapacity": the spot request cannot
# be fulfilled now (EC2 API Reference, "Error codes for the Amazon EC2 API").
CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "InsufficientHostCapacity",
        "InsufficientReservedInstanceCapacity",
        "SpotMaxPriceTooLow",
        "Unsupported",
        "InsufficientFreeAddressesInSubnet",
        "UnfulfillableCapacity",
        "capacity-not-available",
        "capacity-oversubscribed",
        "price-too-low",
    }
)
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"})

# The resource type only a spot launch creates: tagging it in an on-demand launch fails the launch
# (EC2 API Reference, LaunchTemplateTagSpecificationRequest). infra.spec.tags.SPOT_REQUEST_TYPE is
# tested equal.
SPOT_REQUEST_TYPE = "spot-instances-request"
SPOT_MARKET_OPTIONS: Mapping[str, Any] = {
    "MarketType": "spot",
    "SpotOptions": {"SpotInstanceType": "one-time", "InstanceInterruptionBehavior": "terminate"},
}

KIND = "launch-request"  # its schema

# (market, instance type, AZ) -> the price a placement there pays
PriceKey = tuple[str, str, str]


class MarketChoice(StrEnum):
    """What the spec's ``instance.market`` may say: a purchase market, or an order of them.

    The schema's ``$defs/market_choice`` enum equals these values; :data:`STRATEGIES` has one
    entry per value.
    """

    SPOT = "spot"
    ON_DEMAND = "on-demand"
    SPOT_THEN_ON_DEMAND = "spot-then-on-demand"


class Refusal(Enum):
    """What a refused ``RunInstances`` means for the rest of the launch."""

    CAPACITY = "capacity"  # try the next placement
    QUOTA = "quota"  # this market is done: every placement of it counts against the same quota


def refusal(code: str) -> Refusal | None:
    """How a launch treats the AWS error ``code``; ``None`` when it is no refusal of a place."""
    if code in QUOTA_CODES:
        return Refusal.QUOTA
    if code in CAPACITY_CODES:
        return Refusal.CAPACITY
    return None


class PriceLike(Protocol):
    """An hourly price and where it came from (``common.pricing.Price`` or the like)."""

    usd_per_hour: float | None
    source: str


@dataclass(frozen=True, kw_only=True)
class Placement:
    """One way to run the instance: a type in an AZ's subnet, in a market, at a price."""

    market: Market
    instance_type: str
    availability_zone: str
    subnet_id: str
    price_per_hour: float | None = None
    price_source: str = "unknown"

    @property
    def label(self) -> str:
        """``g5.xlarge spot us-east-1a``: how messages name it."""
        return f"{self.instance_type} {self.market.value} {self.availability_zone}"

    def to_dict(self) -> dict[str, Any]:
        """The placement as stored in launch-request.json."""
        return {
            "market": self.market.value,
            "instance_type": self.instance_type,
            "availability_zone": self.availability_zone,
            "subnet_id": self.subnet_id,
            "price_per_hour": self.price_per_hour,
            "price_source": self.price_source,
        }

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any]) -> Placement:
        """The inverse of :meth:`to_dict` (of a validated document)."""
        return cls(**{**doc, "market": Market(doc["market"])})


@dataclass(frozen=True, kw_only=True)
class PlacementStrategy:
    """The order of a market choice's placements, and what to suggest when all were refused.

    Attributes:
        name: the spec's ``instance.market`` value that selects it.
        markets: the purchase markets tried, in order; each over every type and AZ.
        instead: the ``--market`` to suggest when every placement was refused (``None``: none).
    """

    name: str
    markets: tuple[Market, ...]
    instead: str | None

    def placements(
        self,
        types: Sequence[str],
        azs: Sequence[str],
        subnets_by_az: Mapping[str, str],
        prices: Mapping[PriceKey, PriceLike],
    ) -> tuple[Placement, ...]:
        """Every placement in the order the launch tries them (market, type, AZ)."""
        out = []
        for market in self.markets:
            for itype in types:
                for az in azs:
                    price = prices.get((market.value, itype, az))
                    out.append(
                        Placement(
                            market=market,
                            instance_type=itype,
                            availability_zone=az,
                            subnet_id=subnets_by_az[az],
                            price_per_hour=price.usd_per_hour if price else None,
                            price_source=price.source if price else "unknown",
                        )
                    )
        return tuple(out)


STRATEGIES: Mapping[str, PlacementStrategy] = {
    s.name: s
    for s in (
        PlacementStrategy(name="spot", markets=(Market.SPOT,), instead="spot-then-on-demand"),
        PlacementStrategy(name="on-demand", markets=(Market.ON_DEMAND,), instead="spot"),
        PlacementStrategy(name="spot-then-on-demand", markets=(Market.SPOT, Market.ON_DEMAND), instead=None),
    )
}


def strategy_for(market: str) -> PlacementStrategy:
    """The strategy the spec's ``instance.market`` names.

    Raises:
        ConfigError: no strategy has that name (the message lists the valid ones).
    """
    try:
        return STRATEGIES[str(market)]
    except KeyError:
        raise ConfigError(
            f"run spec: $.instance.market: {str(market)!r} is not one of {sorted(STRATEGIES)}"
        ) from None


def order(placements: Iterable[Placement], *, avoid_azs: Iterable[str] = ()) -> tuple[Placement, ...]:
    """``placements`` with those in ``avoid_azs`` (an AZ just interrupted) moved last.

    Interruptions cluster by AZ and type within minutes, so a relaunch tries other AZs
    first. The order is stable otherwise: the strategy's order within each group.
    """
    avoid = set(avoid_azs)
    items = list(placements)
    return tuple(p for p in items if p.availability_zone not in avoid) + tuple(
        p for p in items if p.availability_zone in avoid
    )


def run_instances_request(base: Mapping[str, Any], placement: Placement) -> dict[str, Any]:
    """The ``RunInstances`` arguments for ``placement`` on top of the launch's ``base`` request.

    ``base`` holds everything but the placement: the launch template, user data, block
    devices, the device-0 ``NetworkInterfaces`` entry without its subnet, and the
    ``TagSpecifications`` of every type a launch may tag (the spot request's included).
    The placement adds the instance type, the subnet (on the interface: a launch that
    picks a subnet restates the template's interface), and for spot the market options;
    an on-demand launch drops the spot request's tags (it creates no spot request).
    """
    request = copy.deepcopy(dict(base))
    request["InstanceType"] = placement.instance_type
    interfaces = request.get("NetworkInterfaces") or [{"DeviceIndex": 0}]
    interfaces[0]["SubnetId"] = placement.subnet_id
    request["NetworkInterfaces"] = interfaces
    spot = placement.market is Market.SPOT
    request["TagSpecifications"] = [
        s for s in request.get("TagSpecifications", []) if spot or s["ResourceType"] != SPOT_REQUEST_TYPE
    ]
    if spot:
        request["InstanceMarketOptions"] = copy.deepcopy(dict(SPOT_MARKET_OPTIONS))
    else:
        request.pop("InstanceMarketOptions", None)
    return request


@dataclass(frozen=True, kw_only=True)
class LaunchRequest:
    """``user-configs/launch-request.json``: the run's RunInstances request, placement apart.

    Written by the launch before its first RunInstances call, read by a relaunch, which
    needs nothing else to send the same request again (:meth:`attempts`).
    """

    run_id: str
    env: str
    region: str
    bucket: str
    local: bool
    market: str
    base: Mapping[str, Any]
    placements: tuple[Placement, ...]

    def to_dict(self) -> dict[str, Any]:
        """The document, validated against ``schemas/launch-request.schema.json``.

        Raises:
            SchemaValidationError: a field the schema refuses (a bug of the caller).
        """
        doc = {
            "schema_version": 1,
            "run_id": self.run_id,
            "env": self.env,
            "region": self.region,
            "bucket": self.bucket,
            "local": self.local,
            "market": str(self.market),
            "base": copy.deepcopy(dict(self.base)),
            "placements": [p.to_dict() for p in self.placements],
        }
        return validate(KIND, doc, source="launch request")

    @classmethod
    def from_dict(cls, doc: Mapping[str, Any], *, source: str | None = None) -> LaunchRequest:
        """The request a launch stored (``source``: where it was read, for the message).

        Raises:
            SchemaValidationError: the document does not match its schema.
        """
        validate(KIND, doc, source=source)
        return cls(
            run_id=doc["run_id"],
            env=doc["env"],
            region=doc["region"],
            bucket=doc["bucket"],
            local=doc["local"],
            market=doc["market"],
            base=copy.deepcopy(dict(doc["base"])),
            placements=tuple(Placement.from_dict(p) for p in doc["placements"]),
        )

    def attempts(self, *, avoid_azs: Iterable[str] = ()) -> list[tuple[Placement, dict[str, Any]]]:
        """Each placement, in the order to try (``avoid_azs`` last), with its RunInstances arguments."""
        return [(p, run_instances_request(self.base, p)) for p in order(self.placements, avoid_azs=avoid_azs)]
