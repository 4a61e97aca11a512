"""Cleanup: release the lock, check that nothing else bills, write cleanup_status.json, power off.

Order (each step logged; a failing step is a ``cleanup`` error record and the
next step still runs):

1. state -> ``cleanup`` (legal from every final status and from results_sync);
2. release the state file (delete it if it still belongs to this run);
   both skipped when the run may recover (``keep_lock``: the run ended ``interrupted``
   with recoveries left, or the recovery handler claimed it already): the lock stays
   so the handler (``recovery/``) can claim it and relaunch the same run;
3. verification: other instances of this env still alive, available volumes
   (a count that could not be made is recorded as unknown with its reason, never 0);
4. cleanup_status.json (``written_by: instance``, built by
   :class:`common.cleanup_status.CleanupLog`), recording the poweroff about to happen
   as ``requested``: the instance cannot observe its own end (``invoke verify`` can);
5. ``STATE: TERMINATING``, ``trainer.log`` one last time, and the poweroff strategy (an AWS
   Batch job's, ``batch``, does nothing and is recorded skipped: Batch owns the host).
   If the poweroff fails the instance is still alive, so cleanup_status.json (and
   the log) are written again to say so.

The state file's delete is ``succeeded`` only once a read after it finds the file gone; a
delete that answered but left the file, or whose check could not be read, is ``requested``
with what the read saw. ``state_file_removed`` says whether the run's state file is gone when
cleanup ends, whoever removed it: a lock the recovery handler released while this instance
finished its results in the shutdown's grace (its delete is then ``skipped``: already gone)
is gone all the same; a lock kept for the handler, or taken over by a later attempt, is not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common.cleanup_status import ActionStatus, CleanupLog, Count, verification
from common.ec2 import BILLING_STATES
from common.layout import RunPaths
from common.state_doc import IllegalTransitionError
from common.state_store import NotHeldError, StateStore
from common.status import ErrorClass, RunStatus
from common.tags import env_filters
from common.timeutil import Clock, iso, utc_now
from trainer.errors import WHILE_FAILING, ErrorLog, Retrier, error_record
from trainer.instance import Poweroff, PoweroffResult
from trainer.record import state_line
from trainer.transfers import Transfers

log = logging.getLogger(__name__)

COMPONENT = "cleanup"


@dataclass(kw_only=True)
class Cleanup:
    """Everything cleanup touches.

    Args:
        store: the state store.
        paths: the run's keys.
        transfers: S3 uploads.
        ec2: boto3 EC2 client (botocore retries off).
        instance_id: this instance (``None`` if IMDS never answered).
        poweroff: the strategy that ends this instance.
        retrier: retry policy for the state/S3/EC2 calls.
        errors: where cleanup errors go.
        trainer_log: uploaded one last time before the poweroff.
        trainer_log_key: its key, this attempt's own (``RunPaths.trainer_log_of``; ``None``: the
            first attempt's).
        keep_lock: why the state file stays (the run may recover); ``None`` releases it.
    """

    store: StateStore
    paths: RunPaths
    transfers: Transfers
    ec2: Any
    instance_id: str | None
    poweroff: Poweroff
    retrier: Retrier
    errors: ErrorLog
    trainer_log: Path | None = None
    trainer_log_key: str | None = None
    clock: Clock = utc_now
    keep_lock: str | None = None
    cleanup_log: CleanupLog = field(init=False)

    def __post_init__(self) -> None:
        self.cleanup_log = CleanupLog(
            run_id=self.paths.run_id, instance_id=self.instance_id, written_by="instance", clock=self.clock
        )

    def run(self) -> PoweroffResult:
        """Do every step; the poweroff's result."""
        self._step(self.paths.state, "status->cleanup", self._to_cleanup)
        removed = self._step(f"s3://{self.transfers.bucket}/{self.paths.state}", "delete", self._release)
        if self.keep_lock is not None:
            log.info("state file kept: %s", self.keep_lock)
        elif removed is not True:  # skipped or unconfirmed: the file may be gone all the same
            removed = self._confirm_released().confirmed
        verification = self.verify()
        resource = self.instance_id or "this instance"
        if self.poweroff.name == "batch":  # an AWS Batch job: the job ends, Batch scales the host away
            self.cleanup_log.record(
                resource,
                "poweroff (batch)",
                ActionStatus.SKIPPED,
                observed="AWS Batch owns the host and scales it down",
            )
        else:
            self.cleanup_log.record(
                resource,
                f"poweroff ({self.poweroff.name})",
                ActionStatus.REQUESTED,
                observed="the instance cannot observe its own end; invoke verify confirms it",
            )
        self._write_status(verification, removed is True)
        state_line("TERMINATING", f"instance {resource} via {self.poweroff.name}", clock=self.clock)
        self._upload_log()
        result = self.poweroff(self.instance_id)
        if not result.succeeded:  # still alive: say so where a user looks
            self.cleanup_log.replace_last(
                resource, f"poweroff ({result.method})", ActionStatus.FAILED, result.error
            )
            self._record(f"poweroff failed: {result.error}")
            self._write_status(verification, removed is True)
            self._upload_log()
        return result

    def _to_cleanup(self) -> None:
        if self.keep_lock is not None:
            raise _Skip(self.keep_lock)
        try:
            self.retrier.call(
                lambda: self.store.transition(
                    self.paths.run_id, RunStatus.CLEANUP, reason="cleanup by the instance"
                ),
                component=COMPONENT,
                action="s3:PutObject",
                resource=self.store.location,
            )
        except (IllegalTransitionError, NotHeldError) as exc:
            raise _Skip(str(exc)) from None

    def _release(self) -> _Observed:
        if self.keep_lock is not None:
            raise _Skip(self.keep_lock)
        try:
            released = self.retrier.call(
                lambda: self.store.release(self.paths.run_id),
                component=COMPONENT,
                action="s3:DeleteObject",
                resource=self.store.location,
            )
        except NotHeldError as exc:
            raise _Skip(str(exc)) from None
        if not released:
            raise _Skip("state file already gone")
        return self._confirm_released()

    def _confirm_released(self) -> _Observed:
        """Confirmed once a read finds the state file gone (or another run's); what the read saw."""
        try:
            snap = self.store.read()
        except Exception as exc:  # noqa: BLE001 - an unreadable check leaves the delete unconfirmed
            return _Observed(False, f"GetObject after the delete failed: {exc}")
        if snap is None:
            return _Observed(True, "GetObject after the delete: gone")
        if snap.run_id != self.paths.run_id:  # ours is gone; a new launch took the lock since
            return _Observed(True, f"GetObject after the delete: gone (now run {snap.run_id}'s lock)")
        return _Observed(
            False, f"GetObject after the delete: the state file is still there ({snap.doc['status']})"
        )

    def verify(self) -> dict[str, Any]:
        """Instances of this env still alive (not counting itself) and available volumes.

        A count that could not be made is ``None`` with its reason under ``unknown``.
        """
        filters = env_filters(self.paths.env)
        return verification(
            checked_at=iso(self.clock()),
            instances_running=self._check(
                "ec2:instances", "ec2:DescribeInstances", lambda: self._count_instances(filters)
            ),
            volumes_available=self._check(
                "ec2:volumes", "ec2:DescribeVolumes", lambda: self._count_volumes(filters)
            ),
        )

    def _check(self, resource: str, api_action: str, fn: Callable[[], int]) -> Count:
        value, error = self._attempt(resource, "verify", fn)
        return Count.unknown(api_action, error) if error is not None else Count(int(value))

    def _count_instances(self, filters: list[dict[str, Any]]) -> int:
        flt = [*filters, {"Name": "instance-state-name", "Values": list(BILLING_STATES)}]
        pages = self.retrier.call(
            lambda: list(self.ec2.get_paginator("describe_instances").paginate(Filters=flt)),
            component=COMPONENT,
            action="ec2:DescribeInstances",
            resource="*",
        )
        ids = {
            i["InstanceId"] for p in pages for r in p.get("Reservations", []) for i in r.get("Instances", [])
        }
        ids.discard(self.instance_id or "")
        return len(ids)

    def _count_volumes(self, filters: list[dict[str, Any]]) -> int:
        flt = [*filters, {"Name": "status", "Values": ["available"]}]
        resp = self.retrier.call(
            lambda: self.ec2.describe_volumes(Filters=flt),
            component=COMPONENT,
            action="ec2:DescribeVolumes",
            resource="*",
        )
        return len(resp.get("Volumes", []))

    def _write_status(self, verification: dict[str, Any], removed: bool) -> None:
        doc = self.cleanup_log.document(verification=verification, state_file_removed=removed)
        try:
            self.transfers.put_json(self.paths.cleanup_status, doc, component=COMPONENT, retrier=self.retrier)
            state_line("UPLOAD_SUCCESS", self.paths.cleanup_status, clock=self.clock)
        except Exception as exc:  # noqa: BLE001 - cleanup goes on whatever fails; it is recorded
            self._record(f"cleanup_status.json not written: {exc}")

    def _upload_log(self) -> None:
        if self.trainer_log is None or not self.trainer_log.is_file():
            return
        quick = self.retrier.with_policy(WHILE_FAILING)  # a transient error must not lose the last log
        try:
            self.transfers.upload(
                [(self.trainer_log, self.trainer_log_key or self.paths.trainer_log)],
                component=COMPONENT,
                retrier=quick,
            )
        except Exception as exc:  # noqa: BLE001 - the last log upload is best effort before the poweroff
            log.warning("trainer.log not uploaded: %s", exc)

    def _step(self, resource: str, action: str, fn: Callable[[], Any]) -> Any:
        """``fn()``, recorded as an action; ``None`` when it was skipped or failed."""
        return self._attempt(resource, action, fn)[0]

    def _attempt(self, resource: str, action: str, fn: Callable[[], Any]) -> tuple[Any, str | None]:
        """``(fn(), None)``, or ``(None, why)`` when it was skipped or failed (recorded either way)."""
        try:
            value = fn()
        except _Skip as skip:
            log.info("cleanup %s %s skipped: %s", action, resource, skip)
            self.cleanup_log.record(resource, action, ActionStatus.SKIPPED, str(skip))
            return None, f"skipped: {skip}"
        except Exception as exc:  # noqa: BLE001 - a failing step is recorded and the next step still runs
            self._record(f"{action} {resource} failed: {exc}")
            self.cleanup_log.record(resource, action, ActionStatus.FAILED, str(exc))
            return None, str(exc)
        if isinstance(value, _Observed):  # the call answered; a read judged its effect
            status = ActionStatus.SUCCEEDED if value.confirmed else ActionStatus.REQUESTED
            if not value.confirmed:
                log.warning("cleanup %s %s not confirmed: %s", action, resource, value.observed)
            self.cleanup_log.record(resource, action, status, observed=value.observed)
            return (True, None) if value.confirmed else (None, f"not confirmed: {value.observed}")
        self.cleanup_log.record(resource, action, ActionStatus.SUCCEEDED)
        return value, None

    def _record(self, message: str) -> None:
        self.errors.add(
            error_record(
                component=COMPONENT, message=message, error_class=ErrorClass.CLEANUP, clock=self.clock
            )
        )


class _Skip(Exception):
    """A cleanup step with nothing to do (e.g. the lock is already gone)."""


@dataclass(frozen=True)
class _Observed:
    """A step whose call answered, judged by a read after it: confirmed or not, and what it saw."""

    confirmed: bool
    observed: str
