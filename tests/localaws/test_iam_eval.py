"""Known answers of the IAM evaluator (AWS's documented rules, one per test)."""

from __future__ import annotations

import pytest

from localaws.iam_eval import Request, UnsupportedPolicy, decide, evaluate

BUCKET = "arn:aws:s3:::chronos-training-dev-123456789012-us-east-1"
INSTANCE = "arn:aws:ec2:us-east-1:123456789012:instance/i-0aaa"


def _policy(*statements: dict) -> dict:
    return {"Version": "2012-10-17", "Statement": list(statements)}


def _allow(action: str = "s3:GetObject", resource: str = f"{BUCKET}/*", **extra: object) -> dict:
    return {"Effect": "Allow", "Action": action, "Resource": resource, **extra}


GET = Request("s3:GetObject", f"{BUCKET}/dev/a.json")


def test_allow() -> None:
    assert decide(_policy(_allow()), GET) == "Allow"


def test_action_matches_case_insensitively_and_resource_per_arn_part() -> None:
    assert decide(_policy(_allow("S3:get*")), GET) == "Allow"
    assert decide(_policy(_allow(resource="arn:aws:s3:::*/dev/*")), GET) == "Allow"
    assert decide(_policy(_allow(resource="arn:aws:s3:::*/DEV/*")), GET) == "ImplicitDeny"


def test_no_match_is_an_implicit_deny() -> None:
    assert decide(_policy(_allow("s3:PutObject")), GET) == "ImplicitDeny"
    assert decide(_policy(_allow(resource=f"{BUCKET}/prod/*")), GET) == "ImplicitDeny"


def test_explicit_deny_wins_over_any_allow_in_any_policy() -> None:
    deny = {"Sid": "NoDev", "Effect": "Deny", "Action": "s3:*", "Resource": f"{BUCKET}/dev/*"}
    decision = evaluate([_policy(_allow()), _policy(deny)], GET)
    assert decision.effect == "Deny" and decision.denied_by == ("NoDev",)


def test_union_of_policies_allows_what_any_one_allows() -> None:
    assert evaluate([_policy(_allow("s3:PutObject")), _policy(_allow())], GET).allowed


def test_not_action_and_not_resource() -> None:
    assert decide(_policy({"Effect": "Allow", "NotAction": "s3:PutObject", "Resource": "*"}), GET) == "Allow"
    everything_but_dev = {"Effect": "Allow", "Action": "s3:*", "NotResource": f"{BUCKET}/dev/*"}
    assert decide(_policy(everything_but_dev), GET) == "ImplicitDeny"


def test_condition_mismatch_is_named() -> None:
    statement = _allow(Sid="OnlyProd", Condition={"StringEquals": {"aws:ResourceTag/Env": "prod"}})
    decision = evaluate(
        [_policy(statement)], Request(GET.action, GET.resource, {"aws:ResourceTag/Env": "dev"})
    )
    assert decision.effect == "ImplicitDeny"
    assert decision.near_misses == (("OnlyProd", "condition StringEquals aws:ResourceTag/Env failed"),)


def test_missing_key_fails_a_positive_operator_and_passes_a_negated_one() -> None:
    like = _policy(_allow(Condition={"StringLike": {"s3:prefix": "dev/*"}}))
    not_like = _policy(_allow(Condition={"StringNotLike": {"s3:prefix": "prod/*"}}))
    assert decide(like, GET) == "ImplicitDeny"
    assert decide(not_like, GET) == "Allow"


def test_if_exists_on_a_missing_key_passes_and_on_a_present_key_compares() -> None:
    policy = _policy(_allow(Condition={"StringLikeIfExists": {"ec2:InstanceType": "g5.*"}}))
    assert decide(policy, GET) == "Allow"
    assert decide(policy, Request(GET.action, GET.resource, {"ec2:InstanceType": "g5.xlarge"})) == "Allow"
    assert (
        decide(policy, Request(GET.action, GET.resource, {"ec2:InstanceType": "p4d.24xlarge"}))
        == "ImplicitDeny"
    )


def test_policy_variable_resolved() -> None:
    statement = _allow(
        "ec2:TerminateInstances", INSTANCE, Condition={"StringLike": {"aws:userid": "*:${ec2:InstanceID}"}}
    )
    mine = {"aws:userid": "AROAROLE:i-0aaa", "ec2:InstanceID": "i-0aaa"}
    other = {"aws:userid": "AROAROLE:i-0bbb", "ec2:InstanceID": "i-0aaa"}
    assert decide(_policy(statement), Request("ec2:TerminateInstances", INSTANCE, mine)) == "Allow"
    assert decide(_policy(statement), Request("ec2:TerminateInstances", INSTANCE, other)) == "ImplicitDeny"


