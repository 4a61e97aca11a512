"""Local identities: who signs what in local mode, with moto's IAM enforcement on.

Local mode is as strict as AWS: once an env is provisioned, moto refuses every
request that is not signed by an IAM user or an assumed role allowed to make it.
Three kinds of principal exist, recorded in ``.local/identities.json`` (mode 0600):

- ``admin`` (``chronos-local-admin``, inline ``*:*``): made before enforcement is
  switched on; used only by the local provisioner, the local instance's
  supervisor (the "hypervisor") and test inventories;
- per env, ``operator`` (``chronos-{env}-operator``): only the env's operator
  managed policy (``infra.spec.operator_policy``, created by the provisioner) and
  the moto-only allowance; the control plane signs with its keys;
- per env, ``instance_host`` (``chronos-{env}-instance-host``): named with
  ``ec2.amazonaws.com`` in the instance role's trust policy and allowed only
  ``sts:AssumeRole`` on that role; :func:`assume_instance_role` gives the local
  instance the role's own credentials, session name = the instance id, so
  ``aws:userid`` is ``ROLEID:<instance-id>`` as on EC2.

moto checks EC2 actions against ``Resource: "*"`` only and ignores conditions, so
an ARN-scoped EC2 statement denies everything there. Each principal (operator
user, instance role) therefore gets one inline policy :data:`MOTO_ONLY_POLICY_NAME`
allowing exactly the ``ec2:*`` actions its real policies name, on ``"*"``. It
exists only in local mode; the IAM call audit ignores it and evaluates the real
policies. S3 and IAM stay enforced by moto itself.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import boto3
from botocore.exceptions import ClientError

from common.aws import error_code

if TYPE_CHECKING:
    from localaws.moto import LocalAWS

log = logging.getLogger(__name__)

MOTO_ONLY_POLICY_NAME = "moto-only-allowance"
ADMIN_USER = "chronos-local-admin"
ADMIN_POLICY_NAME = "everything"
HOST_POLICY_NAME = "assume-the-instance-role"
_INVALID_KEY_CODES = {"InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthFailure"}


class IdentitiesError(Exception):
    """The identities record is unreadable, or the local AWS cannot be administered with it."""


@dataclass(frozen=True)
class Keys:
    """An IAM user's ARN and access key."""

    arn: str
    access_key_id: str
    secret_access_key: str

    def session(self, region: str) -> boto3.Session:
        """A boto3 session signing with these keys."""
        return boto3.Session(
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=self.secret_access_key,
            region_name=region,
        )

    def to_dict(self) -> dict[str, str]:
        return {
            "arn": self.arn,
            "access_key_id": self.access_key_id,
            "secret_access_key": self.secret_access_key,
        }


@dataclass(frozen=True)
class EnvIdentities:
    """The principals of one env."""

    operator: Keys
    instance_host: Keys
    instance_role_arn: str
    instance_role_name: str
    instance_profile_name: str

    def to_dict(self) -> dict[str, Any]:
        return {
            "operator": self.operator.to_dict(),
            "instance_host": self.instance_host.to_dict(),
            "instance_role_arn": self.instance_role_arn,
            "instance_role_name": self.instance_role_name,
            "instance_profile_name": self.instance_profile_name,
        }


@dataclass(frozen=True)
class Identities:
    """Everything in ``.local/identities.json``."""

    account: str
    admin: Keys
    envs: Mapping[str, EnvIdentities] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "admin": self.admin.to_dict(),
            "envs": {name: ids.to_dict() for name, ids in sorted(self.envs.items())},
        }


# ----------------------------------------------------------------- the record


def _keys(doc: Any, where: str) -> Keys:
    if not isinstance(doc, Mapping):
        raise IdentitiesError(f"{where} is not an object")
    try:
        return Keys(
            arn=str(doc["arn"]),
            access_key_id=str(doc["access_key_id"]),
            secret_access_key=str(doc["secret_access_key"]),
        )
    except KeyError as exc:
        raise IdentitiesError(f"{where} lacks {exc.args[0]!r}") from None


def _env_ids(doc: Any, where: str) -> EnvIdentities:
    if not isinstance(doc, Mapping):
        raise IdentitiesError(f"{where} is not an object")
    try:
        return EnvIdentities(
            operator=_keys(doc["operator"], f"{where}.operator"),
            instance_host=_keys(doc["instance_host"], f"{where}.instance_host"),
            instance_role_arn=str(doc["instance_role_arn"]),
            instance_role_name=str(doc["instance_role_name"]),
            instance_profile_name=str(doc["instance_profile_name"]),
        )
    except KeyError as exc:
        raise IdentitiesError(f"{where} lacks {exc.args[0]!r}") from None


