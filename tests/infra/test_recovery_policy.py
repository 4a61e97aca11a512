"""The recovery function's role: exactly the handler's calls, conditions included, and linted.

Every call ``recovery/aws.py`` makes is asked of the IAM evaluator with the context AWS
would give it; neighbours of each (another env, another prefix, an untagged instance,
another role) are refused.
"""

from __future__ import annotations

import json
import types

import pytest
from iam_eval import Request, allowed

from infra.spec import bucket as spec_bucket
from infra.spec import names as spec_names
from infra.spec import notify as spec_notify
from infra.spec import operator_access as spec_operator
from infra.spec import recovery as spec_recovery

ACCOUNT = "123456789012"
REGION = "us-east-1"
BUCKET = spec_bucket.bucket_arn(spec_names.bucket_name("dev", ACCOUNT, REGION))
LT_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0abc"
VPC_ARN = f"arn:aws:ec2:{REGION}:{ACCOUNT}:vpc/vpc-1"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance"
TOPIC_ARN = spec_notify.topic_arn("dev", REGION, ACCOUNT)
TAGGED = {"aws:ResourceTag/Project": "Chronos-Training", "aws:ResourceTag/Environment": "dev"}
RUN = "dev/2026/11/25-140502/"
SCOPE = spec_recovery.RecoveryScope(
    env="dev",
    region=REGION,
    account_id=ACCOUNT,
    bucket_arn=BUCKET,
    launch_template_arn=LT_ARN,
    vpc_arn=VPC_ARN,
    instance_role_arn=ROLE_ARN,
)
POLICY = spec_recovery.recovery_role_policy(SCOPE)
NOTIFYING = spec_recovery.recovery_role_policy(
    spec_recovery.RecoveryScope(**{**SCOPE.__dict__, "notify_topic_arn": TOPIC_ARN})
)
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


def _object(key: str) -> str:
    return f"{BUCKET}/{key}"


def _ec2(kind: str, rid: str = "x-1") -> str:
    return f"arn:aws:ec2:{REGION}:{ACCOUNT}:{kind}/{rid}"


# ------------------------------------------------------------------- trust


def test_only_lambda_may_assume_the_role_on_aws() -> None:
    (statement,) = spec_recovery.lambda_trust_policy()["Statement"]
    assert statement == {
        "Effect": "Allow",
        "Principal": {"Service": "lambda.amazonaws.com"},
        "Action": "sts:AssumeRole",
    }


def test_locally_one_statement_also_names_the_local_runner() -> None:
    runner = f"arn:aws:iam::{ACCOUNT}:user/chronos-dev-recovery-host"
    (statement,) = spec_recovery.lambda_trust_policy(runner)["Statement"]
    assert statement["Principal"] == {"Service": "lambda.amazonaws.com", "AWS": runner}


# ---------------------------------------------------------------------- S3


