"""The cost ledger against hand-computed cases: 60 s minimum, two attempts, spot, lost work, EBS."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common import ledger
from common.pricing import EBS_GP3_USD_PER_GB_MONTH, ON_DEMAND_USD_PER_HOUR

G5 = ON_DEMAND_USD_PER_HOUR["g5.xlarge"]  # 1.006 USD/h
EBS_PER_GB_S = EBS_GP3_USD_PER_GB_MONTH / (86_400 * 30)


def _at(hms: str) -> str:
    return f"2026-11-25T{hms}Z"


def _attempt(n, market, start, end, *, price=None, source="on-demand-table", how=None):
    return {
        "attempt": n,
        "instance_id": f"i-{n:017d}",
        "instance_type": "g5.xlarge",
        "market": market,
        "availability_zone": "us-east-1a",
        "price_per_hour": price,
        "price_source": source,
        "launched_at": _at(start),
        "ended_at": _at(end) if end else None,
        "end": how,
        "notice_at": None,
    }


def _phase(name, start, end):
    return {"name": name, "status": "succeeded", "started_at": _at(start), "ended_at": _at(end)}


NOW = datetime(2026, 11, 25, 14, 0, 0, tzinfo=UTC)


def test_an_instance_that_ran_30_s_is_billed_the_60_s_minimum_and_its_volume_per_second():
    run = ledger.ledger([_attempt(1, "on-demand", "12:00:00", "12:00:30", price=G5)], volume_gb=100, now=NOW)
    (a,) = run.attempts
    assert a.running_s == 30 and a.billable_s == 60
    assert a.instance_usd == pytest.approx(1.006 * 60 / 3600)  # 0.016767
    assert a.ebs_usd == pytest.approx(100 * 30 * EBS_PER_GB_S)  # the volume: its 30 s of life
    assert run.savings_usd == 0  # on-demand saves nothing
    assert a.split_s["other"] == 60  # no phase recorded: all of it unaccounted


def _two_attempts():
    """Attempt 1: spot at 0.40 USD/h, 12:00-13:00, interrupted in training; checkpoint durable at 12:50.
    Attempt 2: on-demand, 13:05-13:35, completed."""
    attempts = [
        _attempt(1, "spot", "12:00:00", "13:00:00", price=0.40, source="spot-history", how="interrupted"),
        _attempt(2, "on-demand", "13:05:00", "13:35:00", price=G5),
    ]
    phases = [
        _phase("preflight", "12:02:00", "12:03:00"),
        _phase("data_sync", "12:03:00", "12:05:00"),
        _phase("training", "12:05:00", "12:59:00"),
        _phase("preflight", "13:07:00", "13:08:00"),
        _phase("data_sync", "13:08:00", "13:09:00"),
        _phase("training", "13:09:00", "13:29:00"),
        _phase("evaluation", "13:29:00", "13:31:00"),
        _phase("results_sync", "13:31:00", "13:33:00"),
        _phase("finalize", "13:33:00", "13:33:30"),
        _phase("cleanup", "13:33:30", "13:34:00"),
    ]
    interruptions = [{"attempt": 1, "notice_at": _at("12:58:00"), "checkpoint_durable_at": _at("12:50:00")}]
    return ledger.ledger(attempts, phases=phases, interruptions=interruptions, volume_gb=100, now=NOW)


def test_two_attempts_spot_then_on_demand_split_priced_and_compared_with_on_demand():
    run = _two_attempts()
    first, second = run.attempts
    # attempt 1: 2 min boot + 1 min preflight; 54 min training of which 12:50-12:59 (9 min) lost
    assert first.split_s == {
        "boot_setup": 180,
        "data_sync": 120,
        "training": 2700,
        "evaluation": 0,
        "upload": 0,
        "lost": 540,
        "other": 60,
    }
    assert first.instance_usd == pytest.approx(0.40)
    assert first.on_demand_usd == pytest.approx(1.006)
    # attempt 2: 2 min boot + 1 min preflight, the upload is results_sync + finalize + cleanup
    assert second.split_s == {
        "boot_setup": 180,
        "data_sync": 60,
        "training": 1200,
        "evaluation": 120,
        "upload": 180,
        "lost": 0,
        "other": 60,
    }
    assert second.instance_usd == pytest.approx(1.006 / 2)
    ebs = 100 * 5400 * EBS_PER_GB_S  # both volumes' lives: 3600 s + 1800 s
    assert run.total_usd == pytest.approx(0.40 + 0.503 + ebs)
    assert run.on_demand_usd == pytest.approx(1.006 + 0.503 + ebs)
    assert run.savings_usd == pytest.approx(0.606)
    assert run.training_share == pytest.approx((2700 + 1200) / 5400)
    doc = run.to_dict(max_cost=5.0)
    assert doc["priced"] is True and doc["max_cost"] == 5.0
    assert doc["split_s"]["lost"] == 540 and doc["billable_s"] == 5400
    assert doc["savings_pct"] == pytest.approx(round(100 * 0.606 / (1.509 + ebs), 1))


def test_an_interruption_with_no_durable_checkpoint_loses_all_of_the_attempts_training():
    attempts = [_attempt(1, "spot", "12:00:00", "12:30:00", price=0.40, how="vanished")]
    phases = [_phase("training", "12:10:00", "12:29:00")]
    (a,) = ledger.ledger(attempts, phases=phases, volume_gb=50, now=NOW).attempts
    assert a.split_s["lost"] == 19 * 60 and a.split_s["training"] == 0
    assert a.split_s["boot_setup"] == 600


def test_an_attempt_still_running_is_priced_up_to_now_and_a_missing_price_falls_back_to_the_list_price():
    run = ledger.ledger(
        [_attempt(1, "spot", "13:00:00", None, price=None, source="unknown")], volume_gb=100, now=NOW
    )
    (a,) = run.attempts
    assert a.ended_at is None and a.running_s == 3600
    assert a.price_per_hour == G5 and a.price_source == "on-demand-table"
    assert run.to_dict()["computed_at"] == "2026-11-25T14:00:00Z"


def test_an_unknown_instance_type_stays_unpriced():
    attempt = _attempt(1, "on-demand", "12:00:00", "12:10:00")
    attempt["instance_type"] = "p5.48xlarge"
    run = ledger.ledger([attempt], volume_gb=100, now=NOW)
    assert run.attempts[0].instance_usd is None and run.priced is False
    assert run.to_dict()["attempts"][0]["total_usd"] is None


def test_projected_cost_adds_the_rest_at_the_current_rate():
    # spent 1.00; 30 more minutes at 2.00 USD/h and a 100 GB volume
    projected = ledger.projected_cost(spent_usd=1.0, usd_per_hour=2.0, remaining_s=1800, volume_gb=100)
    assert projected == pytest.approx(1.0 + 1.0 + 100 * 1800 * EBS_PER_GB_S)
    assert ledger.projected_cost(spent_usd=1.0, usd_per_hour=None, remaining_s=-5, volume_gb=0) == 1.0


def test_attempts_of_a_state_without_attempts_is_its_one_instance():
    state = {
        "instance_id": "i-0abc",
        "instance_type": "g5.xlarge",
        "market": "spot",
        "availability_zone": "us-east-1a",
        "price_per_hour": 0.4,
        "started_at": _at("12:00:00"),
    }
    (one,) = ledger.attempts_of(state)
    assert one["attempt"] == 1 and one["launched_at"] == _at("12:00:00") and one["ended_at"] is None
    assert ledger.attempts_of({**state, "attempts": [{"attempt": 7}]}) == [{"attempt": 7}]
    assert ledger.attempts_of({"started_at": _at("12:00:00")}) == []


def test_an_attempt_that_vanished_before_writing_its_phases_loses_the_time_since_its_checkpoint():
    attempts = [
        _attempt(1, "spot", "12:00:00", "13:00:00", price=0.40, how="vanished"),
        _attempt(2, "spot", "13:05:00", "13:20:00", price=0.40),
    ]
    phases = [_phase("training", "13:08:00", "13:18:00")]  # only the second attempt's training.json
    interruptions = [{"attempt": 1, "checkpoint_durable_at": _at("12:40:00")}]
    first, second = ledger.ledger(
        attempts, phases=phases, interruptions=interruptions, volume_gb=0, now=NOW
    ).attempts
    assert first.split_s["lost"] == 20 * 60 and first.split_s["other"] == 40 * 60
    assert second.split_s["training"] == 600 and second.split_s["lost"] == 0
