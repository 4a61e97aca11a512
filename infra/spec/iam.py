"""IAM policy documents: the helpers every document is built with, and the instance role's.

The operator's policy is :mod:`infra.spec.operator_access`, the debug role's extras
:mod:`infra.spec.debug`; both build on the helpers here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from common.layout import USER_CONFIGS_DIR
from infra.spec.bucket import CACHED_DATASETS_PREFIX, env_prefix
from infra.spec.names import validate_env
from infra.spec.notify import publish_statements
from infra.spec.tags import project_env_condition

POLICY_VERSION = "2012-10-17"


def policy_document(*statements: dict[str, Any]) -> dict[str, Any]:
    """A policy document holding ``statements``."""
    return {"Version": POLICY_VERSION, "Statement": list(statements)}


def allow(sid: str, actions: Sequence[str], resources: Any, condition: Any = None) -> dict[str, Any]:
    """An Allow statement (the ``Condition`` only when there is one)."""
    return _statement("Allow", sid, actions, resources, condition)


def deny(sid: str, actions: Sequence[str], resources: Any, condition: Any = None) -> dict[str, Any]:
    """A Deny statement: it wins over every Allow (IAM's policy evaluation logic)."""
    return _statement("Deny", sid, actions, resources, condition)


def _statement(
    effect: str, sid: str, actions: Sequence[str], resources: Any, condition: Any
) -> dict[str, Any]:
    statement: dict[str, Any] = {
        "Sid": sid,
        "Effect": effect,
        "Action": list(actions),
        "Resource": resources,
    }
    if condition:
        statement["Condition"] = condition
    return statement


def ec2_arn(region: str, account_id: str, kind: str) -> str:
    """ARN pattern of every EC2 resource of ``kind`` (``instance``, ``volume`` ...)."""
    return f"arn:aws:ec2:{region}:{account_id}:{kind}/*"


def ssm_parameter_arn(region: str, name: str) -> str:
    """ARN pattern of a public (AWS-owned) SSM parameter such as the DLAMI one.

    Public parameters have an empty account field; ``*`` matches it (IAM
    wildcards match the empty string) and keeps the ARN well-formed for linters.
    """
    return f"arn:aws:ssm:{region}:*:parameter{name}"


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
    return policy_document({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


def instance_role_policy(
    env: str,
    bucket_arn_: str,
    *,
    region: str = "*",
    account_id: str = "*",
    notify_topic_arn: str | None = None,
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
      ARN; cleanup checks for instances and volumes left behind);
    - publish to the env's notification topic, when the stack has one
      (:mod:`infra.spec.notify`; the run's end and a ``max_cost`` stop);
    - never write or delete a run's ``user-configs/`` (an explicit Deny): the recovery
      function relaunches from its ``launch-request.json`` with the operator's launch rights,
      so an instance that could rewrite it could choose the next instance's user data. The
      trainer only reads there; launch writes it with the operator's credentials.
    """
    env = validate_env(env)
    return policy_document(
        allow("ReadCachedDatasets", ["s3:GetObject"], f"{bucket_arn_}/{CACHED_DATASETS_PREFIX}*"),
        allow(
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
        allow(
            "ListOwnPrefixesOnly",
            ["s3:ListBucket"],
            bucket_arn_,
            {"StringLike": {"s3:prefix": [f"{CACHED_DATASETS_PREFIX}*", f"{env_prefix(env)}*"]}},
        ),
        allow(
            "TerminateOnlyItself",
            ["ec2:TerminateInstances"],
            ec2_arn(region, account_id, "instance"),
            {
                "StringEquals": project_env_condition(env),
                "StringLike": {"aws:userid": "*:${ec2:InstanceID}"},
            },
        ),
        allow(
            "DescribeInstancesAndVolumes",
            ["ec2:DescribeInstances", "ec2:DescribeTags", "ec2:DescribeVolumes"],
            "*",
        ),
        *publish_statements(notify_topic_arn),
        deny(
            "NeverRewriteLaunchInputs",
            ["s3:PutObject", "s3:DeleteObject"],
            f"{bucket_arn_}/{env_prefix(env)}*/{USER_CONFIGS_DIR}*",
        ),
    )
