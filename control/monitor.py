"""Watch a run: phase, progress, loss, ETA, cost, and whether it is healthy.

The state file is polled with conditional GETs (``If-None-Match``): an unchanged
state costs a 304 and no body. Two failure modes are detected and explained:

- a *stale heartbeat* (the trainer beats every 20 s while it trains);
- a *gone instance* (terminated or missing) while the state file still says the
  run is going: the run died without cleaning up, so the lock is stale.

Both thresholds are :data:`common.staleness.STALENESS`, the policy ``verify`` uses.
A DescribeInstances that fails (denied, throttled, unreachable) is never hidden: the view
says ``state unknown: <reason>``, and with the heartbeat also old the run is ``STALE``
(nothing then shows it alive).
When the state file disappears the run has ended and its outcome is read from
the sentinel and ``training.json``. Exit codes are :class:`common.exitcodes.ExitCode`:
an ended run exits as the trainer did (``ExitCode.for_completion``), a stale one
``STALE``, an env without runs ``NO_RUN``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common import layout
from common.attempts import recovering_in_grace
from common.cleanup_status import describe
from common.ec2 import instance_state, is_gone
from common.exitcodes import ExitCode
from common.staleness import STALENESS, Stale, StalenessPolicy
from common.state_doc import Snapshot
from common.state_store import StateStore
from common.status import CompletionStatus, RunStatus
from common.timeutil import Clock, parse_iso, utc_now
from control.backend import Backend, Clients, check_env
from control.runs import RunSummary, live_ledger, read_run, run_ids, volume_gb

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    """Where a watched run stands; everything but ``running`` ends ``--follow``."""

    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    INTERRUPTED = "interrupted"
    STALE = "stale"
    NONE = "none"

    @property
    def exit_code(self) -> ExitCode:
        return EXIT_CODES[self]

    def is_final(self) -> bool:
        return self is not Outcome.RUNNING


EXIT_CODES: dict[Outcome, ExitCode] = {
    Outcome.RUNNING: ExitCode.OK,
    Outcome.SUCCEEDED: ExitCode.for_completion(CompletionStatus.NORMAL),
    Outcome.FAILED: ExitCode.for_completion(CompletionStatus.FAILED),
    Outcome.KILLED: ExitCode.for_completion(CompletionStatus.KILLED),
    Outcome.INTERRUPTED: ExitCode.for_completion(CompletionStatus.INTERRUPTED),
    Outcome.STALE: ExitCode.STALE,
    Outcome.NONE: ExitCode.NO_RUN,
}


@dataclass(frozen=True, kw_only=True)
class MonitorView:
    """One observation of a run."""

    env: str
    outcome: Outcome
    run_id: str | None = None
    status: str | None = None
    step: int | None = None
    total_steps: int | None = None
    loss: float | None = None
    eta_s: float | None = None
    elapsed_s: float | None = None
    cost_usd: float | None = None
    price_per_hour: float | None = None
    instance_id: str | None = None
    instance_type: str | None = None
    instance_state: str | None = None  # EC2's state name; "unknown" when the describe failed
    state_unknown: str | None = None  # "state unknown: <reason>" when it failed
    market: str | None = None
    heartbeat_age_s: float | None = None
    last_error: str | None = None
    advice: str | None = None
    changed: bool = True
    metrics: dict[str, Any] = field(default_factory=dict)
    local: bool = False
    ledger: dict[str, Any] | None = None  # per attempt: so far (live) or in total (ended)
    # validation: the newest and the best fine-tuned WQL, and the base model's (zero-shot, step 0)
    val_wql: float | None = None
    best_val_wql: float | None = None
    best_step: int | None = None
    zero_shot_val_wql: float | None = None
    beats_zero_shot: bool | None = None  # ended runs: training.json's evaluation.beats_zero_shot

    @property
    def attempts(self) -> int | None:
        return len(self.ledger["attempts"]) if self.ledger else None

    @property
    def savings_usd(self) -> float | None:
        return self.ledger["savings_usd"] if self.ledger else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "env": self.env,
            "run_id": self.run_id,
            "outcome": self.outcome.value,
            "status": self.status,
            "step": self.step,
            "total_steps": self.total_steps,
            "loss": self.loss,
            "eta_s": self.eta_s,
            "elapsed_s": self.elapsed_s,
            "cost_usd": self.cost_usd,
            "price_per_hour": self.price_per_hour,
            "instance_id": self.instance_id,
            "instance_type": self.instance_type,
            "instance_state": self.instance_state,
            "state_unknown": self.state_unknown,
            "market": self.market,
            "heartbeat_age_s": self.heartbeat_age_s,
            "last_error": self.last_error,
            "advice": self.advice,
            "metrics": self.metrics,
            "local": self.local,
            "attempts": self.attempts,
            "savings_usd": self.savings_usd,
            "ledger": self.ledger,
            "val_wql": self.val_wql,
            "best_val_wql": self.best_val_wql,
            "best_step": self.best_step,
            "zero_shot_val_wql": self.zero_shot_val_wql,
            "beats_zero_shot": self.beats_zero_shot,
        }


class Monitor:
    """Polls one env. Call :meth:`poll` repeatedly; it keeps the ETag between calls.

    Args:
        clients: boto3 clients (s3, ec2).
        bucket, env: where the state lives.
        clock: aware-UTC clock (tests drive it).
        policy: when the run is stale (the one policy; tests pass their own).
    """

    def __init__(
        self,
        clients: Clients,
        bucket: str,
        env: str,
        *,
        clock: Clock = utc_now,
        policy: StalenessPolicy = STALENESS,
    ) -> None:
        self.clients, self.bucket, self.env, self.clock = clients, bucket, env, clock
        self.store = StateStore(clients.s3, bucket, env, clock=clock)
        self.policy = policy
        self.snapshot: Snapshot | None = None
        self.run_id: str | None = None
        self.gone_since: Any = None
        self.transfers = 0
        self.polls = 0
        self._volumes: dict[str, float] = {}  # run id -> root volume (GB), read once per run

    def poll(self) -> MonitorView:
        """Observe once."""
        self.polls += 1
        got = self.store.read_if_changed(self.snapshot.etag if self.snapshot else None)
        changed = got is not False
        if got is False:
            snap = self.snapshot
        else:
            snap = got if isinstance(got, Snapshot) else None
            if snap is not None:
                self.transfers += 1
        self.snapshot = snap
        if snap is None:
            return self._ended(changed)
        if self.run_id != snap.run_id:
            self.run_id, self.gone_since = snap.run_id, None
        return self._live(snap, changed)

    def _volume_gb(self, run_id: str) -> float:
        if run_id not in self._volumes:
            paths = layout.RunPaths(env=self.env, run_id=run_id)
            self._volumes[run_id] = volume_gb(self.clients.s3, self.bucket, paths)
        return self._volumes[run_id]

    # -- a run in progress ----------------------------------------------------
    def _live(self, snap: Snapshot, changed: bool) -> MonitorView:
        doc, now = snap.doc, self.clock()
        progress = doc.get("progress", {})
        started = parse_iso(doc["started_at"])
        elapsed = max((now - started).total_seconds(), 0.0)
        price = doc.get("price_per_hour")
        hb_age = max((now - parse_iso(doc["heartbeat_at"])).total_seconds(), 0.0)
        instance_id = doc.get("instance_id")
        inst_state, unknown = self._instance_state(instance_id) if instance_id else (None, None)
        err = doc.get("last_error") or {}
        money = live_ledger(doc, volume_gb=self._volume_gb(snap.run_id), now=now)
        view = MonitorView(
            env=self.env,
            outcome=Outcome.RUNNING,
            run_id=snap.run_id,
            status=doc["status"],
            step=progress.get("step"),
            total_steps=progress.get("total_steps"),
            loss=progress.get("loss"),
            eta_s=progress.get("eta_s"),
            val_wql=progress.get("val_wql"),
            best_val_wql=progress.get("best_val_wql"),
            best_step=progress.get("best_step"),
            zero_shot_val_wql=progress.get("zero_shot_val_wql"),
            elapsed_s=elapsed,
            cost_usd=money["total_usd"]
            if money
            else (round(price * elapsed / 3600.0, 4) if price is not None else None),
            price_per_hour=price,
            ledger=money,
            instance_id=instance_id,
            instance_type=doc.get("instance_type"),
            instance_state=inst_state,
            state_unknown=unknown,
            market=doc.get("market"),
            heartbeat_age_s=hb_age,
            last_error=err.get("message"),
            changed=changed,
            local=bool(doc.get("local")),
        )
        return self._judge(view, snap, now)

    def _judge(self, view: MonitorView, snap: Snapshot, now: Any) -> MonitorView:
        if recovering_in_grace(snap.doc, now):  # the recovery handler is relaunching: no stale verdict
            attempt = int(snap.doc.get("attempt") or 1) + (0 if view.instance_id else 1)
            where = f"on {view.instance_id}" if view.instance_id else "(launching)"
            advice = f"recovering: attempt {attempt} {where}, resuming from the newest checkpoint"
            return replace(view, advice=advice)
        gone = is_gone(view.instance_state) if view.state_unknown is None else False
        self.gone_since = (self.gone_since or now) if gone else None
        stale = self.policy.judge(
            instance_id=view.instance_id,
            gone_for_s=(now - self.gone_since).total_seconds() if gone else None,
            since_launch_s=view.elapsed_s or 0.0,
            heartbeat_age_s=view.heartbeat_age_s or 0.0,
        )
        fix = f"`invoke verify --env={self.env} --fix --yes`"
        if stale is Stale.INSTANCE_GONE:
            advice = (
                f"instance {view.instance_id} is {view.instance_state} but the state file still says "
                f"{view.status}: the run died without cleaning up; clear the stale lock with {fix}"
            )
            return replace(view, outcome=Outcome.STALE, advice=advice)
        if stale is Stale.NO_INSTANCE:
            advice = (
                f"no instance was recorded {view.elapsed_s:.0f} s after launch: the launch did not finish; "
                f"clear the lock with {fix} and launch again"
            )
            return replace(view, outcome=Outcome.STALE, advice=advice)
        if view.state_unknown is not None:
            return self._unknown(view, stale is Stale.NO_HEARTBEAT and RunStatus(snap.status).is_active())
        if stale is Stale.NO_HEARTBEAT and RunStatus(snap.status).is_active():
            advice = (
                f"no heartbeat for {view.heartbeat_age_s:.0f} s while instance {view.instance_id} is "
                f"{view.instance_state or 'unknown'}: the trainer may be stuck; read "
                f"`invoke logs {view.run_id} --env={self.env}` or stop it with "
                f"`invoke kill --env={self.env}`"
            )
            return replace(view, advice=advice)
        return view

    def _unknown(self, view: MonitorView, heartbeat_old: bool) -> MonitorView:
        """The view of a run whose instance could not be described: STALE once the heartbeat is old."""
        grant = (
            f"grant ec2:DescribeInstances to this identity, or check instance {view.instance_id} in the "
            f"EC2 console"
        )
        if heartbeat_old:
            advice = (
                f"{view.state_unknown}; no heartbeat for {view.heartbeat_age_s:.0f} s either, so nothing "
                f"shows the run alive: {grant}, then `invoke verify --env={self.env}` "
                f"(`invoke kill --env={self.env}` stops it)"
            )
            return replace(view, outcome=Outcome.STALE, advice=advice)
        advice = (
            f"{view.state_unknown}; the heartbeat is {view.heartbeat_age_s:.0f} s old, so the trainer runs"
        )
        return replace(view, advice=f"{advice}; {grant}")

    def _instance_state(self, instance_id: str) -> tuple[str | None, str | None]:
        """``(state, None)``, or ``("unknown", "state unknown: <reason>")`` when EC2 could not be asked."""
        try:
            return instance_state(self.clients.ec2, instance_id), None
        except (ClientError, BotoCoreError) as exc:
            log.warning("describe %s: %s", instance_id, exc)
            return "unknown", f"state unknown: {describe(exc)} (ec2:DescribeInstances on {instance_id})"

    # -- no state file: the run ended (or none ran) -----------------------------
    def _ended(self, changed: bool) -> MonitorView:
        run_id = self.run_id
        if run_id is None:
            # the env's single runs only: a sweep member is watched with --sweep (its own lock)
            ids = [r for r in run_ids(self.clients.s3, self.bucket, self.env) if layout.sweep_of(r) is None]
            if not ids:
                return MonitorView(
                    env=self.env,
                    outcome=Outcome.NONE,
                    changed=changed,
                    advice=(
                        f"no run in env {self.env!r} yet; start one with `invoke launch --env={self.env}` "
                        f"(a sweep's members: `invoke monitor --env={self.env} --sweep SWEEP_ID`)"
                    ),
                )
            run_id = self.run_id = ids[-1]
        return view_of_ended(
            read_run(self.clients.s3, self.bucket, self.env, run_id, clock=self.clock), changed=changed
        )


def view_of_ended(run: RunSummary, *, changed: bool = True) -> MonitorView:
    """The final view of a run that no longer holds the lock."""
    outcome = {
        "succeeded": Outcome.SUCCEEDED,
        "failed": Outcome.FAILED,
        "killed": Outcome.KILLED,
        "interrupted": Outcome.INTERRUPTED,
    }.get(run.status, Outcome.FAILED)
    advice = None
    if outcome is Outcome.FAILED:
        advice = (run.problem or f"the run failed: {run.last_error or 'see its log'}") + (
            f"; read `invoke logs {run.run_id} --env={run.env}`"
        )
    elif outcome is Outcome.INTERRUPTED:
        advice = (
            f"the run was interrupted ({run.reason or 'spot capacity was reclaimed'}); the last checkpoint "
            f"is kept under the run's checkpoints/; resume it with "
            f"`invoke launch --env={run.env} --resume={run.run_id}` "
            "(add --market=on-demand to avoid another spot interruption)"
        )
    elif outcome is Outcome.SUCCEEDED and run.beats_zero_shot is False:
        advice = run.versus_base  # the run succeeded: a note, not an error exit
    total = run.metrics.get("steps") if run.metrics else None
    return MonitorView(
        env=run.env,
        outcome=outcome,
        run_id=run.run_id,
        status=run.status,
        elapsed_s=run.duration_s,
        cost_usd=run.cost_usd,
        price_per_hour=run.price_per_hour,
        instance_id=run.instance_id,
        instance_type=run.instance_type,
        market=run.market,
        last_error=run.last_error,
        advice=advice,
        changed=changed,
        metrics=dict(run.metrics),
        ledger=run.ledger,
        total_steps=int(total) if isinstance(total, int | float) else None,
        best_val_wql=run.val_wql,
        best_step=run.best_step,
        zero_shot_val_wql=run.zero_shot_val_wql,
        beats_zero_shot=run.beats_zero_shot,
    )


def watch(
    backend: Backend,
    *,
    env: str,
    follow: bool = False,
    interval_s: float = 2.0,
    clock: Clock = utc_now,
    sleep: Callable[[float], None] = time.sleep,
    policy: StalenessPolicy = STALENESS,
    max_polls: int | None = None,
) -> Iterator[MonitorView]:
    """``invoke monitor``: one view, or (``follow``) views until the run ends.

    Raises:
        NoCredentialsError, AccessDeniedError, ConfigError, CorruptStateError.
    """
    check_env(env)
    backend.check_credentials()
    outputs = backend.stack_outputs(env)
    mon = Monitor(backend.clients(), outputs.bucket, env, clock=clock, policy=policy)
    with backend.errors("s3:GetObject", f"s3://{outputs.bucket}/{layout.state_key(env)}"):
        while True:
            view = mon.poll()
            yield view
            if not follow or view.outcome.is_final() or (max_polls is not None and mon.polls >= max_polls):
                return
            sleep(interval_s)
