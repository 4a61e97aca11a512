"""Composition of the components into the stack, and the outputs it exports."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pulumi_aws as aws

from common import tags as common_tags
from infra import lambda_package
from infra.batch import Batch, BatchArgs
from infra.budget import Budget, BudgetArgs
from infra.compute import Compute, ComputeArgs
from infra.config import StackConfig
from infra.iam import (
    DebugInstanceIdentity,
    InstanceIdentity,
    InstanceIdentityArgs,
    OperatorAccess,
    OperatorAccessArgs,
)
from infra.network import Network, NetworkArgs
from infra.notify import Notifications, NotificationsArgs
from infra.recovery import Recovery, RecoveryArgs
from infra.spec import batch as spec_batch
from infra.spec import names as spec_names
from infra.spec import network as spec_network
from infra.storage import Storage, StorageArgs


def _availability_zones(limit: int | None) -> list[str]:
    zones = aws.get_availability_zones(
        state="available",
        filters=[{"name": "opt-in-status", "values": ["opt-in-not-required"]}],
    )
    return spec_network.select_availability_zones(zones.names, limit)


def build_stack(cfg: StackConfig, *, installer: lambda_package.Installer | None = None) -> dict[str, Any]:
    """Declare every resource of the stack; return the outputs to export.

    The keys are :data:`infra.outputs.OUTPUT_KEYS` and
    :data:`infra.outputs.RECOVERY_OUTPUT_KEYS`, plus
    :data:`infra.outputs.DEBUG_OUTPUT_KEYS` when ``cfg.debug_profile`` is on and
    :data:`infra.outputs.BATCH_OUTPUT_KEYS` when ``cfg.batch`` is.

    Args:
        cfg: the validated stack config.
        installer: installs the recovery function's third-party packages
            (default :func:`infra.lambda_package.pip_installer`, which needs the package index).
    """
    account_id = aws.get_caller_identity().account_id
    region = aws.get_region().region
    resource_tags = common_tags.tags(cfg.env, cfg.cost_center)
    network = _network(cfg, region, resource_tags)
    bucket_name = spec_names.bucket_name(cfg.env, account_id, region)
    storage = Storage("storage", StorageArgs(env=cfg.env, bucket_name=bucket_name, tags=resource_tags))
    notify = _notifications(cfg, resource_tags)
    identity_args = InstanceIdentityArgs(
        env=cfg.env,
        bucket_arn=storage.bucket_arn,
        region=region,
        account_id=account_id,
        tags=resource_tags,
        notify_topic_arn=notify.topic_arn if notify else None,
    )
    identity = InstanceIdentity("instance", identity_args)
    debug = DebugInstanceIdentity("instance-debug", identity_args) if cfg.debug_profile else None
    compute = _compute(cfg, identity, network, resource_tags)
    operator = OperatorAccess(
        "operator",
        OperatorAccessArgs(
            env=cfg.env,
            bucket_arn=storage.bucket_arn,
            launch_template_arn=compute.launch_template_arn,
            role_arn=identity.role_arn,
            vpc_arn=network.vpc_arn,
            region=region,
            account_id=account_id,
            ami_parameter=cfg.ami_ssm_parameter,
            tags=resource_tags,
            debug_role_arn=debug.role_arn if debug else None,
            batch=cfg.batch,
        ),
    )
    recovery = Recovery(
        "recovery",
        RecoveryArgs(
            env=cfg.env,
            region=region,
            account_id=account_id,
            bucket_name=storage.bucket_name,
            bucket_arn=storage.bucket_arn,
            launch_template_arn=compute.launch_template_arn,
            vpc_arn=network.vpc_arn,
            instance_role_arn=identity.role_arn,
            package=lambda_package.build(installer=installer),
            tags=resource_tags,
            notify_topic_arn=notify.topic_arn if notify else None,
            debug_role_arn=debug.role_arn if debug else None,
        ),
    )
    _budget(cfg, resource_tags)
    batch = _batch(cfg, region, account_id, storage, network, resource_tags, notify)
    debug_outputs = (
        {"debug_instance_profile_arn": debug.instance_profile_arn, "debug_role_arn": debug.role_arn}
        if debug
        else {}
    )
    return {
        **debug_outputs,
        **(_batch_outputs(batch) if batch else {}),
        "bucket": storage.bucket_name,
        "region": region,
        "env": cfg.env,
        "account_id": account_id,
        "subnets_by_az": network.subnet_ids_by_az,
        "security_group_id": network.security_group_id,
        "launch_template_id": compute.launch_template_id,
        "instance_profile_arn": identity.instance_profile_arn,
        "instance_role_arn": identity.role_arn,
        "operator_policy_arn": operator.policy_arn,
        "recovery_function_name": recovery.function_name,
        "recovery_role_arn": recovery.role_arn,
        "notify_topic_arn": notify.topic_arn if notify else None,
    }


def _notifications(cfg: StackConfig, resource_tags: Mapping[str, str]) -> Notifications | None:
    """The optional notification topic (only with ``notify_email``)."""
    if cfg.notify_email is None:
        return None
    return Notifications("notify", NotificationsArgs(env=cfg.env, email=cfg.notify_email, tags=resource_tags))


def _network(cfg: StackConfig, region: str, resource_tags: Mapping[str, str]) -> Network:
    args = NetworkArgs(
        env=cfg.env,
        region=region,
        availability_zones=_availability_zones(cfg.max_azs),
        tags=resource_tags,
        public_ip_on_launch=cfg.batch,
    )
    return Network("network", args)


def _compute(
    cfg: StackConfig, identity: InstanceIdentity, network: Network, resource_tags: Mapping[str, str]
) -> Compute:
    args = ComputeArgs(
        env=cfg.env,
        instance_type=cfg.instance_type,
        instance_profile_arn=identity.instance_profile_arn,
        security_group_id=network.security_group_id,
        tags=resource_tags,
        ami_id=cfg.ami_id,
        ami_ssm_parameter=cfg.ami_ssm_parameter,
    )
    return Compute("compute", args)


def _budget(cfg: StackConfig, resource_tags: Mapping[str, str]) -> None:
    """The optional monthly budget (only with ``budget_email``)."""
    if cfg.budget_email is None:
        return
    Budget(
        "budget",
        BudgetArgs(
            env=cfg.env,
            monthly_usd=cfg.budget_monthly_usd,
            email=cfg.budget_email,
            tags=resource_tags,
        ),
    )


def _batch(
    cfg: StackConfig,
    region: str,
    account_id: str,
    storage: Storage,
    network: Network,
    resource_tags: Mapping[str, str],
    notify: Notifications | None,
) -> Batch | None:
    """The optional sweep engine (only with ``batch``)."""
    if not cfg.batch:
        return None
    scope = spec_batch.BatchScope(
        env=cfg.env,
        region=region,
        account_id=account_id,
        instance_type=cfg.instance_type,
        max_vcpus=cfg.batch_max_vcpus,
        image=cfg.batch_image,
    )
    args = BatchArgs(
        scope=scope,
        bucket_name=storage.bucket_name,
        bucket_arn=storage.bucket_arn,
        subnet_ids=[subnet.id for subnet in network.subnets],
        security_group_id=network.security_group_id,
        tags=resource_tags,
        notify_topic_arn=notify.topic_arn if notify else None,
        wheelhouse_prefix=spec_batch.WHEELHOUSE_PREFIX,
    )
    return Batch("batch", args)


def _batch_outputs(batch: Batch) -> dict[str, Any]:
    return {
        "batch_job_queue": batch.job_queue_name,
        "batch_job_definition": batch.job_definition_name,
        "batch_spot_compute_environment": batch.spot.name,
        "batch_on_demand_compute_environment": batch.on_demand.name,
        "batch_job_role_arn": batch.job_role.arn,
    }
