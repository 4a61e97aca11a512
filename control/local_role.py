"""The local instance's identity: its env's principals and the role credentials its fake IMDS serves.

The instance's AWS credentials come only from a fake IMDSv2 (:class:`localaws.imds.FakeIMDS`):
the instance role's, assumed for this instance id by the env's instance-host user
(:func:`localaws.identities.assume_instance_role`). With the IAM call audit on, each key
is recorded with the role it belongs to (:func:`localaws.audit.record_credentials`), so
the audit knows who signed the instance's calls.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import boto3

from common.aws import client as make_client
from control.localdir import read_json
from localaws import audit, identities
from localaws.identities import EnvIdentities, Identities, Keys

log = logging.getLogger(__name__)


def load_identities(path: Path | None) -> Identities | None:
    """The identities record at ``path`` (``None``: none given, or none recorded).

    Raises:
        localaws.identities.IdentitiesError: the file is not a valid record.
    """
    return None if path is None else identities.load(path)


def env_identities(
    recorded: Identities | None, admin: boto3.Session, *, env: str, stack_file: Path
) -> EnvIdentities | None:
    """The env's instance host and role: recorded, or (enforcement off) the stack's role.

    Returns:
        ``None`` (logged) when the instance can get no role credentials.
    """
    if recorded is not None:
        found = recorded.envs.get(env)
        if found is None:
            log.error("no local identities for env %s: the instance gets no role credentials", env)
        return found
    outputs = read_json(stack_file) or {}
    role_arn, profile_arn = outputs.get("instance_role_arn"), outputs.get("instance_profile_arn", "")
    creds = admin.get_credentials()
    if not role_arn or creds is None:
        log.error("no instance role for env %s in %s: the instance gets no role credentials", env, stack_file)
        return None
    frozen = creds.get_frozen_credentials()
    host = Keys(arn="", access_key_id=frozen.access_key, secret_access_key=frozen.secret_key)
    return EnvIdentities(
        operator=host,
        instance_host=host,
        instance_role_arn=str(role_arn),
        instance_role_name=str(role_arn).rsplit("/", 1)[1],
        instance_profile_name=str(profile_arn).rsplit("/", 1)[-1],
    )


class InstanceRole:
    """The instance role of one local instance: fresh credentials for its IMDS, recorded for the audit."""

    def __init__(
        self,
        env_ids: EnvIdentities,
        *,
        endpoint_url: str,
        region: str,
        instance_id: str,
        audit_log: str | None,
    ) -> None:
        self.env_ids = env_ids
        self.endpoint_url = endpoint_url
        self.region = region
        self.instance_id = instance_id
        self.audit_log = audit_log

    def credentials(self) -> dict[str, Any]:
        """Fresh credentials of the instance role for this instance (what the IMDS serves)."""
        creds = identities.assume_instance_role(
            self.endpoint_url, self.region, self.env_ids, self.instance_id
        )
        log.info("instance role credentials %s (until %s)", creds["AccessKeyId"], creds["Expiration"])
        if self.audit_log:
            try:
                self._record(creds, self.audit_log)
            except Exception as exc:  # noqa: BLE001 - never costs the instance its credentials (the audit fails closed)
                log.warning("could not record instance credentials in the IAM audit log: %s", exc)
        return creds

    def _record(self, creds: dict[str, Any], audit_log: str) -> None:
        """The audit log's line naming the owner (the role, its unique id) of an assumed-role key."""
        assumed = boto3.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["Token"],
            region_name=self.region,
        )
        sts = make_client(assumed, "sts", endpoint_url=self.endpoint_url)
        user_id = sts.get_caller_identity()["UserId"]
        audit.record_credentials(
            access_key_id=str(creds["AccessKeyId"]),
            role_arn=self.env_ids.instance_role_arn,
            role_id=str(user_id).split(":", 1)[0],
            session_name=self.instance_id,
            path=audit_log,
        )
