"""The laptop's side of placement: the stack's AZs, and the errors a refused launch ends with.

The placements, their order per market, the refusal codes and the RunInstances request
of a placement are in :mod:`common.placement` (the recovery handler relaunches from them too).
"""

from __future__ import annotations

from collections.abc import Sequence

from common.errors import UserError
from common.exitcodes import ExitCode
from common.placement import PlacementStrategy
from infra.outputs import StackOutputs


class LaunchError(UserError):
    """Every placement of the spec was refused; the lock was released."""

    exit_code = ExitCode.FAILED


class QuotaError(UserError):
    """A vCPU quota refused the launch: raise it (the message names it); the lock was released."""


def no_capacity(strategy: PlacementStrategy, tried: Sequence[str]) -> LaunchError:
    """The error of a launch whose every placement was refused for capacity.

    Args:
        strategy: the spec's market strategy (its ``instead`` is suggested).
        tried: each refused placement with its code, ``g5.xlarge spot us-east-1a: <code>``.
    """
    instead = f" or --market={strategy.instead}" if strategy.instead else ""
    return LaunchError(
        f"no capacity for market {strategy.name}: every placement was refused ({'; '.join(tried)}); "
        f"the lock was released; try other types (--instance-type) or AZs{instead}"
    )


def availability_zones(wanted: Sequence[str], outputs: StackOutputs) -> list[str]:
    """The spec's AZs (all the stack's, sorted, when it names none) that have a subnet."""
    azs = list(wanted) or sorted(outputs.subnets_by_az)
    return [az for az in azs if az in outputs.subnets_by_az]