def from_dict(doc: Mapping[str, Any]) -> Identities:
    """Parse the record.

    Raises:
        IdentitiesError: a field is missing or of the wrong kind.
    """
    try:
        envs = doc.get("envs") or {}
        if not isinstance(envs, Mapping):
            raise IdentitiesError("envs is not an object")
        return Identities(
            account=str(doc["account"]),
            admin=_keys(doc["admin"], "admin"),
            envs={str(k): _env_ids(v, f"envs.{k}") for k, v in envs.items()},
        )
    except KeyError as exc:
        raise IdentitiesError(f"the record lacks {exc.args[0]!r}") from None


def load(path: Path) -> Identities | None:
    """The identities recorded in ``path``; ``None`` when there is no record (enforcement off).

    Raises:
        IdentitiesError: the file exists but is not a valid record.
    """
    try:
        text = path.read_text("utf-8")
    except FileNotFoundError:
        return None
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise IdentitiesError(f"{path} is not JSON: {exc}") from None
    if not isinstance(doc, Mapping):
        raise IdentitiesError(f"{path} does not hold a JSON object")
    try:
        return from_dict(doc)
    except IdentitiesError as exc:
        raise IdentitiesError(f"{path}: {exc}") from None


def write(path: Path, identities: Identities) -> None:
    """Write the record atomically, readable by its owner only (it holds secret keys)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(identities.to_dict(), indent=2, sort_keys=True) + "\n")
    os.chmod(tmp, 0o600)
    tmp.replace(path)


# ------------------------------------------------------------ the instance role


def _iso_z(value: Any) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return str(value)


def assume_instance_role(
    endpoint_url: str, region: str, env_ids: EnvIdentities, instance_id: str, *, duration_s: int = 3600
) -> dict[str, Any]:
    """Credentials of the instance role for the local instance ``instance_id``.

    The instance-host user assumes the role with the instance id as session name,
    so the caller's ``aws:userid`` is ``ROLEID:<instance-id>`` as for an EC2
    instance profile.

    Args:
        endpoint_url: the local AWS.
        region: its region.
        env_ids: the env's identities (instance host and role).
        instance_id: the moto instance id (the session name).
        duration_s: lifetime of the credentials.

    Returns:
        The document EC2's IMDS serves at
        ``/latest/meta-data/iam/security-credentials/<role-name>``: ``Code``,
        ``LastUpdated``, ``Type``, ``AccessKeyId``, ``SecretAccessKey``, ``Token``,
        ``Expiration`` (ISO 8601, Z).

    Raises:
        botocore.exceptions.ClientError: the local AWS refused the AssumeRole.
    """
    sts = env_ids.instance_host.session(region).client("sts", endpoint_url=endpoint_url)
    creds = sts.assume_role(
        RoleArn=env_ids.instance_role_arn, RoleSessionName=instance_id, DurationSeconds=duration_s
    )["Credentials"]
    return {
        "Code": "Success",
        "LastUpdated": _iso_z(datetime.now(UTC)),
        "Type": "AWS-HMAC",
        "AccessKeyId": creds["AccessKeyId"],
        "SecretAccessKey": creds["SecretAccessKey"],
        "Token": creds["SessionToken"],
        "Expiration": _iso_z(creds["Expiration"]),
    }


# --------------------------------------------------------------- provisioning


def user_name(env: str, kind: str) -> str:
    """``chronos-{env}-{kind}``: ``operator`` or ``instance-host``."""
    from infra.spec import names as spec_names

    return spec_names.resource_name(env, kind)


def moto_only_allowance(documents: Iterable[Mapping[str, Any]]) -> dict[str, Any] | None:
    """The moto-only allowance for a principal with these policy documents.

    moto authorizes S3 actions against their object or bucket ARN, and every other
    action (EC2, IAM, SSM...) against ``"*"`` only (``moto/core/authorization.py``:
    ``_authenticate_and_authorize_normal_action(resource="*")``), so a statement scoped
    to an ARN denies there. This allowance is exactly the non-S3 actions the documents'
    Allow statements scope to something other than ``"*"``, on ``"*"``; ``None`` when
    there are none. The IAM audit ignores it and proves the real statements.
    """
    actions: set[str] = set()
    for doc in documents:
        statements = doc.get("Statement", [])
        for statement in [statements] if isinstance(statements, Mapping) else statements:
            if statement.get("Effect") != "Allow":
                continue
            if statement.get("Resource") == "*":
                continue  # moto already evaluates it as AWS does (conditions aside)
            named = statement.get("Action", [])
            for action in [named] if isinstance(named, str) else named:
                if not action.lower().startswith("s3:"):
                    actions.add(action)
    if not actions:
        return None
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Sid": "MotoChecksNonS3ActionsOnStarOnly",
                "Effect": "Allow",
                "Action": sorted(actions),
                "Resource": "*",
            }
        ],
    }


def _document(value: str | Mapping[str, Any]) -> Mapping[str, Any]:
    """IAM answers documents as dicts (boto3 URL-decodes them) or as JSON strings."""
    return json.loads(value) if isinstance(value, str) else value


def _missing(exc: ClientError) -> bool:
    return error_code(exc) in {"NoSuchEntity", "NoSuchEntityException"}


def _ensure_user(iam: Any, name: str) -> str:
    try:
        return str(iam.get_user(UserName=name)["User"]["Arn"])
    except ClientError as exc:
        if not _missing(exc):
            raise
    arn = str(iam.create_user(UserName=name)["User"]["Arn"])
    log.info("created IAM user %s", name)
    return arn


def _ensure_key(iam: Any, name: str, arn: str, stored: Keys | None) -> Keys:
    """The stored key if the user still has it, else a new one (dropping keys whose secret is lost)."""
    have = [k["AccessKeyId"] for k in iam.list_access_keys(UserName=name)["AccessKeyMetadata"]]
    if stored is not None and stored.arn == arn and stored.access_key_id in have:
        return stored
    for key_id in have:  # IAM allows two keys per user; nobody knows these secrets any more
        iam.delete_access_key(UserName=name, AccessKeyId=key_id)
    key = iam.create_access_key(UserName=name)["AccessKey"]
    log.info("created an access key for IAM user %s", name)
    return Keys(arn=arn, access_key_id=key["AccessKeyId"], secret_access_key=key["SecretAccessKey"])


def _ensure_user_policy(iam: Any, user: str, name: str, document: Mapping[str, Any]) -> None:
    try:
        current = _document(iam.get_user_policy(UserName=user, PolicyName=name)["PolicyDocument"])
    except ClientError as exc:
        if not _missing(exc):
            raise
        current = None
    if current != document:
        iam.put_user_policy(UserName=user, PolicyName=name, PolicyDocument=json.dumps(document))
        log.info("set inline policy %s of IAM user %s", name, user)


def _ensure_role_policy(iam: Any, role: str, name: str, document: Mapping[str, Any] | None) -> None:
    try:
        current = _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
    except ClientError as exc:
        if not _missing(exc):
            raise
        current = None
    if document is None:
        if current is not None:
            iam.delete_role_policy(RoleName=role, PolicyName=name)
        return
    if current != document:
        iam.put_role_policy(RoleName=role, PolicyName=name, PolicyDocument=json.dumps(document))
        log.info("set inline policy %s of role %s", name, role)


def _managed_document(iam: Any, arn: str) -> Mapping[str, Any]:
    version = iam.get_policy(PolicyArn=arn)["Policy"]["DefaultVersionId"]
    return _document(iam.get_policy_version(PolicyArn=arn, VersionId=version)["PolicyVersion"]["Document"])


def _role_documents(iam: Any, role: str) -> list[Mapping[str, Any]]:
    """The role's real policies: inline (but the moto-only one) and attached."""
    docs = [
        _document(iam.get_role_policy(RoleName=role, PolicyName=name)["PolicyDocument"])
        for name in iam.list_role_policies(RoleName=role)["PolicyNames"]
        if name != MOTO_ONLY_POLICY_NAME
    ]
    docs += [
        _managed_document(iam, p["PolicyArn"])
        for p in iam.list_attached_role_policies(RoleName=role)["AttachedPolicies"]
    ]
    return docs


