"""max_cost: the watcher stops the run (killed, reason ``budget``) once the projected cost passes it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import Any

from common.state_doc import Snapshot
from common.status import RunStatus
from trainer.stopping import BUDGET, Budget, StopRequest, price_run
from trainer.watcher import Progress, Watcher, WatchPlan

RUN_ID = "20261125-120000"
LAUNCH = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


class Clocks:
    """UTC and monotonic time moved together."""

    def __init__(self) -> None:
        self.mono = 0.0

    def monotonic(self) -> float:
        return self.mono

    def utc(self) -> datetime:
        return LAUNCH + timedelta(seconds=self.mono)


class Store:
    def __init__(self, doc: dict[str, Any] | None = None) -> None:
        self.doc = doc or {"run_id": RUN_ID, "status": "training"}

    def read_if_changed(self, etag: str | None) -> Snapshot | bool:
        return False if etag == '"e1"' else Snapshot(self.doc, '"e1"')

    def read(self) -> Snapshot:
        return Snapshot(self.doc, '"e1"')

    def heartbeat(self, run_id: str, **_: Any) -> Snapshot:
        return Snapshot(self.doc, '"e1"')


def _attempt(price: float) -> dict[str, Any]:
    return {
        "attempt": 1,
        "instance_id": "i-00000000000000001",
        "instance_type": "g5.xlarge",
        "market": "spot",
        "availability_zone": "us-east-1a",
        "price_per_hour": price,
        "price_source": "spot-history",
        "launched_at": "2026-11-25T12:00:00Z",
        "ended_at": None,
        "end": None,
        "notice_at": None,
    }


def _watcher(budget: Budget, clocks: Clocks, stops: list[StopRequest]) -> Watcher:
    plan = WatchPlan(budget=budget, state_interval_s=5.0)
    return Watcher(
        run_id=RUN_ID, imds=None, store=Store(), on_stop=stops.append, plan=plan, monotonic=clocks.monotonic
    )


def test_the_projected_cost_passing_max_cost_stops_the_run_killed_with_reason_budget():
    clocks, stops, progress = Clocks(), [], Progress()
    # 3.60 USD/h = 0.001 USD/s; no volume so the arithmetic is exact; max_cost 1.00 USD
    budget = Budget(
        max_cost=1.0,
        attempts=[_attempt(3.6)],
        volume_gb=0,
        remaining_s=lambda: progress.eta_s,
        clock=clocks.utc,
        finish_allowance_s=100,
    )
    watcher = _watcher(budget, clocks, stops)
    for _ in range(40):  # 200 s, no ETA yet: spent 0.20, under the limit
        clocks.mono += 5
        watcher.poll()
    assert stops == []
    progress.update(eta_s=600)  # at 200 s: 0.20 spent + (600 + 100) s x 0.001 = 0.90 -> still under
    clocks.mono += 5
    watcher.poll()
    assert stops == []
    progress.update(eta_s=700)  # 0.205 + 0.80 = 1.005 > 1.00: stop
    clocks.mono += 5
    watcher.poll()
    (stop,) = stops
    assert stop.status is RunStatus.KILLED and stop.source == BUDGET
    assert stop.reason.startswith("budget: projected cost $1.01 passes max_cost $1.00")
    assert "$0.21 spent so far" in stop.reason


def test_spent_alone_stops_a_run_without_an_eta_and_a_cheap_run_goes_on():
    clocks = Clocks()
    budget = Budget(
        max_cost=0.5, attempts=[_attempt(3.6)], volume_gb=0, remaining_s=lambda: None, clock=clocks.utc
    )
    clocks.mono = 499  # 0.499 USD
    assert budget.check() is None
    clocks.mono = 501
    assert budget.check() is not None
    cheap = Budget(
        max_cost=50, attempts=[_attempt(0.4)], volume_gb=100, remaining_s=lambda: 3600, clock=clocks.utc
    )
    assert cheap.check() is None


def test_price_run_gives_the_ledger_its_volume_and_a_budget_only_with_max_cost():
    def ctx(max_cost: float | None) -> SimpleNamespace:
        instance = SimpleNamespace(root_volume_gb=100, max_cost=max_cost)
        return SimpleNamespace(
            spec=SimpleNamespace(instance=instance),
            record=SimpleNamespace(volume_gb=None, max_cost=None, attempts=[]),
            store=Store({"run_id": RUN_ID, "status": "training", "attempts": [_attempt(0.4)]}),
            progress=Progress(),
            deps=SimpleNamespace(clock=lambda: LAUNCH),
        )

    unlimited = ctx(None)
    assert price_run(unlimited) is None
    assert unlimited.record.volume_gb == 100 and unlimited.record.attempts[0]["price_per_hour"] == 0.4
    limited = ctx(2.5)
    budget = price_run(limited)
    assert isinstance(budget, Budget) and budget.max_cost == 2.5 and limited.record.max_cost == 2.5
