"""What ``verify`` finds: one :class:`Finding` per billing resource or lock, from its describe."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from common.state_doc import Snapshot
from common.tags import BATCH_HOST_TAG_KEYS, RUN_ID_KEY, is_batch_host, tag_value


@dataclass(frozen=True, kw_only=True)
class Finding:
    """One thing that bills (or holds the lock), and whether it is orphaned."""

    # instance | volume | spot-request | state-file | local-process;
    # sweeps: sweep-lock | batch-job | compute-environment (control/verify_sweeps.py)
    kind: str
    resource: str
    state: str
    detail: str
    orphaned: bool
    run_id: str | None = None
    etag: str | None = None  # a state file's: --fix deletes only the document judged stale

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def instance_finding(inst: dict[str, Any], active: Snapshot | None) -> Finding:
    """A billing instance: an orphan unless the healthy active run uses it."""
    ours = active is not None and inst["InstanceId"] == active.doc.get("instance_id")
    az = inst.get("Placement", {}).get("AvailabilityZone", "?")
    detail = f"{inst.get('InstanceType', '?')} in {az}"
    detail += f", run {active.run_id} (active)" if ours and active else ", no active run uses it"
    if is_batch_host(inst):
        host_of = next(
            v for k in BATCH_HOST_TAG_KEYS if (v := tag_value(inst, k)) is not None
        )  # Batch owns its hosts: the compute environment's finding says if it idles
        ours, detail = True, f"{inst.get('InstanceType', '?')} in {az}, an AWS Batch host of {host_of}"
    return Finding(
        kind="instance",
        resource=inst["InstanceId"],
        state=inst["State"]["Name"],
        detail=detail,
        orphaned=not ours,
        run_id=tag_value(inst, RUN_ID_KEY),
    )


def volume_finding(vol: dict[str, Any]) -> Finding:
    """A detached volume: always an orphan (nothing re-attaches it)."""
    return Finding(
        kind="volume",
        resource=vol["VolumeId"],
        state="available",
        detail=f"{vol.get('Size', '?')} GiB {vol.get('VolumeType', '')} detached",
        orphaned=True,
        run_id=tag_value(vol, RUN_ID_KEY),
    )


def spot_finding(req: dict[str, Any], active: Snapshot | None) -> Finding:
    """An open spot request: an orphan unless it is the healthy active run's."""
    active_instance = active.doc.get("instance_id") if active else None
    ours = bool(active_instance) and req.get("InstanceId") == active_instance
    return Finding(
        kind="spot-request",
        resource=req["SpotInstanceRequestId"],
        state=req.get("State", "?"),
        detail=f"instance {req.get('InstanceId') or '-'}",
        orphaned=not ours,
        run_id=tag_value(req, RUN_ID_KEY),
    )
