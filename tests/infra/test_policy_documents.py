"""The IAM and bucket policy documents, tested as documents (conditions included) and linted."""

from __future__ import annotations

import json
import types

import pytest
from iam_eval import Request, allowed, decide

from infra.spec import bucket as spec_bucket
from infra.spec import iam as spec_iam
from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names
from infra.spec import operator_access as spec_operator

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = spec_bucket.bucket_arn(spec_names.bucket_name("dev", ACCOUNT, REGION))
LT_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0abc"
OTHER_LT_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0other"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance"
VPC_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1"
SELF_ID = "i-0aaaaaaaaaaaaaaaa"
OTHER_ID = "i-0bbbbbbbbbbbbbbbb"
TAGGED = {"aws:ResourceTag/Project": "Chronos-Training", "aws:ResourceTag/Environment": "dev"}

INSTANCE = spec_iam.instance_role_policy("dev", BUCKET, region=REGION, account_id=ACCOUNT)
OPERATOR = spec_operator.operator_policy(
    spec_operator.OperatorScope(
        env="dev",
        region=REGION,
        account_id=ACCOUNT,
        bucket_arn=BUCKET,
        launch_template_arn=LT_ARN,
        role_arn=ROLE_ARN,
        vpc_arn=VPC_ARN,
    )
)


def _instance_arn(instance_id: str) -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}"


def _from_instance(**context: str) -> dict[str, str]:
    """Request context of a call made with the instance-profile credentials of SELF_ID."""
    return {"aws:userid": f"AROAEXAMPLEROLEID:{SELF_ID}", **context}


# ------------------------------------------------------------ instance role


def test_trust_policy_lets_only_ec2_assume_the_role() -> None:
    (statement,) = spec_iam.instance_trust_policy()["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "ec2.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }


def test_instance_may_terminate_itself_when_tagged() -> None:
    context = _from_instance(**TAGGED, **{"ec2:InstanceID": SELF_ID})
    request = Request("ec2:TerminateInstances", _instance_arn(SELF_ID), context)
    assert allowed(INSTANCE, request)


@pytest.mark.parametrize(
    ("target", "tags"),
    [
        (OTHER_ID, TAGGED),  # another instance of the project: not itself
        (SELF_ID, {}),  # untagged
        (SELF_ID, {"aws:ResourceTag/Project": "Chronos-Training"}),  # no Environment tag
        (SELF_ID, {**TAGGED, "aws:ResourceTag/Environment": "prod"}),  # another env
        (SELF_ID, {**TAGGED, "aws:ResourceTag/Project": "Other"}),  # another project
    ],
)
def test_instance_may_not_terminate_anything_else(target: str, tags: dict) -> None:
    context = _from_instance(**tags, **{"ec2:InstanceID": target})
    assert not allowed(INSTANCE, Request("ec2:TerminateInstances", _instance_arn(target), context))


def test_terminate_is_denied_to_credentials_that_are_not_the_instances() -> None:
    context = {**TAGGED, "ec2:InstanceID": SELF_ID, "aws:userid": "AIDAUSERID"}
    assert not allowed(INSTANCE, Request("ec2:TerminateInstances", _instance_arn(SELF_ID), context))


@pytest.mark.parametrize("prefix", ["cached-datasets/", "cached-datasets/training-data/", "dev/"])
def test_instance_may_list_its_two_prefixes(prefix: str) -> None:
    assert allowed(INSTANCE, Request("s3:ListBucket", BUCKET, {"s3:prefix": prefix}))


@pytest.mark.parametrize("prefix", ["prod/", "", "cached", "devx/", "de"])
def test_instance_may_not_list_anything_else(prefix: str) -> None:
    assert not allowed(INSTANCE, Request("s3:ListBucket", BUCKET, {"s3:prefix": prefix}))
    assert not allowed(INSTANCE, Request("s3:ListBucket", BUCKET, {}))


def test_instance_object_access_is_read_cached_and_read_write_own_env() -> None:
    def can(action: str, key: str) -> bool:
        return allowed(INSTANCE, Request(action, f"{BUCKET}/{key}"))

    assert can("s3:GetObject", "cached-datasets/training-data/2026/01/a.parquet")
    assert not can("s3:PutObject", "cached-datasets/scripts/x.tar.gz")
    assert not can("s3:DeleteObject", "cached-datasets/scripts/x.tar.gz")
    assert can("s3:PutObject", "dev/system-state.json")
    assert can("s3:DeleteObject", "dev/system-state.json")
    assert not can("s3:GetObject", "prod/system-state.json")
    assert not can("s3:PutObject", "devx/2026/x")


