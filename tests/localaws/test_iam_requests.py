"""Recorded calls -> the authorization requests AWS evaluates, checked against explicit policies."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from common import tags as common_tags
from infra.spec import iam as spec_iam
from infra.spec import launch_template as spec_template
from infra.spec import network as spec_network
from infra.spec import operator_access as spec_operator
from localaws.iam_calls import AuthRequest, Call, Caller, NotModelled
from localaws.iam_eval import evaluate
from localaws.iam_requests import requests_for

ACCOUNT, REGION = "123456789012", "us-east-1"
LT_ID, SUBNET, SG, VPC, AMI = "lt-0abc", "subnet-1", "sg-1", "vpc-1", "ami-1"
LT_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/{LT_ID}"
VPC_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/{VPC}"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance"
PROFILE_ARN = f"arn:aws:iam::{ACCOUNT}:instance-profile/chronos-dev-instance"
BUCKET_ARN = "arn:aws:s3:::chronos-training-dev-123456789012-us-east-1"
TAGS = common_tags.tags("dev", managed_by=common_tags.MANAGED_BY_LOCAL)
SELF_ID, OTHER_ID = "i-0aaaaaaaaaaaaaaaa", "i-0bbbbbbbbbbbbbbbb"
OPERATOR = Caller(
    f"arn:aws:iam::{ACCOUNT}:user/op", f"arn:aws:iam::{ACCOUNT}:user/op", "AIDAOP", ACCOUNT, "op"
)
INSTANCE_ROLE = Caller(
    f"arn:aws:sts::{ACCOUNT}:assumed-role/chronos-dev-instance/{SELF_ID}",
    ROLE_ARN,
    f"AROAROLEID:{SELF_ID}",
    ACCOUNT,
)


class FakeFacts:
    """The provisioned stack's resources, as the local AWS would describe them."""

    def __init__(self) -> None:
        tagged = {"Tags": common_tags.tag_list(TAGS)}
        self.instances = {
            i: {"InstanceId": i, "InstanceType": "g5.xlarge", **tagged} for i in (SELF_ID, OTHER_ID)
        }
        self.lt_data = spec_template.launch_template_data(
            image_id=AMI,
            instance_type="g5.xlarge",
            instance_profile_arn=PROFILE_ARN,
            security_group_id=SG,
            resource_tags=TAGS,
        )

    def instance(self, instance_id: str) -> dict[str, Any] | None:
        return self.instances.get(instance_id)

    def subnet(self, subnet_id: str) -> dict[str, Any] | None:
        return {"SubnetId": subnet_id, "VpcId": VPC, "AvailabilityZone": "us-east-1a"}

    def security_group(self, group_id: str) -> dict[str, Any] | None:
        return {"GroupId": group_id, "VpcId": VPC}

    def image(self, image_id: str) -> dict[str, Any] | None:
        return None

    def volume(self, volume_id: str) -> dict[str, Any] | None:
        return None

    def spot_request(self, request_id: str) -> dict[str, Any] | None:
        return None

    def launch_template(self, ref: Mapping[str, Any]) -> tuple[str, dict[str, Any], dict[str, str]] | None:
        return LT_ID, self.lt_data, TAGS

    def instance_profile_roles(self, profile: str) -> tuple[str, ...]:
        return (ROLE_ARN,)

    def instance_profile_arn(self, profile: str) -> str | None:
        return PROFILE_ARN


def _run_instances(*, spot: bool) -> Call:
    tags = common_tags.tag_list(TAGS)
    params: dict[str, Any] = {
        "MinCount": 1,
        "MaxCount": 1,
        "InstanceType": "g5.xlarge",
        "LaunchTemplate": {"LaunchTemplateId": LT_ID, "Version": "$Latest"},
        "NetworkInterfaces": spec_network.network_interface_override(SUBNET, SG),
        "TagSpecifications": [{"ResourceType": k, "Tags": tags} for k in ("instance", "volume")],
    }
    if spot:
        params["InstanceMarketOptions"] = {"MarketType": "spot"}
        params["TagSpecifications"].append({"ResourceType": "spot-instances-request", "Tags": tags})
    return Call("ec2", "RunInstances", REGION, params)


def _by_kind(requests: list[AuthRequest], action: str = "ec2:RunInstances") -> dict[str, AuthRequest]:
    return {
        r.request.resource.split(":", 5)[5].split("/")[0]: r for r in requests if r.request.action == action
    }


