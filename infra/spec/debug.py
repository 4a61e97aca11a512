"""Opt-in debug sessions: the debug role and profile, and what the operator gains for them.

With stack config ``debug_profile`` (off by default) a second role and instance profile,
``chronos-{env}-instance-debug``, exist with the instance role's own inline policy plus
AWS's managed AmazonSSMManagedInstanceCore, so an operator can open an AWS Systems
Manager Session Manager shell on a run launched with ``debug = true``. Both exist before
any launch, so a launch changes no IAM.

Nothing here opens a port. Session Manager needs (Systems Manager User Guide, "Session
Manager prerequisites" and "Reference: ec2messages, ssmmessages, and other API
operations"): SSM Agent on the instance (the PyTorch DLAMIs ship it: their release notes
list ``ssm_agent_version``), the agent's OUTBOUND HTTPS to ssm.{region}, ssmmessages.{region}
and ec2messages.{region}.amazonaws.com, and the instance profile's permissions. The agent
dials out, so no inbound rule is needed:
:func:`infra.spec.network.security_group_egress` already allows TCP 443 out to 0.0.0.0/0
and every subnet routes 0.0.0.0/0 to the internet gateway with a public IP, so the
endpoints are reached without interface VPC endpoints (those bill by the hour).
"""

from __future__ import annotations

from typing import Any

from infra.spec.iam import allow, ec2_arn, instance_role_policy
from infra.spec.names import resource_name, validate_env
from infra.spec.tags import project_env_condition

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
    env: str,
    bucket_arn_: str,
    *,
    region: str = "*",
    account_id: str = "*",
    notify_topic_arn: str | None = None,
) -> dict[str, Any]:
    """Inline policy of the debug role: exactly the instance role's (one source)."""
    return instance_role_policy(
        env, bucket_arn_, region=region, account_id=account_id, notify_topic_arn=notify_topic_arn
    )


def debug_managed_policy_arns() -> tuple[str, ...]:
    """Managed policies attached to the debug role only: Session Manager's instance side."""
    return (SSM_MANAGED_INSTANCE_CORE_ARN,)


def pass_debug_role_statement(debug_role_arn: str) -> dict[str, Any]:
    """iam:PassRole on the debug role, to EC2 only: a ``debug = true`` launch names its profile
    (the operator's launch, and the recovery function's relaunch of that run)."""
    return allow(
        "PassTheDebugRole",
        ["iam:PassRole"],
        debug_role_arn,
        {"StringEquals": {"iam:PassedToService": "ec2.amazonaws.com"}},
    )


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
    tagged = project_env_condition(env, "ssm:resourceTag")
    return [
        pass_debug_role_statement(debug_role_arn),
        allow(
            "DebugSessionsOnTaggedInstances",
            ["ssm:StartSession"],
            ec2_arn(region, account_id, "instance"),
            {"StringEquals": tagged},
        ),
        allow(
            "DebugSessionsWithTheDefaultDocument",
            ["ssm:StartSession"],
            f"arn:aws:ssm:{region}:{account_id}:document/{SESSION_DEFAULT_DOCUMENT}",
        ),
        allow(
            "DebugOwnSessionsOnly",
            ["ssm:ResumeSession", "ssm:TerminateSession"],
            "arn:aws:ssm:*:*:session/${aws:username}-*",
        ),
    ]