def test_every_conditional_statement_of_the_instance_role_is_one_of_the_two_known() -> None:
    conditional = {s["Sid"] for s in INSTANCE["Statement"] if "Condition" in s}
    assert conditional == {"ListOwnPrefixesOnly", "TerminateOnlyItself"}


def test_instance_role_grants_nothing_beyond_s3_and_its_ec2_calls() -> None:
    actions = {a for s in INSTANCE["Statement"] for a in s["Action"]}
    assert actions == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:AbortMultipartUpload",
        "s3:ListMultipartUploadParts",
        "s3:ListBucket",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
        "ec2:DescribeTags",
        "ec2:DescribeVolumes",  # cleanup's check for volumes left behind
    }
    assert all("*" not in "".join(s["Action"]) for s in INSTANCE["Statement"])
    # every statement allows, but the one that keeps a run's launch inputs out of the instance's reach
    denies = [s for s in INSTANCE["Statement"] if s["Effect"] != "Allow"]
    assert [(s["Effect"], s["Sid"]) for s in denies] == [("Deny", "NeverRewriteLaunchInputs")]


def test_the_instance_may_read_but_never_rewrite_a_runs_launch_inputs() -> None:
    """The recovery function relaunches from user-configs/launch-request.json with the operator's
    launch rights: an instance that could rewrite it could pick the next instance's user data."""
    run = f"{BUCKET}/dev/2026/11/25-140502/"
    for name in ("launch-request.json", "run-spec.json", "launch-record.json"):
        for action in ("s3:PutObject", "s3:DeleteObject"):
            assert not allowed(INSTANCE, Request(action, run + "user-configs/" + name)), (action, name)
        assert allowed(INSTANCE, Request("s3:GetObject", run + "user-configs/" + name)), name
    assert allowed(INSTANCE, Request("s3:PutObject", run + "_SUCCESS"))
    assert allowed(INSTANCE, Request("s3:PutObject", run + "checkpoints/checkpoint-10/model.safetensors"))


# ------------------------------------------------------------------ operator


def _run(resource_kind: str, **context: str) -> Request:
    resource = f"arn:aws:ec2:{REGION}:{ACCOUNT}:{resource_kind}/x-1"
    if resource_kind == "image":
        resource = f"arn:aws:ec2:{REGION}::image/ami-1"
    return Request("ec2:RunInstances", resource, context)


LAUNCH_RESOURCES = ["instance", "volume", "network-interface", "subnet", "security-group", "image"]


@pytest.mark.parametrize("kind", LAUNCH_RESOURCES)
def test_operator_may_launch_from_the_launch_template(kind: str) -> None:
    context = {"ec2:LaunchTemplate": LT_ARN}
    if kind == "instance":
        context["ec2:InstanceType"] = "g5.2xlarge"
    if kind in ("subnet", "security-group", "network-interface"):
        context["ec2:Vpc"] = VPC_ARN
    assert allowed(OPERATOR, _run(kind, **context))


@pytest.mark.parametrize("kind", LAUNCH_RESOURCES)
def test_operator_may_not_launch_without_the_launch_template(kind: str) -> None:
    assert not allowed(OPERATOR, _run(kind))
    assert not allowed(OPERATOR, _run(kind, **{"ec2:LaunchTemplate": OTHER_LT_ARN}))


@pytest.mark.parametrize("instance_type", ["p4d.24xlarge", "g6.xlarge", "t3.micro"])
def test_operator_may_not_launch_other_instance_types(instance_type: str) -> None:
    context = {"ec2:LaunchTemplate": LT_ARN, "ec2:InstanceType": instance_type}
    assert not allowed(OPERATOR, _run("instance", **context))


