"""Local provisioner, IAM part: the instance role and profile, the debug role, the operator policy.

Each document comes from :mod:`infra.spec`; a role, profile or policy is looked up
by name first and only written where it differs, as in :mod:`infra.local`.
"""

from __future__ import annotations

import json
import logging

from botocore.exceptions import ClientError

from common.tags import tag_list
from infra.local_support import (
    LocalContext,
    ensure_inline_policy,
    ensure_instance_profile,
    ensure_role,
    iam_document,
    is_error,
    same,
)
from infra.spec import bucket as spec_bucket
from infra.spec import debug as spec_debug
from infra.spec import iam as spec_iam
from infra.spec.operator_access import OperatorScope, operator_policy

log = logging.getLogger(__name__)


def ensure_instance_identity(
    ctx: LocalContext,
    bucket: str,
    local_principal_arn: str | None,
    kind: str = "instance",
    notify_topic_arn: str | None = None,
) -> tuple[str, str]:
    """Role, its inline policy (publishing to ``notify_topic_arn`` when set) and the
    instance profile; returns their ARNs."""
    name = ctx.name(kind)
    trust = spec_iam.instance_trust_policy(local_principal_arn)
    role = ensure_role(ctx, name, trust, f"Chronos training instances of env {ctx.env}")
    _ensure_role_policy(ctx, name, bucket, notify_topic_arn)
    return role["Arn"], ensure_instance_profile(ctx, name)


def _ensure_role_policy(ctx: LocalContext, role: str, bucket: str, notify_topic_arn: str | None) -> None:
    policy_name = f"{role}-least-privilege"
    desired = spec_iam.instance_role_policy(
        ctx.env,
        spec_bucket.bucket_arn(bucket),
        region=ctx.region,
        account_id=ctx.account_id,
        notify_topic_arn=notify_topic_arn,
    )
    ensure_inline_policy(ctx, role, policy_name, desired)


def ensure_debug_identity(
    ctx: LocalContext,
    bucket: str,
    local_principal_arn: str | None,
    *,
    wanted: bool,
    notify_topic_arn: str | None = None,
) -> tuple[str | None, str | None]:
    """The debug role and profile (:func:`infra.spec.debug.debug_role_name`) when wanted, else removed.

    The inline policy is the instance role's (:func:`infra.spec.debug.debug_role_policy` is that
    document). The local AWS loads AWS managed policies only on request
    (``MOTO_IAM_LOAD_MANAGED_POLICIES``); without them the attachment is skipped and
    logged: no Session Manager exists locally, so nothing could use it.
    """
    if not wanted:
        _remove_debug_identity(ctx)
        return None, None
    role_arn, profile_arn = ensure_instance_identity(
        ctx, bucket, local_principal_arn, spec_debug.DEBUG_ROLE_KIND, notify_topic_arn
    )
    name = spec_debug.debug_role_name(ctx.env)
    listed = ctx.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    attached = {p["PolicyArn"] for p in listed}
    for arn in spec_debug.debug_managed_policy_arns():
        if arn in attached:
            continue
        try:
            ctx.iam.attach_role_policy(RoleName=name, PolicyArn=arn)
            log.info("attached %s to role %s", arn, name)
        except ClientError as exc:
            if not is_error(exc, "NoSuchEntity"):
                raise
            log.info("the local AWS has no %s; role %s goes without it", arn, name)
    return role_arn, profile_arn


def _remove_debug_identity(ctx: LocalContext) -> None:
    """What ``pulumi up`` does once ``debug_profile`` is off again: the debug role goes."""
    name = spec_debug.debug_role_name(ctx.env)
    try:
        ctx.iam.get_role(RoleName=name)
    except ClientError as exc:
        if is_error(exc, "NoSuchEntity"):
            return
        raise
    try:
        ctx.iam.remove_role_from_instance_profile(InstanceProfileName=name, RoleName=name)
        ctx.iam.delete_instance_profile(InstanceProfileName=name)
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
    for attached in ctx.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]:
        ctx.iam.detach_role_policy(RoleName=name, PolicyArn=attached["PolicyArn"])
    for policy in ctx.iam.list_role_policies(RoleName=name)["PolicyNames"]:
        ctx.iam.delete_role_policy(RoleName=name, PolicyName=policy)
    ctx.iam.delete_role(RoleName=name)
    log.info("removed debug role and instance profile %s", name)


def ensure_operator_policy(
    ctx: LocalContext,
    bucket: str,
    launch_template_arn: str,
    role_arn: str,
    vpc_arn: str,
    debug_role_arn: str | None = None,
    *,
    batch: bool = False,
) -> str:
    name = ctx.name("operator")
    arn = f"arn:aws:iam::{ctx.account_id}:policy/{name}"
    scope = OperatorScope(
        env=ctx.env,
        region=ctx.region,
        account_id=ctx.account_id,
        bucket_arn=spec_bucket.bucket_arn(bucket),
        launch_template_arn=launch_template_arn,
        role_arn=role_arn,
        vpc_arn=vpc_arn,
        debug_role_arn=debug_role_arn,
        batch=batch,
    )
    desired = operator_policy(scope)
    try:
        version = ctx.iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    except ClientError as exc:
        if not is_error(exc, "NoSuchEntity"):
            raise
        ctx.iam.create_policy(PolicyName=name, PolicyDocument=json.dumps(desired), Tags=tag_list(ctx.tags))
        log.info("created operator policy %s", name)
        return arn
    current = ctx.iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]
    if not same(iam_document(current["Document"]), desired):
        _prune_policy_versions(ctx, arn)
        ctx.iam.create_policy_version(PolicyArn=arn, PolicyDocument=json.dumps(desired), SetAsDefault=True)
        log.info("updated operator policy %s", name)
    return arn


def _prune_policy_versions(ctx: LocalContext, arn: str) -> None:
    """IAM keeps at most five versions: drop the oldest non-default one if full."""
    versions = ctx.iam.list_policy_versions(PolicyArn=arn)["Versions"]
    old = sorted((v for v in versions if not v["IsDefaultVersion"]), key=lambda v: v["CreateDate"])
    if len(versions) >= 5 and old:
        ctx.iam.delete_policy_version(PolicyArn=arn, VersionId=old[0]["VersionId"])
