"""The watcher thread (why training must stop now) and the heartbeat.

One loop, each check on its own monotonic schedule:

- every ``spot_interval_s`` (2 s): IMDSv2 ``spot/instance-action`` -> stop with
  ``interrupted``; a rebalance recommendation is logged once;
- every tick: the max-runtime deadline -> stop with ``interrupted`` and the reason;
- every ``state_interval_s``: the :class:`~trainer.stopping.Budget` (projected cost past
  ``max_cost``) -> stop with ``killed`` and the reason ``budget: ...``;
- every ``state_interval_s`` (5 s): a conditional GET of the state file
  (``read_if_changed``) -> stop with ``killed`` when someone set ``killed`` (or
  removed or took over the lock);
- the :class:`Heartbeat` (progress into the state file, bounded by its interval).

The first reason found is kept and handed to ``on_stop`` once; the phase driver
then checkpoints, uploads and finalizes. Polling errors are logged, never fatal.
Clocks are injected: :meth:`Watcher.poll` is a pure step for tests. The training
child and its stop signal live in :mod:`trainer.supervisor`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from common.state_doc import Snapshot
from common.state_store import NotHeldError
from common.status import RunStatus
from trainer.stopping import Budget, StopRequest

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


class _SpotSource(Protocol):
    def spot_action(self) -> dict[str, Any] | None: ...
    def rebalance(self) -> dict[str, Any] | None: ...


class _StateSource(Protocol):
    def read_if_changed(self, etag: str | None) -> Snapshot | None | bool: ...
    def heartbeat(
        self, run_id: str, *, progress: dict[str, Any] | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot: ...


@dataclass
class Progress:
    """Training progress as the heartbeat reports it (updated by the training phase).

    ``val_wql`` and ``val_loss`` are the newest validation's WQL and loss,
    ``best_val_wql``/``best_step`` the best so far, ``zero_shot_val_wql`` the base model's
    (step 0); all ``None`` without validation.
    """

    step: int = 0
    total_steps: int = 0
    loss: float | None = None
    eta_s: float | None = None
    last_checkpoint_step: int | None = None
    val_wql: float | None = None
    val_loss: float | None = None
    best_val_wql: float | None = None
    best_step: int | None = None
    zero_shot_val_wql: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def update(self, **fields: Any) -> None:
        with self._lock:
            for name, value in fields.items():
                setattr(self, name, value)

    def as_state(self) -> dict[str, Any]:
        """The ``progress`` object of the state file."""
        with self._lock:
            return {
                "step": self.step,
                "total_steps": self.total_steps,
                "loss": self.loss,
                "eta_s": None if self.eta_s is None else max(0.0, round(self.eta_s, 1)),
                "last_checkpoint_step": self.last_checkpoint_step,
                "val_wql": self.val_wql,
                "val_loss": self.val_loss,
                "best_val_wql": self.best_val_wql,
                "best_step": self.best_step,
                "zero_shot_val_wql": self.zero_shot_val_wql,
            }


class Heartbeat:
    """Writes ``heartbeat_at`` and progress, at most once per ``interval_s``.

    Args:
        store: the state store.
        run_id: this run.
        progress: what to report.
        interval_s: minimum seconds between writes (default 20: three PUTs a minute,
            well inside the staleness threshold of :mod:`common.staleness`).
        monotonic: the clock.
    """

    def __init__(
        self,
        store: _StateSource,
        run_id: str,
        progress: Progress,
        *,
        interval_s: float = 20.0,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.store, self.run_id, self.progress = store, run_id, progress
        self.interval_s, self.monotonic = interval_s, monotonic
        self.last: float | None = None
        self.writes = 0

    def due(self) -> bool:
        return self.last is None or self.monotonic() - self.last >= self.interval_s

    def maybe_beat(self) -> Snapshot | None:
        """Beat if the interval has passed; the written snapshot, else ``None``."""
        if not self.due():
            return None
        self.last = self.monotonic()
        try:
            snap = self.store.heartbeat(self.run_id, progress=self.progress.as_state())
        except NotHeldError as exc:
            log.warning("heartbeat skipped: %s", exc)
            return None
        except Exception as exc:  # noqa: BLE001 - a failed beat never ends training; the next one retries
            log.warning("heartbeat failed (will retry in %.0f s): %s", self.interval_s, exc)
            return None
        self.writes += 1
        return snap


@dataclass(frozen=True, kw_only=True)
class WatchPlan:
    """When the watcher looks at what, and the max-runtime deadline it enforces.

    Attributes:
        deadline: monotonic time when max runtime is reached (``None``: no limit).
        max_runtime_min: for the reason message.
        spot_interval_s: seconds between IMDS spot polls.
        state_interval_s: seconds between conditional reads of the state file.
        tick_s: seconds between polls of the watcher thread.
        budget: the run's ``max_cost`` (``None``: no limit).
    """

    deadline: float | None = None
    max_runtime_min: float | None = None
    spot_interval_s: float = 2.0
    state_interval_s: float = 5.0
    tick_s: float = 0.5
    budget: Budget | None = None


class Watcher:
    """Polls spot notice, deadline and state file; calls ``on_stop`` once.

    Args:
        run_id: this run.
        imds: spot notices (``None``: no IMDS, e.g. some unit tests).
        store: the state store (conditional reads).
        on_stop: called with the first :class:`StopRequest`, from the watcher thread.
        plan: intervals and the deadline.
        heartbeat: beats on every poll when due.
        monotonic: the clock.
    """

    def __init__(
        self,
        *,
        run_id: str,
        imds: _SpotSource | None,
        store: _StateSource,
        on_stop: Callable[[StopRequest], None],
        plan: WatchPlan | None = None,
        heartbeat: Heartbeat | None = None,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        plan = plan or WatchPlan()
        self.run_id, self.imds, self.store, self.on_stop = run_id, imds, store, on_stop
        self.deadline, self.max_runtime_min, self.heartbeat = plan.deadline, plan.max_runtime_min, heartbeat
        self.monotonic, self.tick_s = monotonic, plan.tick_s
        self.spot_interval_s, self.state_interval_s = plan.spot_interval_s, plan.state_interval_s
        self.budget = plan.budget
        self.etag: str | None = None
        self.request: StopRequest | None = None
        self.rebalance_seen = False
        self._next_spot = self._next_state = 0.0
        self._halt = threading.Event()
        self._thread: threading.Thread | None = None

    # -- one step (tests call this directly) --------------------------------------------------
    def poll(self) -> StopRequest | None:
        """Run every check that is due; return the stop request, if any (kept once found)."""
        now = self.monotonic()
        found = self._check_deadline(now)
        if found is None and self.imds is not None and now >= self._next_spot:
            self._next_spot = now + self.spot_interval_s
            found = self._check_spot()
        if found is None and now >= self._next_state:
            self._next_state = now + self.state_interval_s
            found = self._check_state() or self._check_budget()
        if self.heartbeat is not None:
            snap = self.heartbeat.maybe_beat()
            if snap is not None:
                found = found or self._judge(snap)
                self.etag = snap.etag
        if found is not None and self.request is None:
            self.request = found
            log.warning("STOP REQUESTED (%s): %s", found.status.value, found.reason)
            self.on_stop(found)
        return self.request

    def _check_deadline(self, now: float) -> StopRequest | None:
        if self.deadline is None or now < self.deadline:
            return None
        return StopRequest(
            status=RunStatus.INTERRUPTED,
            source="max_runtime",
            reason=f"max runtime of {self.max_runtime_min:g} min reached",
        )

    def _check_budget(self) -> StopRequest | None:
        if self.budget is None:
            return None
        try:
            return self.budget.check()
        except (KeyError, TypeError, ValueError) as exc:  # a malformed attempt never ends training
            log.warning("budget check failed: %s", exc)
            return None

    def _check_spot(self) -> StopRequest | None:
        try:
            action = self.imds.spot_action() if self.imds else None
            if action is None and not self.rebalance_seen and self.imds is not None:
                rebalance = self.imds.rebalance()
                if rebalance is not None:
                    self.rebalance_seen = True
                    log.warning(
                        "rebalance recommendation received (%s); training goes on until a notice", rebalance
                    )
        except Exception as exc:  # noqa: BLE001 - a failed poll is logged, never fatal (the next one retries)
            log.warning("IMDS spot poll failed: %s", exc)
            return None
        if action is None:
            return None
        return StopRequest(
            status=RunStatus.INTERRUPTED,
            source="spot",
            reason=f"spot interruption notice: {action.get('action', '?')} at {action.get('time', '?')}",
        )

    def _check_state(self) -> StopRequest | None:
        try:
            snap = self.store.read_if_changed(self.etag)
        except Exception as exc:  # noqa: BLE001 - a failed poll is logged, never fatal (the next one retries)
            log.warning("state poll failed: %s", exc)
            return None
        if snap is False:
            return None
        if snap is None:
            return StopRequest(
                status=RunStatus.KILLED, source="state", reason="the state file was removed from outside"
            )
        if not isinstance(snap, Snapshot):
            return None
        self.etag = snap.etag
        return self._judge(snap)

    def _judge(self, snap: Snapshot) -> StopRequest | None:
        if snap.run_id != self.run_id:
            return StopRequest(
                status=RunStatus.KILLED,
                source="state",
                reason=f"the state file now belongs to run {snap.run_id}",
            )
        if snap.status is RunStatus.KILLED:
            reason = snap.doc.get("kill_reason") or "killed by operator"
            return StopRequest(status=RunStatus.KILLED, source="state", reason=str(reason))
        return None

    # -- the thread -----------------------------------------------------------------------------
    def start(self) -> Watcher:
        self._thread = threading.Thread(target=self._loop, name="watcher", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._halt.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _loop(self) -> None:
        while not self._halt.is_set():
            try:
                self.poll()
            except Exception:  # noqa: BLE001 - the watcher must outlive any single bad poll
                log.exception("watcher poll failed")
            self._halt.wait(self.tick_s)
