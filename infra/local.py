"""Local provisioner: the stack's resources in the local AWS (moto), from ``infra.spec``.

``provision`` creates what ``pulumi up`` creates (bucket and its settings, the
instance role, profile and policy, the operator policy, VPC, subnets, internet
gateway, route table, S3 gateway endpoint, security group, launch template) and
returns the same outputs as ``pulumi stack output --json``. It looks every
resource up by name or tags before creating it and only writes settings that
differ, so a second run changes nothing.

One deliberate difference: the TLS-only bucket policy is not applied by
default. The local endpoint is plain HTTP on 127.0.0.1, so a policy requiring
TLS would rightly refuse every request, and moto evaluates a bucket policy's
Deny without its condition, so it refuses them all anyway.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any, NamedTuple

import boto3
from botocore.exceptions import ClientError

from common.aws import RETRY_CONFIG
from infra import local_network, spec
from infra.local_support import LocalContext, is_error, same
from infra.outputs import StackOutputs, write_outputs_file

log = logging.getLogger(__name__)

LOCAL_AMI_NAME = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch (Ubuntu 24.04) local stand-in"
LOCAL_MAX_AZS = 3


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
    tls_only_policy: bool = False,
    outputs_path: Path | None = None,
    debug_profile: bool = False,
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
            if the local AWS has it, else a registered stand-in (:data:`LOCAL_AMI_NAME`).
        max_azs: at most this many AZs get a subnet (at least 2).
        local_principal_arn: a principal allowed to assume the instance role
            (local stand-in instance), see :func:`spec.instance_trust_policy`.
        tls_only_policy: also attach the TLS-only bucket policy (makes every
            object request over plain HTTP, i.e. every local one, fail).
        outputs_path: also write the outputs there as JSON.
        debug_profile: also create the debug role and profile (stack config
            ``debug_profile``); when off, a debug role left from before is removed.

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
    ctx = LocalContext(env=env, region=region, account_id=account_id, tags=tags, clients=clients)

    bucket = _ensure_bucket(ctx, tls_only_policy)
    role_arn, profile_arn = _ensure_instance_identity(ctx, bucket, local_principal_arn)
    debug_arns = _ensure_debug_identity(ctx, bucket, local_principal_arn, wanted=debug_profile)
    vpc_id = local_network.ensure_vpc(ctx)
    subnets = local_network.ensure_subnets(ctx, vpc_id, max_azs)
    route_table_id = local_network.ensure_public_routes(ctx, vpc_id, list(subnets.values()))
    local_network.ensure_s3_endpoint(ctx, vpc_id, route_table_id)
    sg_id = local_network.ensure_security_group(ctx, vpc_id)
    image = ami_id or _local_ami(ctx)
    lt_id = _ensure_launch_template(ctx, image, instance_type, profile_arn, sg_id)
    lt_arn = f"arn:aws:ec2:{region}:{account_id}:launch-template/{lt_id}"
    vpc_arn = f"arn:aws:ec2:{region}:{account_id}:vpc/{vpc_id}"
    operator_arn = _ensure_operator_policy(ctx, bucket, lt_arn, role_arn, vpc_arn, debug_arns[0])
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
        debug_role_arn=debug_arns[0],
        debug_instance_profile_arn=debug_arns[1],
    )
    if outputs_path is not None:
        write_outputs_file(outputs, outputs_path)
    return outputs.to_dict()


# ------------------------------------------------------------------ bucket


def _ensure_bucket(ctx: LocalContext, tls_only_policy: bool) -> str:
    name = spec.bucket_name(ctx.env, ctx.account_id, ctx.region)
    try:
        ctx.s3.head_bucket(Bucket=name)
    except ClientError as exc:
        if not is_error(exc, "404", "NoSuchBucket", "NotFound"):
            raise
        kwargs: dict[str, Any] = {"Bucket": name}
        if ctx.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": ctx.region}
        ctx.s3.create_bucket(**kwargs)
        log.info("created bucket %s", name)
    _configure_bucket(ctx, name)
    if tls_only_policy:
        _ensure_bucket_policy(ctx, name)
    return name


def _current(getter: Any, key: str, missing: tuple[str, ...], **kwargs: Any) -> Any:
    try:
        return getter(**kwargs).get(key)
    except ClientError as exc:
        if is_error(exc, *missing):
            return None
        raise


class _BucketSetting(NamedTuple):
    """One bucket sub-resource: how to read it, how to write it, what it must be."""

    get: Any
    put: Any
    answer_key: str  # where the get call's answer holds the setting
    missing_codes: tuple[str, ...]  # error codes meaning "not set yet"
    put_arg: str
    put_value: Any
    wanted: Any  # what the answer holds once the setting is right


def _bucket_settings(ctx: LocalContext) -> list[_BucketSetting]:
    s3, tag_set = ctx.s3, spec.tag_list(ctx.tags)
    ownership = {"Rules": [{"ObjectOwnership": spec.OBJECT_OWNERSHIP}]}
    encryption = spec.encryption_configuration()
    lifecycle = spec.lifecycle_configuration(ctx.env)
    block = spec.PUBLIC_ACCESS_BLOCK
    return [
        _BucketSetting(s3.get_bucket_tagging, s3.put_bucket_tagging, "TagSet",
                       ("NoSuchTagSet",), "Tagging", {"TagSet": tag_set}, tag_set),
        _BucketSetting(s3.get_public_access_block, s3.put_public_access_block,
                       "PublicAccessBlockConfiguration", ("NoSuchPublicAccessBlockConfiguration",),
                       "PublicAccessBlockConfiguration", block, block),
        _BucketSetting(s3.get_bucket_ownership_controls, s3.put_bucket_ownership_controls,
                       "OwnershipControls", ("OwnershipControlsNotFoundError",),
                       "OwnershipControls", ownership, ownership),
        _BucketSetting(s3.get_bucket_encryption, s3.put_bucket_encryption,
                       "ServerSideEncryptionConfiguration",
                       ("ServerSideEncryptionConfigurationNotFoundError",),
                       "ServerSideEncryptionConfiguration", encryption, encryption),
        _BucketSetting(s3.get_bucket_lifecycle_configuration,
                       s3.put_bucket_lifecycle_configuration, "Rules",
                       ("NoSuchLifecycleConfiguration",), "LifecycleConfiguration",
                       lifecycle, lifecycle["Rules"]),
    ]  # fmt: skip


def _configure_bucket(ctx: LocalContext, name: str) -> None:
    """Tags, public access block, ownership, encryption, lifecycle: written only if different."""
    for setting in _bucket_settings(ctx):
        current = _current(setting.get, setting.answer_key, setting.missing_codes, Bucket=name)
        if not same(current, setting.wanted):
            setting.put(Bucket=name, **{setting.put_arg: setting.put_value})
            log.info("set %s of bucket %s", setting.put_arg, name)


def _ensure_bucket_policy(ctx: LocalContext, name: str) -> None:
    desired = spec.tls_only_bucket_policy(spec.bucket_arn(name))
    current = _current(ctx.s3.get_bucket_policy, "Policy", ("NoSuchBucketPolicy",), Bucket=name)
    if current is None or json.loads(current) != desired:
        ctx.s3.put_bucket_policy(Bucket=name, Policy=json.dumps(desired))
        log.info("set TLS-only policy of bucket %s", name)


# --------------------------------------------------------------------- IAM


def _ensure_instance_identity(
    ctx: LocalContext, bucket: str, local_principal_arn: str | None, kind: str = "instance"
) -> tuple[str, str]:
    """Role, its inline policy and the instance profile; returns their ARNs."""
    name = ctx.name(kind)
    trust = spec.instance_trust_policy(local_principal_arn)
    try:
        role = ctx.iam.get_role(RoleName=name)["Role"]
        if not same(_document(role["AssumeRolePolicyDocument"]), trust):
            ctx.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
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


def _ensure_role_policy(ctx: LocalContext, role: str, bucket: str) -> None:
    policy_name = f"{role}-least-privilege"
    desired = spec.instance_role_policy(
        ctx.env, spec.bucket_arn(bucket), region=ctx.region, account_id=ctx.account_id
    )
    try:
        current = _document(ctx.iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"])
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
        current = None
    if current is None or not same(current, desired):
        ctx.iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(desired))
        log.info("set policy %s of role %s", policy_name, role)


def _ensure_instance_profile(ctx: LocalContext, name: str) -> str:
    try:
        profile = ctx.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
        profile = ctx.iam.create_instance_profile(InstanceProfileName=name, Tags=spec.tag_list(ctx.tags))[
            "InstanceProfile"
        ]
        log.info("created instance profile %s", name)
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        ctx.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return profile["Arn"]


def _ensure_debug_identity(
    ctx: LocalContext, bucket: str, local_principal_arn: str | None, *, wanted: bool
) -> tuple[str | None, str | None]:
    """The debug role and profile (:func:`spec.debug_role_name`) when wanted, else removed.

    The inline policy is the instance role's (:func:`spec.debug_role_policy` is that
    document). The local AWS loads AWS managed policies only on request
    (``MOTO_IAM_LOAD_MANAGED_POLICIES``); without them the attachment is skipped and
    logged: no Session Manager exists locally, so nothing could use it.
    """
    if not wanted:
        _remove_debug_identity(ctx)
        return None, None
    role_arn, profile_arn = _ensure_instance_identity(ctx, bucket, local_principal_arn, spec.DEBUG_ROLE_KIND)
    name = spec.debug_role_name(ctx.env)
    listed = ctx.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    attached = {p["PolicyArn"] for p in listed}
    for arn in spec.debug_managed_policy_arns():
        if arn in attached:
            continue
        try:
            ctx.iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            log.info("attached %s to role %s", arn, name)
        except ClientError as exc:
            if not is_error(exc, "NoSuchEntity"):
                raise
            log.info("the local AWS has no %s; role %s goes without it", arn, name)
    return role_arn, profile_arn


def _remove_debug_identity(ctx: LocalContext) -> None:
    """What ``pulumi up`` does once ``debug_profile`` is off again: the debug role goes."""
    name = spec.debug_role_name(ctx.env)
    try:
        ctx.iam.get_role(RoleName=name)
    except ClientError as exc:
        if is_error(exc, "NoSuchEntity"):
            return
        raise
    try:
        ctx.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
        ctx.iam.delete_instance_profile(InstanceProfileName=name)
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
    for attached in ctx.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        ctx.iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    for policy in ctx.iam.list_role_policies(RoleName=name)["PolicyNames"]:
        ctx.iam.delete_role_policy(RoleName=name, PolicyName=policy)
    ctx.iam.delete_role(RoleName=name)
    log.info("removed debug role and instance profile %s", name)


def _ensure_operator_policy(
    ctx: LocalContext,
    bucket: str,
    launch_template_arn: str,
    role_arn: str,
    vpc_arn: str,
    debug_role_arn: str | None = None,
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
        debug_role_arn=debug_role_arn,
    )
    try:
        version = ctx.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
        ctx.iam.create_policy(
            PolicyName=name, PolicyDocument=json.dumps(desired), Tags=spec.tag_list(ctx.tags)
        )
        log.info("created operator policy %s", name)
        return arn
    current = ctx.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    if not same(_document(current["Document"]), desired):
        _prune_policy_versions(ctx, arn)
        ctx.iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(desired), SetAsDefault=True)
        log.info("updated operator policy %s", name)
    return arn


def _prune_policy_versions(ctx: LocalContext, arn: str) -> None:
    """IAM keeps at most five versions: drop the oldest non-default one if full."""
    versions = ctx.iam.list_policy_versions(PolicyArn=arn)["Versions"]
    old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
    if len(versions) >= 5 and old:
        ctx.iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])


# --------------------------------------------------------- launch template


def _local_ami(ctx: LocalContext) -> str:
    """The DLAMI parameter's image if the local AWS has both, else a registered stand-in.

    The stand-in is a real image in the local AWS (not just an id moto happens to
    accept), with the DLAMI's root device name, so a launch can be checked against its
    AMI exactly as on AWS (DescribeImages: name, root device).
    """
    try:
        image_id = ctx.ssm.get_parameter(Name=spec.DLAMI_SSM_PARAMETER)["Parameter"]["Value"]
        if ctx.ec2.describe_images(ImageIds=[image_id])["Images"]:
            return str(image_id)
    except ClientError as exc:
        if not is_error(exc, "ParameterNotFound", "InvalidAMIID.NotFound", "InvalidAMIID.Malformed"):
            raise
    found = ctx.ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [LOCAL_AMI_NAME]}])
    if found["Images"]:
        return str(found["Images"][0]["ImageId"])
    image_id = ctx.ec2.register_image(
        Name=LOCAL_AMI_NAME,
        Description="local stand-in for the AWS Deep Learning AMI (PyTorch)",
        Architecture="x86_64",
        VirtualizationType="hvm",
        RootDeviceName=spec.ROOT_DEVICE_NAME,
        BlockDeviceMappings=[
            {"DeviceName": spec.ROOT_DEVICE_NAME, "Ebs": {"VolumeSize": 75, "VolumeType": "gp3"}}
        ],
    )["ImageId"]
    log.info("registered the local stand-in AMI %s", image_id)
    return str(image_id)


def _comparable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Launch-template data without the template's own tags (moto copies them in)."""
    return {**data, "TagSpecifications": spec.launch_time_tag_specs(data)}


def _ensure_launch_template(
    ctx: LocalContext, image_id: str, instance_type: str, profile_arn: str, sg_id: str
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
        if not is_error(exc, "InvalidLaunchTemplateName.NotFoundException"):
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
    if not same(_comparable(current), _comparable(desired)):
        version = ctx.ec2.create_launch_template_version(LaunchTemplateId=lt_id, LaunchTemplateData=desired)[
            "LaunchTemplateVersion"
        ]["VersionNumber"]
        ctx.ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(version))
        log.info("launch template %s now at version %s", lt_id, version)
    return lt_id
