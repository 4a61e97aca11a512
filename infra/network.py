"""Network: a VPC with one public subnet per AZ, an S3 gateway endpoint, no NAT."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.spec import names as spec_names
from infra.spec import network as spec_network
from infra.spec import pulumi_inputs as spec_pulumi
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class NetworkArgs:
    """Inputs of :class:`Network`."""

    env: str
    region: str
    availability_zones: Sequence[str]
    tags: Mapping[str, str]
    vpc_cidr: str = spec_network.VPC_CIDR
    # Batch hosts come without a template network interface, so their public IP (no NAT: ECS
    # needs a way out) comes from the subnet; training launches ask for one themselves.
    public_ip_on_launch: bool = False


class Network(pulumi.ComponentResource):
    """VPC, public subnets, internet gateway, route table, S3 endpoint, security group.

    Instances get a public IP and reach AWS over the internet gateway (S3 over
    the free gateway endpoint), so there is no NAT gateway, no Elastic IP and no
    interface endpoint: nothing here bills by the hour.
    """

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Network", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        cidrs = spec_network.subnet_cidrs(len(args.availability_zones), args.vpc_cidr)
        self._tags = dict(args.tags)

        self.vpc = aws.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.vpc_cidr,
            enable_dns_support=True,
            enable_dns_hostnames=True,
            tags=self._named(spec_names.resource_name(args.env, "vpc")),
            opts=child,
        )
        self.subnets = [
            aws.ec2.Subnet(
                f"{name}-subnet-{az}",
                vpc_id=self.vpc.id,
                cidr_block=cidr,
                availability_zone=az,
                map_public_ip_on_launch=args.public_ip_on_launch,
                tags=self._named(spec_names.resource_name(args.env, f"public-{az}")),
                opts=child,
            )
            for az, cidr in zip(args.availability_zones, cidrs, strict=True)
        ]
        self.route_table = self._public_routes(name, args)
        self.s3_endpoint = aws.ec2.VpcEndpoint(
            f"{name}-s3-endpoint",
            vpc_id=self.vpc.id,
            service_name=spec_network.s3_gateway_service_name(args.region),
            vpc_endpoint_type="Gateway",
            route_table_ids=[self.route_table.id],
            tags=self._named(spec_names.resource_name(args.env, "s3-endpoint")),
            opts=child,
        )
        self.security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=self.vpc.id,
            description="Chronos training instances: no inbound, HTTPS outbound only",
            ingress=spec_pulumi.to_pulumi_sg_rules(spec_network.security_group_ingress()),
            egress=spec_pulumi.to_pulumi_sg_rules(spec_network.security_group_egress()),
            revoke_rules_on_delete=True,
            tags=self._named(spec_names.resource_name(args.env, "training")),
            opts=child,
        )
        self._export(args.availability_zones)

    def _named(self, name: str) -> dict[str, str]:
        return {**self._tags, "Name": name}

    def _public_routes(self, name: str, args: NetworkArgs) -> aws.ec2.RouteTable:
        child = pulumi.ResourceOptions(parent=self)
        self.internet_gateway = aws.ec2.InternetGateway(
            f"{name}-igw",
            vpc_id=self.vpc.id,
            tags=self._named(spec_names.resource_name(args.env, "igw")),
            opts=child,
        )
        route_table = aws.ec2.RouteTable(
            f"{name}-public-rt",
            vpc_id=self.vpc.id,
            routes=[{"cidr_block": "0.0.0.0/0", "gateway_id": self.internet_gateway.id}],
            tags=self._named(spec_names.resource_name(args.env, "public")),
            opts=child,
        )
        self.route_table_associations = [
            aws.ec2.RouteTableAssociation(
                f"{name}-public-rta-{az}",
                subnet_id=subnet.id,
                route_table_id=route_table.id,
                opts=child,
            )
            for az, subnet in zip(args.availability_zones, self.subnets, strict=True)
        ]
        return route_table

    def _export(self, availability_zones: Sequence[str]) -> None:
        zones = list(availability_zones)
        self.vpc_id: pulumi.Output[str] = self.vpc.id
        self.vpc_arn: pulumi.Output[str] = self.vpc.arn
        self.subnet_ids_by_az: pulumi.Output[dict[str, str]] = pulumi.Output.all(
            *[s.id for s in self.subnets]
        ).apply(lambda ids: dict(zip(zones, ids, strict=True)))
        self.security_group_id: pulumi.Output[str] = self.security_group.id
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "subnet_ids_by_az": self.subnet_ids_by_az,
                "route_table_id": self.route_table.id,
                "s3_endpoint_id": self.s3_endpoint.id,
                "security_group_id": self.security_group_id,
            }
        )
