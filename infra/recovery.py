"""Recovery: the Lambda function that relaunches interrupted runs, and what invokes it.

Everything here bills nothing while idle: the function runs only when invoked, the
three EventBridge rules on the default bus match AWS service events (free) or a
5-minute schedule, and the log group keeps 14 days of logs. What the function may do
is :func:`infra.spec.recovery.recovery_role_policy`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.lambda_package import LambdaPackage
from infra.spec import recovery as spec_recovery
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class RecoveryArgs:
    """Inputs of :class:`Recovery`.

    Attributes:
        env, region, account_id: the env and where its stack lives.
        bucket_name, bucket_arn: the training bucket.
        launch_template_arn, vpc_arn: what a relaunch may use.
        instance_role_arn: the role a relaunch passes to EC2.
        package: the function's code (:func:`infra.lambda_package.build`).
        tags: the stack's tags.
        notify_topic_arn: the notification topic, ``None`` when notifications are off.
        debug_role_arn: the debug role, when the stack has one (a debug run is relaunched with it).
    """

    env: str
    region: str
    account_id: str
    bucket_name: pulumi.Input[str]
    bucket_arn: pulumi.Input[str]
    launch_template_arn: pulumi.Input[str]
    vpc_arn: pulumi.Input[str]
    instance_role_arn: pulumi.Input[str]
    package: LambdaPackage
    tags: Mapping[str, str]
    notify_topic_arn: pulumi.Input[str] | None = None
    debug_role_arn: pulumi.Input[str] | None = None


def _policy(args: RecoveryArgs) -> pulumi.Output[str]:
    return pulumi.Output.all(
        args.bucket_arn,
        args.launch_template_arn,
        args.vpc_arn,
        args.instance_role_arn,
        args.notify_topic_arn,
        args.debug_role_arn,
    ).apply(
        lambda v: json.dumps(
            spec_recovery.recovery_role_policy(
                spec_recovery.RecoveryScope(
                    env=args.env,
                    region=args.region,
                    account_id=args.account_id,
                    bucket_arn=v[0],
                    launch_template_arn=v[1],
                    vpc_arn=v[2],
                    instance_role_arn=v[3],
                    notify_topic_arn=v[4],
                    debug_role_arn=v[5],
                )
            )
        )
    )


class Recovery(pulumi.ComponentResource):
    """The recovery function ``chronos-{env}-recovery``, its role, log group and triggers."""

    def __init__(self, name: str, args: RecoveryArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Recovery", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        function_name = spec_recovery.function_name(args.env)
        self.log_group = aws.cloudwatch.LogGroup(
            f"{name}-logs",
            name=spec_recovery.log_group_name(args.env),
            retention_in_days=spec_recovery.LOG_RETENTION_DAYS,
            tags=dict(args.tags),
            opts=child,
        )
        self.role = aws.iam.Role(
            f"{name}-role",
            name=function_name,
            description=f"The Chronos recovery function of env {args.env}",
            assume_role_policy=json.dumps(spec_recovery.lambda_trust_policy()),
            tags=dict(args.tags),
            opts=child,
        )
        self.role_policy = aws.iam.RolePolicy(
            f"{name}-policy",
            name=f"{function_name}-least-privilege",
            role=self.role.id,
            policy=_policy(args),
            opts=child,
        )
        self.function = self._function(name, args, function_name)
        self.triggers = [self._trigger(name, args, trigger) for trigger in spec_recovery.TRIGGERS]
        self.function_name: pulumi.Output[str] = self.function.name
        self.role_arn: pulumi.Output[str] = self.role.arn
        self.register_outputs({"function_name": self.function_name, "role_arn": self.role_arn})

    def _function(self, name: str, args: RecoveryArgs, function_name: str) -> aws.lambda_.Function:
        variables = pulumi.Output.from_input(args.bucket_name).apply(
            lambda bucket: spec_recovery.environment(args.env, bucket)
        )
        return aws.lambda_.Function(
            f"{name}-function",
            name=function_name,
            description=f"Relaunches interrupted Chronos runs of env {args.env}",
            role=self.role.arn,
            runtime=spec_recovery.RUNTIME,
            handler=spec_recovery.HANDLER,
            architectures=[spec_recovery.ARCHITECTURE],
            code=pulumi.FileArchive(str(args.package.path)),
            source_code_hash=args.package.sha256,
            timeout=spec_recovery.TIMEOUT_S,
            memory_size=spec_recovery.MEMORY_MB,
            environment=aws.lambda_.FunctionEnvironmentArgs(variables=variables),
            tags=dict(args.tags),
            # The log group first, so Lambda never creates one that keeps logs forever.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[self.log_group, self.role_policy]),
        )

    def _trigger(
        self, name: str, args: RecoveryArgs, trigger: spec_recovery.Trigger
    ) -> aws.cloudwatch.EventRule:
        child = pulumi.ResourceOptions(parent=self)
        rule = aws.cloudwatch.EventRule(
            f"{name}-{trigger.kind}",
            name=trigger.rule_name(args.env),
            description=trigger.description,
            event_pattern=json.dumps(trigger.event_pattern) if trigger.event_pattern else None,
            schedule_expression=trigger.schedule_expression,
            tags=dict(args.tags),
            opts=child,
        )
        aws.cloudwatch.EventTarget(
            f"{name}-{trigger.kind}-target",
            rule=rule.name,
            target_id=spec_recovery.FUNCTION_KIND,
            arn=self.function.arn,
            opts=child,
        )
        aws.lambda_.Permission(
            f"{name}-{trigger.kind}-invoke",
            action="lambda:InvokeFunction",
            function=self.function.name,
            principal=spec_recovery.EVENTS_SERVICE,
            source_arn=rule.arn,
            opts=child,
        )
        return rule