def test_on_demand_launch_touches_each_resource_and_no_spot_request() -> None:
    requests = requests_for(_run_instances(spot=False), OPERATOR, FakeFacts())
    kinds = _by_kind(requests)
    assert set(kinds) == {
        "instance",
        "volume",
        "network-interface",
        "subnet",
        "security-group",
        "image",
        "launch-template",
    }
    instance = kinds["instance"].request.context
    assert instance["ec2:LaunchTemplate"] == LT_ARN and instance["ec2:InstanceType"] == "g5.xlarge"
    assert instance["ec2:InstanceMarketType"] == "on-demand"
    assert instance["aws:RequestTag/Project"] == common_tags.PROJECT_TAG
    assert kinds["subnet"].request.context["ec2:Vpc"] == VPC_ARN
    assert kinds["image"].request.resource == f"arn:aws:ec2:{REGION}::image/{AMI}"
    passed = [r.request for r in requests if r.request.action == "iam:PassRole"]
    assert [(p.resource, p.context["iam:PassedToService"]) for p in passed] == [
        (ROLE_ARN, "ec2.amazonaws.com")
    ]
    tagged = _by_kind(requests, "ec2:CreateTags")
    assert set(tagged) == {"instance", "volume", "network-interface"}  # the template tags the interface
    assert all(t.request.context["ec2:CreateAction"] == "RunInstances" for t in tagged.values())


def test_spot_launch_adds_the_spot_request_which_carries_no_launch_template_key() -> None:
    requests = requests_for(_run_instances(spot=True), OPERATOR, FakeFacts())
    spot = _by_kind(requests)["spot-instances-request"].request
    assert spot.resource == f"arn:aws:ec2:{REGION}:{ACCOUNT}:spot-instances-request/*"
    assert not {"ec2:LaunchTemplate", "ec2:Vpc", "ec2:InstanceType"} & set(spot.context)
    assert spot.context["aws:RequestTag/Project"] == common_tags.PROJECT_TAG
    assert "spot-instances-request" in _by_kind(requests, "ec2:CreateTags")


