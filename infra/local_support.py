"""Shared pieces of the local provisioner: the context, comparison helpers and role upkeep."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common import tags as common_tags
from common.aws import error_code
from infra.spec import names as spec_names
from infra.spec import tags as spec_tags

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalContext:
    """Environment, account, tags and clients one provisioning run works with."""

    env: str
    region: str
    account_id: str
    tags: dict[str, str]
    clients: Mapping[str, Any]

    def __getattr__(self, service: str) -> Any:
        try:
            return self.clients[service]
        except KeyError:
            raise AttributeError(service) from None

    def tag_specs(self, resource_type: str, name: str) -> list[dict[str, Any]]:
        tag_map = {**self.tags, "Name": name}
        return [{"ResourceType": resource_type, "Tags": common_tags.tag_list(tag_map)}]

    def name(self, kind: str) -> str:
        return spec_names.resource_name(self.env, kind)


def is_error(exc: ClientError, *codes: str) -> bool:
    """Whether ``exc`` carries one of the AWS error ``codes``."""
    return error_code(exc) in codes


def canonical(value: Any) -> Any:
    """Order-insensitive form for comparing AWS answers with desired settings."""
    if isinstance(value, Mapping):
        return {k: canonical(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((canonical(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value


def same(current: Any, desired: Any) -> bool:
    """Whether an AWS answer already equals the desired setting (list order ignored)."""
    return canonical(current) == canonical(desired)


def iam_document(value: str | Mapping[str, Any]) -> Any:
    """IAM returns documents URL-decoded as dicts (boto3) or as JSON strings."""
    return json.loads(value) if isinstance(value, str) else value


def ensure_role(ctx: LocalContext, name: str, trust: Mapping[str, Any], description: str) -> dict[str, Any]:
    """The IAM role ``name`` with exactly the trust policy ``trust`` (created or corrected)."""
    try:
        role = ctx.iam.get_role(RoleName=name)["Role"]
        if not same(iam_document(role["AssumeRolePolicyDocument"]), trust):
            ctx.iam.update_assume_role_policy(RoleName=name, PolicyDocument=json.dumps(trust))
        return dict(role)
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
    role = ctx.iam.create_role(
        RoleName=name,
        AssumeRolePolicyDocument=json.dumps(trust),
        Description=description,
        Tags=common_tags.tag_list(ctx.tags),
    )["Role"]
    log.info("created role %s", name)
    return dict(role)


def ensure_inline_policy(ctx: LocalContext, role: str, policy_name: str, desired: Mapping[str, Any]) -> None:
    """The role's inline policy ``policy_name`` equal to ``desired`` (put only when it differs)."""
    try:
        current = iam_document(
            ctx.iam.get_role_policy(RoleName=role, PolicyName=policy_name)["PolicyDocument"]
        )
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
        current = None
    if current is None or not same(current, desired):
        ctx.iam.put_role_policy(RoleName=role, PolicyName=policy_name, PolicyDocument=json.dumps(desired))
        log.info("set policy %s of role %s", policy_name, role)


def ensure_instance_profile(ctx: LocalContext, name: str) -> str:
    """The instance profile ``name`` holding the role of the same name; its ARN."""
    try:
        profile = ctx.iam.get_instance_profile(InstanceProfileName=name)["InstanceProfile"]
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
        profile = ctx.iam.create_instance_profile(
            InstanceProfileName=name, Tags=common_tags.tag_list(ctx.tags)
        )["InstanceProfile"]
        log.info("created instance profile %s", name)
    if name not in {r["RoleName"] for r in profile.get("Roles", [])}:
        ctx.iam.add_role_to_instance_profile(InstanceProfileName=name, RoleName=name)
    return str(profile["Arn"])


def _comparable(data: Mapping[str, Any]) -> dict[str, Any]:
    """Launch-template data without the template's own tags (moto copies them in)."""
    return {**data, "TagSpecifications": spec_tags.launch_time_tag_specs(data)}


def ensure_launch_template(ctx: LocalContext, name: str, desired: Mapping[str, Any]) -> tuple[str, str]:
    """The launch template ``name`` whose default version holds ``desired``: ``(id, default version)``.

    A template that differs gets a new version, made the default (as ``pulumi up`` does).
    """
    try:
        template = ctx.ec2.describe_launch_templates(LaunchTemplateNames=[name])["LaunchTemplates"][0]
    except ClientError as exc:
        if not is_error(exc, "InvalidLaunchTemplateName.NotFoundException"):
            raise
        created = ctx.ec2.create_launch_template(
            LaunchTemplateName=name,
            LaunchTemplateData=dict(desired),
            TagSpecifications=ctx.tag_specs("launch-template", name),
        )["LaunchTemplate"]
        log.info("created launch template %s", created["LaunchTemplateId"])
        return str(created["LaunchTemplateId"]), str(created["LatestVersionNumber"])
    lt_id = str(template["LaunchTemplateId"])
    current = ctx.ec2.describe_launch_template_versions(LaunchTemplateId=lt_id, Versions=["$Default"])[
        "LaunchTemplateVersions"
    ][0]
    if same(_comparable(current["LaunchTemplateData"]), _comparable(desired)):
        return lt_id, str(current["VersionNumber"])
    version = ctx.ec2.create_launch_template_version(
        LaunchTemplateId=lt_id, LaunchTemplateData=dict(desired)
    )["LaunchTemplateVersion"]["VersionNumber"]
    ctx.ec2.modify_launch_template(LaunchTemplateId=lt_id, DefaultVersion=str(version))
    log.info("launch template %s now at version %s", lt_id, version)
    return lt_id, str(version)
