"""Stop requests: why training must stop now, and the one switch every source flips.

A spot notice, the max-runtime deadline, a ``killed`` in the state file, the
projected cost passing ``max_cost`` (:class:`Budget`; all four seen by the
:class:`~trainer.watcher.Watcher`) and SIGTERM/SIGINT (``python -m trainer``) each
make a :class:`StopRequest`. The run's :class:`StopSwitch` keeps the first one, hands
it to whoever listens (the training child's supervisor: SIGTERM, checkpoint, exit), and
the driver raises :class:`Stopped` at its next check, so the run finalizes
``interrupted`` or ``killed`` with the request's reason.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from common import ledger
from common.layout import parse_run_id
from common.state_doc import Snapshot
from common.status import RunStatus
from common.timeutil import Clock, parse_iso, utc_now

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StopRequest:
    """Why the run must stop: ``status`` is ``interrupted`` or ``killed``; ``source`` who asked."""

    status: RunStatus
    reason: str
    source: str


BUDGET = "budget"  # the source, and the first word of the reason, of a max_cost stop
FINISH_ALLOWANCE_S = 300.0  # evaluation, upload and cleanup after training, in the projection


@dataclass(frozen=True, kw_only=True)
class Budget:
    """The run's ``max_cost``: stop once the projected cost of the run passes it.

    A budget stop ends the run ``killed`` with the reason ``budget: ...``, not
    ``interrupted``: the child checkpoints and the checkpoint is uploaded as for any
    stop, but the run is final: the lock is released, the recovery handler never
    relaunches a killed run, ``keep_on_failure`` (which keeps only failed runs up)
    does not bill on past the budget, and ``invoke launch --resume`` with a higher
    ``max_cost`` continues it from the checkpoint.

    Attributes:
        max_cost: USD.
        attempts: the state file's attempts (ended ones and the current, open one).
        volume_gb: the root volume (EBS) size.
        remaining_s: seconds still to train (the training ETA), ``None`` while unknown.
        clock: UTC now (the open attempt is priced up to it).
    """

    max_cost: float
    attempts: Sequence[Mapping[str, Any]]
    volume_gb: float
    remaining_s: Callable[[], float | None]
    clock: Clock = utc_now
    finish_allowance_s: float = FINISH_ALLOWANCE_S

    def projected(self) -> tuple[float, float]:
        """(spent so far, projected at the end) in USD."""
        run = ledger.ledger(self.attempts, volume_gb=self.volume_gb, now=self.clock())
        open_attempts = [a for a in run.attempts if a.ended_at is None]
        rate = open_attempts[-1].price_per_hour if open_attempts else None
        eta = self.remaining_s()
        if eta is None:  # no ETA yet: only what is spent already counts
            return run.total_usd, run.total_usd
        remaining = eta + self.finish_allowance_s
        return run.total_usd, ledger.projected_cost(
            spent_usd=run.total_usd, usd_per_hour=rate, remaining_s=remaining, volume_gb=self.volume_gb
        )

    def check(self) -> StopRequest | None:
        """A ``budget`` stop when the projected cost passes ``max_cost``; else ``None``."""
        spent, projected = self.projected()
        if projected <= self.max_cost:
            return None
        return StopRequest(
            status=RunStatus.KILLED,
            source=BUDGET,
            reason=(
                f"{BUDGET}: projected cost ${projected:.2f} passes max_cost ${self.max_cost:.2f} "
                f"(${spent:.2f} spent so far)"
            ),
        )


def price_run(ctx: Any) -> Budget | None:
    """Set up what the run is priced with; the :class:`Budget` the watcher enforces, if any.

    Training.json's ledger gets the spec's root volume and ``max_cost`` (and the state
    file's attempts while the driver has recorded none); a spec with ``max_cost`` gets a
    budget over the state file's attempts, with the training ETA as the time left.

    Args:
        ctx: the run's :class:`~trainer.context.RunContext` (its spec loaded).
    """
    spec, record = ctx.spec, ctx.record
    if spec is None:
        return None
    record.volume_gb, record.max_cost = float(spec.instance.root_volume_gb), spec.instance.max_cost
    try:
        snap = ctx.store.read()
    except Exception as exc:  # noqa: BLE001 - no state: no attempts to price; the run goes on
        log.warning("could not read the attempts to price: %s", exc)
        snap = None
    attempts = ledger.attempts_of(snap.doc) if snap is not None else []
    if not record.attempts:
        record.attempts = attempts
    if spec.instance.max_cost is None or not attempts:
        return None
    return Budget(
        max_cost=float(spec.instance.max_cost),
        attempts=tuple(attempts),
        volume_gb=record.volume_gb,
        remaining_s=lambda: ctx.progress.eta_s,
        clock=ctx.deps.clock,
    )


def launched_at(
    *,
    run_id: str,
    read_state: Callable[[], Snapshot | None],
    read_launch_record: Callable[[], Mapping[str, Any] | None],
) -> tuple[datetime, str]:
    """When the run was launched, for the max-runtime deadline, and where that was read.

    The state file's ``started_at`` (launch took the lock then); when it cannot be read (or
    holds another run), the launch record's ``launched_at``; else the time the run id encodes
    (the second launch took the lock in, never later). Never "now": an instance that boots
    late or restarts would otherwise get a fresh max runtime and bill past it.
    """
    try:
        snap = read_state()
        if snap is not None and snap.run_id == run_id:
            return parse_iso(snap.doc["started_at"]), "state file"
    except Exception as exc:  # noqa: BLE001 - an unreadable state falls back to the launch record
        log.warning("launch time: state file unreadable (%s); trying the launch record", exc)
    try:
        record = read_launch_record()
        if record is not None and record.get("launched_at"):
            return parse_iso(str(record["launched_at"])), "launch record"
    except Exception as exc:  # noqa: BLE001 - an unreadable record falls back to the run id
        log.warning("launch time: launch record unreadable (%s); counting from the run id", exc)
    return parse_run_id(run_id), "run id"


def run_launched_at(ctx: Any) -> tuple[datetime, str]:
    """:func:`launched_at` for a run (its store, and one plain GET of its launch record).

    Args:
        ctx: the run's :class:`~trainer.context.RunContext` (``store``, ``s3``, ``paths``, ``opts``).
    """

    def record() -> Mapping[str, Any] | None:
        body = ctx.s3.get_object(Bucket=ctx.opts.bucket, Key=ctx.paths.launch_record)["Body"].read()
        doc = json.loads(body)
        return doc if isinstance(doc, dict) and doc.get("run_id") == ctx.opts.run_id else None

    return launched_at(run_id=ctx.opts.run_id, read_state=ctx.store.read, read_launch_record=record)


class Stopped(Exception):
    """Training must stop: a spot notice, max runtime, or a kill."""

    def __init__(self, request: StopRequest) -> None:
        super().__init__(request.reason)
        self.request, self.stop_status = request, request.status


class StopSwitch:
    """The run's stop request: the first one wins, none once the run is finishing (thread-safe)."""

    def __init__(self) -> None:
        self.request: StopRequest | None = None
        self.finishing = False
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def flip(self, request: StopRequest) -> None:
        """Keep ``request`` unless one is kept already or the run is finishing; tell the listeners."""
        with self._lock:
            if self.request is not None or self.finishing:
                return
            self.request = request
            listeners = list(self._listeners)
        log.warning("stopping: %s", request.reason)
        for listener in listeners:
            listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on a stop request; at once when one was made already."""
        with self._lock:
            self._listeners.append(listener)
            already = self.request is not None
        if already:
            listener()

    def finish(self) -> None:
        """The run is finishing: later requests are ignored."""
        with self._lock:
            self.finishing = True

    def check(self) -> None:
        """Raise :class:`Stopped` when a stop was requested."""
        if self.request is not None:
            raise Stopped(self.request)
