"""Local principals: the admin, and per env the operator and the instance host, made idempotently.

:func:`ensure_admin` makes (or finds) the admin with IAM enforcement off;
:func:`ensure_identities` adds an env's instance-host user, runs the provisioner with
it in the instance role's trust policy, then makes the operator user and the
moto-only allowances (:func:`moto_only_allowance`). What they make is recorded in
``.local/identities.json`` (:mod:`localaws.identities`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from common.aws import error_code
from localaws.identities import (
    ADMIN_POLICY_NAME,
    ADMIN_USER,
    HOST_POLICY_NAME,
    MOTO_ONLY_POLICY_NAME,
    RECOVERY_HOST_POLICY_NAME,
    EnvIdentities,
    Identities,
    IdentitiesError,
    Keys,
    load,
    user_name,
    write,
)

if TYPE_CHECKING:
    from localaws.moto import LocalAWS

log = logging.getLogger(__name__)

_INVALID_KEY_CODES = {"InvalidClientTokenId", "InvalidAccessKeyId", "SignatureDoesNotMatch", "AuthFailure"}


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
    host_name = user_name(env, "instance-host")
    host_arn = _ensure_user(iam, host_name)
    host = _ensure_key(iam, host_name, host_arn, stored.instance_host if stored else None)
    outputs = provision(host_arn)
    role_arn = str(outputs["instance_role_arn"])
    role_name = role_arn.rsplit("/", 1)[1]
    job_role_arn = outputs.get("batch_job_role_arn")  # the stack's sweep engine (config batch)
    _allow_host_and_role(iam, host_name, role_arn, role_name, str(job_role_arn) if job_role_arn else None)
    operator = _ensure_operator(iam, user_name(env, "operator"), stored.operator if stored else None)
    recovery_role_arn = outputs.get("recovery_role_arn")
    recovery_host = None
    if recovery_role_arn:
        recovery_host = _ensure_recovery_host(
            iam,
            user_name(env, "recovery-host"),
            str(recovery_role_arn),
            stored.recovery_host if stored else None,
        )
    env_ids = EnvIdentities(
        operator=operator,
        instance_host=host,
        instance_role_arn=role_arn,
        instance_role_name=role_name,
        instance_profile_name=str(outputs["instance_profile_arn"]).rsplit("/", 1)[1],
        recovery_host=recovery_host,
        recovery_role_arn=str(recovery_role_arn) if recovery_role_arn else None,
    )
    record = Identities(account=record.account, admin=record.admin, envs={**record.envs, env: env_ids})
    write(path, record)
    return record, outputs


def _allow_host_and_role(
    iam: Any, host_name: str, role_arn: str, role_name: str, job_role_arn: str | None = None
) -> None:
    """The host may assume only the instance role (and, with the sweep engine, the Batch job role,
    as the local job executor does); each role gets its moto-only allowance."""
    roles = [role_arn, *([job_role_arn] if job_role_arn else [])]
    _ensure_user_policy(
        iam,
        host_name,
        HOST_POLICY_NAME,
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": "sts:AssumeRole",
                    "Resource": roles[0] if len(roles) == 1 else roles,
                }
            ],
        },
    )
    for arn in roles:
        name = role_name if arn == role_arn else arn.rsplit("/", 1)[1]
        _ensure_role_policy(iam, name, MOTO_ONLY_POLICY_NAME, moto_only_allowance(_role_documents(iam, name)))


def _ensure_recovery_host(iam: Any, name: str, role_arn: str, stored: Keys | None) -> Keys:
    """The user the local event pump assumes the recovery role with (as Lambda does on AWS).

    The role's trust policy names it in the Lambda statement (``infra.spec.recovery.lambda_trust_policy``,
    the one form moto accepts); the user may only assume that role.
    """
    from infra.spec.recovery import lambda_trust_policy

    arn = _ensure_user(iam, name)
    keys = _ensure_key(iam, name, arn, stored)
    role_name = role_arn.rsplit("/", 1)[1]
    trust = lambda_trust_policy(arn)
    if _document(iam.get_role(RoleName=role_name)["Role"]["AssumeRolePolicyDocument"]) != trust:
        iam.update_assume_role_policy(RoleName=role_name, PolicyDocument=json.dumps(trust))
    _ensure_user_policy(
        iam,
        name,
        RECOVERY_HOST_POLICY_NAME,
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:AssumeRole", "Resource": role_arn}],
        },
    )
    _ensure_role_policy(
        iam, role_name, MOTO_ONLY_POLICY_NAME, moto_only_allowance(_role_documents(iam, role_name))
    )
    return keys


def _ensure_operator(iam: Any, operator_name: str, stored: Keys | None) -> Keys:
    """The operator user with only the env's operator policy (and its moto-only allowance)."""
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
    return _ensure_key(iam, operator_name, operator_arn, stored)