def _find_policy_arn(iam: Any, name: str) -> str:
    for page in iam.get_paginator("list_policies").paginate(Scope="Local"):
        for policy in page["Policies"]:
            if policy["PolicyName"] == name:
                return str(policy["Arn"])
    raise IdentitiesError(f"the operator policy {name} does not exist; provision the env first")


def _admin_works(aws: LocalAWS, keys: Keys) -> bool:
    """Whether ``keys`` are the admin's live key on this server (enforcement on or off)."""
    iam = aws.client("iam", session=keys.session(aws.region))
    try:
        have = iam.list_access_keys(UserName=ADMIN_USER)["AccessKeyMetadata"]
    except ClientError as exc:
        if _missing(exc) or error_code(exc) in _INVALID_KEY_CODES:
            return False
        raise
    return keys.access_key_id in {k["AccessKeyId"] for k in have}


def ensure_admin(aws: LocalAWS, path: Path) -> Identities:
    """The admin of this server: the recorded one if its key still works, else a new one.

    Creating the admin needs enforcement off: it is switched off first (moto's
    admin API itself is unauthenticated). The record is rewritten without envs
    when the admin is new (a fresh server knows none of them). ``aws`` signs with
    the admin's keys afterwards.

    Returns:
        The record with the (possibly new) admin.

    Raises:
        IdentitiesError: the stored record is unreadable.
    """
    stored = load(path)
    if stored is not None and _admin_works(aws, stored.admin):
        aws.use_admin(stored.admin)
        return stored
    aws.relax_iam()
    aws.use_admin(None)
    iam = aws.client("iam")
    arn = _ensure_user(iam, ADMIN_USER)
    everything = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}
    _ensure_user_policy(iam, ADMIN_USER, ADMIN_POLICY_NAME, everything)
    admin = _ensure_key(iam, ADMIN_USER, arn, None)
    account = arn.split(":")[4]
    record = Identities(account=account, admin=admin, envs={})
    write(path, record)
    aws.use_admin(admin)
    return record


