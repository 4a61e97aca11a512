"""The recovery handler's cloud in local mode: :class:`recovery.aws.AwsCloud` on moto.

The same boto3 cloud the Lambda uses, pointed at the local AWS, signing as the env's
recovery role (the Lambda role's policy, assumed by the local recovery host user of
:mod:`localaws.identities`; the credentials it was started with when IAM enforcement is
off), and with a starter for each relaunched
instance: after RunInstances, the local supervisor boots it
(:func:`control.local_instance.spawn`, as :meth:`control.local_backend.LocalBackend.start_instance`
does after a launch).
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from typing import Any

import boto3

from common.ec2 import describe_instance
from common.tags import RUN_ID_KEY
from control.local_backend import LOCAL_REGION
from control.local_instance import InstanceFacts, spawn
from control.localdir import LocalDir, read_json

log = logging.getLogger(__name__)

DEFAULT_MAX_RUNTIME_MINUTES = 60
ROLE_SESSION_S = 3600
REFRESH_MARGIN_S = 300


class LocalStarter:
    """Boots a relaunched moto instance: its supervisor, as after ``invoke launch``."""

    def __init__(
        self, local_dir: LocalDir, *, env: str, endpoint_url: str, region: str, session: boto3.Session
    ) -> None:
        self.local_dir, self.env, self.endpoint_url, self.region = local_dir, env, endpoint_url, region
        self.session = session
        self.cloud: Any = None  # set once the cloud exists (it lends its EC2 client and state store)

    def __call__(self, instance_id: str, request: dict[str, Any]) -> None:
        inst = describe_instance(self.cloud.ec2, instance_id) or {}
        tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
        snap = self.cloud.store(self.env).read()
        minutes = (
            snap.doc.get("max_runtime_minutes") if snap is not None else None
        ) or DEFAULT_MAX_RUNTIME_MINUTES
        facts = InstanceFacts(
            bucket=self.cloud.bucket,
            env=self.env,
            run_id=tags.get(RUN_ID_KEY) or (snap.run_id if snap is not None else ""),
            region=self.region,
            instance_type=str(inst.get("InstanceType") or request.get("InstanceType") or ""),
            availability_zone=str((inst.get("Placement") or {}).get("AvailabilityZone") or ""),
            market="spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand",
            max_runtime_minutes=int(minutes),
        )
        spawn(
            local_dir=self.local_dir,
            instance_id=instance_id,
            endpoint_url=self.endpoint_url,
            env_vars=_credentials_env(self.session, self.endpoint_url, self.region),
            python=sys.executable,
            facts=facts,
        )
        log.info("relaunched instance %s boots (run %s)", instance_id, facts.run_id)


def _credentials_env(session: boto3.Session, endpoint_url: str, region: str) -> dict[str, str]:
    """What the supervisor signs with when no identities are recorded (IAM enforcement off)."""
    creds = session.get_credentials()
    out = {"AWS_ENDPOINT_URL": endpoint_url, "AWS_DEFAULT_REGION": region, "AWS_REGION": region}
    if creds is not None:
        frozen = creds.get_frozen_credentials()
        out.update(AWS_ACCESS_KEY_ID=frozen.access_key, AWS_SECRET_ACCESS_KEY=frozen.secret_key)
        if frozen.token:
            out["AWS_SESSION_TOKEN"] = frozen.token
    return out


def recovery_session(
    local_dir: LocalDir, *, env: str, endpoint_url: str, region: str
) -> tuple[boto3.Session, float]:
    """The session the handler signs with, and when it expires (monotonic; ``inf``: never).

    The env's recovery role, assumed by its local recovery host as Lambda assumes it on AWS
    (its key recorded for the IAM call audit); without local identities (IAM enforcement
    off) the credentials this process was started with.

    Raises:
        localaws.identities.IdentitiesError: identities are recorded, but no recovery identity.
    """
    from localaws import audit, identities

    record = identities.load(local_dir.identities_file)
    env_ids = record.envs.get(env) if record is not None else None
    if env_ids is None:
        return boto3.Session(region_name=region), float("inf")
    creds = identities.assume_recovery_role(endpoint_url, region, env_ids, duration_s=ROLE_SESSION_S)
    session = boto3.Session(
        aws_access_key_id=creds["AccessKeyId"],
        aws_secret_access_key=creds["SecretAccessKey"],
        aws_session_token=creds["SessionToken"],
        region_name=region,
    )
    user_id = session.client("sts", endpoint_url=endpoint_url).get_caller_identity()["UserId"]
    audit.record_credentials(
        access_key_id=str(creds["AccessKeyId"]),
        role_arn=str(env_ids.recovery_role_arn),
        role_id=str(user_id).split(":", 1)[0],
        session_name=identities.RECOVERY_SESSION,
    )
    log.info("recovery role credentials %s (until %s)", creds["AccessKeyId"], creds["Expiration"])
    return session, time.monotonic() + ROLE_SESSION_S - REFRESH_MARGIN_S


def handler_for(local_dir: LocalDir, *, env: str, endpoint_url: str) -> tuple[Any, Callable[[Any], Any]]:
    """The env's local cloud and the recovery handler bound to it (fresh role credentials as they age).

    Raises:
        SystemExit: the env is not provisioned locally (no stack outputs).
    """
    from recovery.aws import AwsCloud
    from recovery.handler import handle

    outputs = read_json(local_dir.stack_file(env)) or {}
    if not outputs.get("bucket"):
        raise SystemExit(f"env {env!r} is not provisioned locally; run `invoke local.up --env={env}`")
    region = (read_json(local_dir.aws_file) or {}).get("region") or LOCAL_REGION

    def build() -> tuple[Any, float]:
        session, expires = recovery_session(local_dir, env=env, endpoint_url=endpoint_url, region=region)
        starter = LocalStarter(local_dir, env=env, endpoint_url=endpoint_url, region=region, session=session)
        cloud = AwsCloud(
            bucket=str(outputs["bucket"]),
            envs=[env],
            session=session,
            endpoint_url=endpoint_url,
            on_launch=starter,
        )
        starter.cloud = cloud
        return cloud, expires

    current = list(build())

    def handle_event(event: Any) -> Any:
        if time.monotonic() >= current[1]:
            current[:] = build()
        return handle(event, current[0])

    class _Cloud:  # the pump lists instances through the cloud of the moment
        def project_instances(self) -> Any:
            return current[0].project_instances()

    return _Cloud(), handle_event
