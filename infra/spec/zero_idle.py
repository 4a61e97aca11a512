"""The zero-idle rule: the resource types a stack may hold that bill nothing while idle.

The stack's tests run the Pulumi program against mocks and pass every declared
resource through :func:`idle_cost_violations`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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
