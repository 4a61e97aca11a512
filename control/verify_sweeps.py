"""What ``verify`` finds of sweeps, and how ``--fix`` clears it.

- a member's lock (``{env}/sweeps/{sweep_id}/runs/{run_id}/system-state.json``) whose job is
  gone (DescribeJobs no longer knows it), finished (SUCCEEDED/FAILED: its trainer would have
  released the lock), or was never recorded :data:`NO_JOB_GRACE_S` after the submit: stale;
  ``--fix`` deletes it (only the document judged, by its ETag) and writes the member's
  ``cleanup_status.json``;
- a job still queued or running in the env's queue whose member lock is gone, or whose sweep
  was killed: it will start (and bill) for nothing; ``--fix`` cancels or terminates it;
- a compute environment whose desired vCPUs stay above 0 while no job is active in the queue.
  Batch refuses a lower ``desiredvCpus`` ("Manually scaling down compute environment is not
  supported. Disconnecting job queues from compute environment will cause it to scale-down to
  minvCpus": https://docs.aws.amazon.com/batch/latest/userguide/error-desired-vcpus-update.html),
  so ``--fix`` disables it and enables it again (a DISABLED managed environment scales in to
  minvCpus, 0 here, once its instances are idle) and reports it ``requested``: only a later
  DescribeComputeEnvironments at 0 confirms it.

Instances Batch launched (tag ``aws:batch:compute-environment`` or ``AWSBatchServiceTag``) are
never orphans themselves: Batch owns them, the compute environment finding is what to act on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common import layout
from common.cleanup_status import ActionStatus, CleanupLog
from common.errors import CorruptStateError
from common.state_store import StateStore
from common.timeutil import iso, parse_iso
from control.billing import billing_verification
from control.s3io import get_json, put_json
from control.sweep_jobs import active_jobs, describe_jobs, stop_job
from control.sweep_status import read_manifest
from control.verify_findings import Finding

log = logging.getLogger(__name__)

NO_JOB_GRACE_S = 600.0  # a submit takes seconds between the lock and SubmitJob's answer
KILL_REASON = "orphaned job stopped by invoke verify --fix"


@dataclass(frozen=True, kw_only=True)
class BatchScope:
    """The env's Batch resources verify looks at (from the stack outputs) and its client."""

    batch: Any
    job_queue: str
    compute_environments: tuple[str, ...]


def member_locks(s3: Any, bucket: str, env: str) -> list[str]:
    """Every sweep member's state key in ``env``."""
    keys = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=layout.sweeps_root(env)):
        keys += [o["Key"] for o in page.get("Contents", []) if layout.member_of_state_key(o["Key"])]
    return keys


def sweep_findings(
    s3: Any, bucket: str, env: str, scope: BatchScope | None, *, now: datetime
) -> list[Finding]:
    """Sweep locks, orphaned jobs and idle-billing compute environments of ``env``."""
    findings: list[Finding] = []
    locks: dict[str, tuple[StateStore, Any]] = {}
    for key in member_locks(s3, bucket, env):
        _, run_id = layout.member_of_state_key(key) or ("", "")
        store = StateStore(s3, bucket, env, run_id=run_id)
        try:
            snap = store.read()
        except CorruptStateError as exc:
            etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
            findings.append(_lock(store, run_id, "corrupt", exc.reason, orphaned=True, etag=etag))
            continue
        if snap is not None:
            locks[run_id] = (store, snap)
    if scope is None:
        return findings + [
            _lock(store, rid, snap.doc["status"], "a sweep member's lock; this stack has no Batch resources",
                  orphaned=True, etag=snap.etag)
            for rid, (store, snap) in locks.items()
        ]  # fmt: skip
    ids = [snap.doc.get("batch", {}).get("job_id") for _, snap in locks.values()]
    jobs = describe_jobs(scope.batch, [i for i in ids if i])
    for run_id, (store, snap) in locks.items():
        findings.append(_judge_lock(store, run_id, snap, jobs, now))
    active = active_jobs(scope.batch, scope.job_queue)
    findings += _orphan_jobs(s3, bucket, env, active, set(locks))
    findings += _compute_environments(scope, busy=bool(active))
    return findings


def _judge_lock(store: StateStore, run_id: str, snap: Any, jobs: Mapping[str, Any], now: datetime) -> Finding:
    doc = snap.doc
    job_id = (doc.get("batch") or {}).get("job_id")
    age = (now - parse_iso(doc["started_at"])).total_seconds()
    if job_id is None:
        stale = age > NO_JOB_GRACE_S
        detail = f"no Batch job recorded {age:.0f} s after the submit" if stale else "being submitted"
        return _lock(
            store, run_id, "stale" if stale else doc["status"], detail, orphaned=stale, etag=snap.etag
        )
    job = jobs.get(job_id)
    if job is None:
        return _lock(
            store, run_id, "stale", f"its job {job_id} is unknown to Batch", orphaned=True, etag=snap.etag
        )
    if job.status.is_final():
        detail = f"its job {job_id} is {job.status.value} but the lock is held ({doc['status']})"
        return _lock(store, run_id, "stale", detail, orphaned=True, etag=snap.etag)
    detail = f"run {run_id} is {doc['status']}, job {job_id} {job.status.value}"
    return _lock(store, run_id, doc["status"], detail, orphaned=False, etag=snap.etag)


