"""report: a page with every plot from a fetched run, and notes instead of failures for missing inputs."""

from __future__ import annotations

import json

from control.report import write_report
from schemas import examples


def test_report_from_fetched_files(tmp_path):
    run = tmp_path / "dev" / "20261125-140502"
    (run / "logs").mkdir(parents=True)
    (run / "evaluation").mkdir()
    (run / "user-configs").mkdir()
    training = examples("training")[0]
    training["loss_curve"] = [[s, 2.0 / s] for s in range(1, 60)]
    (run / "logs" / "training.json").write_text(json.dumps(training))
    item = {
        "item_id": "item_000",
        "context_timestamps": ["2024-02-10T00:00:00", "2024-02-10T01:00:00"],
        "context_values": [1.0, 2.0],
        "horizon_timestamps": ["2024-02-10T02:00:00", "2024-02-10T03:00:00"],
        "actual": [3.0, None],
        "median": [2.5, 2.6],
        "q10": [2.0, 2.1],
        "q90": [3.0, 3.1],
        "seasonal_naive": [1.0, 2.0],
    }
    (run / "evaluation" / "forecasts.json").write_text(
        json.dumps({"items": [item, {**item, "item_id": "b"}]})
    )
    (run / "user-configs" / "launch-record.json").write_text(
        json.dumps(
            {"price_per_hour": 1.006, "instance_type": "g5.xlarge", "market": "spot", "price_source": "table"}
        )
    )
    result = write_report(run)
    assert {p.name for p in result.images} == {"loss.png", "forecasts.png", "phases.png", "cost.png"}
    assert all(p.stat().st_size > 1000 for p in result.images)
    page = result.index.read_text()
    assert "the model beats the baseline" in page and "$1.006/h" in page and not result.notes


def test_report_of_a_run_that_died_early_says_what_is_missing(tmp_path):
    run = tmp_path / "dev" / "20261125-140502"
    (run / "logs").mkdir(parents=True)
    training = examples("training")[0]
    training.update(completion_status="failed", phases=[], loss_curve=[])
    (run / "logs" / "training.json").write_text(json.dumps(training))
    result = write_report(run)
    assert result.index.exists() and result.images == ()
    notes = " ".join(result.notes)
    assert "no loss_curve" in notes and "forecasts.json" in notes and "no price recorded" in notes


def test_report_shows_the_ledger_and_the_interruption_latencies_on_the_timeline(tmp_path):
    from common import ledger
    from common.timeutil import parse_iso
    from schemas import validate

    run = tmp_path / "dev" / "20261125-140502"
    (run / "logs").mkdir(parents=True)
    training = examples("training")[0]
    base = {"instance_type": "g5.xlarge", "availability_zone": "us-east-1a", "notice_at": None}
    training["attempts"] = [
        {**base, "attempt": 1, "instance_id": "i-1", "market": "spot", "price_per_hour": 0.4,
         "price_source": "spot-history", "launched_at": "2026-11-25T14:05:02Z",
         "ended_at": "2026-11-25T14:20:00Z", "end": "interrupted"},
        {**base, "attempt": 2, "instance_id": "i-2", "market": "on-demand", "price_per_hour": 1.006,
         "price_source": "on-demand-table", "launched_at": "2026-11-25T14:22:00Z",
         "ended_at": "2026-11-25T14:31:09Z", "end": "completed"},
    ]  # fmt: skip
    training["interruptions"] = [
        {"attempt": 1, "notice_at": "2026-11-25T14:18:00Z", "checkpoint_durable_at": "2026-11-25T14:18:45Z",
         "replacement_launched_at": "2026-11-25T14:22:00Z", "first_resumed_step_at": "2026-11-25T14:25:30Z",
         "steps_lost": 3},
    ]  # fmt: skip
    training["ledger"] = ledger.ledger(
        training["attempts"],
        phases=training["phases"],
        interruptions=training["interruptions"],
        volume_gb=100,
        now=parse_iso(training["ended_at"]),
    ).to_dict()
    validate("training", training)
    (run / "logs" / "training.json").write_text(json.dumps(training))
    result = write_report(run)
    assert {"phases.png", "cost.png"} <= {p.name for p in result.images}
    page = result.index.read_text()
    assert "Timeline: phases, attempts and interruptions" in page and "Cost by attempt and use" in page
    assert "<h2>Cost ledger</h2>" in page and "on-demand" in page and "saved $" in page
    # notice 14:18:00 -> durable +45 s -> replacement +240 s -> first resumed step +450 s; 3 steps lost
    assert "<td>45.0 s</td><td>240.0 s</td><td>450.0 s</td><td>3</td>" in page