def _launch_statements(*, with_spot_statement: bool) -> dict[str, Any]:
    """The operator's launch statements as defect 1's fix shapes them (spot request on its own)."""
    arn = lambda kind: f"arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/*"  # noqa: E731
    statements = [
        {
            "Sid": "RunFromTemplate",
            "Effect": "Allow",
            "Action": "ec2:RunInstances",
            "Resource": [
                *(arn(k) for k in ("instance", "volume", "network-interface", "subnet", "security-group")),
                f"arn:aws:ec2:{REGION}::image/*",
                LT_ARN,
            ],
            "Condition": {
                "ArnLike": {"ec2:LaunchTemplate": LT_ARN},
                "StringLikeIfExists": {"ec2:InstanceType": ["g5.*", "g4dn.*"]},
                "ArnEqualsIfExists": {"ec2:Vpc": VPC_ARN},
            },
        },
        {
            "Sid": "PassRole",
            "Effect": "Allow",
            "Action": "iam:PassRole",
            "Resource": ROLE_ARN,
            "Condition": {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
        },
        {
            "Sid": "TagAtLaunch",
            "Effect": "Allow",
            "Action": "ec2:CreateTags",
            "Resource": [
                arn(k) for k in ("instance", "volume", "network-interface", "spot-instances-request")
            ],
            "Condition": {"StringEquals": {"ec2:CreateAction": "RunInstances"}},
        },
    ]
    if with_spot_statement:
        statements.append(
            {
                "Sid": "RequestSpot",
                "Effect": "Allow",
                "Action": "ec2:RunInstances",
                "Resource": arn("spot-instances-request"),
                "Condition": {"StringEquals": {"aws:RequestTag/Project": common_tags.PROJECT_TAG}},
            }
        )
    return {"Version": "2012-10-17", "Statement": statements}


def _denied(policy: Mapping[str, Any], requests: list[AuthRequest]) -> list[str]:
    return [
        f"{r.request.action} {r.request.resource}"
        for r in requests
        if not evaluate([policy], r.request).allowed
    ]


def test_spot_needs_its_own_statement_the_launch_template_condition_cannot_match_it() -> None:
    requests = requests_for(_run_instances(spot=True), OPERATOR, FakeFacts())
    assert _denied(_launch_statements(with_spot_statement=False), requests) == [
        f"ec2:RunInstances arn:aws:ec2:{REGION}:{ACCOUNT}:spot-instances-request/*"
    ]
    assert _denied(_launch_statements(with_spot_statement=True), requests) == []
    on_demand = requests_for(_run_instances(spot=False), OPERATOR, FakeFacts())
    assert _denied(_launch_statements(with_spot_statement=False), on_demand) == []


def _operator_policy() -> dict[str, Any]:
    return spec_operator.operator_policy(
        spec_operator.OperatorScope(
            env="dev",
            region=REGION,
            account_id=ACCOUNT,
            bucket_arn=BUCKET_ARN,
            launch_template_arn=LT_ARN,
            role_arn=ROLE_ARN,
            vpc_arn=VPC_ARN,
        )
    )


def test_the_projects_operator_policy_allows_an_on_demand_launch() -> None:
    assert _denied(_operator_policy(), requests_for(_run_instances(spot=False), OPERATOR, FakeFacts())) == []


def test_the_projects_operator_policy_allows_a_spot_launch() -> None:
    """Defect 1's regression test in request form: spot needs the spot-instances-request resource."""
    assert _denied(_operator_policy(), requests_for(_run_instances(spot=True), OPERATOR, FakeFacts())) == []


def _terminate(instance_id: str) -> list[AuthRequest]:
    return requests_for(
        Call("ec2", "TerminateInstances", REGION, {"InstanceIds": [instance_id]}), INSTANCE_ROLE, FakeFacts()
    )


def test_instance_terminating_itself_vs_another_instance() -> None:
    policy = spec_iam.instance_role_policy("dev", BUCKET_ARN, region=REGION, account_id=ACCOUNT)
    (own,) = _terminate(SELF_ID)
    assert own.request.context["aws:userid"] == f"AROAROLEID:{SELF_ID}"
    assert own.request.context["ec2:InstanceID"] == SELF_ID
    assert own.request.context["aws:ResourceTag/Environment"] == "dev"
    assert evaluate([policy], own.request).allowed
    (other,) = _terminate(OTHER_ID)
    decision = evaluate([policy], other.request)
    assert not decision.allowed
    assert decision.near_misses == (("TerminateOnlyItself", "condition StringLike aws:userid failed"),)


def test_s3_calls_map_to_their_actions_and_list_carries_the_prefix() -> None:
    def only(op: str, **params: Any) -> tuple[str, str, Mapping[str, Any]]:
        (r,) = requests_for(Call("s3", op, REGION, {"Bucket": "b", **params}), OPERATOR, FakeFacts())
        return r.request.action, r.request.resource, r.request.context

    assert only("HeadObject", Key="k")[:2] == ("s3:GetObject", "arn:aws:s3:::b/k")
    assert only("UploadPart", Key="k")[0] == "s3:PutObject"
    assert only("ListParts", Key="k")[0] == "s3:ListMultipartUploadParts"
    action, resource, context = only("ListObjectsV2", Prefix="dev/")
    assert (action, resource, context["s3:prefix"]) == ("s3:ListBucket", "arn:aws:s3:::b", "dev/")
    assert "s3:prefix" not in only("ListObjectsV2")[2]
    assert only("PutObject", Key="k", IfNoneMatch="*")[2]["s3:if-none-match"] == "*"
    copy = requests_for(
        Call("s3", "CopyObject", REGION, {"Bucket": "b", "Key": "new", "CopySource": "src/old"}),
        OPERATOR,
        FakeFacts(),
    )
    assert [(r.request.action, r.request.resource) for r in copy] == [
        ("s3:PutObject", "arn:aws:s3:::b/new"),
        ("s3:GetObject", "arn:aws:s3:::src/old"),
    ]


def test_calls_needing_no_permission_and_calls_on_no_resource() -> None:
    assert requests_for(Call("sts", "GetCallerIdentity", REGION, {}), OPERATOR, FakeFacts()) == []
    (describe,) = requests_for(Call("ec2", "DescribeInstances", REGION, {}), OPERATOR, FakeFacts())
    assert (describe.request.resource, describe.request.context["ec2:Region"]) == ("*", REGION)
    (prices,) = requests_for(Call("pricing", "GetProducts", REGION, {}), OPERATOR, FakeFacts())
    assert prices.request.action == "pricing:GetProducts"
    (param,) = requests_for(
        Call("ssm", "GetParameter", REGION, {"Name": spec_template.DLAMI_SSM_PARAMETER}),
        OPERATOR,
        FakeFacts(),
    )
    assert param.request.resource == f"arn:aws:ssm:{REGION}::parameter{spec_template.DLAMI_SSM_PARAMETER}"
    assert evaluate([_operator_policy()], param.request).allowed


def test_an_operation_without_a_model_raises() -> None:
    with pytest.raises(NotModelled):
        requests_for(Call("ec2", "AttachVolume", REGION, {"VolumeId": "vol-1"}), OPERATOR, FakeFacts())
    with pytest.raises(NotModelled):
        requests_for(Call("s3", "RestoreObject", REGION, {"Bucket": "b", "Key": "k"}), OPERATOR, FakeFacts())
