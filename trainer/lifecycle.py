"""This attempt in the state file: take back a recovered run, end the attempt, tell the user.

- :func:`resume_recovered` (at startup, before the instance is recorded): a run the recovery
  handler relaunched is ``recovering`` with this instance recorded; it moves back to
  ``initialization`` and data sync restores the newest complete checkpoint, as after
  ``invoke launch --resume``. A ``recovering`` run that names another instance is not this
  instance's to train (:class:`ForeignInstanceError`).
- :func:`plan_ending` (when the run ends): whether an interruption keeps the lock for the
  handler, or ends the run ``failed`` because its recoveries are spent
  (:class:`trainer.attempts.Policy`).
- :func:`end_attempt`: the attempt's end (and notice) in the state's ``attempts``, then
  training.json's ``attempts``, ``refused`` and ``interruptions`` from the state.
- :func:`notify`: one notification (:mod:`common.notify`) at the run's end when the state
  names a ``notify_topic_arn``.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any

import boto3

from common import attempts as common_attempts
from common import notify as notifications
from common.aws import client as make_client
from common.state_doc import Snapshot
from common.status import CompletionStatus, RunStatus
from common.timeutil import iso
from trainer.attempts import RECOVERABLE, Policy, attempt_end, interruption, merge_interruptions
from trainer.context import RunContext
from trainer.errors import CLIENT_CONFIG, TerminalError
from trainer.stopping import BUDGET

log = logging.getLogger(__name__)

RESUME_WAIT_S = 120.0  # the handler records the instance right after RunInstances
RESUME_POLL_S = 2.0
_NOTIFY_KINDS = {
    CompletionStatus.NORMAL: notifications.NotifyKind.SUCCEEDED,
    CompletionStatus.FAILED: notifications.NotifyKind.FAILED,
    CompletionStatus.KILLED: notifications.NotifyKind.KILLED,
}


class ForeignInstanceError(TerminalError):
    """The run is recovering on another instance: this one must not touch it."""


# -- startup -----------------------------------------------------------------------------------
def resume_recovered(ctx: RunContext, instance_id: str) -> None:
    """Take back a run the recovery handler relaunched on this instance (else nothing).

    Raises:
        ForeignInstanceError: the run is recovering on another instance.
        Stopped: the run was killed while it recovered.
    """
    snap = _read(ctx)
    if snap is None or snap.run_id != ctx.opts.run_id:
        return  # identify's set_instance says so
    ctx.attempt.number = int(snap.doc.get("attempt") or 1)
    if snap.status is not RunStatus.RECOVERING:
        return
    snap = _wait_for_instance(ctx, snap, instance_id)
    doc = snap.doc
    ctx.attempt.resumed_recovery = True
    ctx.attempt.step_reached = int((doc.get("progress") or {}).get("step") or 0)
    ctx.attempt.earlier_interruptions = _earlier_interruptions(ctx)
    log.info(
        "attempt %d of run %s: recovered by the handler (%s); the previous attempt reached step %d",
        ctx.attempt.number,
        ctx.opts.run_id,
        (doc.get("recovery") or {}).get("trigger", "?"),
        ctx.attempt.step_reached,
    )
    ctx.state.advance(RunStatus.INITIALIZATION)


def _wait_for_instance(ctx: RunContext, snap: Snapshot, instance_id: str) -> Snapshot:
    """The state once it names this instance (the handler writes it just after RunInstances)."""
    waited = 0.0
    while snap.doc.get("instance_id") != instance_id and not _current_attempt_is(snap.doc, instance_id):
        if waited >= RESUME_WAIT_S or snap.status is not RunStatus.RECOVERING:
            ctx.attempt.foreign = True
            raise ForeignInstanceError(
                f"run {ctx.opts.run_id} is {snap.status.value} on instance {snap.doc.get('instance_id')}, "
                f"not {instance_id}; this instance powers off without touching it",
                component="identify",
            )
        ctx.deps.sleep(RESUME_POLL_S)
        waited += RESUME_POLL_S
        fresh = _read(ctx)
        if fresh is None or fresh.run_id != ctx.opts.run_id:
            ctx.attempt.foreign = True
            raise ForeignInstanceError(
                f"run {ctx.opts.run_id} no longer holds the lock", component="identify"
            )
        snap = fresh
    return snap


def _current_attempt_is(doc: dict[str, Any], instance_id: str) -> bool:
    number = doc.get("attempt")
    return any(
        a.get("attempt") == number and a.get("instance_id") == instance_id for a in doc.get("attempts", [])
    )


def _earlier_interruptions(ctx: RunContext) -> list[dict[str, Any]]:
    """``interruptions`` of the previous attempt's training.json (none when it wrote none)."""
    key = ctx.paths.training_log
    try:
        if not ctx.transfers.exists(key, component="identify"):
            return []
        doc = json.loads(ctx.transfers.get_bytes(key, component="identify"))
    except Exception as exc:  # noqa: BLE001 - the latency record is a nicety; the run goes on
        log.info("previous training.json unreadable (%s): earlier interruptions not carried", exc)
        return []
    found = doc.get("interruptions") if isinstance(doc, dict) else None
    return [dict(i) for i in found] if isinstance(found, list) else []


# -- the end -----------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class EndPlan:
    """How the run ends, once its recovery policy is applied."""

    completion: CompletionStatus
    reason: str | None
    why: str | None
    recoverable: bool = False
    exhausted: bool = False  # failed for max_recoveries: the attempt itself was interrupted
    policy: Policy = Policy()


