"""The recovery handler: one delivery in, what it did per run out.

``handle(event, cloud, clock=..., policy=...)`` reads each env's state file the event
concerns, asks ``recovery.decide`` what to do and does it through ``recovery.actions``.
Safe under at-least-once delivery: every act starts with a state write conditional on
the document decided on, so of two deliveries (or an event and the schedule) deciding on
one document exactly one acts; the other re-reads and finds the run claimed.

On the schedule it also sweeps: any instance of a served env older than its run's max
runtime (+ the margin) that is not the lock holder's is terminated (``max_runtime_exceeded``).

AWS Batch's own: the instances Batch launched for a compute environment (``InstanceInfo.batch_host``)
and sweep members (a state with ``batch``; their locks live under ``{env}/sweeps/``, which the
handler never reads) are left to Batch, whose retry strategy reruns a job whose host went away.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from datetime import timedelta

from botocore.exceptions import ClientError

from common.ec2 import is_gone
from common.layout import RunPaths
from common.state_doc import IllegalTransitionError
from common.state_store import ConflictError, NotHeldError
from common.status import CompletionStatus, RunStatus
from common.timeutil import Clock, parse_duration_minutes, utc_now
from recovery import actions
from recovery.actions import Action, Context, Outcome
from recovery.cloud import Cloud, InstanceInfo
from recovery.decide import Decision, RecoveryPolicy, Verdict, decide
from recovery.events import Event, EventKind

log = logging.getLogger(__name__)

MAX_ROUNDS = 5  # decisions per env and delivery: each lost conditional write costs one
_ACT = {
    Verdict.NOTE: actions.note,
    Verdict.RELAUNCH: actions.relaunch,
    Verdict.FAIL: actions.fail,
    Verdict.RELEASE: actions.release,
}


def handle(
    event: Event, cloud: Cloud, *, clock: Clock = utc_now, policy: RecoveryPolicy | None = None
) -> list[Outcome]:
    """Everything this delivery calls for, one :class:`Outcome` per run (and swept instance).

    Raises:
        botocore errors from the cloud (the delivery is retried by EventBridge / Lambda).
    """
    policy = policy or RecoveryPolicy()
    listed = cloud.project_instances()
    if event.instance_id and any(i.batch_host and i.instance_id == event.instance_id for i in listed):
        log.info("%s is an AWS Batch host: Batch's retry strategy owns its jobs", event.instance_id)
        return []
    instances = {i.instance_id: i for i in listed if not i.batch_host}
    outcomes: list[Outcome] = []
    for env in _envs(event, cloud, instances):
        ctx = Context(event=event, cloud=cloud, clock=clock, policy=policy, env=env, store=cloud.store(env))
        outcomes.append(_handle_run(ctx, instances))
        if event.kind is EventKind.SCHEDULE:
            outcomes += _sweep(ctx, instances.values())
    return outcomes


def _envs(event: Event, cloud: Cloud, instances: dict[str, InstanceInfo]) -> list[str]:
    served = cloud.envs()
    if event.env is not None:
        return [event.env] if event.env in served else []
    known = instances.get(event.instance_id or "")
    if known is not None and known.env is not None:
        return [known.env] if known.env in served else []
    return list(served)  # an instance EC2 no longer lists: each env's state file decides


def _handle_run(ctx: Context, instances: dict[str, InstanceInfo]) -> Outcome:
    """Decide and act on the env's run until a decision holds (or the rounds run out)."""
    for _ in range(MAX_ROUNDS):
        snap = ctx.store.read()
        if snap is None:
            return ctx.outcome(None, Action.NOTHING, "no run holds the lock")
        if snap.doc.get("batch"):
            return ctx.outcome(
                snap.run_id, Action.NOTHING, "an AWS Batch job: Batch's retry strategy owns it"
            )
        instance = instances.get(snap.doc.get("instance_id") or "")
        decision = decide(snap.doc, instance=instance, event=ctx.event, now=ctx.clock(), policy=ctx.policy)
        decision = _unless_results_whole(ctx, snap.doc, decision)
        act = _ACT.get(decision.verdict)
        if act is None:
            return ctx.outcome(snap.run_id, Action.NOTHING, decision.reason, snap.doc.get("instance_id"))
        try:
            return act(ctx, snap, decision)
        except (ConflictError, IllegalTransitionError, NotHeldError) as exc:
            log.info("%s: %s; deciding again on the newer state", ctx.env, exc)
    return ctx.outcome(None, Action.NOTHING, f"the state kept changing ({MAX_ROUNDS} rounds); next delivery")


def _unless_results_whole(ctx: Context, doc: dict, decision: Decision) -> Decision:
    """A relaunch of a run whose instance vanished in ``results_sync`` after its finalize wrote a
    normal ``_SUCCESS`` (the sentinel is written last: the results are whole) becomes a release:
    what is left is the cleanup, and a new instance would only find the run finished."""
    if decision.verdict is not Verdict.RELAUNCH or doc["status"] != RunStatus.RESULTS_SYNC.value:
        return decision
    key = RunPaths(env=ctx.env, run_id=doc["run_id"]).success
    try:
        sentinel = ctx.cloud.read_json(key)  # None: absent
    except (ClientError, ValueError) as exc:  # unreadable or not JSON: the relaunch's finalize decides
        log.warning("%s: could not read %s (%s); relaunching", ctx.env, key, exc)
        return decision
    if (sentinel or {}).get("completion_status") != CompletionStatus.NORMAL.value:
        return decision
    return Decision(
        verdict=Verdict.RELEASE,
        reason=f"{decision.reason}, after its finalize wrote {key} (completed): the results are whole; "
        "the lock is released, nothing relaunched",
    )


def _sweep(ctx: Context, instances: Iterable[InstanceInfo]) -> list[Outcome]:
    """Terminate instances of the env, not the lock holder's, older than their run's max runtime."""
    snap = ctx.store.read()
    holder = snap.doc.get("instance_id") if snap is not None else None
    out: list[Outcome] = []
    for inst in instances:
        if inst.env != ctx.env or inst.instance_id == holder or is_gone(inst.state) or not inst.run_id:
            continue
        limit = _max_runtime(ctx, inst.run_id)
        if limit is None or inst.launched_at is None:
            continue
        if ctx.clock() - inst.launched_at > timedelta(minutes=limit + ctx.policy.runtime_margin_minutes):
            ctx.cloud.terminate(inst.instance_id)
            reason = f"max_runtime_exceeded: {inst.instance_id} of run {inst.run_id} is past {limit} min"
            out.append(ctx.outcome(inst.run_id, Action.TERMINATED, reason, inst.instance_id))
    return out


def _max_runtime(ctx: Context, run_id: str) -> int | None:
    """The run's max runtime in minutes, from its stored run spec (``None`` when unknown)."""
    try:
        spec = ctx.cloud.read_json(RunPaths(env=ctx.env, run_id=run_id).run_spec)
    except ValueError:  # a RunId tag that is no run id
        return None
    value = ((spec or {}).get("instance") or {}).get("max_runtime")
    if isinstance(value, int):
        return value
    try:
        return parse_duration_minutes(value) if isinstance(value, str) else None
    except ValueError:
        return None
