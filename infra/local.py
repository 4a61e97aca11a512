"""Local provisioner: the stack's resources in the local AWS (moto), from ``infra.spec``.

``provision`` creates what ``pulumi up`` creates (bucket and its settings, the
instance role, profile and policy, the operator policy, VPC, subnets, internet
gateway, route table, S3 gateway endpoint, security group, launch template) and
returns the same outputs as ``pulumi stack output --json``. It looks every
resource up by name or tags before creating it and only writes settings that
differ, so a second run changes nothing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
from botocore.exceptions import ClientError

from common.aws import RETRY_CONFIG, error_code
from infra import spec
from infra.outputs import StackOutputs, write_outputs_file

log = logging.getLogger(__name__)

LOCAL_AMI_ID = "ami-0c0ffee0c0ffee0c0"  # moto accepts any id; there is no DLAMI locally
LOCAL_MAX_AZS = 3


@dataclass(frozen=True)
class _Ctx:
    env: str
    region: str
    account_id: str
    tags: dict[str, str]
    clients: Mapping[str, Any]

    def __getattr__(self, service: str) -> Any:
        try:
            return self.clients[service]
        except KeyError:
            raise AttributeError(service) from None

    def tag_specs(self, resource_type: str, name: str) -> list[dict[str, Any]]:
        tag_map = {**self.tags, "Name": name}
        return [{"ResourceType": resource_type, "Tags": spec.tag_list(tag_map)}]

    def name(self, kind: str) -> str:
        return spec.resource_name(self.env, kind)


def provision(
    session: boto3.Session,
    *,
    env: str,
    endpoint_url: str | None,
    region: str = "us-east-1",
    cost_center: str = spec.DEFAULT_COST_CENTER,
    instance_type: str = spec.DEFAULT_INSTANCE_TYPE,
    ami_id: str | None = None,
    max_azs: int = LOCAL_MAX_AZS,
    local_principal_arn: str | None = None,
    outputs_path: Path | None = None,
) -> dict[str, Any]:
    """Create (or find) every stack resource in the local AWS; return the outputs.

    Args:
        session: credentials for the local AWS.
        env: environment name (validated).
        endpoint_url: the local AWS endpoint (``None`` uses the SDK default).
        region: region of every resource.
        cost_center: CostCenter tag.
        instance_type: launch template's default type (g4dn.* or g5.*).
        ami_id: image of the launch template; default: the DLAMI SSM parameter
            if the local AWS has it, else :data:`LOCAL_AMI_ID`.
        max_azs: at most this many AZs get a subnet (at least 2).
        local_principal_arn: a principal allowed to assume the instance role
            (local stand-in instance), see :func:`spec.instance_trust_policy`.
        outputs_path: also write the outputs there as JSON.

    Returns:
        The ``pulumi stack output --json`` mapping (:class:`StackOutputs` keys).

    Raises:
        infra.spec.SpecError: invalid env, instance type or AZ count.
        botocore.exceptions.ClientError: the local AWS refused a call.
    """
    spec.validate_env(env)
    spec.validate_instance_type(instance_type)
    services = ("s3", "iam", "ec2", "sts", "ssm")
    clients = {
        s: session.client(s, region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG)
        for s in services
    }
    account_id = clients["sts"].get_caller_identity()["Account"]
    tags = spec.tags(env, cost_center, managed_by=spec.MANAGED_BY_LOCAL)
    ctx = _Ctx(env=env, region=region, account_id=account_id, tags=tags, clients=clients)

    bucket = _ensure_bucket(ctx)
    role_arn, profile_arn = _ensure_instance_identity(ctx, bucket, local_principal_arn)
    vpc_id = _ensure_vpc(ctx)
    subnets = _ensure_subnets(ctx, vpc_id, max_azs)
    route_table_id = _ensure_public_routes(ctx, vpc_id, list(subnets.values()))
    _ensure_s3_endpoint(ctx, vpc_id, route_table_id)
    sg_id = _ensure_security_group(ctx, vpc_id)
    image = ami_id or _local_ami(ctx)
    lt_id = _ensure_launch_template(ctx, image, instance_type, profile_arn, sg_id)
    lt_arn = f"arn:aws:ec2:{region}:{account_id}:launch-template/{lt_id}"
    vpc_arn = f"arn:aws:ec2:{region}:{account_id}:vpc/{vpc_id}"
    operator_arn = _ensure_operator_policy(ctx, bucket, lt_arn, role_arn, vpc_arn)
    outputs = StackOutputs(
        bucket=bucket,
        region=region,
        env=env,
        account_id=account_id,
        subnets_by_az=subnets,
        security_group_id=sg_id,
        launch_template_id=lt_id,
        instance_profile_arn=profile_arn,
        instance_role_arn=role_arn,
        operator_policy_arn=operator_arn,
    )
    if outputs_path is not None:
        write_outputs_file(outputs, outputs_path)
    return outputs.to_dict()


def _is(exc: ClientError, *codes: str) -> bool:
    return error_code(exc) in codes


def _canonical(value: Any) -> Any:
    """Order-insensitive form for comparing AWS answers with desired settings."""
    if isinstance(value, Mapping):
        return {k: _canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((_canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def _same(current: Any, desired: Any) -> bool:
    return _canonical(current) == _canonical(desired)


# ------------------------------------------------------------------ bucket


def _ensure_bucket(ctx: _Ctx) -> str:
    name = spec.bucket_name(ctx.env, ctx.account_id, ctx.region)
    try:
        ctx.s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if not _is(exc, "404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": name}
        if ctx.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        ctx.s3.create_bucket(**kwargs)
        log.info("created bucket %s", name)
    _configure_bucket(ctx, name)
    return name


def _current(getter: Any, key: str, missing: tuple[str, ...], **kwargs: Any) -> Any:
    try:
        return getter(**kwargs).get(key)
    except ClientError as exc:
        if _is(exc, *missing):
            return None
        raise


def _configure_bucket(ctx: _Ctx, name: str) -> None:
    s3 = ctx.s3
    desired_tags = {"TagSet": spec.tag_list(ctx.tags)}
    settings: list[tuple[Any, Any, str, tuple[str, ...], str, Any]] = [
        (s3.get_bucket_tagging, s3.put_bucket_tagging, "TagSet", ("NoSuchTagSet",),
         "Tagging", desired_tags),
        (s3.get_public_access_block, s3.put_public_access_block,
         "PublicAccessBlockConfiguration", ("NoSuchPublicAccessBlockConfiguration",),
         "PublicAccessBlockConfiguration", spec.PUBLIC_ACCESS_BLOCK),
        (s3.get_bucket_ownership_controls, s3.put_bucket_ownership_controls,
         "OwnershipControls", ("OwnershipControlsNotFoundError",), "OwnershipControls",
         {"Rules": [{"ObjectOwnership": spec.OBJECT_OWNERSHIP}]}),
        (s3.get_bucket_encryption, s3.put_bucket_encryption,
         "ServerSideEncryptionConfiguration", ("ServerSideEncryptionConfigurationNotFoundError",),
         "ServerSideEncryptionConfiguration", spec.encryption_configuration()),
        (s3.get_bucket_lifecycle_configuration, s3.put_bucket_lifecycle_configuration,
         "Rules", ("NoSuchLifecycleConfiguration",), "LifecycleConfiguration",
         spec.lifecycle_configuration(ctx.env)),
    ]  # fmt: skip
    for getter, putter, key, missing, arg, desired in settings:
        current = _current(getter, key, missing, Bucket=name)
        wanted = desired.get(key, desired) if isinstance(desired, dict) else desired
        if not _same(current, wanted):
            putter(Bucket=name, **{arg: desired})
            log.info("set %s of bucket %s", arg, name)
    _ensure_bucket_policy(ctx, name)


def _ensure_bucket_policy(ctx: _Ctx, name: str) -> None:
    desired = spec.tls_only_bucket_policy(spec.bucket_arn(name))
    current = _current(ctx.s3.get_bucket_policy, "Policy", ("NoSuchBucketPolicy",), Bucket=name)
    if current is None or json.loads(current) != desired:
        ctx.s3.put_bucket_policy(Bucket=name, Policy=json.dumps(desired))
        log.info("set TLS-only policy of bucket %s", name)


# --------------------------------------------------------------------- IAM


def _ensure_instance_identity(ctx: _Ctx, bucket: str, local_principal_arn: str | None) -> tuple[str, str]:
    """Role, its inline policy and the instance profile; returns their ARNs."""
    name = ctx.name("instance")
    trust = spec.instance_trust_policy(local_principal_arn)
    try:
        role = ctx.iam.get_role(RoleName=name)["Role"]
        if not _same(_document(role["AssumeRolePolicyDocument"]), trust):
            ctx.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        role = ctx.iam.create_role(
            RoleName=name,
            AssumeRolePolicyDocument=json.dumps(trust),
            Description=f"Chronos training instances of env {ctx.env}",
            Tags=spec.tag_list(ctx.tags),
        )["Role"]
        log.info("created role %s", name)
    _ensure_role_policy(ctx, name, bucket)
    return role["Arn"], _ensure_instance_profile(ctx, name)


def _document(value: str | Mapping[str, Any]) -> Any:
    """IAM returns documents URL-decoded as dicts (boto3) or as JSON strings."""
    return json.loads(value) if isinstance(value, str) else value


def _ensure_role_policy(ctx: _Ctx, role: str, bucket: str) -> None:
    policy_name = f"{role}-least-privilege"
    desired = spec.instance_role_policy(
        ctx.env, spec.bucket_arn(bucket), region=ctx.region, account_id=ctx.account_id
    )
    try:
        current = _document(ctx.iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"])
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        current = None
    if current is None or not _same(current, desired):
        ctx.iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(desired))
        log.info("set policy %s of role %s", policy_name, role)


def _ensure_instance_profile(ctx: _Ctx, name: str) -> str:
    try:
        profile = ctx.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        profile = ctx.iam.create_instance_profile(InstanceProfileName=name, Tags=spec.tag_list(ctx.tags))[
            "InstanceProfile"
        ]
        log.info("created instance profile %s", name)
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        ctx.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return profile["Arn"]


def _ensure_operator_policy(
    ctx: _Ctx, bucket: str, launch_template_arn: str, role_arn: str, vpc_arn: str
) -> str:
    name = ctx.name("operator")
    arn = f"arn:aws:iam::{ctx.account_id}:policy/{name}"
    desired = spec.operator_policy(
        ctx.env,
        spec.bucket_arn(bucket),
        launch_template_arn,
        role_arn,
        region=ctx.region,
        account_id=ctx.account_id,
        vpc_arn=vpc_arn,
    )
    try:
        version = ctx.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    except ClientError as exc:
        if not _is(exc, "NoSuchEntity"):
            raise
        ctx.iam.create_policy(
            PolicyName=name, PolicyDocument=json.dumps(desired), Tags=spec.tag_list(ctx.tags)
        )
        log.info("created operator policy %s", name)
        return arn
    current = ctx.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    if not _same(_document(current["Document"]), desired):
        _prune_policy_versions(ctx, arn)
        ctx.iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(desired), SetAsDefault=True)
        log.info("updated operator policy %s", name)
    return arn


def _prune_policy_versions(ctx: _Ctx, arn: str) -> None:
    """IAM keeps at most five versions: drop the oldest non-default one if full."""
    versions = ctx.iam.list_policy_versions(PolicyArn=arn)["Versions"]
    old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
    if len(versions) >= 5 and old:
        ctx.iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])


# ----------------------------------------------------------------- network


def _tag_filters(ctx: _Ctx, name: str | None = None) -> list[dict[str, Any]]:
    filters = [
        {"Name": "tag:Project", "Values": [spec.PROJECT_TAG]},
        {"Name": "tag:Environment", "Values": [ctx.env]},
    ]
    if name is not None:
        filters.append({"Name": "tag:Name", "Values": [name]})
    return filters


def _ensure_vpc(ctx: _Ctx) -> str:
    name = ctx.name("vpc")
    found = ctx.ec2.describe_vpcs(Filters=_tag_filters(ctx, name))["Vpcs"]
    if found:
        return found[0]["VpcId"]
    vpc_id = ctx.ec2.create_vpc(CidrBlock=spec.VPC_CIDR, TagSpecifications=ctx.tag_specs("vpc", name))["Vpc"][
        "VpcId"
    ]
    for attribute in ("EnableDnsSupport", "EnableDnsHostnames"):
        ctx.ec2.modify_vpc_attribute(VpcId=vpc_id, **{attribute: {"Value": True}})
    log.info("created VPC %s", vpc_id)
    return vpc_id


def _ensure_subnets(ctx: _Ctx, vpc_id: str, max_azs: int) -> dict[str, str]:
    zones = ctx.ec2.describe_availability_zones(Filters=[{"Name": "state", "Values": ["available"]}])[
        "AvailabilityZones"
    ]
    chosen = spec.select_availability_zones([z["ZoneName"] for z in zones], max_azs)
    existing = {
        s["AvailabilityZone"]: s["SubnetId"]
        for s in ctx.ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc_id]}])["Subnets"]
    }
    subnets = {}
    for az, cidr in zip(chosen, spec.subnet_cidrs(len(chosen)), strict=True):
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


def _ensure_internet_gateway(ctx: _Ctx, vpc_id: str) -> str:
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


def _ensure_public_routes(ctx: _Ctx, vpc_id: str, subnet_ids: list[str]) -> str:
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


def _ensure_s3_endpoint(ctx: _Ctx, vpc_id: str, route_table_id: str) -> str:
    service = spec.s3_gateway_service_name(ctx.region)
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


def _ensure_security_group(ctx: _Ctx, vpc_id: str) -> str:
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
    _sync_rules(ctx, group, "IpPermissions", spec.security_group_ingress(), ingress=True)
    _sync_rules(ctx, group, "IpPermissionsEgress", spec.security_group_egress(), ingress=False)
    return group["GroupId"]


def _rule_key(perm: Mapping[str, Any]) -> tuple[Any, ...]:
    cidrs = tuple(sorted(r["CidrIp"] for r in perm.get("IpRanges", [])))
    v6 = tuple(sorted(r["CidrIpv6"] for r in perm.get("Ipv6Ranges", [])))
    groups = tuple(sorted(g["GroupId"] for g in perm.get("UserIdGroupPairs", [])))
    return (perm["IpProtocol"], perm.get("FromPort"), perm.get("ToPort"), cidrs, v6, groups)


def _sync_rules(
    ctx: _Ctx, group: Mapping[str, Any], field: str, desired: list[dict], *, ingress: bool
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


# --------------------------------------------------------- launch template


def _local_ami(ctx: _Ctx) -> str:
    try:
        return ctx.ssm.get_parameter(Name=spec.DLAMI_SSM_PARAMETER)["Parameter"]["Value"]
    except ClientError as exc:
        if not _is(exc, "ParameterNotFound"):
            raise
        return LOCAL_AMI_ID


def _comparable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Launch-template data without the template's own tags (moto copies them in)."""
    specs = [s for s in data.get("TagSpecifications", []) if s["ResourceType"] != "launch-template"]
    return {**data, "TagSpecifications": specs}


def _ensure_launch_template(
    ctx: _Ctx, image_id: str, instance_type: str, profile_arn: str, sg_id: str
) -> str:
    name = ctx.name("training")
    desired = spec.launch_template_data(
        image_id=image_id,
        instance_type=instance_type,
        instance_profile_arn=profile_arn,
        security_group_id=sg_id,
        resource_tags=ctx.tags,
    )
    try:
        template = ctx.ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    except ClientError as exc:
        if not _is(exc, "InvalidLaunchTemplateName.NotFoundException"):
            raise
        created = ctx.ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData=desired,
            TagSpecifications=ctx.tag_specs("launch-template", name),
        )["LaunchTemplate"]
        log.info("created launch template %s", created["LaunchTemplateId"])
        return created["LaunchTemplateId"]
    lt_id = template["LaunchTemplateId"]
    current = ctx.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])[
        "LaunchTemplateVersions"
    ][0]["LaunchTemplateData"]
    if not _same(_comparable(current), _comparable(desired)):
        version = ctx.ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData=desired)[
            "LaunchTemplateVersion"
        ]["VersionNumber"]
        ctx.ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(version))
        log.info("launch template %s now at version %s", lt_id, version)
    return lt_id
