"""The state store's errors, and the holder rule (:attr:`common.state_store.StateStore.holder`)."""

from __future__ import annotations

from common.state_doc import Snapshot
from common.status import RunStatus


class NotHeldError(RuntimeError):
    """The state file is gone or belongs to another run."""


class TakenOverError(NotHeldError):
    """The run's state names another attempt's instance (or none: the recovery handler claimed
    it): the attempt of :attr:`StateStore.holder` no longer owns the run and must write nothing.

    An attempt the recovery handler (or a Batch retry) took over may still run for the length
    of its host's shutdown while the next attempt works on the run: from the moment the trainer
    sets the store's holder, a write or release of a state naming another instance raises this.
    """


class ConflictError(RuntimeError):
    """Conditional writes kept conflicting after every retry (or the one claim lost)."""


class ClaimLostError(RuntimeError):
    """The recovery claim a write depended on is no longer the state's (killed, re-claimed)."""

    def __init__(self, current: RunStatus, detail: str) -> None:
        self.current = current
        super().__init__(f"recovery claim lost: {detail}")


def check_holder(snap: Snapshot, holder: str | None) -> None:
    """Raise :class:`TakenOverError` when ``holder`` is set and ``snap`` names another instance (or none)."""
    if holder is None:
        return
    current = snap.doc.get("instance_id")
    if current != holder:
        now = f"on instance {current}" if current else f"{snap.status.value}, claimed by the recovery handler"
        raise TakenOverError(
            f"run {snap.run_id} was taken over (attempt {snap.doc.get('attempt') or 1}, {now}); "
            f"instance {holder} no longer writes it"
        )
