"""Local provisioner, network part: VPC, public subnets, routes, S3 endpoint, security group."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from common import tags as common_tags
from infra.local_support import LocalContext
from infra.spec import network as spec_network

log = logging.getLogger(__name__)


def _tag_filters(ctx: LocalContext, name: str | None = None) -> list[dict[str, Any]]:
    filters = common_tags.env_filters(ctx.env)
    if name is not None:
        filters.append({"Name": "tag:Name", "Values": [name]})
    return filters


def ensure_vpc(ctx: LocalContext) -> str:
    """The env's VPC (found by its tags), created with DNS support if missing."""
    name = ctx.name("vpc")
    found = ctx.ec2.describe_vpcs(Filters=_tag_filters(ctx, name))["Vpcs"]
    if found:
        return found[0]["VpcId"]
    vpc_id = ctx.ec2.create_vpc(
        CidrBlock=spec_network.VPC_CIDR, TagSpecifications=ctx.tag_specs("vpc", name)
    )["Vpc"]["VpcId"]
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
        ctx.ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute: {"Value": True}})
    log.info("created VPC %s", vpc_id)
    return vpc_id


def ensure_subnets(ctx: LocalContext, vpc_id: str, max_azs: int) -> dict[str, str]:
    """One subnet per chosen AZ (at most ``max_azs``): ``{az: subnet id}``."""
    zones = ctx.ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])[
        "AvailabilityZones"
    ]
    chosen = spec_network.select_availability_zones([z["ZoneName"] for z in zones], max_azs)
    existing = {
        s["AvailabilityZone"]: s["SubnetId"]
        for s in ctx.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    }
    subnets = {}
    for az, cidr in zip(chosen, spec_network.subnet_cidrs(len(chosen)), strict=True):
        if az not in existing:
            existing[az] = ctx.ec2.create_subnet(
                VpcId=vpc_id,
                CidrBlock=cidr,
                AvailabilityZone=az,
                TagSpecifications=ctx.tag_specs("subnet", ctx.name(f"public-{az}")),
            )["Subnet"]["SubnetId"]
            log.info("created subnet %s in %s", existing[az], az)
        subnets[az] = existing[az]
    return subnets


def _ensure_internet_gateway(ctx: LocalContext, vpc_id: str) -> str:
    attached = ctx.ec2.describe_internet_gateways(
        Filters=[{"Name": "attachment.vpc-id", "Values": [vpc_id]}]
    )["InternetGateways"]
    if attached:
        return attached[0]["InternetGatewayId"]
    igw_id = ctx.ec2.create_internet_gateway(
        TagSpecifications=ctx.tag_specs("internet-gateway", ctx.name("igw"))
    )["InternetGateway"]["InternetGatewayId"]
    ctx.ec2.attach_internet_gateway(InternetGatewayId=igw_id, VpcId=vpc_id)
    log.info("created internet gateway %s", igw_id)
    return igw_id


def ensure_public_routes(ctx: LocalContext, vpc_id: str, subnet_ids: list[str]) -> str:
    """Public route table (default route to the IGW) associated with every subnet."""
    igw_id = _ensure_internet_gateway(ctx, vpc_id)
    name = ctx.name("public")
    filters = [{"Name": "vpc-id", "Values": [vpc_id]}, *_tag_filters(ctx, name)]
    found = ctx.ec2.describe_route_tables(Filters=filters)["RouteTables"]
    if found:
        table = found[0]
    else:
        table = ctx.ec2.create_route_table(
            VpcId=vpc_id, TagSpecifications=ctx.tag_specs("route-table", name)
        )["RouteTable"]
        log.info("created route table %s", table["RouteTableId"])
    rt_id = table["RouteTableId"]
    if not any(r.get("DestinationCidrBlock") == "0.0.0.0/0" for r in table.get("Routes", [])):
        ctx.ec2.create_route(RouteTableId=rt_id, DestinationCidrBlock="0.0.0.0/0", GatewayId=igw_id)
    associated = {a.get("SubnetId") for a in table.get("Associations", [])}
    for subnet_id in subnet_ids:
        if subnet_id not in associated:
            ctx.ec2.associate_route_table(RouteTableId=rt_id, SubnetId=subnet_id)
    return rt_id