def plan_ending(
    ctx: RunContext, completion: CompletionStatus, reason: str | None, why: str | None
) -> EndPlan:
    """Apply the recovery policy to an interruption: keep the lock, or fail past max_recoveries."""
    stop = ctx.stops.request
    if completion is not CompletionStatus.INTERRUPTED or stop is None or stop.source not in RECOVERABLE:
        return EndPlan(completion=completion, reason=reason, why=why)
    snap = _read(ctx)
    if snap is None or snap.run_id != ctx.opts.run_id or snap.status is RunStatus.RECOVERING:
        return EndPlan(completion=completion, reason=reason, why=why)  # not ours to decide any more
    policy = Policy.of(snap.doc)
    if policy.exhausted:
        failed = policy.exhausted_reason()
        log.warning("run %s: %s: it fails", ctx.opts.run_id, failed)
        return EndPlan(
            completion=CompletionStatus.FAILED, reason=failed, why=failed, exhausted=True, policy=policy
        )
    return EndPlan(
        completion=completion, reason=reason, why=why, recoverable=policy.may_recover, policy=policy
    )


def keep_lock(snap: Snapshot | None, plan: EndPlan, run_id: str) -> str | None:
    """Why cleanup leaves the state file for the recovery handler; ``None``: release it."""
    if snap is None or snap.run_id != run_id:
        return None
    if snap.status is RunStatus.RECOVERING:
        return "the recovery handler has claimed the run"
    if snap.status is RunStatus.INTERRUPTED and plan.recoverable:
        used, allowed = plan.policy.recoveries, plan.policy.max_recoveries
        return f"left for the recovery handler (recovery {used + 1} of {allowed})"
    return None


def end_attempt(ctx: RunContext, completion: CompletionStatus) -> Snapshot | None:
    """Record how this attempt ended (and its notice) in the state; fill training.json from it.

    Only while the state's current attempt is this instance's: a handler that claimed the
    run meanwhile has ended it already, and a relaunch's attempt is not this one's to end.

    Returns:
        The state now (``None`` when gone or unreadable).
    """
    stop = ctx.stops.request
    end = attempt_end(completion, stop.source if stop else None)
    at, notice_at, instance_id = iso(ctx.deps.clock()), ctx.attempt.notice_at, ctx.instance_id

    def mutate(doc: dict[str, Any]) -> dict[str, Any]:
        current = common_attempts.current_attempt(doc)
        if current is None or current.get("instance_id") != instance_id:
            return doc
        if notice_at is not None:
            common_attempts.note_notice(doc, notice_at)
        return common_attempts.end_current(doc, end, at)

    snap: Snapshot | None = None
    try:
        snap = ctx.state.call(lambda: ctx.store.update(ctx.opts.run_id, mutate))
    except Exception as exc:  # noqa: BLE001 - the run must still finalize and power off
        log.info("attempt end not recorded (%s)", exc)
        snap = _read(ctx)
    if snap is not None and snap.run_id == ctx.opts.run_id:
        fill_record(ctx, snap.doc)
    return snap


def fill_record(ctx: RunContext, doc: dict[str, Any]) -> None:
    """training.json's ``attempts``, ``refused`` and ``interruptions`` from the state document."""
    record, facts = ctx.record, ctx.attempt
    record.attempts = [dict(a) for a in doc.get("attempts", [])]
    record.refused = [dict(r) for r in doc.get("refused", [])]
    latest = None
    if facts.resumed_recovery:
        latest = interruption(
            record.attempts,
            attempt=facts.number,
            checkpoint_durable_at=facts.checkpoint_durable_at,
            first_resumed_step_at=facts.first_step_at,
            step_reached=facts.step_reached,
            resumed_from_step=record.resumed_from_step,
        )
    record.interruptions = merge_interruptions(facts.earlier_interruptions, latest)


def notify(ctx: RunContext, completion: CompletionStatus, reason: str | None, snap: Snapshot | None) -> None:
    """One notification of the run's end (succeeded, failed, killed, budget) when a topic is configured."""
    kind = _NOTIFY_KINDS.get(completion)
    if completion is CompletionStatus.KILLED and (reason or "").startswith(f"{BUDGET}:"):
        kind = notifications.NotifyKind.BUDGET  # a max_cost stop, not a user's kill
    topic = (snap.doc.get("notify_topic_arn") if snap is not None else None) or None
    if kind is None or topic is None:
        return
    metrics = {k: float(v) for k, v in ctx.record.metrics.items() if isinstance(v, int | float)}
    event = notifications.NotifyEvent(
        kind=kind,
        run_id=ctx.opts.run_id,
        env=ctx.opts.env,
        reason=None if kind is notifications.NotifyKind.SUCCEEDED else reason,
        metrics=metrics,
        cost_usd=_cost(ctx),
        attempt=ctx.attempt.number,
        step=ctx.progress.step or None,
    )
    sns = make_client(
        boto3.Session(region_name=ctx.opts.region),
        "sns",
        endpoint_url=ctx.opts.endpoint_url,
        config=CLIENT_CONFIG,
    )
    if notifications.try_publish(sns, topic, event):
        log.info("notification %s published", kind.value)


def _cost(ctx: RunContext) -> float | None:
    ledger = getattr(ctx.record, "ledger", None)
    total = ledger.get("total_usd") if isinstance(ledger, dict) else None
    return float(total) if isinstance(total, int | float) else None


def _read(ctx: RunContext) -> Snapshot | None:
    """The state file now; ``None`` when it is gone or cannot be read (logged)."""
    try:
        return ctx.state.call(ctx.store.read)
    except Exception as exc:  # noqa: BLE001 - the ending must go on: no state is treated as not held
        log.warning("state file unreadable: %s", exc)
        return None
