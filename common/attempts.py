"""A run's attempts, refused placements and recovery claim inside the state file.

Pure edits of a system-state document (schema ``system-state``), applied by
:class:`common.state_store.StateStore` under its conditional writes:

- ``attempts``: one entry per instance the run ran on (``attempt`` 1 is the launch,
  each relaunch adds one), with how it ended (:class:`AttemptEnd`).
- ``refused``: every placement RunInstances refused, with the attempt it was for.
- ``recovery``: the recovery handler's claim while the run is ``recovering``.
- ``recoveries`` counts the relaunches claimed; ``max_recoveries`` bounds them.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from common.status import RunStatus
from common.timeutil import parse_iso

Doc = dict[str, Any]

# A ``recovering`` claim with no instance recorded this long may be claimed again by the
# handler's schedule (``rate(5 minutes)``): its handler died, or every placement was refused.
STALE_CLAIM_S = 300.0
# ``monitor`` and ``verify`` call a recovering lock healthy this long after its claim: the stale
# threshold plus one schedule period, by when the schedule has claimed it again if it could.
CLAIM_GRACE_S = STALE_CLAIM_S + 300.0


class AttemptEnd(StrEnum):
    """How one attempt (one instance) ended (``attempts[].end``)."""

    INTERRUPTED = "interrupted"  # a spot interruption; the trainer checkpointed and stopped
    VANISHED = "vanished"  # the instance went away while the run was working
    COMPLETED = "completed"
    FAILED = "failed"
    KILLED = "killed"
    MAX_RUNTIME_EXCEEDED = "max_runtime_exceeded"
    HEARTBEAT_LOST = "heartbeat_lost"


class Trigger(StrEnum):
    """What made the recovery handler claim a run (``recovery.trigger``)."""

    SPOT_WARNING = "spot-warning"
    INSTANCE_ENDED = "instance-ended"
    SCHEDULE = "schedule"


def new_attempt(
    *,
    attempt: int,
    instance_id: str,
    instance_type: str,
    market: str,
    availability_zone: str,
    price_per_hour: float | None,
    price_source: str,
    launched_at: str,
) -> Doc:
    """One ``attempts[]`` entry for an instance just launched (not ended, no notice)."""
    return {
        "attempt": attempt,
        "instance_id": instance_id,
        "instance_type": instance_type,
        "market": market,
        "availability_zone": availability_zone,
        "price_per_hour": price_per_hour,
        "price_source": price_source,
        "launched_at": launched_at,
        "ended_at": None,
        "end": None,
        "notice_at": None,
    }


def policy(*, max_recoveries: int, max_runtime_minutes: int | None) -> Doc:
    """The state fields the recovery handler decides by (merge into ``new_state``'s document).

    Args:
        max_recoveries: the spec's ``instance.max_recoveries`` (0: never relaunch).
        max_runtime_minutes: the spec's max runtime per instance (``None``: not recorded).
    """
    fields: Doc = {"recoveries": 0, "max_recoveries": int(max_recoveries)}
    if max_runtime_minutes is not None:
        fields["max_runtime_minutes"] = int(max_runtime_minutes)
    return fields


def current_attempt(doc: Doc) -> Doc | None:
    """The newest ``attempts[]`` entry, or ``None`` when none was recorded."""
    attempts = doc.get("attempts") or []
    return attempts[-1] if attempts else None


def claim_age_s(doc: Doc, now: datetime) -> float | None:
    """Seconds since the handler claimed the run; ``None`` unless the run is ``recovering``."""
    claimed_at = (doc.get("recovery") or {}).get("claimed_at")
    if doc["status"] != RunStatus.RECOVERING.value or not claimed_at:
        return None
    return (now - parse_iso(claimed_at)).total_seconds()


def recovering_in_grace(doc: Doc, now: datetime) -> bool:
    """True for a ``recovering`` run within :data:`CLAIM_GRACE_S` of its claim: not stale."""
    age = claim_age_s(doc, now)
    return age is not None and age <= CLAIM_GRACE_S


def exhausted_reason(interruptions: int, max_recoveries: int) -> str:
    """The reason a run that may not be relaunched again is ended ``failed`` with."""
    return f"interrupted {interruptions} times; max_recoveries is {max_recoveries}"


def is_relaunch_claim(doc: Doc) -> bool:
    """True when claiming ``doc`` starts a new recovery (not a re-claim of a stale one).

    A ``recovering`` run with no instance recorded is a claim whose relaunch did not
    finish: claiming it again continues that recovery. Any other claim (a working or
    ``interrupted`` run, or a ``recovering`` one whose relaunched instance died) is a new one.
    """
    return not (doc["status"] == RunStatus.RECOVERING.value and doc.get("instance_id") is None)


def claim(doc: Doc, *, trigger: Trigger | str, event_id: str, now: str) -> Doc:
    """``doc`` claimed for recovery at ``now``: status ``recovering``, the claim recorded.

    A new recovery ends the current attempt (``interrupted`` when the trainer said so,
    ``vanished`` otherwise), counts one more in ``recoveries`` and forgets the instance
    id (the relaunch records the next one). A re-claim only renews the claim.
    The caller checks the transition is legal.
    """
    trigger = Trigger(trigger)
    prior = doc.get("recovery") or {}
    if is_relaunch_claim(doc):
        was_interrupted = doc["status"] == RunStatus.INTERRUPTED.value
        end_current(doc, AttemptEnd.INTERRUPTED if was_interrupted else AttemptEnd.VANISHED, now)
        doc["recoveries"] = int(doc.get("recoveries", 0)) + 1
        doc["instance_id"] = None
        tries = 1
        doc["status"] = RunStatus.RECOVERING.value
        doc["history"].append({"status": RunStatus.RECOVERING.value, "at": now, "reason": trigger.value})
    else:
        tries = int(prior.get("tries", 1)) + 1
    doc["recovery"] = {"claimed_at": now, "trigger": trigger.value, "event_id": event_id, "tries": tries}
    doc["heartbeat_at"] = now
    return doc


def add_attempt(doc: Doc, attempt: Doc) -> Doc:
    """``attempt`` appended; the state's instance fields and ``attempt`` now name it."""
    doc.setdefault("attempts", []).append(dict(attempt))
    doc["attempt"] = int(attempt["attempt"])
    doc["instance_id"] = attempt["instance_id"]
    doc["instance_type"] = attempt["instance_type"]
    doc["availability_zone"] = attempt["availability_zone"]
    doc["market"] = attempt["market"]
    doc["price_per_hour"] = attempt["price_per_hour"]
    return doc


def end_current(doc: Doc, end: AttemptEnd | str, at: str) -> Doc:
    """The current attempt ended ``end`` at ``at`` (an attempt already ended is kept as it is)."""
    end = AttemptEnd(end)
    current = current_attempt(doc)
    if current is not None and current["ended_at"] is None:
        current["ended_at"], current["end"] = at, end.value
    return doc


def note_notice(doc: Doc, at: str) -> Doc:
    """The current attempt got its interruption notice at ``at`` (the first one counts)."""
    current = current_attempt(doc)
    if current is not None and current["notice_at"] is None:
        current["notice_at"] = at
    return doc


def add_refused(doc: Doc, refused: list[Doc]) -> Doc:
    """Each refused placement appended to ``refused``."""
    doc.setdefault("refused", []).extend(dict(r) for r in refused)
    return doc
