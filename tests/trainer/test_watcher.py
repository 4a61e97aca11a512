"""The watcher and heartbeat with a fake clock (the training child's supervisor: test_supervisor)."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from common.state_doc import Snapshot
from common.status import RunStatus
from trainer.stopping import StopRequest
from trainer.watcher import Heartbeat, Progress, Watcher, WatchPlan

RUN_ID = "20261125-140502"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeIMDS:
    def __init__(self) -> None:
        self.action: dict[str, str] | None = None
        self.rebalance_notice: dict[str, str] | None = None
        self.spot_polls = 0

    def spot_action(self) -> dict[str, str] | None:
        self.spot_polls += 1
        return self.action

    def rebalance(self) -> dict[str, str] | None:
        return self.rebalance_notice


def snapshot(status: str = "training", etag: str = '"e1"', run_id: str = RUN_ID, **extra: Any) -> Snapshot:
    return Snapshot({"run_id": run_id, "status": status, **extra}, etag)


class FakeStore:
    """Conditional reads answer ``False`` while the etag is current."""

    def __init__(self) -> None:
        self.current: Snapshot | None = snapshot()
        self.reads: list[str | None] = []
        self.beats: list[dict[str, Any]] = []

    def read_if_changed(self, etag: str | None) -> Snapshot | None | bool:
        self.reads.append(etag)
        if self.current is not None and etag == self.current.etag:
            return False
        return self.current

    def heartbeat(
        self, run_id: str, *, progress: dict[str, Any] | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot:
        self.beats.append(dict(progress or {}))
        assert self.current is not None
        self.current = Snapshot(self.current.doc, f'"hb{len(self.beats)}"')
        return self.current


def make(**kw: Any) -> tuple[Watcher, Clock, FakeIMDS, FakeStore, list[StopRequest]]:
    clock, imds, store, stops = Clock(), FakeIMDS(), FakeStore(), []
    watcher = Watcher(run_id=RUN_ID, imds=imds, store=store, on_stop=stops.append, monotonic=clock, **kw)
    return watcher, clock, imds, store, stops


def advance(watcher: Watcher, clock: Clock, seconds: float, tick: float = 0.5) -> None:
    for _ in range(int(seconds / tick)):
        clock.now += tick
        watcher.poll()


def test_spot_notice_stops_with_interrupted_and_imds_is_polled_every_two_seconds():
    watcher, clock, imds, _, stops = make()
    advance(watcher, clock, 10)
    assert stops == [] and imds.spot_polls == 5
    imds.action = {"action": "terminate", "time": "2026-11-25T14:07:00Z"}
    advance(watcher, clock, 2)
    assert len(stops) == 1 and stops[0].status is RunStatus.INTERRUPTED
    assert stops[0].reason == "spot interruption notice: terminate at 2026-11-25T14:07:00Z"
    advance(watcher, clock, 10)
    assert len(stops) == 1  # on_stop once


def test_rebalance_recommendation_is_logged_but_training_goes_on(caplog):
    watcher, clock, imds, _, stops = make()
    imds.rebalance_notice = {"noticeTime": "2026-11-25T14:00:00Z"}
    advance(watcher, clock, 10)
    assert stops == [] and watcher.rebalance_seen
    assert sum("rebalance recommendation" in r.message for r in caplog.records) == 1


def test_max_runtime_deadline_interrupts_with_the_reason():
    watcher, clock, _, _, stops = make(plan=WatchPlan(deadline=1030.0, max_runtime_min=90))
    advance(watcher, clock, 29.5)
    assert stops == []
    advance(watcher, clock, 1)
    assert stops[0].status is RunStatus.INTERRUPTED and stops[0].reason == "max runtime of 90 min reached"


def test_killed_from_outside_is_seen_by_conditional_reads_every_five_seconds():
    watcher, clock, _, store, stops = make()
    advance(watcher, clock, 20)
    assert stops == []
    assert len(store.reads) == 4 and store.reads[0] is None and set(store.reads[1:]) == {'"e1"'}
    store.current = snapshot("killed", etag='"e2"', kill_reason="killed by alice")
    advance(watcher, clock, 5)
    assert stops[0].status is RunStatus.KILLED and stops[0].reason == "killed by alice"


def test_a_removed_or_taken_over_lock_counts_as_killed():
    watcher, clock, _, store, stops = make()
    store.current = None
    advance(watcher, clock, 1)
    assert stops[0].status is RunStatus.KILLED and "removed" in stops[0].reason
    watcher, clock, _, store, stops = make()
    store.current = snapshot(run_id="20261126-000000", etag='"x"')
    advance(watcher, clock, 1)
    assert "20261126-000000" in stops[0].reason


def test_heartbeat_writes_at_most_once_per_interval_with_progress():
    clock = Clock()
    store = FakeStore()
    progress = Progress(total_steps=100)
    beat = Heartbeat(store, RUN_ID, progress, interval_s=20, monotonic=clock)
    watcher = Watcher(
        run_id=RUN_ID, imds=None, store=store, on_stop=lambda r: None, heartbeat=beat, monotonic=clock
    )
    watcher.poll()
    for step in range(1, 121):  # 60 s of polls every 0.5 s
        progress.update(step=step, loss=1.0 / step)
        advance(watcher, clock, 0.5)
    assert len(store.beats) == 4  # t = 0, 20, 40, 60
    assert store.beats[-1]["step"] == 120 and store.beats[-1]["total_steps"] == 100
    assert set(store.beats[0]) == {
        "step", "total_steps", "loss", "eta_s", "last_checkpoint_step",
        # validation, null until the first one
        "val_wql", "val_loss", "best_val_wql", "best_step", "zero_shot_val_wql",
    }  # fmt: skip


def test_heartbeat_that_meets_a_kill_stops_the_run_without_waiting_for_the_poll():
    clock, store = Clock(), FakeStore()
    stops: list[StopRequest] = []
    beat = Heartbeat(store, RUN_ID, Progress(), interval_s=1, monotonic=clock)
    watcher = Watcher(
        run_id=RUN_ID,
        imds=None,
        store=store,
        on_stop=stops.append,
        heartbeat=beat,
        monotonic=clock,
        plan=WatchPlan(state_interval_s=1000),
    )
    watcher.poll()
    store.current = snapshot("killed", etag='"k"')
    advance(watcher, clock, 1)
    assert stops and stops[0].status is RunStatus.KILLED


def test_poll_errors_are_logged_not_fatal(caplog):
    class Broken(FakeIMDS):
        def spot_action(self) -> dict[str, str] | None:
            raise OSError("imds down")

    clock, store, stops = Clock(), FakeStore(), []
    watcher = Watcher(run_id=RUN_ID, imds=Broken(), store=store, on_stop=stops.append, monotonic=clock)
    advance(watcher, clock, 4)
    assert stops == [] and any("imds down" in r.message for r in caplog.records)


def test_the_thread_runs_and_stops_promptly():
    stops: list[StopRequest] = []
    imds = FakeIMDS()
    imds.action = {"action": "terminate", "time": "t"}
    watcher = Watcher(
        run_id=RUN_ID, imds=imds, store=FakeStore(), on_stop=stops.append, plan=WatchPlan(tick_s=0.01)
    ).start()
    for _ in range(200):
        if stops:
            break
        threading.Event().wait(0.01)
    watcher.stop()
    assert stops and stops[0].source == "spot"


# -- the max-runtime deadline counts from the launch, never from "now" ---------------------------
@pytest.mark.row("records-deadline-from-launch")
def test_the_launch_time_falls_back_to_the_launch_record_then_the_run_id_never_now(local_aws, bucket):
    import json
    from datetime import UTC, datetime
    from types import SimpleNamespace

    from common.layout import RunPaths
    from trainer.stopping import run_launched_at

    paths = RunPaths(env="dev", run_id="20261125-140502")
    s3 = local_aws.client("s3")

    class Unreadable:
        def read(self):
            raise ConnectionError("GetObject dev/system-state.json timed out")

    ctx = SimpleNamespace(
        store=Unreadable(), s3=s3, paths=paths, opts=SimpleNamespace(bucket=bucket, run_id=paths.run_id)
    )
    record = {"run_id": paths.run_id, "launched_at": "2026-11-25T14:05:09Z"}
    s3.put_object(Bucket=bucket, Key=paths.launch_record, Body=json.dumps(record).encode())
    assert run_launched_at(ctx) == (datetime(2026, 11, 25, 14, 5, 9, tzinfo=UTC), "launch record")
    s3.delete_object(Bucket=bucket, Key=paths.launch_record)  # no record either: the run id's time
    assert run_launched_at(ctx) == (datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC), "run id")


def test_the_launch_time_is_the_state_files_start_when_it_reads():
    from datetime import UTC, datetime

    from trainer.stopping import launched_at

    snap = Snapshot(
        doc={"run_id": "20261125-140502", "status": "training", "started_at": "2026-11-25T14:05:03Z"},
        etag="e",
    )
    got = launched_at(run_id="20261125-140502", read_state=lambda: snap, read_launch_record=lambda: None)
    assert got == (datetime(2026, 11, 25, 14, 5, 3, tzinfo=UTC), "state file")
    # another run's lock says nothing about this run's launch
    other = Snapshot(doc={**snap.doc, "run_id": "20261125-150000"}, etag="e")
    got = launched_at(run_id="20261125-140502", read_state=lambda: other, read_launch_record=lambda: None)
    assert got == (datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC), "run id")
