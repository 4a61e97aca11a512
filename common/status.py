"""The run status: one enum, its legal transitions and the questions it answers.

Legal transitions (anything not listed is refused by the state store)::

    initialization -> data_sync | failed | killed | interrupted | recovering
    data_sync      -> training | failed | killed | interrupted | recovering
    training       -> results_sync | failed | killed | interrupted | recovering
    results_sync   -> cleanup | failed | killed | interrupted | recovering
    failed         -> cleanup
    killed         -> cleanup
    interrupted    -> cleanup | recovering | failed
    recovering     -> initialization | failed | killed
    cleanup        -> (state file removed)

``failed``, ``killed`` and ``interrupted`` are *final* (the run will not
train again on this instance) but not yet *terminal*: cleanup still runs.
``cleanup`` is terminal: once it ends the state file is deleted.

``recovering`` is written by the recovery handler (``recovery/``) when it claims a
run whose instance was interrupted or vanished (a working phase whose instance is
gone, or ``interrupted`` left by a trainer whose run may recover). It is neither
*active* (no instance is doing the run's work: nothing for a spot notice or the
watcher to stop, and no heartbeat is expected) nor *final* (the run will train
again, under the same run_id, on the instance the handler launches): ``kill``
still moves it to ``killed``, the handler may end it ``failed`` (max recoveries,
no capacity), and the relaunched trainer moves it to ``initialization``. A
handler may re-claim a ``recovering`` run whose claim went stale (no instance
recorded after a few minutes); that rewrites the claim, it is no transition.
``interrupted -> failed`` is the handler ending a run left ``interrupted`` that may not
be relaunched again (``max_recoveries`` reached, no launch request).
"""

from __future__ import annotations

from enum import StrEnum


class RunStatus(StrEnum):
    """Where a run is in its life. The JSON Schemas' enums equal these values."""

    INITIALIZATION = "initialization"
    DATA_SYNC = "data_sync"
    TRAINING = "training"
    RESULTS_SYNC = "results_sync"
    CLEANUP = "cleanup"
    FAILED = "failed"
    KILLED = "killed"
    INTERRUPTED = "interrupted"
    RECOVERING = "recovering"

    def can_become(self, new: RunStatus) -> bool:
        """True when ``self -> new`` is a legal transition."""
        return new in _TRANSITIONS[self]

    def is_active(self) -> bool:
        """True while an instance is doing the run's work (a kill or notice can stop it).

        ``recovering`` is not active: no instance works for the run until the relaunched
        trainer moves it to ``initialization``, so no heartbeat is expected meanwhile.
        """
        return self in _WORKING

    def is_final(self) -> bool:
        """True once the run has stopped for good on its instance (only cleanup remains).

        ``recovering`` is not final: the run will train again, and ``kill`` still applies.
        """
        return self in _STOPS or self is RunStatus.CLEANUP

    def is_recovering(self) -> bool:
        """True while the recovery handler relaunches the run (neither active nor final)."""
        return self is RunStatus.RECOVERING

    def is_terminal(self) -> bool:
        """True for the last status a state file can hold."""
        return self is RunStatus.CLEANUP

    def next_phase(self) -> RunStatus | None:
        """The normal successor of a working phase, ``None`` otherwise."""
        return _NEXT.get(self)


_WORKING = (
    RunStatus.INITIALIZATION,
    RunStatus.DATA_SYNC,
    RunStatus.TRAINING,
    RunStatus.RESULTS_SYNC,
)
_NEXT = {
    RunStatus.INITIALIZATION: RunStatus.DATA_SYNC,
    RunStatus.DATA_SYNC: RunStatus.TRAINING,
    RunStatus.TRAINING: RunStatus.RESULTS_SYNC,
    RunStatus.RESULTS_SYNC: RunStatus.CLEANUP,
}
_STOPS = frozenset({RunStatus.FAILED, RunStatus.KILLED, RunStatus.INTERRUPTED})
_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    **{s: frozenset({_NEXT[s], RunStatus.RECOVERING}) | _STOPS for s in _WORKING},
    RunStatus.FAILED: frozenset({RunStatus.CLEANUP}),
    RunStatus.KILLED: frozenset({RunStatus.CLEANUP}),
    RunStatus.INTERRUPTED: frozenset({RunStatus.CLEANUP, RunStatus.RECOVERING, RunStatus.FAILED}),
    RunStatus.RECOVERING: frozenset({RunStatus.INITIALIZATION, RunStatus.FAILED, RunStatus.KILLED}),
    RunStatus.CLEANUP: frozenset(),
}


class Phase(StrEnum):
    """A phase of training.json (``phases[].name``), each run under one :class:`RunStatus`.

    The state file holds the coarse status; training.json records the finer phases::

        preflight                          initialization
        data_sync                          data_sync
        training                           training
        evaluation, results_sync, finalize results_sync
        cleanup                            cleanup

    A phase named like a status runs under that status; the driver moves the state
    file to :attr:`run_status` before the phase starts, so the two never disagree.
    """

    PREFLIGHT = "preflight"
    DATA_SYNC = "data_sync"
    TRAINING = "training"
    EVALUATION = "evaluation"
    RESULTS_SYNC = "results_sync"
    FINALIZE = "finalize"
    CLEANUP = "cleanup"

    @property
    def run_status(self) -> RunStatus:
        """The status the state file holds while this phase runs."""
        return _PHASE_STATUS.get(self) or RunStatus(self.value)


_PHASE_STATUS = {
    Phase.PREFLIGHT: RunStatus.INITIALIZATION,
    Phase.EVALUATION: RunStatus.RESULTS_SYNC,
    Phase.FINALIZE: RunStatus.RESULTS_SYNC,
}


class CompletionStatus(StrEnum):
    """How a run ended, as written in training.json and the sentinel."""

    NORMAL = "normal"
    INTERRUPTED = "interrupted"
    KILLED = "killed"
    FAILED = "failed"

    @classmethod
    def from_status(cls, status: RunStatus) -> CompletionStatus:
        """The completion status a run that stopped in ``status`` ends with."""
        return {
            RunStatus.FAILED: cls.FAILED,
            RunStatus.KILLED: cls.KILLED,
            RunStatus.INTERRUPTED: cls.INTERRUPTED,
        }.get(status, cls.NORMAL)


class SentinelStatus(StrEnum):
    """The finalization outcome a sentinel records (schema ``sentinel``, ``status``)."""

    SUCCESS = "success"  # _SUCCESS: every artifact and training.json are in S3
    FAILED_UPLOAD = "failed_upload"  # _FAILED_UPLOAD: an upload failed after every retry


class ErrorClass(StrEnum):
    """How an error is handled: retried, fatal to the run, or logged during cleanup."""

    RETRIABLE = "retriable"
    TERMINAL = "terminal"
    CLEANUP = "cleanup"


class Severity(StrEnum):
    """How loud an error record is."""

    CRITICAL = "critical"
    WARNING = "warning"
    INFO = "info"


class Market(StrEnum):
    """How the instance is bought."""

    SPOT = "spot"
    ON_DEMAND = "on-demand"


class FinetuneMode(StrEnum):
    """Which weights are trained."""

    FULL = "full"
    LORA = "lora"