@pytest.mark.parametrize("action", ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"])
def test_the_handler_claims_updates_and_releases_the_run_lock(action: str) -> None:
    assert allowed(POLICY, Request(action, _object("dev/system-state.json")))
    assert not allowed(POLICY, Request(action, _object("prod/system-state.json")))


def test_the_handler_reads_the_launch_request_and_run_spec_only_reading() -> None:
    for name in ("launch-request.json", "run-spec.json"):
        key = f"{RUN}user-configs/{name}"
        assert allowed(POLICY, Request("s3:GetObject", _object(key)))
        assert not allowed(POLICY, Request("s3:PutObject", _object(key)))
        assert not allowed(POLICY, Request("s3:DeleteObject", _object(key)))
    assert not allowed(
        POLICY, Request("s3:GetObject", _object("prod/2026/11/25-140502/user-configs/run-spec.json"))
    )


def test_the_handler_reads_and_writes_run_logs_but_deletes_none() -> None:
    key = "dev/logs/20261125-140502/cleanup_status.json"
    assert allowed(POLICY, Request("s3:GetObject", _object(key)))
    assert allowed(POLICY, Request("s3:PutObject", _object(key)))
    assert not allowed(POLICY, Request("s3:DeleteObject", _object(key)))
    assert not allowed(
        POLICY, Request("s3:PutObject", _object("prod/logs/20261125-140502/cleanup_status.json"))
    )


@pytest.mark.parametrize(
    "key",
    [
        f"{RUN}checkpoints/checkpoint-40/model.safetensors",  # the trainer's, not the handler's
        f"{RUN}models/model.safetensors",
        "cached-datasets/training-data/a.parquet",
    ],
)
def test_the_handler_touches_no_run_artifacts_nor_the_datasets(key: str) -> None:
    for action in ("s3:GetObject", "s3:PutObject", "s3:DeleteObject"):
        assert not allowed(POLICY, Request(action, _object(key)))


def test_the_handler_reads_its_envs_sentinels_and_writes_none() -> None:
    """A run whose instance vanished after finalize is released, not relaunched, once its
    ``_SUCCESS`` says the results are whole: the handler reads the sentinel, never writes it."""
    assert allowed(POLICY, Request("s3:GetObject", _object(f"{RUN}_SUCCESS")))
    for action in ("s3:PutObject", "s3:DeleteObject"):
        assert not allowed(POLICY, Request(action, _object(f"{RUN}_SUCCESS")))
    assert not allowed(POLICY, Request("s3:GetObject", _object("prod/2026/11/25-140502/_SUCCESS")))
    assert not allowed(POLICY, Request("s3:GetObject", _object(f"{RUN}_FAILED_UPLOAD")))


def test_the_handler_lists_only_under_its_env() -> None:
    assert allowed(POLICY, Request("s3:ListBucket", BUCKET, {"s3:prefix": "dev/system-state.json"}))
    for prefix in ("prod/", "", "cached-datasets/", "devx/"):
        assert not allowed(POLICY, Request("s3:ListBucket", BUCKET, {"s3:prefix": prefix}))
    assert not allowed(POLICY, Request("s3:ListBucket", BUCKET, {}))
    assert not allowed(POLICY, Request("s3:DeleteBucket", BUCKET))


# --------------------------------------------------------------------- EC2


def _relaunch(kind: str, **context: str) -> Request:
    resource = f"arn:aws:ec2:{REGION}::image/ami-1" if kind == "image" else _ec2(kind)
    return Request("ec2:RunInstances", resource, context)


@pytest.mark.parametrize(
    "kind", ["instance", "volume", "network-interface", "subnet", "security-group", "image"]
)
def test_a_relaunch_is_allowed_exactly_as_the_operators_launch(kind: str) -> None:
    context = {"ec2:LaunchTemplate": LT_ARN}
    if kind == "instance":
        context["ec2:InstanceType"] = "g5.xlarge"
    if kind in ("subnet", "security-group", "network-interface"):
        context["ec2:Vpc"] = VPC_ARN
    assert allowed(POLICY, _relaunch(kind, **context))
    assert not allowed(POLICY, _relaunch(kind))  # without the launch template
    other_lt = f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/lt-0other"
    assert not allowed(POLICY, _relaunch(kind, **{**context, "ec2:LaunchTemplate": other_lt}))


def test_a_spot_relaunch_creates_its_request_only_tagged_for_this_env() -> None:
    tags = {
        "aws:RequestTag/Project": "Chronos-Training",
        "aws:RequestTag/Environment": "dev",
        "ec2:Region": REGION,
    }
    assert allowed(POLICY, _relaunch("spot-instances-request", **tags))
    assert not allowed(
        POLICY, _relaunch("spot-instances-request", **{**tags, "aws:RequestTag/Environment": "prod"})
    )


def test_the_launch_statements_are_the_operators_own() -> None:
    """One source: the role holds the operator's launch statements, not a copy that can drift."""
    launch = spec_operator.launch_statements("dev", REGION, ACCOUNT, LT_ARN, VPC_ARN)
    assert all(s in POLICY["Statement"] and s in OPERATOR["Statement"] for s in launch)
    passing = spec_operator.pass_instance_role_statement(ROLE_ARN)
    assert passing in POLICY["Statement"] and passing in OPERATOR["Statement"]


def test_the_handler_tags_only_while_launching() -> None:
    assert allowed(POLICY, Request("ec2:CreateTags", _ec2("instance"), {"ec2:CreateAction": "RunInstances"}))
    assert not allowed(POLICY, Request("ec2:CreateTags", _ec2("instance"), {}))


def test_the_handler_passes_only_the_instance_role_and_only_to_ec2() -> None:
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert allowed(POLICY, Request("iam:PassRole", ROLE_ARN, to_ec2))
    assert not allowed(
        POLICY, Request("iam:PassRole", f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-recovery", to_ec2)
    )
    assert not allowed(
        POLICY, Request("iam:PassRole", ROLE_ARN, {"iam:PassedToService": "lambda.amazonaws.com"})
    )


def test_the_handler_terminates_only_tagged_instances_of_its_env() -> None:
    target = _ec2("instance", "i-0aaaaaaaaaaaaaaaa")
    assert allowed(POLICY, Request("ec2:TerminateInstances", target, TAGGED))
    assert not allowed(POLICY, Request("ec2:TerminateInstances", target, {}))
    prod = {**TAGGED, "aws:ResourceTag/Environment": "prod"}
    assert not allowed(POLICY, Request("ec2:TerminateInstances", target, prod))
    other = {**TAGGED, "aws:ResourceTag/Project": "Other"}
    assert not allowed(POLICY, Request("ec2:TerminateInstances", target, other))


@pytest.mark.parametrize(
    "action", ["ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:DescribeSpotPriceHistory"]
)
def test_the_handler_describes_what_it_decides_on(action: str) -> None:
    assert allowed(POLICY, Request(action, "*"))


@pytest.mark.parametrize(
    ("action", "resource"),
    [
        ("ec2:DeleteVolume", _ec2("volume")),
        ("ec2:StopInstances", _ec2("instance")),
        ("ec2:ModifyInstanceAttribute", _ec2("instance")),
        ("ec2:CreateLaunchTemplateVersion", LT_ARN),
        ("iam:CreateRole", f"arn:aws:iam::{ACCOUNT}:role/x"),
        ("lambda:UpdateFunctionCode", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:chronos-dev-recovery"),
        ("sns:Publish", TOPIC_ARN),  # no topic configured
    ],
)
def test_the_handler_may_do_nothing_else(action: str, resource: str) -> None:
    assert not allowed(POLICY, Request(action, resource, TAGGED))


def test_the_policy_names_exactly_the_handlers_actions() -> None:
    actions = {a for s in NOTIFYING["Statement"] for a in s["Action"]}
    assert actions == {
        "s3:GetObject",
        "s3:PutObject",
        "s3:DeleteObject",
        "s3:ListBucket",
        "ec2:RunInstances",
        "ec2:CreateTags",
        "ec2:TerminateInstances",
        "ec2:DescribeInstances",
        "ec2:DescribeVolumes",
        "ec2:DescribeSpotPriceHistory",
        "iam:PassRole",
        "sns:Publish",
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert all(s["Effect"] == "Allow" and "*" not in "".join(s["Action"]) for s in NOTIFYING["Statement"])


# --------------------------------------------------------- notifications, logs


def test_with_a_topic_the_handler_publishes_to_it_only() -> None:
    assert allowed(NOTIFYING, Request("sns:Publish", TOPIC_ARN))
    assert not allowed(NOTIFYING, Request("sns:Publish", spec_notify.topic_arn("prod", REGION, ACCOUNT)))


def test_the_handler_writes_only_its_own_log_group() -> None:
    own = spec_recovery.log_group_arn("dev", REGION, ACCOUNT)
    stream = f"{own}:log-stream:2026/11/25/[$LATEST]abc"
    assert allowed(POLICY, Request("logs:PutLogEvents", stream))
    assert allowed(POLICY, Request("logs:CreateLogStream", stream))
    other = f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:/aws/lambda/other:log-stream:x"
    assert not allowed(POLICY, Request("logs:PutLogEvents", other))
    assert not allowed(POLICY, Request("logs:CreateLogGroup", f"arn:aws:logs:{REGION}:{ACCOUNT}:log-group:x"))


# ------------------------------------------------------------------- lint


@pytest.mark.parametrize("document", [POLICY, NOTIFYING], ids=["plain", "notifying"])
def test_parliament_finds_nothing_of_medium_severity_or_above(
    parliament_module: types.ModuleType, document: dict
) -> None:
    policy = parliament_module.analyze_policy_string(json.dumps(document))
    findings = [parliament_module.enhance_finding(f) for f in policy.findings]
    blocking = [
        (f.severity, f.issue, f.detail) for f in findings if f.severity in {"MEDIUM", "HIGH", "CRITICAL"}
    ]
    # As for the operator: parliament lints each statement alone, so the spot-request
    # statement "lacks" the resources the launch-template statement grants.
    blocking = [
        b
        for b in blocking
        if not (b[1] == "RESOURCE_MISMATCH" and all(d.get("action") == "ec2:RunInstances" for d in b[2]))
    ]
    assert blocking == []


def test_with_a_debug_profile_a_debug_run_is_relaunched_with_its_role() -> None:
    debug_role = f"arn:aws:iam::{ACCOUNT}:role/chronos-dev-instance-debug"
    to_ec2 = {"iam:PassedToService": "ec2.amazonaws.com"}
    assert not allowed(POLICY, Request("iam:PassRole", debug_role, to_ec2))
    with_debug = spec_recovery.recovery_role_policy(
        spec_recovery.RecoveryScope(**{**SCOPE.__dict__, "debug_role_arn": debug_role})
    )
    assert allowed(with_debug, Request("iam:PassRole", debug_role, to_ec2))
    assert not allowed(
        with_debug, Request("iam:PassRole", debug_role, {"iam:PassedToService": "ssm.amazonaws.com"})
    )
