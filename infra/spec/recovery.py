"""The recovery function: its name, runtime, triggers, log group and least-privilege role.

The recovery handler (:mod:`recovery.handler`) runs as a Lambda function behind three
EventBridge rules on the default event bus:

- ``spot-warning``: EC2 Spot Instance Interruption Warning, two minutes before EC2
  interrupts a spot instance (EC2 User Guide, "Spot Instance interruption notices");
- ``instance-ended``: EC2 Instance State-change Notification with ``state`` terminated
  (EC2 User Guide, "State change events for Amazon EC2 instances");
- ``schedule``: ``rate(5 minutes)``, which finds what no event reported (an instance gone
  without a notice, a stale heartbeat, a run past its max runtime).

EC2 events carry no tags: their ``detail`` holds only ``instance-id`` and ``state`` /
``instance-action``, and ``resources`` the instance ARN (same pages). A pattern cannot
select this project's instances, so every env's rules see every instance of the account
and region, and the handler decides: it describes the instance and acts only on one
tagged Project=Chronos-Training and Environment={env} (:func:`common.tags.env_filters`).
Each env has its own function, rules and role, scoped to that env.

Pure data: the Pulumi component (:mod:`infra.recovery`) and the local provisioner
(:mod:`infra.local_recovery`) both build from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common import layout
from infra.spec.bucket import env_prefix
from infra.spec.debug import pass_debug_role_statement
from infra.spec.iam import allow, ec2_arn, policy_document
from infra.spec.names import resource_name, validate_env
from infra.spec.notify import publish_statements
from infra.spec.operator_access import launch_statements, pass_instance_role_statement
from infra.spec.tags import project_env_condition

FUNCTION_KIND = "recovery"
RUNTIME = "python3.12"
ARCHITECTURE = "x86_64"  # the wheels are built for manylinux2014_x86_64
HANDLER = "recovery.lambda_entry.handler"
TIMEOUT_S = 120  # a relaunch walks the placements: a few RunInstances calls
MEMORY_MB = 256
LOG_RETENTION_DAYS = 14
LAMBDA_SERVICE = "lambda.amazonaws.com"
EVENTS_SERVICE = "events.amazonaws.com"
# The variables the handler reads (recovery.lambda_entry); Lambda sets AWS_REGION itself.
BUCKET_VARIABLE = "CHRONOS_BUCKET"
ENV_VARIABLE = "CHRONOS_ENV"

SCHEDULE_EXPRESSION = "rate(5 minutes)"
SPOT_WARNING_PATTERN: dict[str, Any] = {
    "source": ["aws.ec2"],
    "detail-type": ["EC2 Spot Instance Interruption Warning"],
}
INSTANCE_ENDED_PATTERN: dict[str, Any] = {
    "source": ["aws.ec2"],
    "detail-type": ["EC2 Instance State-change Notification"],
    "detail": {"state": ["terminated"]},
}


@dataclass(frozen=True, kw_only=True)
class Trigger:
    """One EventBridge rule that invokes the function: an event pattern or a schedule.

    Attributes:
        kind: ``spot-warning``, ``instance-ended`` or ``schedule`` (the state file's
            ``recovery.trigger`` values).
        description: the rule's description.
        event_pattern: the pattern (``None`` for the schedule).
        schedule_expression: the schedule (``None`` for an event pattern).
    """

    kind: str
    description: str
    event_pattern: dict[str, Any] | None = None
    schedule_expression: str | None = None

    def rule_name(self, env: str) -> str:
        """``chronos-{env}-recovery-{kind}``."""
        return f"{function_name(env)}-{self.kind}"


TRIGGERS: tuple[Trigger, ...] = (
    Trigger(
        kind="spot-warning",
        description="EC2 Spot Instance Interruption Warning: the handler checks the instance's tags",
        event_pattern=SPOT_WARNING_PATTERN,
    ),
    Trigger(
        kind="instance-ended",
        description="EC2 instance terminated: the handler checks the instance's tags",
        event_pattern=INSTANCE_ENDED_PATTERN,
    ),
    Trigger(
        kind="schedule",
        description="every 5 minutes: vanished instances, stale heartbeats, max runtime",
        schedule_expression=SCHEDULE_EXPRESSION,
    ),
)


def function_name(env: str) -> str:
    """``chronos-{env}-recovery`` (also the role's name)."""
    return resource_name(env, FUNCTION_KIND)


def log_group_name(env: str) -> str:
    """``/aws/lambda/chronos-{env}-recovery``: the group Lambda writes the function's logs to."""
    return f"/aws/lambda/{function_name(env)}"


def log_group_arn(env: str, region: str, account_id: str) -> str:
    return f"arn:aws:logs:{region}:{account_id}:log-group:{log_group_name(env)}"


def environment(env: str, bucket: str) -> dict[str, str]:
    """The function's environment variables."""
    return {BUCKET_VARIABLE: bucket, ENV_VARIABLE: validate_env(env)}


def lambda_trust_policy(local_principal_arn: str | None = None) -> dict[str, Any]:
    """Trust policy of the function's role: only Lambda may assume it.

    Args:
        local_principal_arn: local mode only (never on AWS): the IAM user that runs the
            handler in the local backend, in the same statement (the one form moto
            accepts for AssumeRole, as for the instance role).
    """
    principal: dict[str, str] = {"Service": LAMBDA_SERVICE}
    if local_principal_arn:
        principal["AWS"] = local_principal_arn
    return policy_document({"Effect": "Allow", "Principal": principal, "Action": "sts:AssumeRole"})


@dataclass(frozen=True, kw_only=True)
class RecoveryScope:
    """What the function's policy names.

    Attributes:
        env, region, account_id: the env and where its stack lives.
        bucket_arn: the training bucket.
        launch_template_arn, vpc_arn: what a relaunch may use (as the operator's launch).
        instance_role_arn: the role a relaunch passes.
        notify_topic_arn: the notification topic, ``None`` when notifications are off.
        debug_role_arn: the debug role when the stack has one: a ``debug = true`` run
            launched with its profile is relaunched with it.
    """

    env: str
    region: str
    account_id: str
    bucket_arn: str
    launch_template_arn: str
    vpc_arn: str
    instance_role_arn: str
    notify_topic_arn: str | None = None
    debug_role_arn: str | None = None


def _s3_statements(env: str, bucket_arn: str) -> list[dict[str, Any]]:
    run = f"{bucket_arn}/{env_prefix(env)}"
    return [
        allow(
            "ClaimAndReleaseTheRunLock",
            ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
            f"{bucket_arn}/{layout.state_key(env)}",
        ),
        allow("ReadWriteRunLogs", ["s3:GetObject", "s3:PutObject"], f"{bucket_arn}/{layout.logs_root(env)}*"),
        allow("ReadLaunchRequests", ["s3:GetObject"], f"{run}*/user-configs/*"),
        # a run whose instance vanished in results_sync is released, not relaunched, once its
        # sentinel says the results are whole (recovery.handler._unless_results_whole)
        allow("ReadRunSentinels", ["s3:GetObject"], f"{run}*/_SUCCESS"),
        # A GetObject of a missing key answers 403 without ListBucket; the state store then
        # lists exactly that key to tell "absent" from "denied" (common.state_store).
        allow(
            "ListOwnEnvOnly",
            ["s3:ListBucket"],
            bucket_arn,
            {"StringLike": {"s3:prefix": [f"{env_prefix(env)}*"]}},
        ),
    ]


def recovery_role_policy(scope: RecoveryScope) -> dict[str, Any]:
    """Exactly what the recovery handler calls, and nothing else.

    - the run lock ``{env}/system-state.json``: read, conditional write (claim, set the
      new instance, fail the run) and delete (release);
    - ``{env}/logs/*``: read and write (cleanup_status.json written by ``recovery``);
      ``{env}/*/user-configs/*``: read (launch-request.json, the run spec); ``{env}/*/_SUCCESS``:
      read (a run whose instance vanished after finalize is released, not relaunched);
    - list the bucket under ``{env}/`` only;
    - relaunch as the operator's launch does (the same statements,
      :func:`infra.spec.operator_access.launch_statements`) and pass only the instance role
      (and the debug role when the stack has one), to EC2;
    - terminate only instances tagged with this project and env;
    - DescribeInstances, DescribeVolumes (what still bills, for cleanup_status.json) and
      DescribeSpotPriceHistory (no resource ARN);
    - publish to the env's topic when notifications are on;
    - write its own log group's streams.
    """
    env = validate_env(scope.env)
    region, account_id = scope.region, scope.account_id
    return policy_document(
        *_s3_statements(env, scope.bucket_arn),
        *launch_statements(env, region, account_id, scope.launch_template_arn, scope.vpc_arn),
        pass_instance_role_statement(scope.instance_role_arn),
        *([pass_debug_role_statement(scope.debug_role_arn)] if scope.debug_role_arn else []),
        allow(
            "TerminateTaggedInstancesOfThisEnv",
            ["ec2:TerminateInstances"],
            ec2_arn(region, account_id, "instance"),
            {"StringEquals": project_env_condition(env)},
        ),
        allow(
            "DescribeInstancesVolumesAndSpotPrices",
            ["ec2:DescribeInstances", "ec2:DescribeVolumes", "ec2:DescribeSpotPriceHistory"],
            "*",
        ),
        *publish_statements(scope.notify_topic_arn),
        allow(
            "WriteOwnLogs",
            ["logs:CreateLogStream", "logs:PutLogEvents"],
            f"{log_group_arn(env, region, account_id)}:*",
        ),
    )