def ensure_identities(
    aws: LocalAWS, path: Path, *, env: str, provision: Callable[[str], Mapping[str, Any]]
) -> tuple[Identities, Mapping[str, Any]]:
    """Admin, the env's provisioned stack and its principals; the record written. Idempotent.

    Order (each step needs the previous one): the admin (enforcement off if it
    must be created), the instance-host user (a trust policy may only name a
    principal that exists), ``provision(instance_host_arn)`` with the admin's
    keys on ``aws``, then the operator user (the env's operator managed policy,
    found by name) and the moto-only allowances. Keys that still work are
    kept, so a second run changes nothing. Enforcement is left as it was (the
    caller switches it on with ``aws.enforce_iam()``).

    Args:
        aws: the local AWS.
        path: ``.local/identities.json``.
        env: the env.
        provision: runs the local provisioner with the given principal in the
            instance role's trust policy; returns the stack outputs.

    Returns:
        The record and the stack outputs.

    Raises:
        IdentitiesError: unreadable record, or the operator policy is missing.
        botocore.exceptions.ClientError: the local AWS refused a call.
    """
    record = ensure_admin(aws, path)
    stored = record.envs.get(env)
    iam = aws.client("iam")
    host_name, operator_name = user_name(env, "instance-host"), user_name(env, "operator")
    host_arn = _ensure_user(iam, host_name)
    host = _ensure_key(iam, host_name, host_arn, stored.instance_host if stored else None)
    outputs = provision(host_arn)
    role_arn = str(outputs["instance_role_arn"])
    role_name = role_arn.rsplit("/", 1)[1]
    _ensure_user_policy(
        iam,
        host_name,
        HOST_POLICY_NAME,
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}],
        },
    )
    role_allowance = moto_only_allowance(_role_documents(iam, role_name))
    _ensure_role_policy(iam, role_name, MOTO_ONLY_POLICY_NAME, role_allowance)

    operator_arn = _ensure_user(iam, operator_name)
    policy_arn = _find_policy_arn(iam, operator_name)
    listed = iam.list_attached_user_policies(UserName=operator_name)["AttachedPolicies"]
    attached = {p["PolicyArn"] for p in listed}
    if policy_arn not in attached:
        iam.attach_user_policy(UserName=operator_name, PolicyArn=policy_arn)
        log.info("attached %s to IAM user %s", policy_arn, operator_name)
    allowance = moto_only_allowance([_managed_document(iam, policy_arn)])
    if allowance is not None:
        _ensure_user_policy(iam, operator_name, MOTO_ONLY_POLICY_NAME, allowance)
    operator = _ensure_key(iam, operator_name, operator_arn, stored.operator if stored else None)

    profile_name = str(outputs["instance_profile_arn"]).rsplit("/", 1)[1]
    env_ids = EnvIdentities(
        operator=operator,
        instance_host=host,
        instance_role_arn=role_arn,
        instance_role_name=role_name,
        instance_profile_name=profile_name,
    )
    record = Identities(account=record.account, admin=record.admin, envs={**record.envs, env: env_ids})
    write(path, record)
    return record, outputs


__all__ = [
    "ADMIN_USER",
    "MOTO_ONLY_POLICY_NAME",
    "EnvIdentities",
    "Identities",
    "IdentitiesError",
    "Keys",
    "assume_instance_role",
    "ensure_admin",
    "ensure_identities",
    "from_dict",
    "load",
    "moto_only_allowance",
    "user_name",
    "write",
]