def ensure_s3_endpoint(ctx: LocalContext, vpc_id: str, route_table_id: str) -> str:
    """The free S3 gateway endpoint on the public route table."""
    service = spec_network.s3_gateway_service_name(ctx.region)
    found = ctx.ec2.describe_vpc_endpoints(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "service-name", "Values": [service]},
        ]
    )["VpcEndpoints"]
    if found:
        return found[0]["VpcEndpointId"]
    endpoint_id = ctx.ec2.create_vpc_endpoint(
        VpcId=vpc_id,
        ServiceName=service,
        VpcEndpointType="Gateway",
        RouteTableIds=[route_table_id],
        TagSpecifications=ctx.tag_specs("vpc-endpoint", ctx.name("s3-endpoint")),
    )["VpcEndpoint"]["VpcEndpointId"]
    log.info("created S3 gateway endpoint %s", endpoint_id)
    return endpoint_id


def ensure_security_group(ctx: LocalContext, vpc_id: str) -> str:
    """The training security group with exactly the spec's rules (no ingress, HTTPS out)."""
    name = ctx.name("training")
    found = ctx.ec2.describe_security_groups(
        Filters=[
            {"Name": "vpc-id", "Values": [vpc_id]},
            {"Name": "group-name", "Values": [name]},
        ]
    )["SecurityGroups"]
    if found:
        group = found[0]
    else:
        group_id = ctx.ec2.create_security_group(
            GroupName=name,
            VpcId=vpc_id,
            Description="Chronos training instances: no inbound, HTTPS outbound only",
            TagSpecifications=ctx.tag_specs("security-group", name),
        )["GroupId"]
        log.info("created security group %s", group_id)
        group = ctx.ec2.describe_security_groups(GroupIds=[group_id])["SecurityGroups"][0]
    _sync_rules(ctx, group, "IpPermissions", spec_network.security_group_ingress(), ingress=True)
    _sync_rules(ctx, group, "IpPermissionsEgress", spec_network.security_group_egress(), ingress=False)
    return group["GroupId"]


def _rule_key(perm: Mapping[str, Any]) -> tuple[Any, ...]:
    cidrs = tuple(sorted(r["CidrIp"] for r in perm.get("IpRanges", [])))
    v6 = tuple(sorted(r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])))
    groups = tuple(sorted(g["GroupId"] for g in perm.get("UserIdGroupPairs", [])))
    return (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), cidrs, v6, groups)


def _sync_rules(
    ctx: LocalContext, group: Mapping[str, Any], field: str, desired: list[dict], *, ingress: bool
) -> None:
    """Make the group's rules exactly ``desired`` (drops AWS's default allow-all egress)."""
    current = {_rule_key(p): p for p in group.get(field, [])}
    wanted = {_rule_key(p): p for p in desired}
    extra = [_strip_rule(p) for k, p in current.items() if k not in wanted]
    missing = [p for k, p in wanted.items() if k not in current]
    revoke = ctx.ec2.revoke_security_group_ingress if ingress else ctx.ec2.revoke_security_group_egress
    grant = ctx.ec2.authorize_security_group_ingress if ingress else ctx.ec2.authorize_security_group_egress
    if extra:
        revoke(GroupId=group["GroupId"], IpPermissions=extra)
    if missing:
        grant(GroupId=group["GroupId"], IpPermissions=missing)


def _strip_rule(perm: Mapping[str, Any]) -> dict[str, Any]:
    keys = ("IpProtocol", "FromPort", "ToPort", "IpRanges", "Ipv6Ranges", "UserIdGroupPairs")
    return {k: perm[k] for k in keys if k in perm and perm[k] != []}


def ensure_network(ctx: LocalContext, max_azs: int) -> tuple[str, dict[str, str], str]:
    """VPC, public subnets and their routes, S3 endpoint, security group.

    Returns:
        The VPC id, the subnet id of each AZ and the security group id.
    """
    vpc_id = ensure_vpc(ctx)
    subnets = ensure_subnets(ctx, vpc_id, max_azs)
    route_table_id = ensure_public_routes(ctx, vpc_id, list(subnets.values()))
    ensure_s3_endpoint(ctx, vpc_id, route_table_id)
    return vpc_id, subnets, ensure_security_group(ctx, vpc_id)
