"""Where a launch may run, in which order, and which refusals move on to the next place.

A *placement* is one way to run the instance: an instance type in an AZ's subnet, in a
purchase market, at a price. The spec's ``instance.market`` names a
:class:`PlacementStrategy` in :data:`STRATEGIES`; the strategy orders the placements
(market, then instance type, then AZ, each in the spec's order) and the launch tries
them one by one. Adding a market is one registry entry.

A refusal with a capacity code (:data:`CAPACITY_CODES`) moves on to the next placement.
A quota code (:data:`QUOTA_CODES`) stops the launch: every other placement counts against
the same quota and would be refused the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum

from common.errors import ConfigError, UserError
from common.exitcodes import ExitCode
from common.status import Market
from control.cost import Price
from infra.outputs import StackOutputs

CAPACITY_CODES = frozenset(
    {
        "InsufficientInstanceCapacity",
        "InsufficientCapacity",
        "SpotMaxPriceTooLow",
        "Unsupported",
        "InsufficientFreeAddressesInSubnet",
        "UnfulfillableCapacity",
    }
)
QUOTA_CODES = frozenset({"VcpuLimitExceeded", "MaxSpotInstanceCountExceeded", "InstanceLimitExceeded"})

# (market, instance type, AZ) -> the price a placement there pays
PriceKey = tuple[str, str, str]
UNKNOWN_PRICE = Price(usd_per_hour=None, source="unknown")


class LaunchError(UserError):
    """Every placement of the spec was refused; the lock was released."""

    exit_code = ExitCode.FAILED


class QuotaError(UserError):
    """A vCPU quota refused the launch: raise it (the message names it); the lock was released."""


class Refusal(Enum):
    """What a refused ``RunInstances`` means for the rest of the launch."""

    CAPACITY = "capacity"  # try the next placement
    QUOTA = "quota"  # stop: every placement counts against the same quota


def refusal(code: str) -> Refusal | None:
    """How the launch treats the AWS error ``code``; ``None`` when it is no refusal of a place."""
    if code in QUOTA_CODES:
        return Refusal.QUOTA
    if code in CAPACITY_CODES:
        return Refusal.CAPACITY
    return None


@dataclass(frozen=True, kw_only=True)
class Placement:
    """One way to run the instance: a type in an AZ's subnet, in a market, at a price."""

    instance_type: str
    availability_zone: str
    subnet_id: str
    market: Market
    price: Price


@dataclass(frozen=True, kw_only=True)
class PlacementStrategy:
    """The order of a market's placements, and what to suggest when all were refused.

    Attributes:
        name: the spec's ``instance.market`` value that selects it.
        markets: the purchase markets tried, in order; each over every type and AZ.
        instead: the ``--market`` to suggest when every placement was refused.
    """

    name: str
    markets: tuple[Market, ...]
    instead: str

    def placements(
        self,
        types: Sequence[str],
        azs: Sequence[str],
        subnets_by_az: Mapping[str, str],
        prices: Mapping[PriceKey, Price],
    ) -> tuple[Placement, ...]:
        """Every placement in the order the launch tries them."""
        return tuple(
            Placement(
                instance_type=t,
                availability_zone=az,
                subnet_id=subnets_by_az[az],
                market=market,
                price=prices.get((market.value, t, az)) or UNKNOWN_PRICE,
            )
            for market in self.markets
            for t in types
            for az in azs
        )

    def no_capacity(self, refused: Iterable[str]) -> LaunchError:
        """The error of a launch whose every placement was refused for capacity."""
        return LaunchError(
            f"no capacity: every instance type and AZ was refused ({'; '.join(refused)}); "
            f"the lock was released; try other types (--instance-type) or --market={self.instead}"
        )


STRATEGIES: Mapping[str, PlacementStrategy] = {
    s.name: s
    for s in (
        PlacementStrategy(name=Market.SPOT.value, markets=(Market.SPOT,), instead=Market.ON_DEMAND.value),
        PlacementStrategy(
            name=Market.ON_DEMAND.value, markets=(Market.ON_DEMAND,), instead=Market.SPOT.value
        ),
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
            f"run spec: $.instance.market: {market!r} is not one of {sorted(STRATEGIES)}"
        ) from None


def availability_zones(wanted: Sequence[str], outputs: StackOutputs) -> list[str]:
    """The spec's AZs (all the stack's, sorted, when it names none) that have a subnet."""
    azs = list(wanted) or sorted(outputs.subnets_by_az)
    return [az for az in azs if az in outputs.subnets_by_az]
