"""The zero-idle rule: the resource types a stack may hold that bill nothing while idle.

The stack's tests run the Pulumi program against mocks and pass every declared
resource through :func:`idle_cost_violations`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

COMPONENT_TYPE_PREFIX = "chronos:infra:"
VPC_ENDPOINT_TYPE = "aws:ec2/vpcEndpoint:VpcEndpoint"
LAMBDA_FUNCTION_TYPE = "aws:lambda/function:Function"
LOG_GROUP_TYPE = "aws:cloudwatch/logGroup:LogGroup"
BATCH_COMPUTE_ENVIRONMENT_TYPE = "aws:batch/computeEnvironment:ComputeEnvironment"

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
        # Recovery: Lambda bills per request and GB-second of a run, EventBridge rules on
        # the default bus match AWS service events (free) or a schedule, a log group bills
        # per GB ingested and stored (like S3, bytes, not time), an SNS topic per publish.
        # Provisioned concurrency (its own resource type) would bill by the hour: not here.
        LAMBDA_FUNCTION_TYPE,
        "aws:lambda/permission:Permission",
        "aws:cloudwatch/eventRule:EventRule",
        "aws:cloudwatch/eventTarget:EventTarget",
        LOG_GROUP_TYPE,
        "aws:sns/topic:Topic",
        "aws:sns/topicSubscription:TopicSubscription",
        # Sweeps (stack config ``batch``): AWS Batch itself is free, it bills the instances a
        # compute environment runs, so one passes only with minvCpus 0 and no desired vCPUs
        # (:func:`_batch_violation`). A queue and a job definition are records.
        BATCH_COMPUTE_ENVIRONMENT_TYPE,
        "aws:batch/jobQueue:JobQueue",
        "aws:batch/jobDefinition:JobDefinition",
    }
)


def _get(inputs: Mapping[str, Any], camel: str, snake: str) -> Any:
    return inputs.get(camel, inputs.get(snake))


def _number(value: Any) -> float:
    try:
        return float(value or 0)
    except (TypeError, ValueError):
        return float("inf")  # not a number (an unknown output): cannot be proved 0


def _batch_violation(type_token: str, inputs: Mapping[str, Any]) -> str | None:
    """A compute environment keeps instances (that bill) when its minimum or desired vCPUs are
    above 0, or when a scale-down delay holds idle instances ("Idle instances retained during the
    scale-down delay period are billable at standard EC2 pricing", AWS Batch API Reference,
    ComputeScalingPolicy). Unmanaged environments hold none of their own."""
    resources = _get(inputs, "computeResources", "compute_resources") or {}
    if not isinstance(resources, Mapping):
        return f"{type_token} without readable compute resources cannot be proved idle-free"
    for camel, snake, boto in (
        ("minVcpus", "min_vcpus", "minvCpus"),
        ("desiredVcpus", "desired_vcpus", "desiredvCpus"),
    ):
        value = resources.get(camel, resources.get(snake, resources.get(boto)))
        if _number(value) > 0:
            return f"{type_token} with {camel} {value} keeps instances (and bills) while no job runs"
    # ComputeResource.scalingPolicy (botocore's batch model; the provider calls it scaling_policy)
    scaling = _get(resources, "scalingPolicy", "scaling_policy") or {}
    delay = (
        _get(scaling, "minScaleDownDelayMinutes", "min_scale_down_delay_minutes")
        if isinstance(scaling, Mapping)
        else 0
    )
    if _number(delay) > 0:
        return f"{type_token} with a scale-down delay of {delay} min keeps idle instances that bill"
    return None


def _conditional_violation(type_token: str, inputs: Mapping[str, Any]) -> str | None:
    """Allowed types that bill while idle in one configuration: that configuration."""
    if type_token == BATCH_COMPUTE_ENVIRONMENT_TYPE:
        return _batch_violation(type_token, inputs)
    if type_token == VPC_ENDPOINT_TYPE:
        kind = _get(inputs, "vpcEndpointType", "vpc_endpoint_type")
        return None if kind == "Gateway" else f"{type_token} of type {kind!r} bills hourly"
    if type_token == LAMBDA_FUNCTION_TYPE:
        # SnapStart on Python bills for caching the snapshot while the version exists
        # (AWS Lambda pricing, "SnapStart"): a function must not turn it on.
        snap = _get(inputs, "snapStart", "snap_start") or {}
        apply_on = _get(snap, "applyOn", "apply_on") if isinstance(snap, Mapping) else None
        if apply_on not in (None, "None"):
            return f"{type_token} with SnapStart on {apply_on!r} bills while idle"
    if type_token == LOG_GROUP_TYPE and not _get(inputs, "retentionInDays", "retention_in_days"):
        return f"{type_token} without a retention keeps (and bills) its logs forever"
    return None


def idle_cost_violations(resources: Iterable[tuple[str, Mapping[str, Any]]]) -> list[str]:
    """Which of ``(type token, inputs)`` would bill while no run is active.

    Components (``chronos:infra:*``) are grouping only. A VPC endpoint passes
    only as a Gateway endpoint (interface endpoints bill by the hour), a Lambda
    function only without SnapStart, a log group only with a retention, a Batch compute
    environment only with min and desired vCPUs 0 and no scale-down delay.
    """
    violations = []
    for type_token, inputs in resources:
        if type_token.startswith(COMPONENT_TYPE_PREFIX):
            continue
        if type_token not in ZERO_IDLE_RESOURCE_TYPES:
            violations.append(f"{type_token} is not in the zero-idle allowlist")
        elif (violation := _conditional_violation(type_token, inputs)) is not None:
            violations.append(violation)
    return violations
