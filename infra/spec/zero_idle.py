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
    }
)


def _get(inputs: Mapping[str, Any], camel: str, snake: str) -> Any:
    return inputs.get(camel, inputs.get(snake))


def _conditional_violation(type_token: str, inputs: Mapping[str, Any]) -> str | None:
    """Allowed types that bill while idle in one configuration: that configuration."""
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
    function only without SnapStart, a log group only with a retention.
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
