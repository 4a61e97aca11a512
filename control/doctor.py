"""``invoke doctor``: examine an env and say what would stop a launch, with the fix.

Each check is one small function returning a :class:`Check` (``ok``, ``fail``,
``warn`` or ``unknown``, a detail and a fix). :func:`run_doctor` runs them in
order; a check whose prerequisite failed is ``unknown`` ("not checked"), never
``ok``. A permission the doctor needs only for itself (``iam:GetInstanceProfile``,
``servicequotas:GetServiceQuota``, ``sts:DecodeAuthorizationMessage``,
``ec2:DescribeImages``...) that is denied gives ``unknown: not permitted (<action>)``;
a denial of something the launch itself needs is a failure.

Checks, in order: credentials, region, stack outputs, bucket, bucket settings,
AMI, instance profile, RunInstances dry runs (one per instance type of the spec,
in its market, with the exact request :meth:`LaunchPlan.run_instances_request`
builds), G-family vCPU quotas, instance-type offerings, the instance's Python
env, the training data (parquet footers only).

``launch`` runs the doctor after it has read the world and planned, before it
creates anything (``--skip-doctor`` skips it); it passes its plan so the dry
runs send exactly what the launch will send.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from common import layout
from common.aws import client as make_client
from common.aws import error_code, is_access_denied
from common.errors import UserError
from common.runspec import RunSpec
from common.status import Market
from common.timeutil import Clock, utc_now
from control.backend import Backend, check_env
from control.launch_rules import TEMPLATE_VERSION, Quota, quota_for
from control.parquet_footer import read_footer_schema, schema_problems
from infra import spec as infra_spec
from infra.outputs import StackOutputs

log = logging.getLogger(__name__)

DATA_SAMPLE_FILES = 3
_ENCODED = re.compile(r"Encoded authorization failure message:\s*(\S+)")
_ONCE = Config(retries={"mode": "standard", "max_attempts": 1}, connect_timeout=5, read_timeout=20)


class Status(StrEnum):
    """The outcome of one check; only ``fail`` stops a launch."""

    OK = "ok"
    FAIL = "fail"
    WARN = "warn"
    UNKNOWN = "unknown"

    def is_failure(self) -> bool:
        return self is Status.FAIL


@dataclass(frozen=True, kw_only=True)
class Check:
    """One check: its name, status, what was seen and, unless ok, how to fix it."""

    name: str
    status: Status
    detail: str
    fix: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "status": self.status.value, "detail": self.detail, "fix": self.fix}


def ok(name: str, detail: str) -> Check:
    return Check(name=name, status=Status.OK, detail=detail)


def fail(name: str, detail: str, fix: str) -> Check:
    return Check(name=name, status=Status.FAIL, detail=detail, fix=fix)


def warn(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name=name, status=Status.WARN, detail=detail, fix=fix)


def unknown(name: str, detail: str, fix: str | None = None) -> Check:
    return Check(name=name, status=Status.UNKNOWN, detail=detail, fix=fix)


def not_permitted(name: str, action: str, extra: str = "") -> Check:
    """``unknown: not permitted (<action>)``: a permission only the doctor needs is missing."""
    detail = f"not permitted ({action})" + (f"; {extra}" if extra else "")
    return unknown(name, detail, f"grant {action} to these credentials to check this")


@dataclass(frozen=True, kw_only=True)
class DoctorReport:
    """Every check of one doctor run."""

    env: str
    local: bool
    checks: tuple[Check, ...]

    @property
    def failed(self) -> tuple[Check, ...]:
        return tuple(c for c in self.checks if c.status.is_failure())

    @property
    def ok(self) -> bool:
        return not self.failed

    @property
    def exit_code(self) -> int:
        """0 when nothing failed, 1 otherwise (warnings and unknowns do not fail)."""
        return 0 if self.ok else 1

    def command(self) -> str:
        return f"invoke doctor --env={self.env}" + (" --local" if self.local else "")

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "local": self.local,
            "ok": self.ok,
            "checks": [c.to_dict() for c in self.checks],
        }


class DoctorFailedError(UserError):
    """The doctor found a problem before a launch: nothing was created."""

    def __init__(self, report: DoctorReport) -> None:
        self.report = report
        names = ", ".join(c.name for c in report.failed)
        super().__init__(
            f"launch stopped before creating anything: {len(report.failed)} doctor check(s) "
            f"failed ({names}); see `{report.command()}` for details and fixes "
            "(or launch with --skip-doctor)"
        )


@dataclass(frozen=True)
class DoctorClients:
    """The clients the checks use (tests pass fakes). ``sts_once`` does not retry."""

    s3: Any
    ec2: Any
    sts: Any
    iam: Any
    quotas: Any
    sts_once: Any


def doctor_clients(backend: Backend) -> DoctorClients:
    """The backend's clients plus IAM, Service Quotas and a no-retry STS client.

    Calls that moto does not implement answer 5xx; retrying them only adds seconds.
    """
    base = backend.clients()
    once = lambda service: make_client(
        backend.session,
        service,
        endpoint_url=backend.endpoint_url,  # noqa: E731
        config=_ONCE,
    )
    return DoctorClients(
        s3=base.s3,
        ec2=base.ec2,
        sts=base.sts,
        iam=backend.client("iam"),
        quotas=once("service-quotas"),
        sts_once=once("sts"),
    )


# ------------------------------------------------------------ small helpers


def _split(message: str) -> tuple[str, str]:
    """A one-line user error 'problem; fix' as (problem, fix)."""
    problem, _, fix = message.partition("; ")
    return problem, fix or "see the detail"


def _aws_error(exc: BaseException) -> str:
    if isinstance(exc, botocore.exceptions.ClientError):
        err = exc.response.get("Error", {})
        return f"{err.get('Code', '')}: {err.get('Message', '')}".strip(": ")
    return f"{type(exc).__name__}: {exc}"


def _redo(local: bool, env: str) -> str:
    return f"`invoke local.up --env={env}`" if local else f"`pulumi up --stack {env}`"


def _name_from_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


# ---------------------------------------------------------------- the checks


def check_credentials(backend: Backend, identity: Mapping[str, str] | None) -> tuple[Check, dict[str, str]]:
    """``sts get-caller-identity``: the check, and the identity (the very dict the backend returned:
    local mode fills it in once the env, and so its operator, is known)."""
    name = "credentials"
    if identity is None:
        try:
            identity = backend.check_credentials()
        except UserError as exc:
            problem, fix = _split(str(exc))
            return fail(name, problem, fix), {}
        except botocore.exceptions.BotoCoreError as exc:
            fix = (
                "set a region: `aws configure set region REGION` or `export AWS_DEFAULT_REGION=REGION`"
                if isinstance(exc, botocore.exceptions.NoRegionError)
                else "fix the AWS configuration (`aws configure list` shows what is used)"
            )
            return fail(name, f"cannot ask AWS who you are: {exc}", fix), {}
    return _identity_check(identity), identity  # type: ignore[return-value]


def _identity_check(identity: Mapping[str, str]) -> Check:
    return ok("credentials", f"{identity.get('arn')} (account {identity.get('account')})")


def configured_region(backend: Backend) -> str | None:
    """The region the user configured (profile or AWS_DEFAULT_REGION), before any switch."""
    if backend.local:
        return str(getattr(backend, "region", "") or backend.session.region_name or "") or None
    try:
        profile = backend.session.profile_name
        # "default" is what botocore reports when no profile is named; naming it raises
        # ProfileNotFound when no config file defines it (credentials from the environment).
        return boto3.Session(profile_name=None if profile == "default" else profile).region_name
    except botocore.exceptions.BotoCoreError:
        return None


def check_region(configured: str | None, effective: str, outputs: StackOutputs, *, local: bool) -> Check:
    """The region calls go to, the configured one and the stack's must agree."""
    name, stack = "region", outputs.region
    if effective != stack:
        where = "the local AWS runs" if local else "calls go"
        return fail(
            name,
            f"{where} in {effective} but the stack outputs say {stack}",
            f"re-create the outputs with {_redo(local, outputs.env)}"
            if local
            else f"export AWS_DEFAULT_REGION={stack}",
        )
    if configured is None:
        return warn(
            name,
            f"no region configured; the stack's region {stack} is used",
            f"`aws configure set region {stack}` so aws CLI commands go there too",
        )
    if configured != stack:
        return warn(
            name,
            f"configured region {configured} differs from the stack's {stack}; invoke uses "
            f"{stack}, aws CLI commands you type go to {configured}",
            f"export AWS_DEFAULT_REGION={stack}",
        )
    return ok(name, f"{stack} (configured and the stack's)")


