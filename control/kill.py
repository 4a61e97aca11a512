"""Stop the active run: ask nicely through the state file, then make sure.

1. ``killed`` is set through the state store (a conditional write: never over a
   newer document). The instance's watcher sees it, checkpoints, uploads,
   finalizes with ``completion_status=killed``, writes ``cleanup_status.json``,
   removes the state file and powers off.
2. After the grace period (or as soon as the state file is gone) the instance is
   terminated through the API if it is still there.
3. If the instance could not clean up, the control plane removes the state file
   and writes ``cleanup_status.json`` itself (``written_by: control``).

A terminate is recorded ``succeeded`` only once DescribeInstances shows the instance
``terminated`` (or EC2 no longer knows it); until then it is ``requested`` with the state
last seen (an instance may stay ``shutting-down`` for a while). The state file's removal
is recorded once a read finds it gone.

Idempotent: killing an env with no active run reports that and changes nothing.

A run ``recovering`` (the recovery handler relaunching it) is killed the same way: with
no instance recorded yet the control plane clears the lock itself, and a handler that
launches meanwhile finds its claim lost and terminates what it launched.

A state with no instance recorded may still have one billing: the launch that died between
RunInstances and recording it, or a relaunch not recorded yet. The run's instances are then
looked up by their ``RunId`` tag (Batch hosts excluded: Batch owns them) and treated as the
recorded one; before, they kept billing until ``invoke verify --fix``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from botocore.exceptions import BotoCoreError, ClientError

from common import layout
from common.cleanup_status import (
    TERMINATE_WAIT_S,
    ActionStatus,
    CleanupLog,
    await_terminated,
    confirmed_terminated,
)
from common.ec2 import instance_state, is_gone
from common.state_store import NotHeldError, StateStore
from common.tags import RUN_ID_KEY
from common.timeutil import Clock, iso, utc_now
from control.backend import Backend, Clients, check_env
from control.billing import billing_verification, run_instance_ids
from control.s3io import get_json, put_json

log = logging.getLogger(__name__)

DEFAULT_GRACE_S = 120.0
POLL_S = 1.0


@dataclass(frozen=True, kw_only=True)
class KillResult:
    """What ``kill`` found and did."""

    env: str
    run_id: str | None
    instance_id: str | None = None
    status_before: str | None = None
    finalized_by_instance: bool = False
    terminated_by_control: bool = False  # terminated through the API, and a describe saw it terminated
    termination_requested: bool = False  # TerminateInstances answered (confirmed or not)
    state_cleared_by_control: bool = False
    cleanup_written_by: str | None = None
    waited_s: float = 0.0
    actions: list[str] = field(default_factory=list)

    @property
    def nothing_to_kill(self) -> bool:
        return self.run_id is None


def kill_run(
    backend: Backend,
    *,
    env: str,
    grace_s: float = DEFAULT_GRACE_S,
    clock: Clock = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    monotonic: Callable[[], float] = time.monotonic,
    reason: str = "killed by operator (invoke kill)",
) -> KillResult:
    """``invoke kill``: stop the active run of ``env`` within ``grace_s`` seconds.

    Raises:
        NoCredentialsError, AccessDeniedError, ConfigError, CorruptStateError.
    """
    check_env(env)
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    with backend.errors("kill", f"s3://{outputs.bucket}/{layout.state_key(env)}"):
        return Killer(
            backend.clients(), outputs.bucket, env, clock=clock, sleep=sleep, monotonic=monotonic
        ).kill(grace_s=grace_s, reason=reason)


class Killer:
    """The kill procedure on injected clients, clock and sleep."""

    def __init__(
        self,
        clients: Clients,
        bucket: str,
        env: str,
        *,
        clock: Clock = utc_now,
        sleep: Callable[[float], None] = time.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        terminate_wait_s: float = TERMINATE_WAIT_S,
    ) -> None:
        self.clients, self.bucket, self.env = clients, bucket, env
        self.clock, self.sleep, self.monotonic = clock, sleep, monotonic
        self.terminate_wait_s = terminate_wait_s  # how long a describe may take to confirm a terminate
        self.store = StateStore(clients.s3, bucket, env, clock=clock)

    def kill(self, *, grace_s: float, reason: str) -> KillResult:
        snap = self.store.read()
        if snap is None:
            return KillResult(env=self.env, run_id=None, actions=["no active run: nothing to do"])
        run_id, before = snap.run_id, snap.doc["status"]
        actions: list[str] = []
        try:
            snap = self.store.request_kill(run_id, reason=reason)
            actions.append(f"state {before} -> {snap.doc['status']}")
        except NotHeldError:
            actions.append("the run ended before the kill was written")
        instance_id = snap.doc.get("instance_id")
        extra: list[str] = []
        if instance_id is None:
            found = self._tagged_instances(run_id, actions)
            if found:
                instance_id, extra = found[0], found[1:]
                actions.append(f"no instance recorded; found {', '.join(found)} by its {RUN_ID_KEY} tag")
        start = self.monotonic()
        state_gone = self._wait(instance_id, grace_s)
        waited = self.monotonic() - start
        requested, seen = False, self.instance_state(instance_id) if instance_id else None
        if instance_id and not is_gone(seen):
            self.clients.ec2.terminate_instances(InstanceIds=[instance_id])
            requested = True
            seen = self._wait_terminated(instance_id)
            if confirmed_terminated(seen):
                actions.append(f"terminated {instance_id} through the API")
            else:
                actions.append(
                    f"requested termination of {instance_id} through the API; DescribeInstances still "
                    f"shows {seen} after {self.terminate_wait_s:.0f} s (check with invoke verify)"
                )
        if extra:  # more than one tagged instance: none of the others is the run's either
            self.clients.ec2.terminate_instances(InstanceIds=extra)
            actions.append(
                f"requested termination of {', '.join(extra)} through the API (check with invoke verify)"
            )
        cleared = None
        if not state_gone:
            cleared = self._clear_state(run_id)
            if cleared:
                actions.append(f"removed {self.store.location}")
            elif cleared is not None:
                actions.append(f"asked S3 to delete {self.store.location}, but a read still finds it")
        paths = layout.RunPaths(env=self.env, run_id=run_id)
        existing = get_json(self.clients.s3, self.bucket, paths.cleanup_status)
        written_by = (existing or {}).get("written_by", "instance") if existing else None
        if existing is None:
            self._write_cleanup_status(
                paths, run_id, instance_id, requested=requested, seen=seen, cleared=cleared
            )
            written_by = "control"
            actions.append(f"wrote {paths.cleanup_status}")
        return KillResult(
            env=self.env,
            run_id=run_id,
            instance_id=instance_id,
            status_before=before,
            finalized_by_instance=state_gone and existing is not None,
            terminated_by_control=requested and confirmed_terminated(seen),
            termination_requested=requested,
            state_cleared_by_control=cleared is True,
            cleanup_written_by=written_by,
            waited_s=round(waited, 1),
            actions=actions,
        )

    def _tagged_instances(self, run_id: str, actions: list[str]) -> list[str]:
        """The run's instances in a billing state, by their ``RunId`` tag (not Batch hosts)."""
        try:
            return run_instance_ids(self.clients.ec2, self.env, run_id)
        except (BotoCoreError, ClientError) as exc:
            actions.append(
                f"could not look for the run's instance by its tag ({exc}); check with invoke verify"
            )
            return []

    def _wait(self, instance_id: str | None, grace_s: float) -> bool:
        """Wait until the state file is gone (True) or the grace period ends (False)."""
        if instance_id is None:  # no instance was recorded: nobody else will clean up
            return self.store.read() is None
        deadline = self.monotonic() + grace_s
        etag = None
        while True:
            got = self.store.read_if_changed(etag)
            if got is None:  # the instance powers off right after removing the state
                self._wait_terminated(instance_id, limit_s=min(30.0, grace_s))
                return True
            if got is not False:
                etag = got.etag
            if is_gone(self.instance_state(instance_id)):
                return self.store.read() is None
            if self.monotonic() >= deadline:
                return False
            self.sleep(POLL_S)

    def _wait_terminated(self, instance_id: str, limit_s: float | None = None) -> str:
        """The state DescribeInstances last showed, once terminated (or unknown) or after ``limit_s``
        (default ``terminate_wait_s``): :func:`common.cleanup_status.await_terminated`, as verify waits."""
        limit = self.terminate_wait_s if limit_s is None else limit_s
        return await_terminated(self.clients.ec2, [instance_id], sleep=self.sleep, limit_s=limit)[instance_id]

    def instance_state(self, instance_id: str) -> str:
        """The instance's state (``common.ec2.NOT_FOUND`` once EC2 forgot it); other errors raise."""
        return instance_state(self.clients.ec2, instance_id)

    def _clear_state(self, run_id: str) -> bool | None:
        """Delete the run's state file: True once a read finds it gone, False when the delete
        answered but a read still finds it, ``None`` when there was nothing of this run to delete."""
        snap = self.store.read()
        if snap is None or snap.run_id != run_id or not self.store.release(run_id):
            return None
        after = self.store.read()
        return after is None or after.run_id != run_id

    def _write_cleanup_status(
        self,
        paths: layout.RunPaths,
        run_id: str,
        instance_id: str | None,
        *,
        requested: bool,
        seen: str | None,
        cleared: bool | None,
    ) -> None:
        cleanup = CleanupLog(run_id=run_id, instance_id=instance_id, written_by="control", clock=self.clock)
        if instance_id:
            if not requested:
                cleanup.record(
                    instance_id,
                    "terminate",
                    ActionStatus.SKIPPED,
                    f"already {seen}",
                    observed=f"DescribeInstances: {seen}",
                )
            else:
                done = ActionStatus.SUCCEEDED if confirmed_terminated(seen) else ActionStatus.REQUESTED
                after = "" if done is ActionStatus.SUCCEEDED else f" after {self.terminate_wait_s:.0f} s"
                cleanup.record(instance_id, "terminate", done, observed=f"DescribeInstances: {seen}{after}")
        location = self.store.location
        if cleared is True:
            cleanup.record(location, "delete", ActionStatus.SUCCEEDED, observed="GetObject: gone")
        elif cleared is False:
            cleanup.record(location, "delete", ActionStatus.REQUESTED, observed="GetObject: still there")
        else:
            cleanup.record(location, "delete", ActionStatus.SKIPPED, "already removed")
        checked = billing_verification(self.clients.ec2, self.env, checked_at=iso(self.clock()))
        doc = cleanup.document(verification=checked, state_file_removed=self.store.read() is None)
        put_json(self.clients.s3, self.bucket, paths.cleanup_status, doc)
