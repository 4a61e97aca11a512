"""training.json with attempts, refused placements, interruptions and the ledger validates."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common.status import CompletionStatus, RunStatus
from schemas import SchemaValidationError, validate
from trainer.errors import ErrorLog
from trainer.record import TrainingLog


def _log(now: datetime) -> TrainingLog:
    return TrainingLog(
        run_id="20261125-120000", env="dev", errors=ErrorLog(), clock=lambda: now, monotonic=lambda: 0.0
    )


def _attempt(n: int, start: str, end: str | None, how: str | None, market: str = "spot") -> dict:
    return {
        "attempt": n,
        "instance_id": f"i-{n:017d}",
        "instance_type": "g5.xlarge",
        "market": market,
        "availability_zone": "us-east-1a",
        "price_per_hour": 0.4 if market == "spot" else 1.006,
        "price_source": "spot-history" if market == "spot" else "on-demand-table",
        "launched_at": start,
        "ended_at": end,
        "end": how,
        "notice_at": "2026-11-25T12:58:00Z" if how == "interrupted" else None,
    }


def test_training_json_with_a_ledger_validates_and_prices_both_attempts():
    record = _log(datetime(2026, 11, 25, 13, 40, tzinfo=UTC))
    record.attempts = [
        _attempt(1, "2026-11-25T12:00:00Z", "2026-11-25T13:00:00Z", "interrupted"),
        _attempt(2, "2026-11-25T13:05:00Z", None, None, market="on-demand"),
    ]
    record.refused = [
        {
            "attempt": 2,
            "market": "spot",
            "instance_type": "g5.xlarge",
            "availability_zone": "us-east-1b",
            "code": "InsufficientInstanceCapacity",
            "at": "2026-11-25T13:04:59Z",
        }
    ]
    record.interruptions = [
        {
            "attempt": 1,
            "notice_at": "2026-11-25T12:58:00Z",
            "checkpoint_durable_at": "2026-11-25T12:58:40Z",
            "replacement_launched_at": "2026-11-25T13:05:00Z",
            "first_resumed_step_at": "2026-11-25T13:09:30Z",
            "steps_lost": 0,
        }
    ]
    record.volume_gb, record.max_cost = 100, 3.0
    doc = record.document(status=RunStatus.RESULTS_SYNC, completion=CompletionStatus.NORMAL, exit_code=0)
    money = doc["ledger"]
    assert [a["attempt"] for a in money["attempts"]] == [1, 2]
    assert money["attempts"][1]["ended_at"] is None  # still running at finalize: priced up to now
    assert money["attempts"][1]["billable_s"] == 35 * 60
    ebs = 0.08 * 100 * 95 * 60 / 2_592_000  # 60 + 35 minutes of a 100 GB volume
    assert money["total_usd"] == pytest.approx(0.4 + 1.006 * 35 / 60 + ebs, abs=1e-4)
    assert money["max_cost"] == 3.0 and doc["refused"][0]["code"] == "InsufficientInstanceCapacity"
    validate("training", doc)


def test_no_attempts_no_ledger_and_a_bad_ledger_is_refused():
    record = _log(datetime(2026, 11, 25, 13, 40, tzinfo=UTC))
    doc = record.document(status=RunStatus.RESULTS_SYNC, completion=CompletionStatus.NORMAL, exit_code=0)
    assert "ledger" not in doc and "attempts" not in doc
    record.attempts = [_attempt(1, "2026-11-25T12:00:00Z", "2026-11-25T13:00:00Z", "completed")]
    record.volume_gb = 100
    doc = record.document(status=RunStatus.RESULTS_SYNC, completion=CompletionStatus.NORMAL, exit_code=0)
    doc["ledger"]["attempts"][0]["billable_s"] = 30  # under the 60 s minimum
    with pytest.raises(SchemaValidationError):
        validate("training", doc)
