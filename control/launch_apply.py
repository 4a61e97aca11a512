"""Carry out a launch plan: the side effects, in order, undone together on failure.

:func:`apply_launch` takes the lock (the state file), uploads the resolved run spec,
the user's configs, the launch request (``launch-request.json``, what a relaunch sends
again) and (if new) the content-addressed code bundle, runs the instance from the launch
template (the next placement on a capacity refusal, see :mod:`common.placement`), records
it (attempt 1, and every refusal) in the state file and the launch record and,
in local mode, starts the supervisor. Any failure after the lock is taken terminates
the instance, deletes the run's user-configs and releases the lock again.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from botocore.exceptions import ClientError

from common import attempts
from common.aws import error_code, is_access_denied
from common.errors import AccessDeniedError, UserError
from common.placement import Placement, Refusal, refusal, strategy_for
from common.state_store import StateStore
from common.status import Market
from common.timeutil import Clock, iso, utc_now
from control.backend import Clients
from control.launch_plan import LaunchPlan
from control.launch_rules import quota_message
from control.placement import QuotaError, no_capacity

log = logging.getLogger(__name__)

StartInstance = Callable[..., None]


@dataclass(frozen=True, kw_only=True)
class LaunchResult:
    """What :func:`apply_launch` did."""

    run_id: str
    env: str
    instance_id: str
    instance_type: str
    availability_zone: str
    market: str
    price_per_hour: float | None
    uploaded: tuple[str, ...]
    skipped: tuple[str, ...]
    refused: tuple[str, ...] = ()  # each refused placement: "g5.xlarge spot us-east-1a: <code>"


@dataclass(frozen=True, kw_only=True)
class Launched:
    """The instance RunInstances started, where, when, and what was refused before it."""

    placement: Placement
    instance_id: str
    at: str
    refused: tuple[dict[str, Any], ...]

    def attempt(self) -> dict[str, Any]:
        """The state file's ``attempts[0]``: the launch's instance, not ended."""
        p = self.placement
        return attempts.new_attempt(
            attempt=1,
            instance_id=self.instance_id,
            instance_type=p.instance_type,
            market=p.market.value,
            availability_zone=p.availability_zone,
            price_per_hour=p.price_per_hour,
            price_source=p.price_source,
            launched_at=self.at,
        )


def apply_launch(
    plan: LaunchPlan, clients: Clients, *, start_instance: StartInstance | None = None, clock: Clock = utc_now
) -> LaunchResult:
    """Carry out ``plan``. On any failure after the lock is taken, the launch is rolled back:
    the instance terminated, the run's user-configs deleted and the lock released.

    The uploads (launch-request.json among them) are written before the first
    RunInstances call, so whatever instance runs, a relaunch finds the request.

    Raises:
        LockHeldError: another launch took the lock first.
        LaunchError: every placement was refused for capacity (the message lists them).
        QuotaError: a vCPU quota refused every market the spec allows.
        AccessDeniedError: a write or RunInstances was refused.
    """
    store = StateStore(clients.s3, plan.bucket, plan.env, clock=clock)
    store.acquire(dict(plan.state_doc))
    try:
        uploaded, skipped = _upload(plan, clients.s3)
        placement, instance_id, refused = try_placements(plan, clients.ec2, clock)
        launched = Launched(
            placement=placement, instance_id=instance_id, at=iso(clock()), refused=tuple(refused)
        )
        try:
            _record(plan, launched, store=store, s3=clients.s3)
            if start_instance is not None:
                start_instance(instance_id=instance_id, run=_supervisor_run(plan, placement))
        except BaseException:
            clients.ec2.terminate_instances(InstanceIds=[instance_id])
            raise
    except BaseException:
        _roll_back(store, plan, clients.s3)
        raise
    log.info("launched run %s on %s (%s)", plan.run_id, instance_id, placement.label)
    return LaunchResult(
        run_id=plan.run_id,
        env=plan.env,
        instance_id=instance_id,
        instance_type=placement.instance_type,
        availability_zone=placement.availability_zone,
        market=placement.market.value,
        price_per_hour=placement.price_per_hour,
        uploaded=(*uploaded, plan.paths.launch_record),
        skipped=tuple(skipped),
        refused=tuple(_tried(refused)),
    )


def _upload(plan: LaunchPlan, s3: Any) -> tuple[list[str], list[str]]:
    uploaded, skipped = [], []
    for up in plan.uploads:
        if up.skip_reason is not None:
            skipped.append(up.key)
            continue
        try:
            s3.put_object(Bucket=plan.bucket, Key=up.key, Body=up.body, ContentType=up.content_type)
        except ClientError as exc:
            if is_access_denied(exc):
                raise AccessDeniedError(
                    action="s3:PutObject", resource=f"s3://{plan.bucket}/{up.key}"
                ) from None
            raise
        uploaded.append(up.key)
    return uploaded, skipped


def try_placements(plan: LaunchPlan, ec2: Any, clock: Clock) -> tuple[Placement, str, list[dict[str, Any]]]:
    """Run the instance at the first placement that is not refused.

    A capacity refusal moves on to the next placement; a quota refusal ends its market
    (every placement of it counts against the same quota), so a strategy with another
    market goes on there. Returns the placement, the instance id and every refusal.
    """
    refused: list[dict[str, Any]] = []
    quota_codes: dict[Market, str] = {}
    for placement in plan.placements:
        if placement.market in quota_codes:
            continue
        try:
            resp = ec2.run_instances(**plan.run_instances_request(placement))
        except ClientError as exc:
            code = error_code(exc)
            kind = refusal(code)
            if kind is None:
                if is_access_denied(exc):
                    raise AccessDeniedError(
                        action="ec2:RunInstances", resource=f"launch template {plan.launch_template_id}"
                    ) from None
                raise
            log.info("%s refused: %s", placement.label, code)
            refused.append(_refusal_doc(placement, code, clock))
            if kind is Refusal.QUOTA:
                quota_codes[placement.market] = code
            continue
        return placement, str(resp["Instances"][0]["InstanceId"]), refused
    raise _all_refused(plan, refused, quota_codes)


def _tried(refused: list[dict[str, Any]]) -> list[str]:
    """Each refusal as a message names it: ``g5.xlarge spot us-east-1a: InsufficientInstanceCapacity``."""
    return [f"{r['instance_type']} {r['market']} {r['availability_zone']}: {r['code']}" for r in refused]


def _refusal_doc(placement: Placement, code: str, clock: Clock) -> dict[str, Any]:
    """One ``refused[]`` entry of the state file and the launch record."""
    return {
        "attempt": 1,
        "market": placement.market.value,
        "instance_type": placement.instance_type,
        "availability_zone": placement.availability_zone,
        "code": code,
        "at": iso(clock()),
    }


def _all_refused(
    plan: LaunchPlan, refused: list[dict[str, Any]], quota_codes: dict[Market, str]
) -> UserError:
    """The error of a launch whose every placement was refused: the quota to raise, or no capacity."""
    tried = _tried(refused)
    if quota_codes:
        market, code = next(iter(quota_codes.items()))
        prefix = f"every placement was refused ({'; '.join(tried)}); " if len(refused) > 1 else ""
        return QuotaError(prefix + quota_message(code, market, plan.region, None))
    return no_capacity(strategy_for(plan.market), tried)


def _record(plan: LaunchPlan, launched: Launched, *, store: StateStore, s3: Any) -> None:
    """Name the instance in the state file (attempt 1, and the refusals), and write the launch record."""
    record_attempt(store, plan.run_id, launched.attempt(), launched.refused)
    s3.put_object(
        Bucket=plan.bucket,
        Key=plan.paths.launch_record,
        Body=json.dumps(_launch_record(plan, launched), indent=2).encode(),
        ContentType="application/json",
    )


def record_attempt(
    store: StateStore, run_id: str, attempt: dict[str, Any], refused: Sequence[dict[str, Any]]
) -> None:
    """Add ``attempt`` (its instance becomes the run's) and the ``refused`` placements to the
    state file, in one conditional write."""
    store.update(run_id, lambda doc: attempts.add_refused(attempts.add_attempt(doc, attempt), list(refused)))


def _launch_record(plan: LaunchPlan, launched: Launched) -> dict[str, Any]:
    placement = launched.placement
    return {
        "run_id": plan.run_id,
        "env": plan.env,
        "instance_id": launched.instance_id,
        "instance_type": placement.instance_type,
        "availability_zone": placement.availability_zone,
        "market": placement.market.value,
        "price_per_hour": placement.price_per_hour,
        "price_source": placement.price_source,
        "launched_at": launched.at,
        "local": plan.local,
        "code_key": plan.code_key,
        "max_runtime_minutes": plan.spec.instance.max_runtime_minutes,
        # the AMI resolves afresh at every `pulumi up`: record what this run booted
        "image_id": plan.image_id,
        "image_name": plan.image_name,
        "root_volume_gb": plan.spec.instance.root_volume_gb,
        "refused": list(launched.refused),
    }


def _supervisor_run(plan: LaunchPlan, placement: Placement) -> dict[str, Any]:
    """What the local supervisor is told about the run it starts."""
    return {
        "bucket": plan.bucket,
        "env": plan.env,
        "run_id": plan.run_id,
        "region": plan.region,
        "instance_type": placement.instance_type,
        "availability_zone": placement.availability_zone,
        "market": placement.market.value,
        "max_runtime_minutes": plan.spec.instance.max_runtime_minutes,
    }


def _roll_back(store: StateStore, plan: LaunchPlan, s3: Any) -> None:
    """Undo a failed launch (the code bundle stays: it is content-addressed and reusable).

    A failed relaunch keeps the run's user-configs: they belong to its first attempt.
    """
    try:
        if not plan.resume:
            pages = s3.get_paginator("list_objects_v2").paginate(
                Bucket=plan.bucket, Prefix=plan.paths.user_configs
            )
            for page in pages:
                for obj in page.get("Contents", []):
                    s3.delete_object(Bucket=plan.bucket, Key=obj["Key"])
        store.release(plan.run_id)
    except Exception as exc:  # noqa: BLE001 - keep the original error; verify reports a leftover lock
        log.warning("could not roll back the launch of run %s: %s", plan.run_id, exc)
