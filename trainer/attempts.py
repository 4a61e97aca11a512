"""This attempt of a run: its recovery policy, how it ends, and what the last interruption cost.

A run may train on several instances, one *attempt* each (the state file's ``attempts``):
the launch is attempt 1 and every relaunch by the recovery handler (``recovery/``) adds
one. The trainer side of that:

- :class:`Policy`: the state's ``recoveries`` and ``max_recoveries``. A run stopped by a
  spot notice or an OS shutdown (:data:`RECOVERABLE`) ends ``interrupted`` and keeps its
  lock while recoveries are left, so the handler can claim it; once they are spent it
  ends ``failed`` ("interrupted N times; max_recoveries is M"). ``max_recoveries = 0``
  (or a state without it) releases the lock as before: ``invoke launch --resume`` by hand.
- :func:`attempt_end`: the state's ``attempts[].end`` of how this attempt ended.
- :func:`interruption`: the latency of the interruption this attempt resumes from
  (notice -> checkpoint durable in S3 -> replacement launched -> first resumed step)
  and the steps lost, from the state's attempts and this attempt's first step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from common.attempts import exhausted_reason
from common.status import CompletionStatus

# Stop sources a relaunch recovers from: a spot notice, and an OS shutdown (SIGTERM) of an
# instance that went away. Max runtime and kill are never recovered.
RECOVERABLE = frozenset({"spot", "signal"})
_ENDS = {
    CompletionStatus.NORMAL: "completed",
    CompletionStatus.FAILED: "failed",
    CompletionStatus.KILLED: "killed",
    CompletionStatus.INTERRUPTED: "interrupted",
}


@dataclass(kw_only=True)
class AttemptFacts:
    """What this attempt learns about itself while it runs (filled by the phases).

    Attributes:
        number: the state's ``attempt`` (1 = the launch).
        resumed_recovery: this instance was launched by the recovery handler (state ``recovering``).
        step_reached: the step the interrupted attempt had reached (its last heartbeat).
        earlier_interruptions: ``interruptions`` of the previous attempt's training.json.
        checkpoint_durable_at: when the checkpoint this attempt resumed from was complete in S3.
        first_step_at: when this attempt finished its first training step.
        notice_at: when this attempt saw its spot interruption notice.
        foreign: the run recovers on another instance: this one powers off, touching nothing.
    """

    number: int = 1
    resumed_recovery: bool = False
    step_reached: int | None = None
    earlier_interruptions: list[dict[str, Any]] = field(default_factory=list)
    checkpoint_durable_at: str | None = None
    first_step_at: str | None = None
    notice_at: str | None = None
    foreign: bool = False


@dataclass(frozen=True, kw_only=True)
class Policy:
    """A run's recovery policy as its state file holds it."""

    recoveries: int = 0
    max_recoveries: int = 0

    @classmethod
    def of(cls, doc: dict[str, Any] | None) -> Policy:
        """The policy in a state document (none recorded: no recovery)."""
        doc = doc or {}
        return cls(
            recoveries=int(doc.get("recoveries") or 0), max_recoveries=int(doc.get("max_recoveries") or 0)
        )

    @property
    def may_recover(self) -> bool:
        """True when the handler may relaunch the run once more."""
        return self.recoveries < self.max_recoveries

    @property
    def exhausted(self) -> bool:
        """True when recovery is on and every relaunch is spent."""
        return self.max_recoveries > 0 and not self.may_recover

    def exhausted_reason(self) -> str:
        """Why a run past its max_recoveries failed (this interruption counted)."""
        return exhausted_reason(self.recoveries + 1, self.max_recoveries)


def attempt_end(completion: CompletionStatus, source: str | None) -> str:
    """``attempts[].end`` of an attempt that ended with ``completion`` (stopped by ``source``)."""
    if completion is CompletionStatus.INTERRUPTED and source == "max_runtime":
        return "max_runtime_exceeded"
    return _ENDS[completion]


def interruption(
    attempts: list[dict[str, Any]],
    *,
    attempt: int,
    checkpoint_durable_at: str | None,
    first_resumed_step_at: str | None,
    step_reached: int | None,
    resumed_from_step: int | None,
) -> dict[str, Any] | None:
    """The interruption that attempt ``attempt`` resumes from (``None`` for the first attempt).

    Args:
        attempts: the state file's ``attempts``.
        attempt: this attempt's number.
        checkpoint_durable_at: when the checkpoint it resumed from was complete in S3.
        first_resumed_step_at: when this attempt finished its first step.
        step_reached: the step the interrupted attempt had reached (its last heartbeat).
        resumed_from_step: the checkpoint step this attempt started from (``None``: from 0).
    """
    by_number = {int(a["attempt"]): a for a in attempts}
    previous, current = by_number.get(attempt - 1), by_number.get(attempt)
    if previous is None or current is None:
        return None
    start = resumed_from_step or 0
    lost = None if step_reached is None else max(0, int(step_reached) - start)
    return {
        "attempt": attempt - 1,
        "notice_at": previous.get("notice_at"),
        "checkpoint_durable_at": checkpoint_durable_at,
        "replacement_launched_at": current.get("launched_at"),
        "first_resumed_step_at": first_resumed_step_at,
        "steps_lost": lost,
    }


def merge_interruptions(earlier: list[dict[str, Any]], latest: dict[str, Any] | None) -> list[dict[str, Any]]:
    """The run's interruptions: those the previous attempts recorded, then ``latest`` (once)."""
    out = [dict(i) for i in earlier if latest is None or i.get("attempt") != latest["attempt"]]
    if latest is not None:
        out.append(latest)
    return sorted(out, key=lambda i: int(i.get("attempt") or 0))
