"""Local provisioner, Batch part: what ``pulumi up`` with ``batch`` creates, in the local AWS (moto).

The host role and profile, the job role and its policy, the hosts' launch template, the two
compute environments, the queue and the job definition, each from :mod:`infra.spec.batch` and
:mod:`infra.spec.batch_host`, looked up by name first and written only where they differ.

Where moto differs from AWS (and what this module does about it):

- moto needs a ``serviceRole`` (AWS uses its service-linked role when none is named): the
  service-linked role is created with ``CreateServiceLinkedRole`` and its ARN named (moto spells
  its name ``AWSServiceRoleForbatch``).
- moto needs ``securityGroupIds`` on a compute environment: the spec names them there anyway.
- moto would run a submitted job's container with docker; ``POST /moto-api/config``
  ``{"batch": {"use_docker": false}}`` turns that off, and moto then marks every job SUCCEEDED
  by itself within a second. Jobs are run by the local executor (:mod:`control.local_batch`),
  whose own record, not moto's job status, says what happened.
- moto launches instances for ``desiredvCpus``/``minvCpus`` at creation: with 0 it launches none
  (a test proves it), as AWS scales to none.
"""

from __future__ import annotations

import base64
import json
import logging
from typing import Any

import requests
from botocore.exceptions import ClientError

from infra.local_support import (
    LocalContext,
    ensure_inline_policy,
    ensure_instance_profile,
    ensure_launch_template,
    ensure_role,
    is_error,
    same,
)
from infra.spec import batch as spec_batch
from infra.spec import batch_host as spec_host
from infra.spec import bucket as spec_bucket

log = logging.getLogger(__name__)

MOTO_CONFIG_TIMEOUT_S = 10


def moto_without_docker(endpoint_url: str) -> None:
    """Tell moto never to run a job's container itself (its ``/moto-api/config``)."""
    resp = requests.post(
        f"{endpoint_url.rstrip('/')}/moto-api/config",
        json={"batch": {"use_docker": False}},
        timeout=MOTO_CONFIG_TIMEOUT_S,
    )
    resp.raise_for_status()


def ensure_batch(
    ctx: LocalContext,
    *,
    bucket: str,
    subnets: list[str],
    security_group_id: str,
    instance_type: str,
    local_principal_arn: str | None,
    notify_topic_arn: str | None = None,
) -> dict[str, str]:
    """Every Batch resource of the env; the batch outputs (:data:`infra.outputs.BATCH_OUTPUT_KEYS`)."""
    names = spec_batch.names(ctx.env)
    scope = spec_batch.BatchScope(
        env=ctx.env, region=ctx.region, account_id=ctx.account_id, instance_type=instance_type, local=True
    )
    profile_arn = _ensure_host_identity(ctx, names["host_role"])
    job_role_arn = _ensure_job_role(ctx, names["job_role"], bucket, local_principal_arn, notify_topic_arn)
    lt_id, lt_version = _ensure_host_template(ctx, names["launch_template"])
    hosts = spec_batch.HostPlacement(
        subnets=subnets,
        security_group_id=security_group_id,
        instance_profile_arn=profile_arn,
        launch_template_id=lt_id,
        launch_template_version=lt_version,
        service_role_arn=_service_linked_role(ctx),
    )
    arns = {
        kind: _ensure_environment(
            ctx, spec_batch.compute_environment(scope, hosts, spot=kind == "spot", resource_tags=ctx.tags)
        )
        for kind in ("spot", "on_demand")
    }
    _ensure_queue(ctx, spec_batch.job_queue(ctx.env, arns["spot"], arns["on_demand"], ctx.tags))
    definition = spec_batch.job_definition(
        scope,
        bucket=bucket,
        job_role_arn=job_role_arn,
        entry_script=spec_batch.entry_script(),
        resource_tags=ctx.tags,
    )
    _ensure_job_definition(ctx, definition)
    return {
        "batch_job_queue": names["queue"],
        "batch_job_definition": names["job_definition"],
        "batch_spot_compute_environment": names["spot"],
        "batch_on_demand_compute_environment": names["on_demand"],
        "batch_job_role_arn": job_role_arn,
    }


