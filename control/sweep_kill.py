"""``invoke kill --sweep ID`` (every member) and ``invoke kill --run-id MEMBER`` (one).

Per member, as ``invoke kill`` does for a single run, with the Batch job in place of the instance:

1. ``killed`` through the member's own state file (a conditional write). A trainer that runs
   sees it, checkpoints, finalizes with ``completion_status=killed`` and releases its lock.
2. Its job: a job still queued (SUBMITTED/PENDING/RUNNABLE) runs nothing: CancelJob at once. A
   job on a host (STARTING/RUNNING) gets the grace period to end by itself (its state file
   gone), then TerminateJob (CancelJob would answer 200 and leave it running: API Reference,
   CancelJob). A finished job gets nothing.
3. A member whose state file is still there afterwards (a job cancelled before it started, or
   one terminated before its cleanup) has its lock released by the control plane, which then
   writes its ``cleanup_status.json`` (``written_by: control``) with the job's stop recorded as
   requested vs observed: ``succeeded`` once a DescribeJobs shows it FAILED/SUCCEEDED,
   ``requested`` while it still shows the job active.

A sweep kill also marks the manifest (``killed_at``, ``kill_reason``), so ``verify`` knows that
any job of it still queued or running is an orphan. Idempotent: killing a finished sweep
changes nothing but the manifest's mark.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from botocore.exceptions import ClientError

from common import layout
from common.aws import http_status
from common.cleanup_status import ActionStatus, CleanupLog
from common.errors import ConfigError
from common.state_store import NotHeldError, StateStore
from common.status import RunStatus
from common.timeutil import Clock, iso, utc_now
from control.backend import Backend, check_env
from control.billing import billing_verification
from control.s3io import get_json, put_json
from control.sweep_jobs import StopRecord, describe_jobs, stop_job
from control.sweep_status import read_manifest

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 120.0
POLL_S = 2.0
REASON = "killed by operator (invoke kill)"


@dataclass(kw_only=True)
class MemberKill:
    """What the kill found and did for one member."""

    run_id: str
    status_before: str | None
    job: StopRecord | None = None
    state_cleared_by_control: bool = False
    cleanup_written_by: str | None = None
    actions: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "run_id": self.run_id,
            "status_before": self.status_before,
            "job": self.job.to_dict() if self.job else None,
            "state_cleared_by_control": self.state_cleared_by_control,
            "cleanup_written_by": self.cleanup_written_by,
            "actions": list(self.actions),
        }


@dataclass(kw_only=True)
class SweepKillResult:
    env: str
    sweep_id: str
    members: list[MemberKill] = field(default_factory=list)
    manifest_marked: bool = False

    @property
    def unconfirmed(self) -> list[str]:
        """Members whose job a describe did not yet see stopped (confirm with ``invoke verify``)."""
        return [m.run_id for m in self.members if m.job is not None and not m.job.stopped]

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "sweep_id": self.sweep_id,
            "manifest_marked": self.manifest_marked,
            "unconfirmed": self.unconfirmed,
            "members": [m.to_dict() for m in self.members],
        }


def kill_sweep(
    backend: Backend,
    *,
    env: str,
    sweep_id: str | None = None,
    run_id: str | None = None,
    grace_s: float = DEFAULT_GRACE_S,
    clock: Clock = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
) -> SweepKillResult:
    """Kill every member of ``sweep_id``, or the one member ``run_id``.

    Raises:
        ConfigError: neither or both given, a run id that is no sweep member, an unknown sweep.
    """
    check_env(env)
    sweep_id, only = _target(sweep_id, run_id)
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    s3, bucket = backend.clients().s3, outputs.bucket
    key = layout.sweep_manifest_key(env, sweep_id)
    with backend.errors("kill", f"s3://{bucket}/{key}"):
        manifest = read_manifest(s3, bucket, env, sweep_id)
        if manifest is None:
            raise ConfigError(
                f"no sweep {sweep_id} in env {env!r} (no s3://{bucket}/{key}); see `invoke runs --env={env}`"
            )
        entries = [e for e in manifest["members"] if only is None or e["run_id"] == only]
        if not entries:
            raise ConfigError(f"run {only} is not a member of sweep {sweep_id} in env {env!r}")
        entries = [e for e in entries if e["submission"] == "submitted"]  # the others never ran
        killer = SweepKiller(
            s3, backend.client("batch"), bucket, env,
            ec2=backend.clients().ec2, clock=clock, sleep=sleep, monotonic=monotonic,
        )  # fmt: skip
        result = SweepKillResult(env=env, sweep_id=sweep_id)
        if only is None:
            result.manifest_marked = killer.mark_manifest(sweep_id, REASON)
        result.members = killer.kill(entries, grace_s=grace_s, reason=REASON)
        return result


def _target(sweep_id: str | None, run_id: str | None) -> tuple[str, str | None]:
    if bool(sweep_id) == bool(run_id):
        raise ConfigError(
            "give one of --sweep SWEEP_ID (every member) or --run-id MEMBER_RUN_ID (one member)"
        )
    try:
        if sweep_id:
            layout.parse_sweep_id(sweep_id)
            return sweep_id, None
        owner = layout.sweep_of(str(run_id))
    except layout.LayoutError as exc:
        raise ConfigError(f"kill: {exc}") from None
    if owner is None:
        raise ConfigError(
            f"kill: {run_id} is a single run, not a sweep member; stop it with `invoke kill` alone"
        )
    return owner, run_id


class SweepKiller:
    """The procedure on injected clients, clock and sleep."""

    def __init__(
        self,
        s3: Any,
        batch: Any,
        bucket: str,
        env: str,
        *,
        ec2: Any = None,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.s3, self.batch, self.bucket, self.env, self.ec2 = s3, batch, bucket, env, ec2
        self.clock, self.sleep, self.monotonic = clock, sleep, monotonic

    def store(self, run_id: str) -> StateStore:
        return StateStore(self.s3, self.bucket, self.env, run_id=run_id, clock=self.clock)

    def mark_manifest(self, sweep_id: str, reason: str, *, tries: int = 5) -> bool:
        """``killed_at`` and ``kill_reason`` into the manifest (IfMatch its ETag; re-read on a race)."""
        key = layout.sweep_manifest_key(self.env, sweep_id)
        for _ in range(tries):
            got = self.s3.get_object(Bucket=self.bucket, Key=key)
            doc = json.loads(got["Body"].read())
            if doc.get("killed_at"):
                return True
            doc["killed_at"], doc["kill_reason"] = iso(self.clock()), reason
            try:
                body = json.dumps(doc, indent=2, sort_keys=True).encode()
                self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, IfMatch=got["ETag"])
                return True
            except ClientError as exc:
                if http_status(exc) not in (409, 412):
                    raise
        return False

    def kill(self, entries: list[dict[str, Any]], *, grace_s: float, reason: str) -> list[MemberKill]:
        jobs = describe_jobs(self.batch, [e["job_id"] for e in entries if e.get("job_id")])
        kills = {e["run_id"]: self._request(e["run_id"], reason) for e in entries}
        on_host: list[str] = []
        for entry in entries:
            kill, job = kills[entry["run_id"]], jobs.get(entry.get("job_id") or "")
            if job is not None and job.status.on_host():
                on_host.append(entry["run_id"])
            elif entry.get("job_id"):
                kill.job = stop_job(self.batch, entry["job_id"], reason=reason, before=job)
                kill.actions.append(_job_action(kill.job))
        self._wait_ended(on_host, grace_s)
        for entry in entries:
            kill = kills[entry["run_id"]]
            if entry["run_id"] in on_host:
                kill.job = stop_job(self.batch, entry["job_id"], reason=reason)
                kill.actions.append(_job_action(kill.job))
            self._finish(kill, entry)
        return [kills[e["run_id"]] for e in entries]

    def _request(self, run_id: str, reason: str) -> MemberKill:
        store = self.store(run_id)
        snap = store.read()
        kill = MemberKill(run_id=run_id, status_before=snap.doc["status"] if snap else None)
        if snap is None:
            kill.actions.append("no state file: the run had ended")
            return kill
        try:
            after = store.request_kill(run_id, reason=reason)
            kill.actions.append(f"state {kill.status_before} -> {after.doc['status']}")
        except NotHeldError:
            kill.actions.append("the run ended before the kill was written")
        return kill

    def _wait_ended(self, run_ids: list[str], grace_s: float) -> None:
        """Wait until each running member's state file is gone, or the grace period ends."""
        deadline = self.monotonic() + grace_s
        left = list(run_ids)
        while left:
            left = [r for r in left if self.store(r).read() is not None]
            if not left or self.monotonic() >= deadline:
                return
            self.sleep(POLL_S)

    def _finish(self, kill: MemberKill, entry: dict[str, Any]) -> None:
        """Release a lock nobody will release and write the member's cleanup_status.json."""
        store = self.store(kill.run_id)
        snap = store.read()
        paths = layout.RunPaths(env=self.env, run_id=kill.run_id)
        existing = get_json(self.s3, self.bucket, paths.cleanup_status)
        if (
            snap is not None
            and RunStatus(snap.doc["status"]) is RunStatus.KILLED
            and store.release(kill.run_id)
        ):
            kill.state_cleared_by_control = store.read() is None
            kill.actions.append(f"removed {store.location}")
        if existing is not None:
            kill.cleanup_written_by = existing.get("written_by", "instance")
            return
        if kill.status_before is None and kill.job is None:
            return  # it had ended and left its records (or never ran): nothing to write
        self._write_cleanup(kill, paths, store)
        kill.cleanup_written_by = "control"
        kill.actions.append(f"wrote {paths.cleanup_status}")

    def _write_cleanup(self, kill: MemberKill, paths: layout.RunPaths, store: StateStore) -> None:
        log_ = CleanupLog(run_id=kill.run_id, instance_id=None, written_by="control", clock=self.clock)
        if kill.job is not None:
            stop = kill.job
            seen = f"DescribeJobs: {stop.observed.value if stop.observed else 'unknown to Batch'}"
            if stop.requested == "none":
                log_.record(
                    f"batch job {stop.job_id}", "stop", ActionStatus.SKIPPED, "already ended", observed=seen
                )
            else:
                status = ActionStatus.SUCCEEDED if stop.stopped else ActionStatus.REQUESTED
                if stop.error:
                    status = ActionStatus.FAILED
                log_.record(f"batch job {stop.job_id}", stop.requested, status, stop.error, observed=seen)
        gone = store.read() is None
        log_.record(
            store.location,
            "delete",
            ActionStatus.SUCCEEDED if kill.state_cleared_by_control else ActionStatus.SKIPPED,
            None if kill.state_cleared_by_control else "already removed" if gone else "still held",
            observed="GetObject: gone" if gone else "GetObject: still there",
        )
        checked = billing_verification(self.ec2, self.env, checked_at=iso(self.clock()))
        put_json(
            self.s3,
            self.bucket,
            paths.cleanup_status,
            log_.document(verification=checked, state_file_removed=gone),
        )


def _job_action(stop: StopRecord) -> str:
    seen = stop.observed.value if stop.observed else "unknown to Batch"
    if stop.requested == "none":
        return f"job {stop.job_id}: already {seen}"
    return f"job {stop.job_id}: {stop.requested} requested ({stop.before}), DescribeJobs then showed {seen}"
