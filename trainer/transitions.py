"""The run's writes to the state file: each phase's status, the final status, ``last_error``.

Every write goes through the :class:`~common.state_store.StateStore` under the run's
retry policy, so a ``killed`` written by the control plane is seen: an illegal
transition re-reads, and a run that finds itself ``killed`` (or no longer holding the
lock) flips the :class:`~trainer.stopping.StopSwitch` instead of training on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, TypeVar

from common.state_doc import IllegalTransitionError, apply_transition
from common.state_errors import check_holder
from common.state_store import NotHeldError, StateStore, TakenOverError
from common.status import CompletionStatus, ErrorClass, RunStatus
from common.timeutil import iso
from trainer.errors import ErrorLog, Retrier, TerminalError
from trainer.stopping import StopRequest, StopSwitch

log = logging.getLogger(__name__)

T = TypeVar("T")
REASON_MAX = 500  # the state file's reason field
_FINAL = {
    CompletionStatus.FAILED: RunStatus.FAILED,
    CompletionStatus.KILLED: RunStatus.KILLED,
    CompletionStatus.INTERRUPTED: RunStatus.INTERRUPTED,
}


class RunState:
    """The state-file side of one run.

    Args:
        store: the env's state store.
        run_id: this run.
        retrier: the run's retry policy.
        stops: flipped when the state says the run was killed or lost its lock.
        errors: the run's error records (the newest becomes ``last_error``).
    """

    def __init__(
        self, *, store: StateStore, run_id: str, retrier: Retrier, stops: StopSwitch, errors: ErrorLog
    ) -> None:
        self.store, self.run_id, self.retrier = store, run_id, retrier
        self.stops, self.errors = stops, errors

    def call(self, fn: Callable[[], T]) -> T:
        """``fn()`` (a state write) under the retry policy."""
        return self.retrier.call(fn, component="state", action="s3:PutObject", resource=self.store.location)

    def advance(self, status: RunStatus) -> None:
        """Move to ``status`` (a working phase).

        Raises:
            Stopped: a stop was requested, or the state says killed / not held.
            TerminalError: any other illegal transition.
        """
        self.stops.check()
        try:
            self.call(lambda: self.store.transition(self.run_id, status))
        except IllegalTransitionError as exc:
            if exc.current is status:
                # Only this trainer moves its run through the working statuses, one at a time: a
                # state already at ``status`` is its own write that landed while its answer was lost
                # (S3: "if a PUT request returns InternalError, a subsequent GET might retrieve the
                # old value or the updated value"); the retry re-read it.
                log.info("status -> %s (an earlier write landed; its answer was lost)", status.value)
                return
            if exc.current is RunStatus.KILLED:
                self.stops.flip(
                    StopRequest(status=RunStatus.KILLED, reason="killed by operator", source="state")
                )
                self.stops.check()
            raise TerminalError(f"cannot move to {status.value}: {exc}", component=status.value) from None
        except NotHeldError as exc:
            self.stops.flip(StopRequest(status=RunStatus.KILLED, reason=str(exc), source="state"))
            self.stops.check()
            log.warning("status %s not written: %s", status.value, exc)  # the run is finishing
            return
        log.info("status -> %s", status.value)

    def final(self, completion: CompletionStatus, reason: str | None) -> RunStatus:
        """Write the final status (if the state still allows it) and return the status now.

        A ``recovering`` state is never ended here: the recovery handler claimed the run (this
        instance went away under it) and relaunches it elsewhere; ``recovering`` is returned. So it
        is when a later attempt already took the run over (:class:`~common.state_store.TakenOverError`:
        this instance was terminated and is finishing its shutdown while the relaunch works).

        A normal completion writes nothing here (``succeeded`` follows the sentinel), but reads
        the state once: ``killed`` when a kill landed while the last phase ran (the watcher polls
        every few seconds and may not have seen it), ``recovering`` when the run was taken over.
        """
        target = _FINAL.get(completion)
        if target is None:
            return self._normal_end()
        error = self.errors.last() if target is RunStatus.FAILED else None
        text = (reason or target.value)[:REASON_MAX]

        def mutate(doc: dict[str, Any]) -> dict[str, Any]:
            if doc["status"] == RunStatus.RECOVERING.value:
                raise IllegalTransitionError(RunStatus.RECOVERING, target)
            return apply_transition(doc, target, reason=text, error=error, now=iso(self.store.clock()))

        try:
            return self.call(lambda: self.store.update(self.run_id, mutate)).status
        except TakenOverError as exc:  # a later attempt owns the run: its status is not this one's to end
            log.warning("final status %s not written: %s", target.value, exc)
            return RunStatus.RECOVERING
        except IllegalTransitionError as exc:
            log.info("state is already %s (%s)", exc.current.value, exc)
            return exc.current if exc.current.is_final() or exc.current.is_recovering() else target
        except Exception as exc:  # noqa: BLE001 - the run must still finalize and power off
            now = self._status_read_back()
            log.error(
                "could not write status %s: %s; the state file %s",
                target.value,
                exc,
                "cannot be read" if now is None else f"still says {now.value}",
            )
            return now or target  # what the state file says, never a status it was not given

    def _normal_end(self) -> RunStatus:
        try:
            snap = self.store.read()
        except Exception as exc:  # noqa: BLE001 - a read is a best effort; the results go up anyway
            log.info("could not read the state before finalizing: %s", exc)
            return RunStatus.RESULTS_SYNC
        if snap is None or snap.run_id != self.run_id:
            return RunStatus.RESULTS_SYNC  # finalize and cleanup say what they find
        try:
            check_holder(snap, self.store.holder)
        except TakenOverError as exc:
            log.warning("not finalized here: %s", exc)
            return RunStatus.RECOVERING
        return RunStatus.KILLED if snap.status is RunStatus.KILLED else RunStatus.RESULTS_SYNC

    def _status_read_back(self) -> RunStatus | None:
        """The run's status as the state file holds it now (``None``: unreadable or not this run's)."""
        try:
            snap = self.store.read()
        except Exception as exc:  # noqa: BLE001 - a read after a failed write is a best effort
            log.info("could not read the state back: %s", exc)
            return None
        return snap.status if snap is not None and snap.run_id == self.run_id else None

    def kill_reason(self) -> str | None:
        """The reason ``invoke kill`` wrote into the state file, if it did and the state is readable."""
        try:
            snap = self.store.read()
        except Exception as exc:  # noqa: BLE001 - the reason is a nicety; the run must still finalize
            log.info("could not read the kill reason: %s", exc)
            return None
        reason = snap.doc.get("kill_reason") if snap is not None and snap.run_id == self.run_id else None
        return str(reason) if reason else None

    def keep_last_error(self, record: dict[str, Any]) -> None:
        """Every error record also becomes ``last_error`` in the state (best effort)."""
        if record["error_class"] == ErrorClass.CLEANUP.value or self.stops.finishing:
            return
        try:
            self.store.record_error(self.run_id, record)
        except Exception as exc:  # noqa: BLE001 - recording an error must never raise another
            log.warning("could not record last_error: %s", exc)
