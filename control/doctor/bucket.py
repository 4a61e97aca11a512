"""The doctor's bucket checks: the bucket answers, its settings match ``infra.spec``, the Python env."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import botocore.exceptions

from common import layout
from common.aws import error_code, is_access_denied
from control.doctor.checks import Check, aws_error_text, fail, not_permitted, ok, redo_command
from infra.outputs import StackOutputs
from infra.spec import bucket as spec_bucket


def check_bucket(s3: Any, outputs: StackOutputs) -> Check:
    """The bucket answers and lives in the stack's region."""
    name, bucket = "bucket", outputs.bucket
    try:
        # GetBucketLocation, not HeadBucket: both need only what the operator policy grants on AWS
        # (HeadBucket is authorized as s3:ListBucket), but moto authorizes HeadBucket as an
        # action "s3:HeadBucket" that no policy names, so it is denied under IAM enforcement.
        where = s3.get_bucket_location(Bucket=bucket).get("LocationConstraint") or "us-east-1"
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return fail(
                name,
                f"access denied to s3://{bucket} (s3:ListBucket / s3:GetBucketLocation)",
                f"attach the operator policy {outputs.operator_policy_arn} to these credentials",
            )
        return fail(
            name,
            f"s3://{bucket} is not reachable: {aws_error_text(exc)}",
            f"create it with {redo_command(False, outputs.env)}, or fix the outputs' bucket name",
        )
    if where != outputs.region:
        return fail(
            name,
            f"s3://{bucket} is in {where}, the stack outputs say {outputs.region}",
            f"re-create the outputs with {redo_command(False, outputs.env)}",
        )
    return ok(name, f"s3://{bucket} reachable, in {where}")


_SETTING_READS: tuple[tuple[str, str, str, str, tuple[str, ...]], ...] = (
    # (setting, client method, answer key, IAM action, error codes meaning "not set")
    (
        "public access block",
        "get_public_access_block",
        "PublicAccessBlockConfiguration",
        "s3:GetBucketPublicAccessBlock",
        ("NoSuchPublicAccessBlockConfiguration",),
    ),
    (
        "encryption",
        "get_bucket_encryption",
        "ServerSideEncryptionConfiguration",
        "s3:GetEncryptionConfiguration",
        ("ServerSideEncryptionConfigurationNotFoundError",),
    ),
    (
        "lifecycle",
        "get_bucket_lifecycle_configuration",
        "Rules",
        "s3:GetLifecycleConfiguration",
        ("NoSuchLifecycleConfiguration",),
    ),
    (
        "ownership",
        "get_bucket_ownership_controls",
        "OwnershipControls",
        "s3:GetBucketOwnershipControls",
        ("OwnershipControlsNotFoundError",),
    ),
)


@dataclass(frozen=True)
class Denied:
    """A setting that could not be read for lack of ``action``."""

    action: str


def read_bucket_settings(s3: Any, bucket: str) -> dict[str, Any]:
    """Each setting's answer: the value, ``None`` when not set, or :class:`Denied`."""
    out: dict[str, Any] = {}
    for setting, method, key, action, missing in _SETTING_READS:
        try:
            out[setting] = getattr(s3, method)(Bucket=bucket).get(key)
        except botocore.exceptions.ClientError as exc:
            if error_code(exc) in missing:
                out[setting] = None
            elif is_access_denied(exc):
                out[setting] = Denied(action)
            else:
                raise
    return out


