"""Prove nothing bills: an inventory, by tags, of everything that costs money while idle.

What is listed for an env (tags ``Project=Chronos-Training``, ``Environment={env}``):

- instances in ``pending | running | stopping | stopped`` (stopped instances still
  bill their volumes);
- volumes in state ``available`` (detached volumes bill by the GB-month);
- spot instance requests that are ``open`` or ``active``;
- the state file: a lock whose instance is gone, that never recorded an instance,
  whose heartbeat is old (:data:`common.staleness.STALENESS`, the policy ``monitor``
  uses), or that is corrupt is stale;
- local mode only: supervisor processes whose instance is gone;
- sweeps (:mod:`control.verify_sweeps`): member locks whose Batch job is gone, finished or never
  recorded, jobs still queued or running for a killed sweep or without their lock, and each Batch
  compute environment (an orphan while its desired vCPUs stay above 0 with no job active).
  Instances AWS Batch launched are listed, never orphans: Batch owns them.

Everything that belongs to a healthy active run is listed but not orphaned. An
orphan makes ``verify`` exit 1; ``--fix --yes`` removes orphans and checks again.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common import cleanup_status as cs
from common import layout
from common.attempts import recovering_in_grace
from common.cleanup_status import ActionStatus, CleanupLog
from common.errors import ConfigError, CorruptStateError
from common.exitcodes import ExitCode
from common.staleness import STALENESS, Stale, StalenessPolicy
from common.state_doc import Snapshot
from common.state_store import StateStore
from common.tags import RUN_ID_KEY, tag_value
from common.timeutil import Clock, iso, parse_iso, utc_now
from control.backend import Backend, Clients, check_env
from control.billing import available_volumes, billing_instances, billing_verification, open_spot_requests
from control.localdir import LocalDir, pid_alive
from control.s3io import get_json, put_json
from control.verify_findings import Finding, instance_finding, spot_finding, volume_finding
from control.verify_sweeps import BatchScope, fix_sweep_findings, sweep_findings

SWEEP_KINDS = ("sweep-lock", "batch-job", "compute-environment")

log = logging.getLogger(__name__)

LOCAL_SHUTDOWN_S = 20.0


@dataclass(frozen=True, kw_only=True)
class Inventory:
    """Everything found for one env at one time."""

    env: str
    bucket: str
    checked_at: str
    findings: tuple[Finding, ...]
    active_run_id: str | None = None

    @property
    def orphans(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if f.orphaned)

    @property
    def clean(self) -> bool:
        return not self.orphans

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "bucket": self.bucket,
            "checked_at": self.checked_at,
            "active_run_id": self.active_run_id,
            "clean": self.clean,
            "findings": [f.to_dict() for f in self.findings],
        }


@dataclass(frozen=True, kw_only=True)
class VerifyResult:
    """The inventory, and with ``--fix`` what was done and the inventory after."""

    before: Inventory
    fixed: list[str] = field(default_factory=list)
    after: Inventory | None = None

    @property
    def final(self) -> Inventory:
        return self.after or self.before

    @property
    def exit_code(self) -> ExitCode:
        return ExitCode.OK if self.final.clean else ExitCode.FAILED


class Inspector:
    """Builds inventories and fixes orphans on injected clients."""

    def __init__(  # noqa: PLR0913 (each injected dependency a test drives, keyword-only)
        self,
        clients: Clients,
        bucket: str,
        env: str,
        *,
        clock: Clock = utc_now,
        local_dir: LocalDir | None = None,
        policy: StalenessPolicy = STALENESS,
        sleep: Callable[[float], None] = time.sleep,
        terminate_wait_s: float = cs.TERMINATE_WAIT_S,
        batch: BatchScope | None = None,
    ) -> None:
        self.clients, self.bucket, self.env, self.clock = clients, bucket, env, clock
        self.batch = batch  # the env's Batch queue and compute environments (sweeps), if the stack has them
        self.local_dir, self.policy, self.sleep = local_dir, policy, sleep
        self.terminate_wait_s = terminate_wait_s  # how long a describe may take to confirm a terminate
        self.store = StateStore(clients.s3, bucket, env, clock=clock)

    # -- looking ---------------------------------------------------------------
    def inventory(self) -> Inventory:
        """Everything that bills in this env now, each marked orphaned or not."""
        ec2 = self.clients.ec2
        instances = billing_instances(ec2, self.env)
        live_ids = {i["InstanceId"] for i in instances}
        state_finding, active = self._state(live_ids)
        findings = [instance_finding(inst, active) for inst in instances]
        findings += [volume_finding(vol) for vol in available_volumes(ec2, self.env)]
        findings += [spot_finding(req, active) for req in open_spot_requests(ec2, self.env)]
        if state_finding is not None:
            findings.append(state_finding)
        findings += sweep_findings(self.clients.s3, self.bucket, self.env, self.batch, now=self.clock())
        findings += self._local_processes(live_ids)
        return Inventory(
            env=self.env,
            bucket=self.bucket,
            checked_at=iso(self.clock()),
            findings=tuple(findings),
            active_run_id=active.run_id if active else None,
        )

    def _state(self, live_ids: set[str]) -> tuple[Finding | None, Snapshot | None]:
        """The state-file finding, and the snapshot when it is a healthy active run."""
        try:
            snap = self.store.read()
        except CorruptStateError as exc:
            etag = self.store.s3.head_object(Bucket=self.store.bucket, Key=self.store.key)["ETag"]
            finding = Finding(
                kind="state-file",
                resource=self.store.location,
                state="corrupt",
                etag=etag,
                detail=exc.reason,
                orphaned=True,
            )
            return finding, None
        if snap is None:
            return None, None
        doc, now = snap.doc, self.clock()
        iid = doc.get("instance_id")
        hb_age = (now - parse_iso(doc["heartbeat_at"])).total_seconds()
        age = (now - parse_iso(doc["started_at"])).total_seconds()
        stale = self.policy.judge(  # the instances were listed before the lock was read: a gone
            instance_id=iid,  # instance with the lock still held is past the gone grace
            gone_for_s=math.inf if iid and iid not in live_ids else None,
            since_launch_s=age,
            heartbeat_age_s=hb_age,
        )
        if recovering_in_grace(doc, now):  # the recovery handler relaunches it: healthy within the grace
            stale = None
        problem = {
            None: None,
            Stale.INSTANCE_GONE: f"instance {iid} is gone but the lock is held ({doc['status']})",
            Stale.NO_INSTANCE: f"no instance recorded {age:.0f} s after launch",
            Stale.NO_HEARTBEAT: f"no heartbeat for {hb_age:.0f} s",
        }[stale]
        detail = problem or f"run {snap.run_id} is {doc['status']} on {iid or '(starting)'}"
        finding = Finding(
            kind="state-file",
            resource=self.store.location,
            state="stale" if problem else doc["status"],
            detail=detail,
            orphaned=problem is not None,
            run_id=snap.run_id,
            etag=snap.etag,
        )
        if problem and iid in live_ids:  # a stuck trainer: its instance is an orphan too
            return finding, None
        return finding, (None if problem else snap)

    def _local_processes(self, live_ids: set[str]) -> list[Finding]:
        if self.local_dir is None:
            return []

        def alive(rec: dict[str, Any]) -> list[int]:
            return [p for p in (rec.get("supervisor_pid"), rec.get("trainer_pid")) if pid_alive(p)]

        gone = [r for r in self.local_dir.instance_records() if r.get("instance_id") not in live_ids]
        waited = 0.0  # a local instance needs a few seconds to shut down after its terminate
        while any(alive(r) for r in gone) and waited < LOCAL_SHUTDOWN_S:
            self.sleep(0.25)
            waited += 0.25
        out = []
        for rec in gone:
            pids = alive(rec)
            if pids:
                out.append(
                    Finding(
                        kind="local-process",
                        resource=f"pid {', '.join(map(str, pids))}",
                        state="running",
                        detail=f"local instance {rec.get('instance_id')} is gone",
                        orphaned=True,
                        run_id=rec.get("run_id"),
                    )
                )
        return out

    # -- fixing ----------------------------------------------------------------
    def fix(self, inventory: Inventory) -> list[str]:
        """Remove every orphan of ``inventory``; return what was done, as the describes after it saw.

        A removal is said done (and recorded ``succeeded`` in its run's cleanup_status.json)
        only once a describe confirms it: the instance ``terminated``, the volume gone, the
        state file gone; until then it is ``requested`` with what the describe saw. Each
        instance and volume is recorded under its own run (its ``RunId`` tag).
        """
        done: list[str] = []
        ec2, orphans = self.clients.ec2, inventory.orphans
        done += fix_sweep_findings(
            [f for f in orphans if f.kind in SWEEP_KINDS], s3=self.clients.s3, ec2=ec2, bucket=self.bucket,
            env=self.env, scope=self.batch, clock=self.clock,
        )  # fmt: skip
        lock = self._lock_doc() if any(f.kind == "state-file" for f in orphans) else {}
        runs: dict[str, list[_Seen]] = {}
        instances = [f for f in orphans if f.kind == "instance"]
        if instances:
            ec2.terminate_instances(InstanceIds=[f.resource for f in instances])
            ids = [f.resource for f in instances]
            seen = cs.await_terminated(ec2, ids, sleep=self.sleep, limit_s=self.terminate_wait_s)
            for f in instances:
                state = seen[f.resource]
                ok = cs.confirmed_terminated(state)
                done.append(
                    f"terminated {f.resource}"
                    if ok
                    else f"requested termination of {f.resource}; DescribeInstances still shows {state} "
                    f"after {self.terminate_wait_s:.0f} s"
                )
                run = f.run_id or (lock.get("run_id") if f.resource == lock.get("instance_id") else None)
                runs.setdefault(run or "", []).append(
                    _Seen(f.resource, "terminate", ok, f"DescribeInstances: {state}")
                )
        reqs = [f.resource for f in orphans if f.kind == "spot-request"]
        if reqs:
            ec2.cancel_spot_instance_requests(SpotInstanceRequestIds=reqs)
            done.append(f"cancelled spot requests {', '.join(reqs)}")
        for vol in available_volumes(ec2, self.env):  # includes volumes freed by the terminations
            vid = vol["VolumeId"]
            ec2.delete_volume(VolumeId=vid)
            state = cs.await_volume_deleted(ec2, vid, sleep=self.sleep)
            done.append(
                f"deleted volume {vid}"
                if state == cs.GONE
                else f"requested deletion of volume {vid}; DescribeVolumes still shows {state}"
            )
            runs.setdefault(tag_value(vol, RUN_ID_KEY) or "", []).append(
                _Seen(vid, "delete", state == cs.GONE, f"DescribeVolumes: {state}")
            )
        for f in orphans:
            if f.kind == "state-file":
                gone = self._clear_lock(f.etag)
                done.append(
                    f"removed stale lock {f.resource}"
                    if gone
                    else f"asked S3 to delete the stale lock {f.resource}, but a read still finds it"
                )
                seen_lock = "GetObject: gone" if gone else "GetObject: still there"
                runs.setdefault(f.run_id or "", []).append(
                    _Seen(self.store.location, "delete", gone, seen_lock)
                )
        for run_id, actions in runs.items():
            if run_id:  # an untagged resource belongs to no run's record (the output above names it)
                self._cleanup_status(run_id, actions, lock)
        if self.local_dir is not None:
            from control.local_instance import terminate_processes

            live = {i["InstanceId"] for i in billing_instances(ec2, self.env)}
            for rec in self.local_dir.instance_records():
                if rec.get("instance_id") not in live and terminate_processes(rec, grace_s=5.0):
                    done.append(f"stopped local processes of {rec.get('instance_id')}")
        return done

    def _lock_doc(self) -> dict[str, Any]:
        """The state file's document before it is cleared (empty when absent or unreadable)."""
        try:
            snap = self.store.read()
        except CorruptStateError:
            return {}
        return dict(snap.doc) if snap is not None else {}

    def _clear_lock(self, etag: str | None) -> bool:
        """Delete the lock judged stale (its ``etag``: a lock a new launch took since stays); True
        once a read finds it gone (absent, or another document)."""
        self.store.force_clear(etag=etag)
        try:
            after = self.store.read()
        except CorruptStateError:  # a corrupt lock reads as corrupt: the one judged, or a newer one
            head = self.store.s3.head_object(Bucket=self.store.bucket, Key=self.store.key)
            return etag is not None and head["ETag"] != etag
        return after is None or (etag is not None and after.etag != etag)

    def _cleanup_status(self, run_id: str, actions: list[_Seen], lock: dict[str, Any]) -> None:
        """cleanup_status.json of ``run_id`` (unless it has one): each action as its describe saw it.

        The run's instance is the one its lock recorded, else its only instance terminated here.
        """
        paths = layout.RunPaths(env=self.env, run_id=run_id)
        if get_json(self.clients.s3, self.bucket, paths.cleanup_status) is not None:
            return
        own = [a.resource for a in actions if a.action == "terminate"]
        instance_id = lock.get("instance_id") if lock.get("run_id") == run_id else None
        cleanup = CleanupLog(
            run_id=run_id,
            instance_id=instance_id or (own[0] if len(own) == 1 else None),
            written_by="control",
            clock=self.clock,
        )
        for a in actions:
            status = ActionStatus.SUCCEEDED if a.confirmed else ActionStatus.REQUESTED
            cleanup.record(a.resource, a.action, status, observed=a.observed)
        lock_gone = all(a.confirmed for a in actions if a.resource == self.store.location)
        checked = billing_verification(self.clients.ec2, self.env, checked_at=iso(self.clock()))
        doc = cleanup.document(verification=checked, state_file_removed=lock_gone)
        put_json(self.clients.s3, self.bucket, paths.cleanup_status, doc)


@dataclass(frozen=True)
class _Seen:
    """One fix action on one resource and what the describe after it saw."""

    resource: str
    action: str
    confirmed: bool
    observed: str


def verify(
    backend: Backend, *, env: str, fix: bool = False, yes: bool = False, clock: Clock = utc_now
) -> VerifyResult:
    """``invoke verify``: the inventory; with ``fix`` and ``yes``, remove the orphans and look again.

    Raises:
        ConfigError: ``fix`` without ``yes`` while there is something to remove.
        NoCredentialsError, AccessDeniedError.
    """
    check_env(env)
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    local_dir = getattr(backend, "local_dir", None)
    with backend.errors("ec2:DescribeInstances", f"resources tagged Environment={env}"):
        scope = None
        if outputs.has_batch and outputs.batch_job_queue:
            envs = tuple(getattr(outputs, "batch_compute_environments", ()) or ())
            scope = BatchScope(
                batch=backend.client("batch"), job_queue=outputs.batch_job_queue, compute_environments=envs
            )
        insp = Inspector(
            backend.clients(), outputs.bucket, env, clock=clock, local_dir=local_dir, batch=scope
        )
        before = insp.inventory()
        if not fix or before.clean:
            return VerifyResult(before=before)
        if not yes:
            raise ConfigError(
                f"verify --fix would remove {len(before.orphans)} orphaned resource(s) "
                f"({', '.join(f.resource for f in before.orphans)}); add --yes to confirm"
            )
        done = insp.fix(before)
        return VerifyResult(before=before, fixed=done, after=insp.inventory())
