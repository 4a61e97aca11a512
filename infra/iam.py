"""IAM: the training instance's role and profile, and the operator's policy."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.spec import debug as spec_debug
from infra.spec import iam as spec_iam
from infra.spec import names as spec_names
from infra.spec import operator_access as spec_operator
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class InstanceIdentityArgs:
    """Inputs of :class:`InstanceIdentity`."""

    env: str
    bucket_arn: pulumi.Input[str]
    region: str
    account_id: str
    tags: Mapping[str, str]
    notify_topic_arn: pulumi.Input[str] | None = None  # the roles may publish there when set


def least_privilege_role(
    names: tuple[str, str],
    *,
    role_name: str,
    description: str,
    trust: Mapping[str, object],
    policy: Callable[[str, str | None], dict],
    args: InstanceIdentityArgs | Any,
    opts: pulumi.ResourceOptions,
) -> tuple[aws.iam.Role, aws.iam.RolePolicy]:
    """A role and its inline ``{role_name}-least-privilege`` policy, ``policy(bucket_arn, topic_arn)``.

    Args:
        names: the Pulumi names of the role and of the policy (kept: they are the resources' URNs).
        args: the stack's ``bucket_arn``, ``notify_topic_arn`` and ``tags`` (an
            :class:`InstanceIdentityArgs` or :class:`infra.batch.BatchArgs`).
    """
    bucket_arn, notify_topic_arn, tags = args.bucket_arn, args.notify_topic_arn, args.tags
    role = aws.iam.Role(
        names[0],
        name=role_name,
        description=description,
        assume_role_policy=json.dumps(trust),
        tags=dict(tags),
        opts=opts,
    )
    role_policy = aws.iam.RolePolicy(
        names[1],
        name=f"{role_name}-least-privilege",
        role=role.id,
        policy=pulumi.Output.all(bucket_arn, notify_topic_arn).apply(
            lambda v: json.dumps(policy(v[0], v[1]))
        ),
        opts=opts,
    )
    return role, role_policy


class _RoleWithProfile(pulumi.ComponentResource):
    """A role EC2 may assume, its inline least-privilege policy and its instance profile."""

    def __init__(
        self,
        kind: str,
        name: str,
        args: InstanceIdentityArgs,
        *,
        role_name: str,
        description: str,
        policy: Callable[..., dict],
        opts: pulumi.ResourceOptions | None = None,
    ) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}{kind}", name, None, opts)
        self.child = pulumi.ResourceOptions(parent=self)
        self.role, self.role_policy = least_privilege_role(
            (f"{name}-role", f"{name}-policy"),
            role_name=role_name,
            description=description,
            trust=spec_iam.instance_trust_policy(),
            policy=lambda bucket_arn, topic_arn: policy(
                args.env,
                bucket_arn,
                region=args.region,
                account_id=args.account_id,
                notify_topic_arn=topic_arn,
            ),
            args=args,
            opts=self.child,
        )
        self.instance_profile = aws.iam.InstanceProfile(
            f"{name}-profile", name=role_name, role=self.role.name, tags=dict(args.tags), opts=self.child
        )
        self.role_arn: pulumi.Output[str] = self.role.arn
        self.instance_profile_arn: pulumi.Output[str] = self.instance_profile.arn


class InstanceIdentity(_RoleWithProfile):
    """Role (EC2 trust only), its inline least-privilege policy, instance profile."""

    def __init__(
        self, name: str, args: InstanceIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(
            "InstanceIdentity",
            name,
            args,
            role_name=spec_names.resource_name(args.env, "instance"),
            description=f"Chronos training instances of env {args.env}",
            policy=spec_iam.instance_role_policy,
            opts=opts,
        )
        self.register_outputs({"role_arn": self.role_arn, "instance_profile_arn": self.instance_profile_arn})


class DebugInstanceIdentity(_RoleWithProfile):
    """The opt-in debug role and profile ``chronos-{env}-instance-debug``.

    The instance role's own inline policy (:func:`infra.spec.debug_role_policy`) plus AWS's
    AmazonSSMManagedInstanceCore, so Session Manager can open a shell on an instance
    launched with it. The SSM agent dials out over HTTPS (the security group allows 443 out
    and the subnets route to the internet gateway): nothing opens a port. Created only when
    the stack config sets ``debug_profile``, so a launch never changes IAM.
    """

    def __init__(
        self, name: str, args: InstanceIdentityArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(
            "DebugInstanceIdentity",
            name,
            args,
            role_name=spec_debug.debug_role_name(args.env),
            description=f"Chronos training instances of env {args.env}, with Session Manager access",
            policy=spec_debug.debug_role_policy,
            opts=opts,
        )
        self.attachments = [
            aws.iam.RolePolicyAttachment(
                f"{name}-{arn.rsplit('/', 1)[1]}", role=self.role.name, policy_arn=arn, opts=self.child
            )
            for arn in spec_debug.debug_managed_policy_arns()
        ]
        self.register_outputs({"role_arn": self.role_arn, "instance_profile_arn": self.instance_profile_arn})


@dataclass(frozen=True, kw_only=True)
class OperatorAccessArgs:
    """Inputs of :class:`OperatorAccess`."""

    env: str
    bucket_arn: pulumi.Input[str]
    launch_template_arn: pulumi.Input[str]
    role_arn: pulumi.Input[str]
    vpc_arn: pulumi.Input[str]
    region: str
    account_id: str
    ami_parameter: str
    tags: Mapping[str, str]
    debug_role_arn: pulumi.Input[str] | None = None  # the debug role, when the stack has one
    batch: bool = False  # the stack has the sweep engine: submit, describe, stop its jobs


class OperatorAccess(pulumi.ComponentResource):
    """Managed policy for whoever runs ``invoke``; attach it to a user or group.

    Separate from :class:`InstanceIdentity` because it names the launch template,
    which itself needs the instance profile.
    """

    def __init__(
        self, name: str, args: OperatorAccessArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}OperatorAccess", name, None, opts)
        document = pulumi.Output.all(
            args.bucket_arn, args.launch_template_arn, args.role_arn, args.vpc_arn, args.debug_role_arn
        ).apply(
            lambda v: json.dumps(
                spec_operator.operator_policy(
                    spec_operator.OperatorScope(
                        env=args.env,
                        region=args.region,
                        account_id=args.account_id,
                        bucket_arn=v[0],
                        launch_template_arn=v[1],
                        role_arn=v[2],
                        vpc_arn=v[3],
                        ami_parameter=args.ami_parameter,
                        debug_role_arn=v[4],
                        batch=args.batch,
                    )
                )
            )
        )
        self.policy = aws.iam.Policy(
            f"{name}-policy",
            name=spec_names.resource_name(args.env, "operator"),
            description=f"Run, watch and stop Chronos training in env {args.env}",
            policy=document,
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.policy_arn: pulumi.Output[str] = self.policy.arn
        self.register_outputs({"policy_arn": self.policy_arn})
