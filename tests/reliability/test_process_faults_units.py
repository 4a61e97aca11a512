"""The recovery decision for the process faults' endings (pure; the whole runs prove them too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from recovery.cloud import InstanceInfo
from recovery.decide import RecoveryPolicy, Verdict, decide
from recovery.events import EventKind, schedule_tick

NOW = datetime(2026, 11, 25, 14, 30, tzinfo=UTC)


def _doc(status: str) -> dict:
    return {
        "run_id": "20261125-140502",
        "env": "dev",
        "status": status,
        "instance_id": "i-0001",
        "started_at": "2026-11-25T14:05:02Z",
        "updated_at": "2026-11-25T14:29:00Z",
        "heartbeat_at": "2026-11-25T14:29:00Z",
        "max_recoveries": 3,
        "recoveries": 0,
        "attempts": [],
    }


def _gone(state: str = "terminated") -> InstanceInfo:
    return InstanceInfo(
        instance_id="i-0001",
        state=state,
        env="dev",
        run_id="20261125-140502",
        launched_at=NOW - timedelta(minutes=20),
    )


@pytest.mark.parametrize("status", ["cleanup", "failed"])
def test_a_final_lock_whose_instance_is_gone_is_released(status):
    # the trainer died after its last state write (SIGKILL in cleanup, or after `failed`
    # before cleanup): nobody else would ever remove the lock, and the env stays blocked
    event = schedule_tick(event_id="t1", at="2026-11-25T14:30:00Z", env="dev")
    decision = decide(_doc(status), instance=_gone(), event=event, now=NOW, policy=RecoveryPolicy())
    assert decision.verdict is Verdict.RELEASE
    assert "i-0001" in decision.reason and status in decision.reason


def test_a_final_lock_whose_instance_still_runs_is_left_to_its_cleanup():
    event = schedule_tick(event_id="t1", at="2026-11-25T14:30:00Z", env="dev")
    decision = decide(
        _doc("cleanup"), instance=_gone("running"), event=event, now=NOW, policy=RecoveryPolicy()
    )
    assert decision.verdict is Verdict.NOTHING


def test_a_killed_run_is_left_to_invoke_kill():
    event = schedule_tick(event_id="t1", at="2026-11-25T14:30:00Z", env="dev")
    decision = decide(_doc("killed"), instance=_gone(), event=event, now=NOW, policy=RecoveryPolicy())
    assert decision.verdict is Verdict.NOTHING and EventKind.SCHEDULE is event.kind
