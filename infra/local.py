"""Local provisioner: the stack's resources in the local AWS (moto), from ``infra.spec``.

``provision`` creates what ``pulumi up`` creates (bucket and its settings, the
instance role, profile and policy, the operator policy, VPC, subnets, internet
gateway, route table, S3 gateway endpoint, security group, launch template, the
recovery role and the optional notification topic; :mod:`infra.local_recovery`) and
returns the same outputs as ``pulumi stack output --json``. It looks every
resource up by name or tags before creating it and only writes settings that
differ, so a second run changes nothing. The network is :mod:`infra.local_network`,
the IAM side :mod:`infra.local_iam`, the sweep engine (``batch``) :mod:`infra.local_batch`;
the bucket and launch template are here.

One deliberate difference: the TLS-only bucket policy is not applied by
default. The local endpoint is plain HTTP on 127.0.0.1, so a policy requiring
TLS would rightly refuse every request, and moto evaluates a bucket policy's
Deny without its condition, so it refuses them all anyway.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import boto3
from botocore.exceptions import ClientError

from common.aws import RETRY_CONFIG
from common.tags import DEFAULT_COST_CENTER, MANAGED_BY_LOCAL, tag_list, tags
from infra import local_batch, local_iam, local_network, local_recovery
from infra.local_support import LocalContext, ensure_launch_template, is_error, same
from infra.outputs import StackOutputs, write_outputs_file
from infra.spec import bucket as spec_bucket
from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names
from infra.spec import recovery as spec_recovery

log = logging.getLogger(__name__)

LOCAL_AMI_NAME = "Deep Learning OSS Nvidia Driver AMI GPU PyTorch (Ubuntu 24.04) local stand-in"
LOCAL_MAX_AZS = 3
_SERVICES = ("s3", "iam", "ec2", "sts", "ssm", "sns", "batch")


@dataclass(frozen=True, kw_only=True)
class ProvisionOptions:
    """How :func:`provision` builds the stack, past the env and the endpoint.

    Attributes:
        region: region of every resource.
        cost_center: CostCenter tag.
        instance_type: launch template's default type (g4dn.* or g5.*).
        ami_id: image of the launch template; default: the DLAMI SSM parameter
            if the local AWS has it, else a registered stand-in (:data:`LOCAL_AMI_NAME`).
        max_azs: at most this many AZs get a subnet (at least 2).
        local_principal_arn: a principal allowed to assume the instance role
            (local stand-in instance), see :func:`infra.spec.iam.instance_trust_policy`.
        tls_only_policy: also attach the TLS-only bucket policy (makes every
            object request over plain HTTP, i.e. every local one, fail).
        outputs_path: also write the outputs there as JSON.
        debug_profile: also create the debug role and profile (stack config
            ``debug_profile``); when off, a debug role left from before is removed.
        notify_email: also create the notification topic with this address
            subscribed (stack config ``notify_email``).
        recovery_principal_arn: a principal allowed to assume the recovery role (the
            local backend runs the recovery handler with its credentials), see
            :func:`infra.spec.recovery.lambda_trust_policy`.
        batch: also create the sweep engine (stack config ``batch``: :mod:`infra.local_batch`);
            ``local_principal_arn`` may then assume the job role (the local job executor).
    """

    region: str = "us-east-1"
    cost_center: str = DEFAULT_COST_CENTER
    instance_type: str = spec_names.DEFAULT_INSTANCE_TYPE
    ami_id: str | None = None
    max_azs: int = LOCAL_MAX_AZS
    local_principal_arn: str | None = None
    tls_only_policy: bool = False
    outputs_path: Path | None = None
    debug_profile: bool = False
    notify_email: str | None = None
    recovery_principal_arn: str | None = None
    batch: bool = False


def provision(
    session: boto3.Session,
    *,
    env: str,
    endpoint_url: str | None,
    options: ProvisionOptions | None = None,
) -> dict[str, Any]:
    """Create (or find) every stack resource in the local AWS; return the outputs.

    Args:
        session: credentials for the local AWS.
        env: environment name (validated).
        endpoint_url: the local AWS endpoint (``None`` uses the SDK default).
        options: everything else (:class:`ProvisionOptions`; default: its defaults).

    Returns:
        The ``pulumi stack output --json`` mapping (:class:`StackOutputs` keys).

    Raises:
        infra.spec.SpecError: invalid env, instance type or AZ count.
        botocore.exceptions.ClientError: the local AWS refused a call.
    """
    opts = options or ProvisionOptions()
    spec_names.validate_env(env)
    spec_names.validate_instance_type(opts.instance_type)
    region = opts.region
    clients = {
        s: session.client(s, region_name=region, endpoint_url=endpoint_url, config=RETRY_CONFIG)
        for s in _SERVICES
    }
    account_id = clients["sts"].get_caller_identity()["Account"]
    resource_tags = tags(env, opts.cost_center, managed_by=MANAGED_BY_LOCAL)
    ctx = LocalContext(env=env, region=region, account_id=account_id, tags=resource_tags, clients=clients)

    bucket = _ensure_bucket(ctx, opts.tls_only_policy)
    topic_arn = local_recovery.ensure_notify_topic(ctx, opts.notify_email)
    role_arn, profile_arn = local_iam.ensure_instance_identity(
        ctx, bucket, opts.local_principal_arn, notify_topic_arn=topic_arn
    )
    debug_arns = local_iam.ensure_debug_identity(
        ctx, bucket, opts.local_principal_arn, wanted=opts.debug_profile, notify_topic_arn=topic_arn
    )
    vpc_id, subnets, sg_id = local_network.ensure_network(ctx, opts.max_azs)
    image = opts.ami_id or _local_ami(ctx)
    lt_id = _ensure_launch_template(ctx, image, opts.instance_type, profile_arn, sg_id)
    lt_arn = f"arn:aws:ec2:{region}:{account_id}:launch-template/{lt_id}"
    vpc_arn = f"arn:aws:ec2:{region}:{account_id}:vpc/{vpc_id}"
    operator_arn = local_iam.ensure_operator_policy(
        ctx, bucket, lt_arn, role_arn, vpc_arn, debug_arns[0], batch=opts.batch
    )
    batch_outputs = _batch(ctx, opts, endpoint_url, bucket, list(subnets.values()), sg_id, topic_arn)
    recovery_scope = spec_recovery.RecoveryScope(
        env=env,
        region=region,
        account_id=account_id,
        bucket_arn=spec_bucket.bucket_arn(bucket),
        launch_template_arn=lt_arn,
        vpc_arn=vpc_arn,
        instance_role_arn=role_arn,
        notify_topic_arn=topic_arn,
        debug_role_arn=debug_arns[0],
    )
    recovery_role_arn = local_recovery.ensure_recovery_identity(
        ctx, recovery_scope, opts.recovery_principal_arn
    )
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
        recovery_function_name=spec_recovery.function_name(env),  # run by the local backend, no Lambda
        recovery_role_arn=recovery_role_arn,
        notify_topic_arn=topic_arn,
        **batch_outputs,
    )
    if opts.outputs_path is not None:
        write_outputs_file(outputs, opts.outputs_path)
    return outputs.to_dict()


def _batch(
    ctx: LocalContext,
    opts: ProvisionOptions,
    endpoint_url: str | None,
    bucket: str,
    subnets: list[str],
    sg_id: str,
    topic_arn: str | None,
) -> dict[str, str]:
    if not opts.batch:
        return {}
    if endpoint_url:
        local_batch.moto_without_docker(endpoint_url)
    return local_batch.ensure_batch(
        ctx,
        bucket=bucket,
        subnets=subnets,
        security_group_id=sg_id,
        instance_type=opts.instance_type,
        local_principal_arn=opts.local_principal_arn,
        notify_topic_arn=topic_arn,
    )


# ------------------------------------------------------------------ bucket


def _ensure_bucket(ctx: LocalContext, tls_only_policy: bool) -> str:
    name = spec_names.bucket_name(ctx.env, ctx.account_id, ctx.region)
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
    s3, tag_set = ctx.s3, tag_list(ctx.tags)
    ownership = {"Rules": [{"ObjectOwnership": spec_bucket.OBJECT_OWNERSHIP}]}
    encryption = spec_bucket.encryption_configuration()
    lifecycle = spec_bucket.lifecycle_configuration(ctx.env)
    block = spec_bucket.PUBLIC_ACCESS_BLOCK
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
    desired = spec_bucket.tls_only_bucket_policy(spec_bucket.bucket_arn(name))
    current = _current(ctx.s3.get_bucket_policy, "Policy", ("NoSuchBucketPolicy",), Bucket=name)
    if current is None or json.loads(current) != desired:
        ctx.s3.put_bucket_policy(Bucket=name, Policy=json.dumps(desired))
        log.info("set TLS-only policy of bucket %s", name)


# --------------------------------------------------------- launch template


def _local_ami(ctx: LocalContext) -> str:
    """The DLAMI parameter's image if the local AWS has both, else a registered stand-in.

    The stand-in is a real image in the local AWS (not just an id moto happens to
    accept), with the DLAMI's root device name, so a launch can be checked against its
    AMI exactly as on AWS (DescribeImages: name, root device).
    """
    try:
        image_id = ctx.ssm.get_parameter(Name=spec_template.DLAMI_SSM_PARAMETER)["Parameter"]["Value"]
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
        RootDeviceName=spec_template.ROOT_DEVICE_NAME,
        BlockDeviceMappings=[
            {"DeviceName": spec_template.ROOT_DEVICE_NAME, "Ebs": {"VolumeSize": 75, "VolumeType": "gp3"}}
        ],
    )["ImageId"]
    log.info("registered the local stand-in AMI %s", image_id)
    return str(image_id)


def _ensure_launch_template(
    ctx: LocalContext, image_id: str, instance_type: str, profile_arn: str, sg_id: str
) -> str:
    name = ctx.name("training")
    desired = spec_template.launch_template_data(
        image_id=image_id,
        instance_type=instance_type,
        instance_profile_arn=profile_arn,
        security_group_id=sg_id,
        resource_tags=ctx.tags,
    )
    return ensure_launch_template(ctx, name, desired)[0]
