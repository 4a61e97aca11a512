"""``invoke cost``: per run and in total from each run's ledger, the active run priced so far, the window."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from rich.console import Console

from common import layout
from common.errors import ConfigError
from common.status import CompletionStatus, RunStatus
from control.cli import render
from control.cost import cost_report, parse_since
from control.runs import read_run
from trainer.errors import ErrorLog
from trainer.record import TrainingLog

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _attempt(n: int, market: str, start: str, end: str | None, price: float, how: str | None) -> dict:
    return {
        "attempt": n,
        "instance_id": f"i-{n:017d}",
        "instance_type": "g5.xlarge",
        "market": market,
        "availability_zone": "us-east-1a",
        "price_per_hour": price,
        "price_source": "spot-history" if market == "spot" else "on-demand-table",
        "launched_at": start,
        "ended_at": end,
        "end": how,
        "notice_at": None,
    }


def _training(run_id: str, attempts: list[dict], ended: str) -> dict:
    record = TrainingLog(
        run_id=run_id, env="dev", errors=ErrorLog(), clock=lambda: datetime.fromisoformat(ended)
    )
    record.attempts, record.volume_gb = attempts, 0  # no EBS: the totals are exact
    return record.document(status=RunStatus.CLEANUP, completion=CompletionStatus.NORMAL, exit_code=0)


def _put(s3, bucket: str, run_id: str, doc: dict) -> None:
    key = layout.RunPaths(env="dev", run_id=run_id).training_log
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(doc).encode())


def test_cost_prices_two_runs_from_their_ledgers_and_leaves_out_runs_before_the_window(
    dev, backend, local_aws
):
    s3, bucket = local_aws.client("s3"), dev["bucket"]
    two = [  # spot 1 h at 0.40, interrupted; then on-demand 30 min at 1.006
        _attempt(1, "spot", "2026-11-28T10:00:00Z", "2026-11-28T11:00:00Z", 0.40, "interrupted"),
        _attempt(2, "on-demand", "2026-11-28T11:05:00Z", "2026-11-28T11:35:00Z", 1.006, "completed"),
    ]
    _put(s3, bucket, "20261128-100000", _training("20261128-100000", two, "2026-11-28T11:35:00+00:00"))
    one = [_attempt(1, "spot", "2026-11-29T09:00:00Z", "2026-11-29T09:00:30Z", 0.40, "completed")]
    _put(s3, bucket, "20261129-090000", _training("20261129-090000", one, "2026-11-29T09:00:30+00:00"))
    old = [_attempt(1, "on-demand", "2026-10-01T09:00:00Z", "2026-10-01T10:00:00Z", 1.006, "completed")]
    _put(s3, bucket, "20261001-090000", _training("20261001-090000", old, "2026-10-01T10:00:00+00:00"))

    report = cost_report(backend, env="dev", since="30d", clock=lambda: NOW)
    assert [r.run_id for r in report.runs] == ["20261129-090000", "20261128-100000"]
    short, long = report.runs
    assert short.total_usd == pytest.approx(0.40 / 60, abs=1e-4)  # 30 s run, billed the 60 s minimum
    assert long.attempts == 2 and long.markets == ("spot", "on-demand")
    assert long.total_usd == pytest.approx(0.40 + 0.503, abs=1e-4)
    assert long.savings_usd == pytest.approx(1.006 - 0.40, abs=1e-4)
    assert report.total_usd == pytest.approx(0.40 / 60 + 0.903, abs=1e-4)
    assert report.savings_usd == pytest.approx((1.006 - 0.40) * 61 / 60, abs=1e-4)

    out = Console(record=True, width=200)
    render.cost(out, report, as_json=False)
    text = out.export_text()
    assert "20261128-100000" in text and "20261001-090000" not in text
    assert "$0.9030" in text and "$0.9097" in text and "spot, on-demand" in text and "total" in text
    assert "read 2026-11-25" in text  # the price table says when it was read
    out = Console(record=True, width=200)
    render.cost(out, report, as_json=True)
    assert json.loads(out.export_text())["runs"][1]["attempts"] == 2


def test_the_active_run_is_priced_so_far_from_the_state_files_attempts(s3, bucket):
    state = {
        "run_id": "20261130-110000",
        "status": "training",
        "attempts": [_attempt(1, "spot", "2026-11-30T11:00:00Z", None, 0.36, None)],
    }
    run = read_run(s3, bucket, "dev", "20261130-110000", state=state, clock=lambda: NOW)
    assert run.active and run.ledger is not None and run.ledger["attempts"][0]["ended_at"] is None
    ebs = 0.08 * 100 * 3600 / 2_592_000  # no run spec stored: the schema's 100 GB root volume
    assert run.cost_usd == pytest.approx(0.36 + ebs, abs=1e-4)


@pytest.mark.parametrize("bad", ["30", "0d", "3y", "", "-1d"])
def test_since_takes_minutes_hours_days_or_weeks(bad):
    assert parse_since("30d").days == 30 and parse_since("12h").total_seconds() == 43200
    assert parse_since("2w").days == 14 and parse_since("90m").total_seconds() == 5400
    with pytest.raises(ConfigError, match="30d, 12h, 90m or 2w"):
        parse_since(bad)


def test_cost_sweep_sums_only_that_sweeps_members_whatever_since_says(s3, bucket, moto_batch):
    backend = moto_batch.backend(bucket)
    for run_id, price in (
        ("20261001-090000-001", 0.40),
        ("20261001-090000-002", 0.60),
        ("20261001-090000", 1.0),
    ):
        one = [_attempt(1, "spot", "2026-10-01T09:00:00Z", "2026-10-01T10:00:00Z", price, "completed")]
        _put(s3, bucket, run_id, _training(run_id, one, "2026-10-01T10:00:00+00:00"))
    report = cost_report(backend, env="dev", since="1d", sweep="20261001-090000", clock=lambda: NOW)
    assert [r.run_id for r in report.runs] == ["20261001-090000-002", "20261001-090000-001"]
    assert report.total_usd == pytest.approx(1.0, abs=1e-4) and report.by_sweep() == {"20261001-090000": 1.0}
    out = Console(record=True, width=200)
    render.cost(out, report, as_json=False)
    assert "sweep 20261001-090000: $1.0000" in out.export_text()
    assert cost_report(backend, env="dev", since="30d", clock=lambda: NOW).runs == ()  # 2 months ago
    with pytest.raises(ConfigError, match="--sweep: sweep id"):
        cost_report(backend, env="dev", sweep="20261001-090000-001")