def _lock(
    store: StateStore, run_id: str, state: str, detail: str, *, orphaned: bool, etag: str | None
) -> Finding:
    return Finding(
        kind="sweep-lock", resource=store.location, state=state, detail=detail, orphaned=orphaned,
        run_id=run_id, etag=etag,
    )  # fmt: skip


def _orphan_jobs(
    s3: Any, bucket: str, env: str, active: list[dict[str, Any]], locked: set[str]
) -> list[Finding]:
    out = []
    killed: dict[str, bool] = {}
    for job in active:
        name = str(job.get("jobName", ""))
        run_id = name[len(env) + 1 :] if name.startswith(f"{env}-") else ""
        sweep = _sweep_of(run_id)
        if sweep is None:
            continue  # not one of this env's sweep jobs
        if sweep not in killed:
            manifest = read_manifest(s3, bucket, env, sweep) or {}
            killed[sweep] = bool(manifest.get("killed_at"))
        why = (
            "its sweep was killed"
            if killed[sweep]
            else "its member lock is gone"
            if run_id not in locked
            else None
        )
        out.append(
            Finding(
                kind="batch-job",
                resource=job["jobId"],
                state=job["status"],
                detail=f"job of {run_id}: {why or 'active'}",
                orphaned=why is not None,
                run_id=run_id,
            )  # fmt: skip
        )
    return out


def _sweep_of(run_id: str) -> str | None:
    try:
        return layout.sweep_of(run_id)
    except layout.LayoutError:
        return None


def _compute_environments(scope: BatchScope, *, busy: bool) -> list[Finding]:
    if not scope.compute_environments:
        return []
    described = scope.batch.describe_compute_environments(
        computeEnvironments=list(scope.compute_environments)
    )
    out = []
    for ce in described.get("computeEnvironments", []):
        desired = int((ce.get("computeResources") or {}).get("desiredvCpus") or 0)
        orphaned = desired > 0 and not busy
        detail = f"desiredvCpus {desired}" + (", no job active in the queue" if orphaned else "")
        out.append(
            Finding(
                kind="compute-environment",
                resource=ce["computeEnvironmentName"],
                state=str(ce.get("state", "?")),
                detail=detail,
                orphaned=orphaned,
            )  # fmt: skip
        )
    return out


def fix_sweep_findings(
    orphans: list[Finding], *, s3: Any, ec2: Any, bucket: str, env: str, scope: BatchScope | None, clock: Any
) -> list[str]:
    """Clear every sweep orphan; return what was done, as the reads after it saw."""
    done: list[str] = []
    for f in orphans:
        if f.kind == "batch-job" and scope is not None:
            stop = stop_job(scope.batch, f.resource, reason=KILL_REASON)
            seen = stop.observed.value if stop.observed else "unknown to Batch"
            verb = "stopped" if stop.stopped else f"requested {stop.requested} of"
            done.append(f"{verb} job {f.resource} ({f.run_id}); DescribeJobs shows {seen}")
        elif f.kind == "sweep-lock" and f.run_id:
            store = StateStore(s3, bucket, env, run_id=f.run_id, clock=clock)
            store.force_clear(etag=f.etag)
            gone = _gone_or_replaced(store, f.etag)
            done.append(
                f"removed stale lock {f.resource}"
                if gone
                else f"asked S3 to delete {f.resource}, but a read still finds it"
            )
            _cleanup_status(s3, ec2, bucket, env, f.run_id, store.location, gone, clock)
        elif f.kind == "compute-environment" and scope is not None:
            for state in ("DISABLED", "ENABLED"):
                scope.batch.update_compute_environment(computeEnvironment=f.resource, state=state)
            done.append(
                f"requested scale-in of compute environment {f.resource} (disabled and enabled again: Batch "
                "scales a disabled environment in to minvCpus 0 once idle); confirm with invoke verify"
            )
    return done


def _gone_or_replaced(store: StateStore, etag: str | None) -> bool:
    try:
        after = store.read()
    except CorruptStateError:
        head = store.s3.head_object(Bucket=store.bucket, Key=store.key)
        return etag is not None and head["ETag"] != etag
    return after is None or (etag is not None and after.etag != etag)


def _cleanup_status(
    s3: Any, ec2: Any, bucket: str, env: str, run_id: str, location: str, gone: bool, clock: Any
) -> None:
    paths = layout.RunPaths(env=env, run_id=run_id)
    if get_json(s3, bucket, paths.cleanup_status) is not None:
        return
    record = CleanupLog(run_id=run_id, instance_id=None, written_by="control", clock=clock)
    status = ActionStatus.SUCCEEDED if gone else ActionStatus.REQUESTED
    record.record(
        location, "delete", status, observed="GetObject: gone" if gone else "GetObject: still there"
    )
    checked = billing_verification(ec2, env, checked_at=iso(clock()))
    put_json(s3, bucket, paths.cleanup_status, record.document(verification=checked, state_file_removed=gone))