def read_stack_outputs(backend: Backend, env: str) -> tuple[Check | None, StackOutputs | None]:
    """The env's outputs, or the failed check saying why there are none."""
    try:
        return None, backend.stack_outputs(env)
    except UserError as exc:
        problem, fix = _split(str(exc))
        return fail("stack outputs", problem, fix), None


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
        return None, _aws_error(exc)
    items = versions.get("LaunchTemplateVersions", [])
    return (dict(items[0].get("LaunchTemplateData", {})), None) if items else (None, "no version")


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
            f"s3://{bucket} is not reachable: {_aws_error(exc)}",
            f"create it with {_redo(False, outputs.env)}, or fix the outputs' bucket name",
        )
    if where != outputs.region:
        return fail(
            name,
            f"s3://{bucket} is in {where}, the stack outputs say {outputs.region}",
            f"re-create the outputs with {_redo(False, outputs.env)}",
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
    for wanted in infra_spec.lifecycle_rules(env):
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
        off = [k for k, v in infra_spec.PUBLIC_ACCESS_BLOCK.items() if (block or {}).get(k) != v]
        if off:
            problems.append(f"public access block: {', '.join(off)} not on")
    enc = settings.get("encryption")
    if not isinstance(enc, Denied):
        algos = {
            r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm")
            for r in (enc or {}).get("Rules", [])
        }
        if infra_spec.SSE_ALGORITHM not in algos:
            problems.append(
                f"encryption: {sorted(a for a in algos if a) or 'none'}, "
                f"expected {infra_spec.SSE_ALGORITHM} (SSE-S3)"
            )
    life = settings.get("lifecycle")
    if not isinstance(life, Denied):
        problems += _lifecycle_problems(life, env)
    own = settings.get("ownership")
    if not isinstance(own, Denied):
        kinds = [r.get("ObjectOwnership") for r in (own or {}).get("Rules", [])]
        if kinds != [infra_spec.OBJECT_OWNERSHIP]:
            problems.append(f"object ownership {kinds or 'not set'}, expected {infra_spec.OBJECT_OWNERSHIP}")
    return problems, denied


def check_bucket_settings(s3: Any, outputs: StackOutputs, *, local: bool) -> Check:
    """Public access block, encryption, lifecycle and ownership as ``infra.spec`` defines them."""
    name = "bucket settings"
    problems, denied = bucket_settings_problems(read_bucket_settings(s3, outputs.bucket), outputs.env)
    if problems:
        return fail(name, "; ".join(problems), f"{_redo(local, outputs.env)} puts them back")
    if denied:
        return not_permitted(name, ", ".join(denied), "the settings that could be read match")
    return ok(name, "public access blocked, SSE-S3, lifecycle rules, bucket owner enforced")


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
    from infra.local import LOCAL_AMI_ID

    if local and image_id == LOCAL_AMI_ID:
        return unknown(
            name,
            f"local mode: {image_id} is the local provisioner's stand-in (no DLAMI in the "
            "local AWS); the local instance runs this machine's Python",
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
    profile_name, role_name = _name_from_arn(ref), _name_from_arn(outputs.instance_role_arn)
    try:
        got = iam.get_instance_profile(InstanceProfileName=profile_name)["InstanceProfile"]
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            same = (
                "matches"
                if ref == outputs.instance_profile_arn
                or profile_name == _name_from_arn(outputs.instance_profile_arn)
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


def decode_denial(sts: Any, message: str) -> tuple[str, bool]:
    """What an ``UnauthorizedOperation`` message says is missing: (text, decoded?)."""
    match = _ENCODED.search(message or "")
    if not match:
        return message or "no details given", False
    encoded = match.group(1)
    how = (
        f"decode it with `aws sts decode-authorization-message --encoded-message {encoded} "
        "--query DecodedMessage --output text`"
    )
    try:
        decoded = json.loads(sts.decode_authorization_message(EncodedMessage=encoded)["DecodedMessage"])
    except botocore.exceptions.ClientError as exc:
        why = "not permitted (sts:DecodeAuthorizationMessage)" if is_access_denied(exc) else _aws_error(exc)
        return f"encoded reason could not be decoded: {why}; {how}", False
    except (botocore.exceptions.BotoCoreError, ValueError, KeyError, TypeError) as exc:
        return f"encoded reason could not be decoded ({exc}); {how}", False
    return summarize_decoded(decoded), True


def summarize_decoded(doc: Mapping[str, Any]) -> str:
    """One line from a decoded authorization message. Pure."""
    ctx = doc.get("context") or {}
    why = "an explicit Deny" if doc.get("explicitDeny") else "no statement allows it"
    conds = []
    for item in (ctx.get("conditions") or {}).get("items", [])[:6]:
        values = [v.get("value") for v in (item.get("values") or {}).get("items", [])]
        conds.append(f"{item.get('key')}={','.join(str(v) for v in values)}")
    extra = f" (context: {'; '.join(conds)})" if conds else ""
    return f"{ctx.get('action', '?')} on {ctx.get('resource', '?')} denied: {why}{extra}"


def check_dry_run(
    ec2: Any, sts: Any, request: Mapping[str, Any], *, label: str, outputs: StackOutputs
) -> Check:
    """``RunInstances(DryRun=True)`` with the launch's own request."""
    name = f"run-instances {label}"
    try:
        resp = ec2.run_instances(**request, DryRun=True)
    except botocore.exceptions.ClientError as exc:
        code = error_code(exc)
        if code == "DryRunOperation":
            return ok(name, "allowed (DryRunOperation)")
        if is_access_denied(exc):
            text, _ = decode_denial(sts, exc.response.get("Error", {}).get("Message", ""))
            return fail(
                name,
                f"denied ({code}): {text}",
                f"attach the stack's operator policy {outputs.operator_policy_arn} to these "
                "credentials, or add the statement the detail names",
            )
        return fail(
            name,
            f"refused: {_aws_error(exc)}",
            "fix what the message names (instance type, subnet, launch template), then retry",
        )
    ids = [i["InstanceId"] for i in resp.get("Instances", [])]
    if ids:  # an endpoint that ignored DryRun created an instance: remove it at once
        ec2.terminate_instances(InstanceIds=ids)
    return warn(name, f"the endpoint ignored DryRun (terminated {ids or 'nothing'})")


def vcpus_of(ec2: Any, instance_type: str) -> int | None:
    """Default vCPUs of ``instance_type`` (``None`` when it cannot be read)."""
    try:
        types = ec2.describe_instance_types(InstanceTypes=[instance_type]).get("InstanceTypes", [])
    except botocore.exceptions.ClientError as exc:
        log.info("no vCPU count for %s: %s", instance_type, exc)
        return None
    return int(types[0]["VCpuInfo"]["DefaultVCpus"]) if types else None


def quota_check(
    value: float | None,
    needed: int | None,
    *,
    quota: Quota,
    instance_type: str,
    region: str,
    required: bool,
    reason: str = "",
) -> Check:
    """A G-family quota against the vCPUs ``instance_type`` needs. Pure."""
    code, title = quota.code, quota.name
    name = f"quota {title}"
    raise_it = (
        f"request an increase in the Service Quotas console (EC2, '{title}', {region}) or "
        f"`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {code} "
        f"--desired-value {needed or 4} --region {region}`"
    )
    if value is None or needed is None:
        return unknown(name, reason or "could not be read")
    if value >= needed:
        return ok(name, f"{value:g} vCPUs >= {needed} for one {instance_type} (running instances count too)")
    detail = f"{value:g} vCPUs < {needed} that one {instance_type} needs"
    if required:
        return fail(name, detail, raise_it)
    return warn(name, detail + " (needed only for the other market)", raise_it)


def read_quota(quotas: Any, code: str, *, local: bool) -> tuple[float | None, str]:
    """A quota's value, or ``None`` and why not."""
    try:
        return float(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]), ""
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return None, "not permitted (servicequotas:GetServiceQuota)"
        where = "the local AWS (moto) does not implement EC2 quotas" if local else "Service Quotas answered"
        return None, f"{where}: {_aws_error(exc)}"
    except botocore.exceptions.BotoCoreError as exc:
        return None, f"Service Quotas unreachable: {exc}"


def check_quotas(ec2: Any, quotas: Any, spec: RunSpec, region: str, *, local: bool) -> list[Check]:
    """Both G-family quotas; the spec's market decides which one must hold."""
    first = spec.instance.types[0]
    needed = vcpus_of(ec2, first)
    out = []
    for market in (Market.SPOT, Market.ON_DEMAND):
        quota = quota_for(market)
        value, reason = read_quota(quotas, quota.code, local=local)
        if needed is None:
            reason = reason or f"vCPUs of {first} unknown (ec2:DescribeInstanceTypes)"
        out.append(
            quota_check(
                value,
                needed,
                quota=quota,
                instance_type=first,
                region=region,
                required=spec.instance.market is market,
                reason=reason,
            )
        )
    return out


def offering_check(offered: Mapping[str, Iterable[str]], types: Sequence[str], azs: Sequence[str]) -> Check:
    """Instance types offered in the stack's AZs: fail when none of them is anywhere. Pure."""
    name = "offerings"
    where = {t: sorted(set(offered.get(t, ()))) for t in types}
    missing = [t for t in types if not where[t]]
    detail = "; ".join(f"{t}: {', '.join(z) or 'none'}" for t, z in where.items())
    if len(missing) == len(types):
        return fail(
            name,
            f"none of {list(types)} is offered in {list(azs)}",
            "pick other instance types (--instance-type) or AZs the stack has subnets in",
        )
    if missing:
        return warn(name, detail, f"{', '.join(missing)} will be skipped; drop them from the spec")
    return ok(name, detail)


def check_offerings(ec2: Any, spec: RunSpec, outputs: StackOutputs) -> Check:
    azs = list(spec.instance.availability_zones) or sorted(outputs.subnets_by_az)
    try:
        resp = ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[
                {"Name": "instance-type", "Values": list(spec.instance.types)},
                {"Name": "location", "Values": azs},
            ],
        )
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return not_permitted("offerings", "ec2:DescribeInstanceTypeOfferings")
        raise
    offered: dict[str, list[str]] = {}
    for o in resp.get("InstanceTypeOfferings", []):
        offered.setdefault(o["InstanceType"], []).append(o["Location"])
    return offering_check(offered, spec.instance.types, azs)


def check_python_env(s3: Any, outputs: StackOutputs, *, local: bool) -> Check:
    """The packed env or the wheelhouse the instance boots its Python from."""
    from control.launch import PYTHON_ENV_KEY, WHEELHOUSE_PREFIX, _python_env

    name = "python env"
    try:
        kind = _python_env(s3, outputs.bucket)
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


# ------------------------------------------------------------ training data


def _sample(items: Sequence[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


def check_training_data(s3: Any, outputs: StackOutputs, spec: RunSpec) -> Check:
    """Parquet files under the spec's prefix, and a sample's schema (footers only)."""
    name, bucket, prefix = "training data", outputs.bucket, spec.data.prefix
    upload = (
        f"upload your data there (aws s3 cp --recursive DIR s3://{bucket}/{prefix}) "
        "or set data.prefix in the spec"
    )
    objects: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects += [o for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return fail(
                name,
                f"access denied listing s3://{bucket}/{prefix} (s3:ListBucket)",
                f"attach the operator policy {outputs.operator_policy_arn} to these credentials",
            )
        raise
    if not objects:
        return fail(name, f"no .parquet file under s3://{bucket}/{prefix}", upload)
    total = sum(int(o.get("Size", 0)) for o in objects)
    sampled = _sample(sorted(objects, key=lambda o: o["Key"]), DATA_SAMPLE_FILES)
    for obj in sampled:
        try:
            schema = read_footer_schema(s3, bucket, obj["Key"], int(obj["Size"]))
        except (ValueError, OSError) as exc:
            return fail(
                name,
                f"s3://{bucket}/{obj['Key']} is not readable parquet: {exc}",
                "replace it with a parquet file (or move it out of the prefix)",
            )
        problems = schema_problems(schema, spec.data)
        if problems:
            return fail(
                name,
                f"s3://{bucket}/{obj['Key']}: {'; '.join(problems)}",
                "rename the columns in the data, or name yours in the spec's [data] "
                "(item_id_column, timestamp_column, target_column, covariates) and pass --spec",
            )
    return ok(
        name,
        f"{len(objects)} files, {total} bytes under {prefix}; footers of {len(sampled)} "
        f"sampled file(s) have the spec's columns",
    )


# --------------------------------------------------------------- the run


def probe_plan(backend: Backend, spec: RunSpec, outputs: StackOutputs, *, clock: Clock) -> Any:
    """The plan a launch would make now, for its ``RunInstances`` requests.

    It goes through :func:`control.launch.plan_launch` itself (with the launch template
    facts :func:`control.launch.read_template` reads), with the reads that only change
    the uploads neutralised (no lock, code already uploaded, data present); the
    requests differ from the launch's only in the run id and the code bundle hash.

    Raises:
        UserError: the plan is refused (unknown AZs, rules AWS applies, no template).
    """
    from control.launch import World, plan_launch, read_template

    now = clock()
    world = World(
        env=outputs.env,
        run_id=layout.new_run_id(now),
        now=now,
        local=backend.local,
        device=backend.device,
        outputs=outputs,
        active=None,
        code_bundle=b"",
        code_sha256=hashlib.sha256(b"").hexdigest(),
        code_exists=True,
        data_files=1,
        data_bytes=0,
        prices={},
        python_env="packed",
        template=read_template(backend, outputs),
    )
    return plan_launch(spec, world)


def check_run_instances(
    backend: Backend, clients: DoctorClients, spec: RunSpec, outputs: StackOutputs, plan: Any, *, clock: Clock
) -> list[Check]:
    """One dry run per instance type (its first placement), in the spec's market."""
    if plan is None:
        try:
            plan = probe_plan(backend, spec, outputs, clock=clock)
        except UserError as exc:
            problem, fix = _split(str(exc))
            return [fail("run-instances", problem, fix)]
    firsts: dict[str, Any] = {}
    for placement in plan.placements:
        firsts.setdefault(placement.instance_type, placement)
    return [
        check_dry_run(
            clients.ec2,
            clients.sts_once,
            plan.run_instances_request(p),
            label=f"{t} {plan.market.value} {p.availability_zone}",
            outputs=outputs,
        )
        for t, p in firsts.items()
    ]


_LATER = (
    "region",
    "stack outputs",
    "bucket",
    "bucket settings",
    "ami",
    "instance profile",
    "run-instances",
    "quotas",
    "offerings",
    "python env",
    "training data",
)


def _skipped(names: Iterable[str], why: str) -> list[Check]:
    return [unknown(n, f"not checked: {why}") for n in names]


def _guard(fn: Callable[..., Any], *args: Any, name: str = "", default: Any = None) -> Any:
    """``fn(*args)``; a configuration, credential or network error becomes a failed check.

    With ``default`` (a read, not a check) that value is returned instead.
    """
    from control.backend import user_error

    try:
        return fn(*args)
    except (UserError, botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError) as exc:
        if default is not None:
            log.info("doctor read failed: %s", exc)
            return default
        mapped = exc if isinstance(exc, UserError) else user_error(exc, name)
        if mapped is None:
            if isinstance(exc, botocore.exceptions.ClientError):
                return [fail(name, f"AWS refused: {_aws_error(exc)}", "fix what the message names")]
            raise
        return [fail(name, *_split(str(mapped)))]


def run_doctor(
    backend: Backend,
    env: str,
    spec: RunSpec,
    *,
    plan: Any = None,
    outputs: StackOutputs | None = None,
    identity: Mapping[str, str] | None = None,
    clients: DoctorClients | None = None,
    clock: Clock = utc_now,
) -> DoctorReport:
    """Run every check for ``env`` and the run spec ``spec``.

    Args:
        plan: the launch's own :class:`control.launch.LaunchPlan` (its requests are dry-run);
            ``None`` plans one.
        outputs, identity: what the caller has read already (not read again).
        clients: fakes for tests; default: :func:`doctor_clients`.

    Raises:
        ConfigError: an invalid env name (a user error, not a check).
    """
    check_env(env)
    local = backend.local
    configured = configured_region(backend)
    cred, identity = check_credentials(backend, identity)
    checks = [cred]
    if cred.status.is_failure():
        if not local and configured is None:
            checks.append(
                fail(
                    "region",
                    "no region configured",
                    "`aws configure set region REGION` or `export AWS_DEFAULT_REGION=REGION`",
                )
            )
        else:
            checks += _skipped(["region"], "no working credentials")
        return DoctorReport(
            env=env, local=local, checks=tuple(checks + _skipped(_LATER[1:], "no working credentials"))
        )
    if outputs is None:
        missing, outputs = read_stack_outputs(backend, env)
        if outputs is None:
            assert missing is not None
            return DoctorReport(
                env=env,
                local=local,
                checks=tuple(
                    checks
                    + _skipped(["region"], "no stack outputs")
                    + [missing]
                    + _skipped(_LATER[2:], "no stack outputs")
                ),
            )
    if not identity.get("arn"):
        try:
            identity = dict(backend.check_credentials())
            checks[0] = _identity_check(identity)
        except UserError as exc:
            checks[0] = fail("credentials", *_split(str(exc)))
    else:
        checks[0] = _identity_check(identity)
    c = clients or doctor_clients(backend)
    checks.append(check_region(configured, c.ec2.meta.region_name, outputs, local=local))
    template, template_error = _guard(
        read_launch_template, c.ec2, outputs.launch_template_id, default=(None, "could not be read")
    )
    checks += _guard(
        lambda: [check_stack_outputs(outputs, identity, template, template_error)], name="stack outputs"
    )
    bucket = _guard(lambda: [check_bucket(c.s3, outputs)], name="bucket")[0]
    checks.append(bucket)
    reachable = not bucket.status.is_failure()
    steps: list[tuple[str, Callable[[], list[Check]]]] = [
        (
            "bucket settings",
            lambda: (
                [check_bucket_settings(c.s3, outputs, local=local)]
                if reachable
                else _skipped(["bucket settings"], "bucket not reachable")
            ),
        ),
        ("ami", lambda: [check_ami(c.ec2, template, outputs, local=local)]),
        ("instance profile", lambda: [check_instance_profile(c.iam, template, outputs)]),
        ("run-instances", lambda: check_run_instances(backend, c, spec, outputs, plan, clock=clock)),
        ("quotas", lambda: check_quotas(c.ec2, c.quotas, spec, outputs.region, local=local)),
        ("offerings", lambda: [check_offerings(c.ec2, spec, outputs)]),
        (
            "python env",
            lambda: (
                [check_python_env(c.s3, outputs, local=local)]
                if reachable
                else _skipped(["python env"], "bucket not reachable")
            ),
        ),
        (
            "training data",
            lambda: (
                [check_training_data(c.s3, outputs, spec)]
                if reachable
                else _skipped(["training data"], "bucket not reachable")
            ),
        ),
    ]
    for name, step in steps:
        checks += _guard(step, name=name)
    report = DoctorReport(env=env, local=local, checks=tuple(checks))
    log.info(
        "doctor for env %s: %d checks, failed: %s",
        env,
        len(checks),
        ", ".join(x.name for x in report.failed) or "none",
    )
    return report


def doctor(
    backend: Backend | Callable[[], Backend], *, env: str, spec_path: Any = None, clock: Clock = utc_now
) -> DoctorReport:
    """``invoke doctor``: validate the arguments, then :func:`run_doctor`.

    Raises:
        ConfigError: an invalid env name or run spec (exit 2 at the edge).
    """
    from control.launch import load_spec

    check_env(env)
    spec = load_spec(spec_path, env=env)
    if not isinstance(backend, Backend):
        backend = backend()
    return run_doctor(backend, env, spec, clock=clock)


__all__ = ["Check", "DoctorClients", "DoctorFailedError", "DoctorReport", "Status", "doctor", "run_doctor"]
