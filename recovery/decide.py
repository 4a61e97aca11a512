"""What the handler does about one run: a pure decision on its state document and its instance.

:func:`decide` answers one :class:`Decision` per delivery and run, from the state
document, the run's instance as the listing saw it, the event and the clock. It never
acts; ``recovery.actions`` does, and a conditional write that loses sends the handler
back here with the newer document.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from common.attempts import STALE_CLAIM_S, AttemptEnd, current_attempt, exhausted_reason
from common.ec2 import is_gone
from common.staleness import STALENESS, StalenessPolicy
from common.status import RunStatus
from common.timeutil import parse_iso
from recovery.cloud import InstanceInfo
from recovery.events import Event, EventKind

Doc = dict[str, Any]


@dataclass(frozen=True, kw_only=True)
class RecoveryPolicy:
    """The handler's thresholds.

    Attributes:
        stale_claim_s: a ``recovering`` claim with no instance recorded this long may be
            re-claimed by the schedule (its handler died or every placement was refused).
        interrupted_grace_s: how long an ``interrupted`` run's instance may stay up (it
            uploads, then powers off) before the handler terminates it and relaunches.
        listing_grace_s: an instance launched this recently may be missing from a listing
            (EC2's eventual consistency) without counting as gone.
        runtime_margin_minutes: added to the run's max runtime before the handler
            terminates an instance (the trainer's own finalize needs the time).
        max_claim_tries: claims of one recovery (each a round of every placement) before
            the run ends ``failed`` for want of capacity.
        default_max_recoveries: for a state document that does not say (launched before
            recovery existed): 0, never relaunch.
        staleness: the heartbeat threshold (``common.staleness``).
    """

    stale_claim_s: float = STALE_CLAIM_S
    interrupted_grace_s: float = 300.0
    listing_grace_s: float = 300.0
    runtime_margin_minutes: int = 15
    max_claim_tries: int = 6
    default_max_recoveries: int = 0
    staleness: StalenessPolicy = STALENESS


class Verdict(StrEnum):
    NOTHING = "nothing"  # healthy, finished, killed, or another delivery has it
    NOTE = "note"  # record the spot notice; the trainer checkpoints and stops
    RELAUNCH = "relaunch"  # claim, then launch the next attempt
    FAIL = "fail"  # end the run failed, terminate its instance, release the lock
    RELEASE = "release"  # a final run whose instance died before its cleanup removed the lock


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What to do, why, and for :attr:`Verdict.FAIL` how the attempt ended."""

    verdict: Verdict
    reason: str
    end: AttemptEnd | None = None
    terminate: str | None = None  # an instance still up that must go first


def _nothing(reason: str) -> Decision:
    return Decision(verdict=Verdict.NOTHING, reason=reason)


def _age_s(now: datetime, stamp: str | None) -> float:
    return (now - parse_iso(stamp)).total_seconds() if stamp else float("inf")


def instance_gone(
    doc: Doc, instance: InstanceInfo | None, event: Event, now: datetime, policy: RecoveryPolicy
) -> bool:
    """True when the run's recorded instance no longer runs the trainer."""
    iid = doc.get("instance_id")
    if iid is None:
        return False
    if event.kind is EventKind.INSTANCE_ENDED and event.instance_id == iid:
        return True  # the event is newer than any listing
    if instance is not None:
        return is_gone(instance.state)
    attempt = current_attempt(doc)
    launched = attempt["launched_at"] if attempt and attempt["instance_id"] == iid else doc.get("started_at")
    return _age_s(now, launched) > policy.listing_grace_s


def _limits(
    doc: Doc, instance: InstanceInfo | None, now: datetime, policy: RecoveryPolicy
) -> Decision | None:
    """The hard limits of a run whose instance is up: max runtime, then a lost heartbeat."""
    iid = doc.get("instance_id")
    limit = doc.get("max_runtime_minutes")
    if instance is not None and instance.launched_at is not None and limit is not None:
        ran = now - instance.launched_at
        if ran > timedelta(minutes=int(limit) + policy.runtime_margin_minutes):
            return Decision(
                verdict=Verdict.FAIL,
                reason=f"max_runtime_exceeded: instance {iid} ran {ran.total_seconds() / 60:.0f} min; "
                f"max_runtime is {limit} min",
                end=AttemptEnd.MAX_RUNTIME_EXCEEDED,
                terminate=iid,
            )
    age = _age_s(now, doc.get("heartbeat_at"))
    if doc["status"] == RunStatus.TRAINING.value and policy.staleness.heartbeat_stale(age):
        return Decision(
            verdict=Verdict.FAIL,
            reason=f"heartbeat_lost: no heartbeat from instance {iid} for {age:.0f} s while training",
            end=AttemptEnd.HEARTBEAT_LOST,
            terminate=iid,
        )
    return None


def _relaunch_or_fail(
    doc: Doc, why: str, policy: RecoveryPolicy, *, terminate: str | None = None
) -> Decision:
    """Relaunch, unless the run has used its ``max_recoveries``."""
    interrupted = doc["status"] == RunStatus.INTERRUPTED.value
    end = AttemptEnd.INTERRUPTED if interrupted else AttemptEnd.VANISHED
    allowed = int(doc.get("max_recoveries", policy.default_max_recoveries))
    done = int(doc.get("recoveries", 0))
    if done >= allowed:
        return Decision(
            verdict=Verdict.FAIL,
            reason=f"{why}; {exhausted_reason(done + 1, allowed)}",
            end=end,
            terminate=terminate,
        )
    return Decision(verdict=Verdict.RELAUNCH, reason=why, end=end, terminate=terminate)


def _recovering(
    doc: Doc, gone: bool, alive: bool, event: Event, now: datetime, policy: RecoveryPolicy
) -> Decision:
    iid = doc.get("instance_id")
    if iid is None:
        claimed_at = (doc.get("recovery") or {}).get("claimed_at")
        if event.kind is EventKind.SCHEDULE and _age_s(now, claimed_at) > policy.stale_claim_s:
            return Decision(
                verdict=Verdict.RELAUNCH, reason=f"the claim of {claimed_at} went stale; claiming again"
            )
        return _nothing(f"another delivery claimed the recovery at {claimed_at}")
    if gone:
        return _relaunch_or_fail(doc, f"relaunched instance {iid} ended before its trainer started", policy)
    return _nothing(
        f"relaunched on {iid}; waiting for its trainer" if alive else f"waiting for {iid} to show"
    )


def _orphaned_lock(
    doc: Doc,
    status: RunStatus,
    instance: InstanceInfo | None,
    event: Event,
    now: datetime,
    policy: RecoveryPolicy,
) -> Decision:
    """A ``cleanup`` or ``failed`` lock: its own cleanup removes it, unless the instance died first.

    The trainer removes the lock right after it writes ``cleanup`` and before it powers off,
    and cleans up right after ``failed``; an instance gone with the lock still there (SIGKILL,
    terminated from outside) leaves a lock nobody else removes, which blocks the env. Its records
    are final (``cleanup``: finalize is done; ``failed``: the run will not train again), so the
    handler releases it.
    """
    iid = doc.get("instance_id")
    if not instance_gone(doc, instance, event, now, policy):
        return _nothing(f"the run is {status.value}: its own cleanup on {iid} ends it")
    return Decision(
        verdict=Verdict.RELEASE,
        reason=f"instance {iid} is gone but the run's lock was still held ({status.value}): "
        "its cleanup never finished; the lock is released",
    )


def decide(
    doc: Doc, *, instance: InstanceInfo | None, event: Event, now: datetime, policy: RecoveryPolicy
) -> Decision:
    """The decision for the run in ``doc`` on this delivery.

    Args:
        doc: the state document as just read.
        instance: the run's recorded instance as the listing saw it (``None``: not listed).
        event: the delivery.
        now: the handler's clock.
    """
    status = RunStatus(doc["status"])
    iid = doc.get("instance_id")
    if status in (RunStatus.CLEANUP, RunStatus.FAILED) and iid is not None:
        return _orphaned_lock(doc, status, instance, event, now, policy)
    if status.is_final() and status is not RunStatus.INTERRUPTED:
        return _nothing(f"the run is {status.value}: its own cleanup (or kill) ends it")
    if event.instance_id not in (None, iid) and status.is_active():  # an older attempt's instance
        return _nothing(f"the event is about {event.instance_id}; the run's instance is {iid}")
    gone = instance_gone(doc, instance, event, now, policy)
    alive = iid is not None and instance is not None and not gone
    if alive and (limit := _limits(doc, instance, now, policy)) is not None:
        return limit
    if status.is_active():
        if iid is None:
            return _nothing("the launch has not recorded an instance yet")
        if not gone:
            if event.kind is EventKind.SPOT_WARNING:
                return Decision(verdict=Verdict.NOTE, reason=f"spot interruption notice for {iid}")
            return _nothing(f"healthy on {iid}")
        return _relaunch_or_fail(doc, f"instance {iid} vanished while {status.value}", policy)
    if status is RunStatus.INTERRUPTED:
        if alive and _age_s(now, doc.get("updated_at")) <= policy.interrupted_grace_s:
            return _nothing(f"interrupted; waiting for {iid} to power off")
        return _relaunch_or_fail(doc, f"interrupted on {iid}", policy, terminate=iid if alive else None)
    return _recovering(doc, gone, alive, event, now, policy)
