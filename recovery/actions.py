"""What the handler does once it has decided: relaunch a run, or end it ``failed``.

Every state write that acts on a decision is conditional on the document decided on
(``StateStore.claim_recovery`` / ``update_once``): a :class:`ConflictError` or
:class:`IllegalTransitionError` sends the handler back to decide on the newer document,
before anything was launched or terminated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common import attempts as att
from common.cleanup_status import ActionStatus, CleanupLog, confirmed_terminated, describe
from common.errors import CorruptStateError
from common.layout import RunPaths
from common.placement import LaunchRequest, Placement, Refusal, refusal
from common.state_doc import Snapshot, apply_transition
from common.state_store import ClaimLostError, ConflictError, NotHeldError, StateStore
from common.status import Market, RunStatus
from common.timeutil import Clock, iso
from recovery.cloud import Cloud, Refused
from recovery.decide import Decision, RecoveryPolicy, Verdict
from recovery.events import Event
from schemas import SchemaValidationError

log = logging.getLogger(__name__)

AWS_ERRORS = (ClientError, BotoCoreError)


class Action(StrEnum):
    """What the handler did about one run (or instance)."""

    NOTHING = "nothing"
    NOTED = "noted"  # the spot notice recorded on the attempt
    RELAUNCHED = "relaunched"
    RETRY_LATER = "retry_later"  # every placement refused for capacity; the schedule tries again
    FAILED = "failed"  # the run ended failed, its instance terminated, the lock released
    TERMINATED = "terminated"  # an instance terminated without a run to end (lost race, orphan)
    RELEASED = "released"  # the lock of a final run whose instance died before its cleanup


@dataclass(frozen=True, kw_only=True)
class Outcome:
    """One thing the handler did (or decided not to do), for the log and the tests."""

    env: str
    run_id: str | None
    action: Action
    reason: str
    instance_id: str | None = None


@dataclass(frozen=True, kw_only=True)
class Context:
    """One delivery's world: the event, the port, the clock, the policy, one env's store."""

    event: Event
    cloud: Cloud
    clock: Clock
    policy: RecoveryPolicy
    env: str
    store: StateStore

    def now(self) -> str:
        return iso(self.clock())

    def outcome(
        self, run_id: str | None, action: Action, reason: str, instance_id: str | None = None
    ) -> Outcome:
        log.info("%s run %s: %s (%s)", self.env, run_id, action.value, reason)
        return Outcome(env=self.env, run_id=run_id, action=action, reason=reason, instance_id=instance_id)


def note(ctx: Context, snap: Snapshot, decision: Decision) -> Outcome:
    """Record the interruption notice on the current attempt."""
    ctx.store.note_notice(snap.run_id, ctx.event.at)
    return ctx.outcome(snap.run_id, Action.NOTED, decision.reason, snap.doc.get("instance_id"))


# -- failing -------------------------------------------------------------------
def fail(ctx: Context, snap: Snapshot, decision: Decision) -> Outcome:
    """End the run ``failed`` (conditional on ``snap``), terminate its instance, release, report.

    Raises:
        ConflictError / IllegalTransitionError: the state changed since ``snap``: decide again.
    """
    run_id, iid, now = snap.run_id, snap.doc.get("instance_id"), ctx.now()

    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        if decision.end is not None:
            att.end_current(doc, decision.end, now)
        return apply_transition(doc, RunStatus.FAILED, reason=decision.reason[:500], now=now)

    failed = ctx.store.update_once(snap, mutate)
    cleanup = CleanupLog(run_id=run_id, instance_id=iid, written_by="recovery", clock=ctx.clock)
    if decision.terminate:
        _terminate(ctx, decision.terminate, cleanup)
    released = _release(ctx, run_id, cleanup)
    _write_cleanup_status(ctx, run_id, cleanup, released, reason=decision.reason)
    ctx.cloud.publish(
        "failed",
        topic_arn=failed.doc.get("notify_topic_arn"),
        run_id=run_id,
        env=ctx.env,
        reason=decision.reason,
        attempt=failed.doc.get("attempt"),
        step=failed.doc["progress"]["step"],
    )
    return ctx.outcome(run_id, Action.FAILED, decision.reason, iid)


def release(ctx: Context, snap: Snapshot, decision: Decision) -> Outcome:
    """Remove the lock of a final run whose instance died before its cleanup did, and say so.

    Raises:
        ConflictError / NotHeldError: the state changed since ``snap``: decide again.
    """
    run_id, iid = snap.run_id, snap.doc.get("instance_id")
    cleanup = CleanupLog(run_id=run_id, instance_id=iid, written_by="recovery", clock=ctx.clock)
    released = _release(ctx, run_id, cleanup)
    _write_cleanup_status(ctx, run_id, cleanup, released)
    return ctx.outcome(run_id, Action.RELEASED, decision.reason, iid)


def _terminate(ctx: Context, instance_id: str, cleanup: CleanupLog) -> None:
    try:
        ctx.cloud.terminate(instance_id)
    except AWS_ERRORS as exc:
        log.warning("could not terminate %s: %s", instance_id, exc)
        cleanup.record(instance_id, "terminate", ActionStatus.FAILED, describe(exc))
        return
    # Succeeded only once a describe shows it ended (records say only what was observed); the
    # handler does not wait: right after the call EC2 shows shutting-down, so it is requested.
    try:
        seen = ctx.cloud.instance_state(instance_id)
    except AWS_ERRORS as exc:
        seen = f"unknown ({describe(exc)})"
    status = ActionStatus.SUCCEEDED if confirmed_terminated(seen) else ActionStatus.REQUESTED
    cleanup.record(instance_id, "terminate", status, observed=f"DescribeInstances: {seen}")


def _release(ctx: Context, run_id: str, cleanup: CleanupLog) -> bool:
    try:
        released = ctx.store.release(run_id)
    except (NotHeldError, *AWS_ERRORS) as exc:
        cleanup.record(ctx.store.location, "delete", ActionStatus.FAILED, str(exc))
        return False
    if not released:
        cleanup.record(ctx.store.location, "delete", ActionStatus.SKIPPED, "already removed")
        return True
    # succeeded only once a read after the delete finds the file gone (or another run's lock)
    try:
        after = ctx.store.read()
        seen = "gone" if after is None else f"run {after.run_id} ({after.doc['status']})"
    except (CorruptStateError, *AWS_ERRORS) as exc:
        seen = f"unreadable ({exc})"
    gone = seen == "gone" or (seen.startswith("run ") and not seen.startswith(f"run {run_id} "))
    status = ActionStatus.SUCCEEDED if gone else ActionStatus.REQUESTED
    cleanup.record(ctx.store.location, "delete", status, observed=f"GetObject after the delete: {seen}")
    return gone


def _write_cleanup_status(
    ctx: Context, run_id: str, cleanup: CleanupLog, released: bool, *, reason: str | None = None
) -> None:
    """cleanup_status.json, unless one already says the state file is gone.

    An interrupted trainer that left the lock for the handler wrote one saying the state
    file stayed; the handler's release makes that stale, so its own replaces it.
    """
    key = RunPaths(env=ctx.env, run_id=run_id).cleanup_status
    try:
        if (ctx.cloud.read_json(key) or {}).get("state_file_removed"):
            return
        checked = ctx.cloud.verification(ctx.env, checked_at=ctx.now())
        doc = cleanup.document(verification=checked, state_file_removed=released, reason=reason)
        ctx.cloud.write_json(key, doc)
    except AWS_ERRORS as exc:
        log.warning("could not write %s: %s", key, exc)


# -- relaunching ---------------------------------------------------------------
def relaunch(ctx: Context, snap: Snapshot, decision: Decision) -> Outcome:
    """Claim the run (conditional on ``snap``), then launch its next attempt.

    Raises:
        ConflictError / IllegalTransitionError: another writer won the claim: decide again.
    """
    if decision.terminate:  # an interrupted instance that overstayed its grace
        ctx.cloud.terminate(decision.terminate)
    avoid = [a["availability_zone"] for a in (snap.doc.get("attempts") or [])[-1:]]
    avoid = avoid or [z for z in [snap.doc.get("availability_zone")] if z]
    trigger = ctx.event.kind.trigger
    claimed = ctx.store.claim_recovery(snap, trigger=trigger, event_id=ctx.event.event_id, now=ctx.now())
    run_id, claim = claimed.run_id, claimed.doc["recovery"]
    request = _launch_request(ctx, run_id)
    if request is None:
        return _give_up(
            ctx, claimed, "no launch request stored for the run: relaunch it with invoke launch --resume"
        )
    number = int(claimed.doc.get("attempt", len(claimed.doc.get("attempts") or []) or 1)) + 1
    launched, refused = _try_placements(ctx, request, number, avoid)
    if refused:
        ctx.store.add_refused(run_id, refused)
    if launched is None:
        return _no_capacity(ctx, claimed, refused)
    placement, instance_id, run_request = launched
    attempt = att.new_attempt(
        attempt=number,
        instance_id=instance_id,
        instance_type=placement.instance_type,
        market=placement.market.value,
        availability_zone=placement.availability_zone,
        price_per_hour=_price(ctx, placement),
        price_source=_price_source(ctx, placement),
        launched_at=ctx.now(),
    )
    try:
        recorded = ctx.store.add_attempt(run_id, attempt, claim=claim)
    except (ClaimLostError, NotHeldError, ConflictError) as exc:  # killed, released, or unwritable
        ctx.cloud.terminate(instance_id)
        return ctx.outcome(
            run_id, Action.TERMINATED, f"launched {instance_id} but {exc}: terminated it", instance_id
        )
    ctx.cloud.after_launch(instance_id, run_request)
    ctx.cloud.publish(
        "recovered",
        topic_arn=recorded.doc.get("notify_topic_arn"),
        run_id=run_id,
        env=ctx.env,
        reason=f"{decision.reason}; attempt {number} on {placement.label}",
        attempt=number,
        step=recorded.doc["progress"].get("last_checkpoint_step") or recorded.doc["progress"]["step"],
    )
    return ctx.outcome(
        run_id, Action.RELAUNCHED, f"{decision.reason}; attempt {number} on {placement.label}", instance_id
    )


def _launch_request(ctx: Context, run_id: str) -> LaunchRequest | None:
    key = RunPaths(env=ctx.env, run_id=run_id).launch_request
    doc = ctx.cloud.read_json(key)
    if doc is None:
        return None
    try:
        return LaunchRequest.from_dict(doc, source=key)
    except SchemaValidationError as exc:
        log.error("%s is not a launch request: %s", key, exc)
        return None


def _try_placements(
    ctx: Context, request: LaunchRequest, number: int, avoid: list[str]
) -> tuple[tuple[Placement, str, dict[str, Any]] | None, list[dict[str, Any]]]:
    """The first placement that launched (interrupted AZ last), and every refusal before it."""
    refused: list[dict[str, Any]] = []
    quota_markets: set[Market] = set()
    for placement, run_request in request.attempts(avoid_azs=avoid):
        if placement.market in quota_markets:
            continue
        try:
            return (placement, ctx.cloud.run_instance(run_request), run_request), refused
        except Refused as exc:
            refused.append(_refusal_entry(ctx, placement, number, exc.code))
            if refusal(exc.code) is Refusal.QUOTA:
                quota_markets.add(placement.market)
    return None, refused


def _refusal_entry(ctx: Context, placement: Placement, number: int, code: str) -> dict[str, Any]:
    return {
        "attempt": number,
        "market": placement.market.value,
        "instance_type": placement.instance_type,
        "availability_zone": placement.availability_zone,
        "code": code,
        "at": ctx.now(),
    }


def _price(ctx: Context, placement: Placement) -> float | None:
    if placement.market is Market.SPOT:
        price = ctx.cloud.spot_price(placement.instance_type, placement.availability_zone)
        if price is not None:
            return price
    return placement.price_per_hour


def _price_source(ctx: Context, placement: Placement) -> str:
    if placement.market is Market.SPOT and placement.price_source == "unknown":
        return "spot-price-history"
    return placement.price_source


def _no_capacity(ctx: Context, claimed: Snapshot, refused: list[dict[str, Any]]) -> Outcome:
    """Every placement refused: the schedule retries a stale claim, until the tries run out."""
    tried = "; ".join(
        f"{r['instance_type']} {r['market']} {r['availability_zone']}: {r['code']}" for r in refused
    )
    quota = [r for r in refused if refusal(r["code"]) is Refusal.QUOTA]
    tries = int(claimed.doc["recovery"].get("tries", 1))
    if quota or tries >= ctx.policy.max_claim_tries:
        why = "a quota refused the relaunch (raise it)" if quota else f"no capacity after {tries} rounds"
        return _give_up(ctx, claimed, f"{why}: tried {tried}")
    return ctx.outcome(claimed.run_id, Action.RETRY_LATER, f"no capacity (round {tries}): tried {tried}")


def _give_up(ctx: Context, claimed: Snapshot, reason: str) -> Outcome:
    """End a claimed run ``failed``: no instance runs for it."""
    fresh = ctx.store.read()
    if fresh is None or fresh.run_id != claimed.run_id or fresh.status is not RunStatus.RECOVERING:
        return ctx.outcome(claimed.run_id, Action.NOTHING, f"{reason}; the run moved on meanwhile")
    return fail(ctx, fresh, Decision(verdict=Verdict.FAIL, reason=reason))
