"""The network: VPC and subnet CIDRs, zones, security-group rules, the launch's interface.

One public subnet per zone and no NAT; the security group admits nothing and lets
only HTTPS out.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from infra.spec import SpecError

VPC_CIDR = "10.42.0.0/16"
MIN_AVAILABILITY_ZONES = 2
SUBNET_PREFIX_LENGTH = 20
HTTPS_PORT = 443


def subnet_cidrs(count: int, vpc_cidr: str = VPC_CIDR) -> list[str]:
    """``count`` non-overlapping /20 subnets carved from ``vpc_cidr`` in order.

    Raises:
        SpecError: if fewer than two are asked for or they do not fit.
    """
    if count < MIN_AVAILABILITY_ZONES:
        raise SpecError(f"need at least {MIN_AVAILABILITY_ZONES} availability zones, got {count}")
    subnets = ipaddress.ip_network(vpc_cidr).subnets(new_prefix=SUBNET_PREFIX_LENGTH)
    cidrs = [str(net) for net, _ in zip(subnets, range(count), strict=False)]
    if len(cidrs) < count:
        raise SpecError(f"{vpc_cidr} holds fewer than {count} /{SUBNET_PREFIX_LENGTH} subnets")
    return cidrs


def select_availability_zones(names: Iterable[str], limit: int | None = None) -> list[str]:
    """Sorted AZ names, at most ``limit`` of them; one public subnet goes in each.

    Raises:
        SpecError: if fewer than two zones remain.
    """
    chosen = sorted(set(names))[:limit] if limit else sorted(set(names))
    if len(chosen) < MIN_AVAILABILITY_ZONES:
        raise SpecError(f"need at least {MIN_AVAILABILITY_ZONES} availability zones, found {chosen}")
    return chosen


def s3_gateway_service_name(region: str) -> str:
    """Service name of the (free) S3 gateway endpoint in ``region``."""
    return f"com.amazonaws.{region}.s3"


def security_group_ingress() -> list[dict[str, Any]]:
    """Inbound rules: none. Nothing, not even SSH, reaches the instance."""
    return []


def security_group_egress() -> list[dict[str, Any]]:
    """Outbound rules (boto3 ``IpPermissions``): HTTPS only.

    S3 (through the gateway endpoint), EC2, STS and package mirrors are all
    HTTPS. The VPC DNS resolver, NTP and IMDS are link-local services that
    security groups do not filter.
    """
    return [
        {
            "IpProtocol": "tcp",
            "FromPort": HTTPS_PORT,
            "ToPort": HTTPS_PORT,
            "IpRanges": [{"CidrIp": "0.0.0.0/0", "Description": "HTTPS to AWS APIs and S3"}],
        }
    ]


def network_interface_override(subnet_id: str, security_group_id: str) -> list[dict[str, Any]]:
    """``NetworkInterfaces`` for ``run_instances`` that picks the subnet (and so the AZ).

    The launch template carries its interface settings; a launch that chooses a
    subnet must restate the whole device-0 interface, so it is built here.
    """
    return [
        {
            "DeviceIndex": 0,
            "SubnetId": subnet_id,
            "Groups": [security_group_id],
            "AssociatePublicIpAddress": True,
            "DeleteOnTermination": True,
        }
    ]