def test_policy_variable_unresolvable_matches_nothing_even_a_deny() -> None:
    user_home = _allow(resource=BUCKET + "/home/${aws:username}/*")
    request = Request("s3:GetObject", f"{BUCKET}/home/alice/x", {"aws:userid": "AROA:i-1"})
    decision = evaluate([_policy(user_home)], request)
    assert decision.effect == "ImplicitDeny"
    assert "unresolvable" in decision.near_misses[0][1]
    deny = {"Effect": "Deny", "Action": "s3:*", "Resource": BUCKET + "/home/${aws:username}/*"}
    assert decide(_policy(_allow(resource="*"), deny), request) == "Allow"
    with_default = _allow(resource=BUCKET + "/home/${aws:username, 'alice'}/*")
    assert decide(_policy(with_default), request) == "Allow"


def test_condition_key_names_are_case_insensitive() -> None:
    policy = _policy(_allow(Condition={"StringEquals": {"EC2:instancetype": "g5.xlarge"}}))
    assert decide(policy, Request(GET.action, GET.resource, {"ec2:InstanceType": "g5.xlarge"})) == "Allow"


def test_for_any_value_on_tag_keys() -> None:
    policy = _policy(_allow(Condition={"ForAnyValue:StringEquals": {"aws:TagKeys": ["Project", "Owner"]}}))
    assert decide(policy, Request(GET.action, GET.resource, {"aws:TagKeys": ["Name", "Project"]})) == "Allow"
    assert decide(policy, Request(GET.action, GET.resource, {"aws:TagKeys": ["Name"]})) == "ImplicitDeny"
    assert decide(policy, GET) == "ImplicitDeny"  # missing key: ForAnyValue is false


def test_for_all_values_is_vacuously_true_on_a_missing_key() -> None:
    policy = _policy(_allow(Condition={"ForAllValues:StringEquals": {"aws:TagKeys": ["Project", "Owner"]}}))
    assert decide(policy, Request(GET.action, GET.resource, {"aws:TagKeys": ["Owner", "Project"]})) == "Allow"
    assert (
        decide(policy, Request(GET.action, GET.resource, {"aws:TagKeys": ["Owner", "Name"]}))
        == "ImplicitDeny"
    )
    assert decide(policy, GET) == "Allow"


def test_unqualified_operator_on_a_multi_valued_key_raises() -> None:
    policy = _policy(_allow(Condition={"StringEquals": {"aws:TagKeys": "Project"}}))
    with pytest.raises(UnsupportedPolicy):
        decide(policy, Request(GET.action, GET.resource, {"aws:TagKeys": ["Project"]}))


def test_null() -> None:
    must_be_absent = _policy(_allow(Condition={"Null": {"aws:RequestTag/Project": "true"}}))
    must_be_present = _policy(_allow(Condition={"Null": {"aws:RequestTag/Project": "false"}}))
    tagged = Request(GET.action, GET.resource, {"aws:RequestTag/Project": "Chronos-Training"})
    assert decide(must_be_absent, GET) == "Allow" and decide(must_be_absent, tagged) == "ImplicitDeny"
    assert decide(must_be_present, tagged) == "Allow" and decide(must_be_present, GET) == "ImplicitDeny"


@pytest.mark.parametrize(
    ("operator", "expected", "actual", "answer"),
    [
        ("StringEquals", "Dev", "dev", False),
        ("StringEqualsIgnoreCase", "Dev", "dev", True),
        ("StringNotEquals", "prod", "dev", True),
        ("StringNotEqualsIgnoreCase", "DEV", "dev", False),
        ("StringLike", "d?v*", "devx", True),
        ("StringNotLike", "d*", "dev", False),
        (
            "ArnEquals",
            "arn:aws:ec2:*:123456789012:vpc/vpc-1",
            "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1",
            True,
        ),
        ("ArnLike", "arn:aws:ec2:*:*:vpc/*", "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1", True),
        ("ArnLike", "arn:aws:ec2:*", "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1", False),
        ("ArnNotEquals", "arn:aws:ec2:*:*:vpc/vpc-9", "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1", True),
        ("ArnNotLike", "arn:aws:ec2:*:*:vpc/*", "arn:aws:ec2:us-east-1:123456789012:vpc/vpc-1", False),
        ("Bool", "true", "True", True),
        ("NumericLessThanEquals", "100", "100", True),
        ("NumericGreaterThan", "100", "99", False),
        ("NumericEquals", "1", "x", False),
        ("DateLessThan", "2027-01-01T00:00:00Z", "2026-11-25T14:05:02Z", True),
        ("IpAddress", "10.0.0.0/16", "10.0.3.4", True),
        ("NotIpAddress", "10.0.0.0/16", "10.0.3.4", False),
    ],
)
def test_operators(operator: str, expected: str, actual: str, answer: bool) -> None:
    policy = _policy(_allow(Condition={operator: {"k:key": expected}}))
    assert (decide(policy, Request(GET.action, GET.resource, {"k:key": actual})) == "Allow") is answer


@pytest.mark.parametrize("operator", ["StringMatchesRegex", "ForSomeValues:StringEquals", "BinaryNotEquals"])
def test_an_unknown_operator_raises_never_passes(operator: str) -> None:
    policy = _policy(_allow(Condition={operator: {"k:key": "x"}}))
    with pytest.raises(UnsupportedPolicy):
        decide(policy, Request(GET.action, GET.resource, {"k:key": "x"}))
