"""Local identities: who signs what in local mode, with moto's IAM enforcement on.

Local mode is as strict as AWS: once an env is provisioned, moto refuses every
request that is not signed by an IAM user or an assumed role allowed to make it.
Three kinds of principal exist, recorded in ``.local/identities.json`` (mode 0600):

- ``admin`` (``chronos-local-admin``, inline ``*:*``): made before enforcement is
  switched on; used only by the local provisioner, the local instance's
  supervisor (the "hypervisor") and test inventories;
- per env, ``operator`` (``chronos-{env}-operator``): only the env's operator
  managed policy (``infra.spec.operator_access.operator_policy``, created by the provisioner) and
  the moto-only allowance; the control plane signs with its keys;
- per env, ``instance_host`` (``chronos-{env}-instance-host``): named with
  ``ec2.amazonaws.com`` in the instance role's trust policy and allowed only
  ``sts:AssumeRole`` on that role; :func:`assume_instance_role` gives the local
  instance the role's own credentials, session name = the instance id, so
  ``aws:userid`` is ``ROLEID:<instance-id>`` as on EC2;
- per env, ``recovery_host`` (``chronos-{env}-recovery-host``): named with
  ``lambda.amazonaws.com`` in the recovery role's trust policy and allowed only
  ``sts:AssumeRole`` on it; :func:`assume_recovery_role` gives the local recovery event
  pump (:mod:`control.local_recovery`) the role's credentials, as Lambda gives the function.

moto checks EC2 actions against ``Resource: "*"`` only and ignores conditions, so
an ARN-scoped EC2 statement denies everything there. Each principal (operator
user, instance role) therefore gets one inline policy :data:`MOTO_ONLY_POLICY_NAME`
allowing exactly the ``ec2:*`` actions its real policies name, on ``"*"``. It
exists only in local mode; the IAM call audit ignores it and evaluates the real
policies. S3 and IAM stay enforced by moto itself.

This module is the record and the names; :mod:`localaws.principals` creates the
principals and writes the record.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3

MOTO_ONLY_POLICY_NAME = "moto-only-allowance"
ADMIN_USER = "chronos-local-admin"
ADMIN_POLICY_NAME = "everything"
HOST_POLICY_NAME = "assume-the-instance-role"
RECOVERY_HOST_POLICY_NAME = "assume-the-recovery-role"
RECOVERY_SESSION = "local-recovery"


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
    recovery_host: Keys | None = None
    recovery_role_arn: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "operator": self.operator.to_dict(),
            "instance_host": self.instance_host.to_dict(),
            "instance_role_arn": self.instance_role_arn,
            "instance_role_name": self.instance_role_name,
            "instance_profile_name": self.instance_profile_name,
        }
        if self.recovery_host is not None and self.recovery_role_arn:
            out.update(recovery_host=self.recovery_host.to_dict(), recovery_role_arn=self.recovery_role_arn)
        return out


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
            recovery_host=_keys(doc["recovery_host"], f"{where}.recovery_host")
            if "recovery_host" in doc
            else None,
            recovery_role_arn=str(doc["recovery_role_arn"]) if doc.get("recovery_role_arn") else None,
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


def assume_recovery_role(
    endpoint_url: str, region: str, env_ids: EnvIdentities, *, duration_s: int = 3600
) -> Any:
    """Credentials of the env's recovery role for the local event pump (AssumeRole's ``Credentials``).

    Raises:
        IdentitiesError: the env has no recovery identity (provisioned before it existed).
        botocore.exceptions.ClientError: the local AWS refused the AssumeRole.
    """
    if env_ids.recovery_host is None or not env_ids.recovery_role_arn:
        raise IdentitiesError("no recovery identity recorded; run `invoke local.up` again")
    sts = env_ids.recovery_host.session(region).client("sts", endpoint_url=endpoint_url)
    return sts.assume_role(
        RoleArn=env_ids.recovery_role_arn, RoleSessionName=RECOVERY_SESSION, DurationSeconds=duration_s
    )["Credentials"]


# ---------------------------------------------------------------------- names


def user_name(env: str, kind: str) -> str:
    """``chronos-{env}-{kind}``: ``operator``, ``instance-host`` or ``recovery-host``."""
    from infra.spec import names as spec_names

    return spec_names.resource_name(env, kind)
