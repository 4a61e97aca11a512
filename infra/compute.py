"""Compute: the launch template every training instance starts from (no instance)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names
from infra.spec import pulumi_inputs as spec_pulumi
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class ComputeArgs:
    """Inputs of :class:`Compute`.

    ``ami_id`` pins an image; otherwise the public SSM parameter
    ``ami_ssm_parameter`` (the AWS Deep Learning AMI) is resolved at deploy time.
    """

    env: str
    instance_type: str
    instance_profile_arn: pulumi.Input[str]
    security_group_id: pulumi.Input[str]
    tags: Mapping[str, str]
    ami_id: str | None = None
    ami_ssm_parameter: str = spec_template.DLAMI_SSM_PARAMETER


class Compute(pulumi.ComponentResource):
    """A launch template: IMDSv2 only, encrypted gp3 root deleted on termination,
    OS shutdown terminates, instance profile and security group, tags for the
    instance, its volume, its network interface and its spot request, no key pair.
    """

    def __init__(self, name: str, args: ComputeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Compute", name, None, opts)
        self.image_id: str = args.ami_id or self._lookup_ami(args.ami_ssm_parameter)
        data = spec_template.launch_template_data(
            image_id=self.image_id,
            instance_type=args.instance_type,
            instance_profile_arn=args.instance_profile_arn,
            security_group_id=args.security_group_id,
            resource_tags=args.tags,
        )
        self.launch_template = aws.ec2.LaunchTemplate(
            f"{name}-lt",
            name=spec_names.resource_name(args.env, "training"),
            description=f"Chronos training instance, env {args.env}",
            update_default_version=True,
            tags=dict(args.tags),
            **spec_pulumi.to_pulumi_launch_template_args(data),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.launch_template_id: pulumi.Output[str] = self.launch_template.id
        self.launch_template_arn: pulumi.Output[str] = self.launch_template.arn
        self.register_outputs(
            {
                "launch_template_id": self.launch_template_id,
                "launch_template_arn": self.launch_template_arn,
                "image_id": self.image_id,
            }
        )

    def _lookup_ami(self, parameter: str) -> str:
        result = aws.ssm.get_parameter(name=parameter, opts=pulumi.InvokeOptions(parent=self))
        return result.value