def _lifecycle_problems(rules: Sequence[Mapping[str, Any]] | None, env: str) -> list[str]:
    from infra.local_support import canonical

    def norm(rule: Mapping[str, Any]) -> dict[str, Any]:
        rule = dict(rule)
        filt = dict(rule.get("Filter") or {})
        rule["Filter"] = {"Prefix": filt.get("Prefix", "")} if set(filt) <= {"Prefix"} else filt
        return rule

    by_id = {r.get("ID"): norm(r) for r in rules or []}
    problems = []
    for wanted in spec_bucket.lifecycle_rules(env):
        have = by_id.get(wanted["ID"])
        if have is None:
            problems.append(f"lifecycle rule {wanted['ID']} missing")
            continue
        wanted = norm(wanted)
        changed = [k for k in wanted if canonical(have.get(k)) != canonical(wanted[k])]
        if changed:
            problems.append(f"lifecycle rule {wanted['ID']} differs in {', '.join(changed)}")
    return problems


def bucket_settings_problems(settings: Mapping[str, Any], env: str) -> tuple[list[str], list[str]]:
    """Compare read settings with ``infra.spec``: (differences, actions that were denied). Pure."""
    problems: list[str] = []
    denied = [v.action for v in settings.values() if isinstance(v, Denied)]
    block = settings.get("public access block")
    if not isinstance(block, Denied):
        off = [k for k, v in spec_bucket.PUBLIC_ACCESS_BLOCK.items() if (block or {}).get(k) != v]
        if off:
            problems.append(f"public access block: {', '.join(off)} not on")
    enc = settings.get("encryption")
    if not isinstance(enc, Denied):
        algos = {
            r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
            for r in (enc or {}).get("Rules", [])
        }
        if spec_bucket.SSE_ALGORITHM not in algos:
            problems.append(
                f"encryption: {sorted(a for a in algos if a) or 'none'}, "
                f"expected {spec_bucket.SSE_ALGORITHM} (SSE-S3)"
            )
    life = settings.get("lifecycle")
    if not isinstance(life, Denied):
        problems += _lifecycle_problems(life, env)
    own = settings.get("ownership")
    if not isinstance(own, Denied):
        kinds = [r.get("ObjectOwnership") for r in (own or {}).get("Rules", [])]
        if kinds != [spec_bucket.OBJECT_OWNERSHIP]:
            problems.append(f"object ownership {kinds or 'not set'}, expected {spec_bucket.OBJECT_OWNERSHIP}")
    return problems, denied


def check_bucket_settings(s3: Any, outputs: StackOutputs, *, local: bool) -> Check:
    """Public access block, encryption, lifecycle and ownership as ``infra.spec`` defines them."""
    name = "bucket settings"
    problems, denied = bucket_settings_problems(read_bucket_settings(s3, outputs.bucket), outputs.env)
    if problems:
        return fail(name, "; ".join(problems), f"{redo_command(local, outputs.env)} puts them back")
    if denied:
        return not_permitted(name, ", ".join(denied), "the settings that could be read match")
    return ok(name, "public access blocked, SSE-S3, lifecycle rules, bucket owner enforced")


def check_python_env(s3: Any, outputs: StackOutputs, *, local: bool) -> Check:
    """The packed env or the wheelhouse the instance boots its Python from."""
    from control.launch_world import PYTHON_ENV_KEY, WHEELHOUSE_PREFIX, python_env_kind

    name = "python env"
    try:
        kind = python_env_kind(s3, outputs.bucket)
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return fail(
                name,
                f"access denied reading s3://{outputs.bucket}/{layout.ENV_PREFIX_DIR}",
                f"attach the operator policy {outputs.operator_policy_arn} to these credentials",
            )
        raise
    if kind != "missing":
        return ok(name, f"{kind} ({PYTHON_ENV_KEY if kind == 'packed' else WHEELHOUSE_PREFIX})")
    if local:
        return ok(
            name,
            "local mode: the local instance uses this machine's Python (an AMI-like venv); "
            "nothing is needed in S3",
        )
    return fail(
        name,
        f"neither s3://{outputs.bucket}/{PYTHON_ENV_KEY} nor wheels under "
        f"s3://{outputs.bucket}/{WHEELHOUSE_PREFIX}",
        f"upload them with `invoke wheelhouse --env={outputs.env} --dir=DIR` (see README)",
    )
