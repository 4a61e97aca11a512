"""The doctor's capacity checks: G-family vCPU quotas of both markets, instance-type offerings."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import botocore.exceptions

from common.aws import is_access_denied
from common.placement import strategy_for
from common.runspec import RunSpec
from common.status import Market
from control.doctor.checks import Check, aws_error_text, fail, not_permitted, ok, unknown, warn
from control.launch_rules import Quota, quota_for
from infra.outputs import StackOutputs

log = logging.getLogger(__name__)


def vcpus_of(ec2: Any, instance_type: str) -> int | None:
    """Default vCPUs of ``instance_type`` (``None`` when it cannot be read)."""
    try:
        types = ec2.describe_instance_types(InstanceTypes=[instance_type]).get("InstanceTypes", [])
    except botocore.exceptions.ClientError as exc:
        log.info("no vCPU count for %s: %s", instance_type, exc)
        return None
    return int(types[0]["VCpuInfo"]["DefaultVCpus"]) if types else None


def quota_check(
    value: float | None,
    needed: int | None,
    *,
    quota: Quota,
    instance_type: str,
    region: str,
    required: bool,
    reason: str = "",
) -> Check:
    """A G-family quota against the vCPUs ``instance_type`` needs. Pure."""
    code, title = quota.code, quota.name
    name = f"quota {title}"
    raise_it = (
        f"request an increase in the Service Quotas console (EC2, '{title}', {region}) or "
        f"`aws service-quotas request-service-quota-increase --service-code ec2 --quota-code {code} "
        f"--desired-value {needed or 4} --region {region}`"
    )
    if value is None or needed is None:
        return unknown(name, reason or "could not be read")
    if value >= needed:
        return ok(name, f"{value:g} vCPUs >= {needed} for one {instance_type} (running instances count too)")
    detail = f"{value:g} vCPUs < {needed} that one {instance_type} needs"
    if required:
        return fail(name, detail, raise_it)
    return warn(name, detail + " (needed only for the other market)", raise_it)


def read_quota(quotas: Any, code: str, *, local: bool) -> tuple[float | None, str]:
    """A quota's value, or ``None`` and why not."""
    try:
        return float(quotas.get_service_quota(ServiceCode="ec2", QuotaCode=code)["Quota"]["Value"]), ""
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return None, "not permitted (servicequotas:GetServiceQuota)"
        where = "the local AWS (moto) does not implement EC2 quotas" if local else "Service Quotas answered"
        return None, f"{where}: {aws_error_text(exc)}"
    except botocore.exceptions.BotoCoreError as exc:
        return None, f"Service Quotas unreachable: {exc}"


def check_quotas(ec2: Any, quotas: Any, spec: RunSpec, region: str, *, local: bool) -> list[Check]:
    """Both G-family quotas; the spec's market decides which one must hold."""
    first = spec.instance.types[0]
    needed = vcpus_of(ec2, first)
    out = []
    for market in (Market.SPOT, Market.ON_DEMAND):
        quota = quota_for(market)
        value, reason = read_quota(quotas, quota.code, local=local)
        if needed is None:
            reason = reason or f"vCPUs of {first} unknown (ec2:DescribeInstanceTypes)"
        out.append(
            quota_check(
                value,
                needed,
                quota=quota,
                instance_type=first,
                region=region,
                required=strategy_for(spec.instance.market).markets == (market,),
                reason=reason,
            )
        )
    return out


def offering_check(offered: Mapping[str, Iterable[str]], types: Sequence[str], azs: Sequence[str]) -> Check:
    """Instance types offered in the stack's AZs: fail when none of them is anywhere. Pure."""
    name = "offerings"
    where = {t: sorted(set(offered.get(t, ()))) for t in types}
    missing = [t for t in types if not where[t]]
    detail = "; ".join(f"{t}: {', '.join(z) or 'none'}" for t, z in where.items())
    if len(missing) == len(types):
        return fail(
            name,
            f"none of {list(types)} is offered in {list(azs)}",
            "pick other instance types (--instance-type) or AZs the stack has subnets in",
        )
    if missing:
        return warn(name, detail, f"{', '.join(missing)} will be skipped; drop them from the spec")
    return ok(name, detail)


def check_offerings(ec2: Any, spec: RunSpec, outputs: StackOutputs) -> Check:
    azs = list(spec.instance.availability_zones) or sorted(outputs.subnets_by_az)
    try:
        resp = ec2.describe_instance_type_offerings(
            LocationType="availability-zone",
            Filters=[
                {"Name": "instance-type", "Values": list(spec.instance.types)},
                {"Name": "location", "Values": azs},
            ],
        )
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return not_permitted("offerings", "ec2:DescribeInstanceTypeOfferings")
        raise
    offered: dict[str, list[str]] = {}
    for o in resp.get("InstanceTypeOfferings", []):
        offered.setdefault(o["InstanceType"], []).append(o["Location"])
    return offering_check(offered, spec.instance.types, azs)
