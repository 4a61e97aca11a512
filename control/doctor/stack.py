"""The doctor's stack checks: the stack outputs, the launch template, its AMI and instance profile."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import botocore.exceptions

from common.aws import error_code, is_access_denied
from common.errors import UserError
from control.backend import Backend
from control.doctor.checks import (
    Check,
    aws_error_text,
    fail,
    name_from_arn,
    not_permitted,
    ok,
    split_fix,
    unknown,
)
from control.launch_rules import TEMPLATE_VERSION
from infra.outputs import StackOutputs


def read_stack_outputs(backend: Backend, env: str) -> StackOutputs | Check:
    """The env's outputs, or the failed check saying why there are none."""
    try:
        return backend.stack_outputs(env)
    except UserError as exc:
        problem, fix = split_fix(str(exc))
        return fail("stack outputs", problem, fix)


def check_stack_outputs(
    outputs: StackOutputs,
    identity: Mapping[str, str],
    template: Mapping[str, Any] | None,
    template_error: str | None,
) -> Check:
    """Outputs present, of this account, and naming a launch template that exists in their region."""
    name, env = "stack outputs", outputs.env
    account = identity.get("account")
    fix = (
        f"use credentials of account {outputs.account_id}, or re-create the outputs for this account "
        f"(`pulumi up --stack {env}`)"
    )
    if account and account != outputs.account_id:
        return fail(
            name,
            f"the outputs are for account {outputs.account_id}, these credentials are account {account}",
            fix,
        )
    if template is None:
        return fail(
            name,
            f"launch template {outputs.launch_template_id} not readable in {outputs.region}: "
            f"{template_error}",
            f"the outputs are stale or from another region: run `pulumi up --stack {env}` and "
            "save its outputs again",
        )
    return ok(
        name,
        f"account {outputs.account_id}, region {outputs.region}, bucket {outputs.bucket}, "
        f"launch template {outputs.launch_template_id}",
    )


def read_launch_template(ec2: Any, template_id: str) -> tuple[dict[str, Any] | None, str | None]:
    """The data of the version a launch uses (``TEMPLATE_VERSION``), or why it cannot be read."""
    try:
        versions = ec2.describe_launch_template_versions(
            LaunchTemplateId=template_id, Versions=[TEMPLATE_VERSION]
        )
    except botocore.exceptions.ClientError as exc:
        return None, aws_error_text(exc)
    items = versions.get("LaunchTemplateVersions", [])
    return (dict(items[0].get("LaunchTemplateData", {})), None) if items else (None, "no version")


def check_ami(ec2: Any, template: Mapping[str, Any] | None, outputs: StackOutputs, *, local: bool) -> Check:
    """The launch template's image exists in the region: its name and creation date."""
    name = "ami"
    image_id = (template or {}).get("ImageId")
    if not image_id:
        return unknown(name, "not checked: the launch template names no image or could not be read")
    try:
        images = ec2.describe_images(ImageIds=[image_id]).get("Images", [])
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return not_permitted(name, "ec2:DescribeImages", f"the launch template uses {image_id}")
        if not error_code(exc).startswith("InvalidAMIID"):
            raise
        images = []
    if images:
        img = images[0]
        return ok(name, f"{image_id} {img.get('Name', '?')} created {img.get('CreationDate', '?')}")
    if local:
        return fail(
            name,
            f"{image_id} is not in the local AWS: the local provisioner registers a stand-in AMI",
            "`invoke local.down && invoke local.up` provisions the local stack again",
        )
    return fail(
        name,
        f"{image_id} does not exist in {outputs.region} (deregistered, or another region's)",
        f"`pulumi up --stack {outputs.env}` resolves the current Deep Learning AMI "
        "(or pin one of this region with the stack's ami_id)",
    )


def check_instance_profile(iam: Any, template: Mapping[str, Any] | None, outputs: StackOutputs) -> Check:
    """The launch template's instance profile exists and holds the instance role."""
    name = "instance profile"
    profile = (template or {}).get("IamInstanceProfile") or {}
    ref = profile.get("Arn") or profile.get("Name")
    if not ref:
        return fail(
            name,
            "the launch template names no instance profile",
            f"`pulumi up --stack {outputs.env}` restores it",
        )
    profile_name, role_name = name_from_arn(ref), name_from_arn(outputs.instance_role_arn)
    try:
        got = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            same = (
                "matches"
                if ref == outputs.instance_profile_arn
                or profile_name == name_from_arn(outputs.instance_profile_arn)
                else "DIFFERS FROM"
            )
            return not_permitted(
                name,
                "iam:GetInstanceProfile",
                f"checked only that the launch template's profile {profile_name} {same} the "
                f"stack output {outputs.instance_profile_arn}",
            )
        if error_code(exc) == "NoSuchEntity":
            return fail(
                name,
                f"instance profile {profile_name} does not exist",
                f"`pulumi up --stack {outputs.env}` re-creates it",
            )
        raise
    roles = [r.get("RoleName") for r in got.get("Roles", [])]
    if role_name not in roles:
        return fail(
            name,
            f"instance profile {profile_name} holds {roles or 'no role'}, not {role_name}",
            f"`pulumi up --stack {outputs.env}` puts the instance role back",
        )
    return ok(name, f"{profile_name} with role {role_name}")