def test_operator_may_not_launch_into_another_vpc() -> None:
    context = {"ec2:LaunchTemplate": LT_ARN, "ec2:Vpc": f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-9"}
    assert not allowed(OPERATOR, _run("subnet", **context))


def test_operator_may_pass_only_the_instance_role_and_only_to_ec2() -> None:
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert allowed(OPERATOR, Request("iam:PassRole", ROLE_ARN, to_ec2))
    admin = f"arn:aws:iam::{ACCOUNT}:role/Admin"
    assert not allowed(OPERATOR, Request("iam:PassRole", admin, to_ec2))
    to_lambda = {"iam:PassedToService": "lambda.amazonaws.com"}
    assert not allowed(OPERATOR, Request("iam:PassRole", ROLE_ARN, to_lambda))


def test_operator_terminates_only_tagged_instances_of_its_env() -> None:
    target = _instance_arn(OTHER_ID)
    assert allowed(OPERATOR, Request("ec2:TerminateInstances", target, TAGGED))
    assert not allowed(OPERATOR, Request("ec2:TerminateInstances", target, {}))
    prod = {**TAGGED, "aws:ResourceTag/Environment": "prod"}
    assert not allowed(OPERATOR, Request("ec2:TerminateInstances", target, prod))


def test_operator_tags_only_while_launching() -> None:
    instance = _instance_arn(OTHER_ID)
    launching = {"ec2:CreateAction": "RunInstances"}
    assert allowed(OPERATOR, Request("ec2:CreateTags", instance, launching))
    assert not allowed(OPERATOR, Request("ec2:CreateTags", instance, {}))


def test_operator_cleans_up_only_tagged_volumes_and_spot_requests() -> None:
    volume = f"arn:aws:ec2:{REGION}:{ACCOUNT}:volume/vol-1"
    spot = f"arn:aws:ec2:{REGION}:{ACCOUNT}:spot-instances-request/sir-1"
    for action, resource in (("ec2:DeleteVolume", volume), ("ec2:CancelSpotInstanceRequests", spot)):
        assert allowed(OPERATOR, Request(action, resource, TAGGED))
        assert not allowed(OPERATOR, Request(action, resource, {}))


def test_operator_reads_the_dlami_parameter_and_uses_the_bucket() -> None:
    param = f"arn:aws:ssm:{REGION}::parameter{spec_template.DLAMI_SSM_PARAMETER}"
    assert allowed(OPERATOR, Request("ssm:GetParameter", param))
    assert not allowed(
        OPERATOR, Request("ssm:GetParameter", f"arn:aws:ssm:{REGION}:{ACCOUNT}:parameter/secret")
    )
    assert allowed(OPERATOR, Request("s3:PutObject", f"{BUCKET}/cached-datasets/scripts/code.tar.gz"))
    assert not allowed(OPERATOR, Request("s3:DeleteBucket", BUCKET))
    assert not allowed(OPERATOR, Request("s3:PutBucketPolicy", BUCKET))


def test_operator_cannot_touch_iam_beyond_pass_role_and_the_spot_service_role() -> None:
    iam_actions = {a for s in OPERATOR["Statement"] for a in s["Action"] if a.startswith("iam:")}
    assert iam_actions == {"iam:PassRole", "iam:CreateServiceLinkedRole", "iam:GetInstanceProfile"}
    profile = f"arn:aws:iam::{ACCOUNT}:instance-profile/chronos-dev-instance"
    assert allowed(OPERATOR, Request("iam:GetInstanceProfile", profile))
    other = f"arn:aws:iam::{ACCOUNT}:instance-profile/x"
    assert not allowed(OPERATOR, Request("iam:GetInstanceProfile", other))
    spot_role = f"arn:aws:iam::{ACCOUNT}:role/aws-service-role/spot.amazonaws.com/AWSServiceRoleForEC2Spot"
    spot = {"iam:AWSServiceName": "spot.amazonaws.com"}
    assert allowed(OPERATOR, Request("iam:CreateServiceLinkedRole", spot_role, spot))
    assert not allowed(OPERATOR, Request("iam:CreateUser", f"arn:aws:iam::{ACCOUNT}:user/x"))


SPOT_REQUEST = f"arn:aws:ec2:{REGION}:{ACCOUNT}:spot-instances-request/*"
# The keys AWS puts in the context of RunInstances' spot-instances-request resource (Service
# Authorization Reference): none of ec2:LaunchTemplate, ec2:Vpc, ec2:InstanceType.
SPOT_REQUEST_TAGS = {
    "aws:RequestTag/Project": "Chronos-Training",
    "aws:RequestTag/Environment": "dev",
    "aws:RequestTag/RunId": "20261201-080000",
    "aws:TagKeys": ["CostCenter", "Environment", "ManagedBy", "Project", "RunId"],
    "ec2:Region": REGION,
}


def test_operator_may_create_the_spot_request_of_a_tagged_spot_launch() -> None:
    """Defect: the spot market (the default) was denied: no statement covered the spot request."""
    assert allowed(OPERATOR, Request("ec2:RunInstances", SPOT_REQUEST, SPOT_REQUEST_TAGS))


@pytest.mark.parametrize(
    "context",
    [
        {},  # untagged spot request
        {**SPOT_REQUEST_TAGS, "aws:RequestTag/Environment": "prod"},  # tagged for another env
        {**SPOT_REQUEST_TAGS, "aws:RequestTag/Project": "Other"},
        {**SPOT_REQUEST_TAGS, "ec2:Region": "eu-west-1"},
    ],
)
def test_operator_may_not_create_other_spot_requests(context: dict) -> None:
    assert not allowed(OPERATOR, Request("ec2:RunInstances", SPOT_REQUEST, context))


def test_the_launch_template_statement_alone_cannot_cover_the_spot_request() -> None:
    """Why the spot request has its own statement: its context lacks the template's keys."""
    (statement,) = [s for s in OPERATOR["Statement"] if s["Sid"] == "RunInstancesOnlyFromLaunchTemplate"]
    only_template = {"Version": "2012-10-17", "Statement": [{**statement, "Resource": SPOT_REQUEST}]}
    assert not allowed(only_template, Request("ec2:RunInstances", SPOT_REQUEST, SPOT_REQUEST_TAGS))


def test_operator_tags_the_spot_request_only_while_launching() -> None:
    launching = {"ec2:CreateAction": "RunInstances"}
    assert allowed(OPERATOR, Request("ec2:CreateTags", SPOT_REQUEST, launching))
    assert not allowed(OPERATOR, Request("ec2:CreateTags", SPOT_REQUEST, {}))


@pytest.mark.parametrize(
    ("key", "writable"),
    [
        ("dev/system-state.json", True),
        ("dev/2026/12/01-080000/user-configs/run-spec.json", True),
        ("cached-datasets/scripts/bundle-x.tar.gz", True),
        ("cached-datasets/training-data/2026/01/a.parquet", True),
        ("prod/system-state.json", False),  # defect: a dev operator could overwrite prod's lock
        ("prod/2026/12/01-080000/_SUCCESS", False),
        ("devx/system-state.json", False),
        ("other.txt", False),
    ],
)
def test_operator_writes_only_its_env_and_cached_datasets(key: str, writable: bool) -> None:
    for action in ("s3:PutObject", "s3:DeleteObject", "s3:GetObject"):
        assert allowed(OPERATOR, Request(action, f"{BUCKET}/{key}")) is writable, (action, key)


# ------------------------------------------------------------------- bucket


def test_bucket_policy_denies_every_request_without_tls() -> None:
    policy = spec_bucket.tls_only_bucket_policy(BUCKET)
    for resource in (BUCKET, f"{BUCKET}/dev/system-state.json"):
        plain = Request("s3:GetObject", resource, {"aws:SecureTransport": "false"})
        tls = Request("s3:GetObject", resource, {"aws:SecureTransport": "true"})
        assert decide(policy, plain) == "Deny"
        assert decide(policy, tls) != "Deny"
    (statement,) = policy["Statement"]
    assert statement["Principal"] == "*" and statement["Action"] == "s3:*"


# ------------------------------------------------------------------- linter

BLOCKING = {"MEDIUM", "HIGH", "CRITICAL"}


@pytest.mark.parametrize(
    "document",
    [INSTANCE, OPERATOR, spec_bucket.tls_only_bucket_policy(BUCKET)],
    ids=["instance-role", "operator", "bucket-tls-only"],
)
def test_parliament_finds_nothing_of_medium_severity_or_above(
    parliament_module: types.ModuleType, document: dict
) -> None:
    policy = parliament_module.analyze_policy_string(json.dumps(document))
    findings = [parliament_module.enhance_finding(f) for f in policy.findings]
    blocking = [(f.severity, f.issue, f.detail) for f in findings if f.severity in BLOCKING]
    blocking = [b for b in blocking if not _spot_statement_mismatch(b)]
    assert blocking == []


def _spot_statement_mismatch(finding: tuple) -> bool:
    """parliament's one false positive: it lints each statement alone, so the spot-request
    statement (RunInstances on spot-instances-request only) 'lacks' image, subnet... which
    the launch-template statement grants. RunInstances is authorized across statements
    (each resource type separately); the evaluator tests above prove the combination."""
    severity, issue, detail = finding
    return issue == "RESOURCE_MISMATCH" and all(d.get("action") == "ec2:RunInstances" for d in detail)


def test_parliament_sees_the_spot_statement_alone_and_nothing_else(
    parliament_module: types.ModuleType,
) -> None:
    """The false positive filtered above comes from the spot statement and only from it."""
    without = {
        **OPERATOR,
        "Statement": [s for s in OPERATOR["Statement"] if s["Sid"] != "RunSpotRequestsTaggedForThisEnv"],
    }
    policy = parliament_module.analyze_policy_string(json.dumps(without))
    severities = {parliament_module.enhance_finding(f).severity for f in policy.findings}
    assert not severities & BLOCKING


def test_parliament_does_flag_a_broken_policy(parliament_module: types.ModuleType) -> None:
    """The lint test above can fail: a typo'd condition key is a MEDIUM finding."""
    broken = json.loads(json.dumps(INSTANCE))
    broken["Statement"][2]["Condition"] = {"StringLike": {"s3:prefixx": ["dev/*"]}}
    policy = parliament_module.analyze_policy_string(json.dumps(broken))
    severities = {parliament_module.enhance_finding(f).severity for f in policy.findings}
    assert severities & BLOCKING
