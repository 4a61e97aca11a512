"""Audit a local run's recorded AWS calls against the exact policies of their callers.

moto enforces neither IAM conditions nor EC2 resource ARNs, so after a local run
every call in the audit log (:mod:`localaws.audit`) is mapped to its principal
(an IAM user by its access key, or an assumed-role session by the log's
``credentials`` lines), that principal's policy documents are read back from the
local IAM (attached managed policies' default versions, inline policies, group
policies; the moto-only allowance is ignored), the call becomes the requests
AWS would evaluate (:mod:`localaws.iam_requests`), and each is evaluated
(:mod:`localaws.iam_eval`). Whatever AWS would deny, and whatever the mapping
does not model, is a :class:`Finding`.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
from collections import Counter
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from typing import Any

import boto3
from botocore.exceptions import ClientError

from localaws.audit import read_log
from localaws.iam_calls import Call, Caller, NotModelled
from localaws.iam_eval import UnsupportedPolicy, evaluate
from localaws.iam_facts import MotoFacts
from localaws.iam_requests import requests_for
from localaws.identities import MOTO_ONLY_POLICY_NAME

log = logging.getLogger(__name__)

_DENIED_CODES = {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "403", "Forbidden"}


@dataclass(frozen=True)
class Principal:
    """Who signed a call, with the policy documents AWS would evaluate for it."""

    caller: Caller
    policies: tuple[tuple[str, Mapping[str, Any]], ...]  # (policy name, document)

    @property
    def name(self) -> str:
        """A short name for reports: the user, or ``role/session``."""
        return self.caller.arn.split(":", 5)[5]


@dataclass(frozen=True)
class Finding:
    """A call AWS would refuse (or that the audit cannot judge)."""

    call: str
    principal: str
    action: str
    resource: str
    why: str
    moto_error: str | None = None

    def line(self) -> str:
        """One readable line."""
        moto = ""
        if self.moto_error in _DENIED_CODES:
            moto = " (moto refused it too)"
        elif self.moto_error:
            moto = f" (moto answered {self.moto_error})"
        return f"{self.principal}: {self.call}: {self.action} on {self.resource}: {self.why}{moto}"


@dataclass
class AuditReport:
    """The outcome of :func:`audit_run`."""

    calls_by_principal: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    skipped_admin_calls: int = 0
    unknown_key_calls: int = 0
    moto_denied_aws_allows: list[str] = field(default_factory=list)  # moto stricter than AWS: not findings

    @property
    def ok(self) -> bool:
        """Whether AWS would have allowed every audited call."""
        return not self.findings

    def summary(self) -> str:
        """One paragraph, then one line per finding."""
        audited = sum(self.calls_by_principal.values())
        who = ", ".join(f"{n} {c}" for n, c in sorted(self.calls_by_principal.items())) or "none"
        head = (
            f"IAM audit: {audited} calls evaluated against their callers' policies ({who}); "
            f"{self.skipped_admin_calls} admin calls not audited; {len(self.findings)} findings."
        )
        lines = [head, *(f"  - {f.line()}" for f in self.findings)]
        if self.moto_denied_aws_allows:
            lines.append(
                f"  moto refused {len(self.moto_denied_aws_allows)} calls AWS would allow: "
                + ", ".join(self.moto_denied_aws_allows)
            )
        return "\n".join(lines)


# ------------------------------------------------------------ principals


def _document(value: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """IAM documents arrive as dicts (boto3 decodes them) or URL-encoded JSON strings."""
    if isinstance(value, Mapping):
        return value
    return json.loads(urllib.parse.unquote(value))


def _managed(iam: Any, arns: list[str]) -> list[tuple[str, Mapping[str, Any]]]:
    out = []
    for arn in arns:
        version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
        doc = iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"]
        out.append((arn.rsplit("/", 1)[-1], _document(doc)))
    return out


def _user_policies(iam: Any, user: str) -> list[tuple[str, Mapping[str, Any]]]:
    attached = [p["PolicyArn"] for p in iam.list_attached_user_policies(UserName=user)["AttachedPolicies"]]
    out = _managed(iam, attached)
    for name in iam.list_user_policies(UserName=user)["PolicyNames"]:
        out.append((name, _document(iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"])))
    for group in iam.list_groups_for_user(UserName=user)["Groups"]:
        g = group["GroupName"]
        out += _managed(
            iam, [p["PolicyArn"] for p in iam.list_attached_group_policies(GroupName=g)["AttachedPolicies"]]
        )
        for name in iam.list_group_policies(GroupName=g)["PolicyNames"]:
            out.append(
                (name, _document(iam.get_group_policy(GroupName=g, PolicyName=name)["PolicyDocument"]))
            )
    return out


def _role_policies(iam: Any, role: str) -> list[tuple[str, Mapping[str, Any]]]:
    attached = [p["PolicyArn"] for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]]
    out = _managed(iam, attached)
    for name in iam.list_role_policies(RoleName=role)["PolicyNames"]:
        out.append((name, _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])))
    return out


def _real(policies: list[tuple[str, Mapping[str, Any]]]) -> tuple[tuple[str, Mapping[str, Any]], ...]:
    return tuple((n, d) for n, d in policies if n != MOTO_ONLY_POLICY_NAME)


def _user_principals(iam: Any, keys: set[str]) -> dict[str, Principal]:
    out: dict[str, Principal] = {}
    for page in iam.get_paginator("list_users").paginate():
        for user in page["Users"]:
            owned = {
                k["AccessKeyId"] for k in iam.list_access_keys(UserName=user["UserName"])["AccessKeyMetadata"]
            }
            if not owned & keys:
                continue
            account = user["Arn"].split(":")[4]
            caller = Caller(user["Arn"], user["Arn"], user["UserId"], account, user["UserName"])
            principal = Principal(caller, _real(_user_policies(iam, user["UserName"])))
            out |= {k: principal for k in owned & keys}
    return out


def _role_principals(iam: Any, lines: list[Mapping[str, Any]]) -> dict[str, Principal]:
    out: dict[str, Principal] = {}
    for line in lines:
        role_arn, session = line["role_arn"], line["session_name"]
        account, role_name = role_arn.split(":")[4], role_arn.rsplit("/", 1)[-1]
        arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{session}"
        caller = Caller(arn, role_arn, f"{line['role_id']}:{session}", account)
        out[line["access_key_id"]] = Principal(caller, _real(_role_policies(iam, role_name)))
    return out


# ------------------------------------------------------------------ audit


def _evaluate_call(call: Call, principal: Principal, facts: MotoFacts) -> list[Finding]:
    def finding(action: str, resource: str, why: str) -> Finding:
        return Finding(call.label(), principal.name, action, resource, why, call.error)

    try:
        requests = requests_for(call, principal.caller, facts)
    except NotModelled as exc:
        return [finding(f"{call.service}:{call.operation}", "?", f"operation not modelled ({exc})")]
    documents = [doc for _, doc in principal.policies]
    out = []
    for item in requests:
        req = item.request
        try:
            decision = evaluate(documents, req)
        except UnsupportedPolicy as exc:
            out.append(finding(req.action, req.resource, f"policy not evaluable: {exc}"))
            continue
        if decision.allowed:
            continue
        if decision.effect == "Deny":
            why = f"explicit deny in {', '.join(decision.denied_by)}"
        elif decision.near_misses:
            why = "; ".join(f"{sid}: {reason}" for sid, reason in decision.near_misses)
        else:
            why = "no statement allows"
        notes = f" [{'; '.join(item.notes)}]" if item.notes else ""
        out.append(finding(req.action, req.resource, why + notes))
    return out


def _access_key(session: boto3.Session) -> str | None:
    credentials = session.get_credentials()
    return credentials.get_frozen_credentials().access_key if credentials else None


def audit_run(
    log_path: str | os.PathLike[str],
    *,
    admin_session: boto3.Session,
    endpoint_url: str | None,
    principals: Mapping[str, Principal] | None = None,
    unaudited_keys: Collection[str] = (),
) -> AuditReport:
    """Evaluate every call of an audit log as AWS would.

    Args:
        log_path: the JSON-lines audit log.
        admin_session: reads IAM and resource facts; calls signed with its key are not audited.
        endpoint_url: the local AWS endpoint.
        principals: access key -> :class:`Principal`, overriding the lookup (tests).
        unaudited_keys: more keys that stand for the emulator's own root, like the admin's
            (the local AWS's bootstrap keys, which create the admin before enforcement).

    Returns:
        The :class:`AuditReport`; calls by an access key no principal owns are findings.

    Raises:
        botocore.exceptions.ClientError: the admin session could not read IAM.
    """
    records = read_log(log_path)
    calls = [Call.from_record(r) for r in records if r.get("kind", "call") == "call"]
    admin_keys = {_access_key(admin_session), *unaudited_keys}
    region = admin_session.region_name or "us-east-1"
    iam = admin_session.client("iam", region_name=region, endpoint_url=endpoint_url)
    keys = {c.access_key_id for c in calls if c.access_key_id and c.access_key_id not in admin_keys}
    known: dict[str, Principal] = _role_principals(
        iam, [r for r in records if r.get("kind") == "credentials"]
    )
    known |= _user_principals(iam, keys - set(known) - set(principals or {}))
    known |= dict(principals or {})
    report, counts, facts = AuditReport(), Counter[str](), MotoFacts(admin_session, endpoint_url, region)
    for call in calls:
        if call.access_key_id in admin_keys:
            report.skipped_admin_calls += 1
        else:
            _audit_call(report, counts, call, known.get(call.access_key_id or ""), facts)
    report.calls_by_principal = dict(counts)
    log.info("%s", report.summary())
    return report


def _audit_call(
    report: AuditReport, counts: Counter[str], call: Call, principal: Principal | None, facts: MotoFacts
) -> None:
    """Add one non-admin call's findings (or its unknown key) to ``report``."""
    if principal is None:
        report.unknown_key_calls += 1
        report.findings.append(
            Finding(
                call.label(),
                f"key {call.access_key_id}",
                "?",
                "?",
                "no principal owns this access key",
                call.error,
            )
        )
        return
    counts[principal.name] += 1
    found = _evaluate_call(call, principal, facts)
    report.findings += found
    if not found and call.error in _DENIED_CODES:
        report.moto_denied_aws_allows.append(call.label())


def principal_for_role(
    admin_session: boto3.Session, endpoint_url: str | None, role_name: str, session_name: str
) -> Principal:
    """A :class:`Principal` for a session of ``role_name`` (for a ``principals`` override)."""
    iam = admin_session.client("iam", region_name=admin_session.region_name, endpoint_url=endpoint_url)
    try:
        role = iam.get_role(RoleName=role_name)["Role"]
    except ClientError as exc:
        raise ValueError(f"role {role_name} not found: {exc}") from exc
    account = role["Arn"].split(":")[4]
    arn = f"arn:aws:sts::{account}:assumed-role/{role_name}/{session_name}"
    caller = Caller(arn, role["Arn"], f"{role['RoleId']}:{session_name}", account)
    return Principal(caller, _real(_role_policies(iam, role_name)))