def _ensure_host_identity(ctx: LocalContext, name: str) -> str:
    ensure_role(ctx, name, spec_host.host_trust_policy(), "ECS container instances of Chronos Batch sweeps")
    attached = {
        p["PolicyArn"] for p in ctx.iam.list_attached_role_policies(RoleName=name)["AttachedPolicies"]
    }
    if spec_host.ECS_INSTANCE_POLICY_ARN not in attached:
        try:
            ctx.iam.attach_role_policy(RoleName=name, PolicyArn=spec_host.ECS_INSTANCE_POLICY_ARN)
        except ClientError as exc:  # moto loads AWS managed policies only on request
            if not is_error(exc, "NoSuchEntity"):
                raise
            log.info(
                "the local AWS has no %s; role %s goes without it", spec_host.ECS_INSTANCE_POLICY_ARN, name
            )
    return ensure_instance_profile(ctx, name)


def _ensure_job_role(
    ctx: LocalContext, name: str, bucket: str, local_principal_arn: str | None, notify_topic_arn: str | None
) -> str:
    trust = spec_host.job_trust_policy(local_principal_arn)
    role = ensure_role(ctx, name, trust, f"Chronos Batch jobs of env {ctx.env}")
    policy = spec_host.job_role_policy(
        ctx.env,
        spec_bucket.bucket_arn(bucket),
        region=ctx.region,
        account_id=ctx.account_id,
        notify_topic_arn=notify_topic_arn,
    )
    ensure_inline_policy(ctx, name, f"{name}-least-privilege", policy)
    return str(role["Arn"])


def _ensure_host_template(ctx: LocalContext, name: str) -> tuple[str, str]:
    data = spec_host.host_launch_template_data(ctx.tags)
    data = {**data, "UserData": base64.b64encode(data["UserData"].encode()).decode()}
    return ensure_launch_template(ctx, name, data)


def _service_linked_role(ctx: LocalContext) -> str:
    """The Batch service-linked role's ARN (created on first use, as AWS does)."""
    prefix = f"/aws-service-role/{spec_batch.BATCH_SERVICE}/"
    found = ctx.iam.list_roles(PathPrefix=prefix)["Roles"]
    if found:
        return str(found[0]["Arn"])
    return str(ctx.iam.create_service_linked_role(AWSServiceName=spec_batch.BATCH_SERVICE)["Role"]["Arn"])


def _ensure_environment(ctx: LocalContext, request: dict[str, Any]) -> str:
    name = request["computeEnvironmentName"]
    found = ctx.batch.describe_compute_environments(computeEnvironments=[name])["computeEnvironments"]
    if found:
        return str(found[0]["computeEnvironmentArn"])  # moto has no in-place update worth mirroring
    arn = ctx.batch.create_compute_environment(**request)["computeEnvironmentArn"]
    log.info("created compute environment %s", name)
    return str(arn)


def _ensure_queue(ctx: LocalContext, request: dict[str, Any]) -> None:
    name = request["jobQueueName"]
    if ctx.batch.describe_job_queues(jobQueues=[name])["jobQueues"]:
        return
    ctx.batch.create_job_queue(**request)
    log.info("created job queue %s", name)


def _comparable_definition(definition: dict[str, Any]) -> dict[str, Any]:
    container = definition["containerProperties"]
    return {
        "parameters": definition.get("parameters"),
        "command": container.get("command"),
        "image": container.get("image"),
        "jobRoleArn": container.get("jobRoleArn"),
        "environment": container.get("environment"),
        "retryStrategy": json.loads(json.dumps(definition.get("retryStrategy"), sort_keys=True).lower()),
    }


def _ensure_job_definition(ctx: LocalContext, request: dict[str, Any]) -> None:
    """A new revision only when the command, role, environment, parameters or retries differ."""
    name = request["jobDefinitionName"]
    active = ctx.batch.describe_job_definitions(jobDefinitionName=name, status="ACTIVE")["jobDefinitions"]
    newest = max(active, key=lambda d: d["revision"], default=None)
    if newest is not None and same(_comparable_definition(newest), _comparable_definition(request)):
        return
    revision = ctx.batch.register_job_definition(**request)["revision"]
    log.info("job definition %s at revision %s", name, revision)
