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


def _evaluated(beats: bool | None, *, exported: str = "fine_tuned", early_stopped: bool = False) -> dict:
    """A training.json with an evaluation: fine-tuned vs zero-shot vs seasonal naive on 2 test windows."""
    from schemas import validate

    def scores(wql: float, mase: float) -> dict:
        return {"wql": wql, "mase": mase, "windows": [
            {"name": "test-1", "wql": wql + 0.001, "mase": mase + 0.01},
            {"name": "test-2", "wql": wql - 0.001, "mase": mase - 0.01}]}  # fmt: skip

    training = examples("training")[0]
    best = 0.0412 if beats is not False else 0.0533
    training["metrics"].update(model_wql=0.0311, zero_shot_wql=0.0455, zero_shot_mase=0.88,
                               val_wql=best, zero_shot_val_wql=0.0487)  # fmt: skip
    training["evaluation"] = {
        "windows": [{"name": "test-1", "items": 3, "first_start": "2024-03-01T00:00:00Z",
                     "last_start": "2024-03-01T00:00:00Z"}, {"name": "test-2", "items": 3}],
        "season": 24, "season_source": "gluonts", "quantile_levels": [0.1, 0.5, 0.9],
        "models": {"fine_tuned": scores(0.0311, 0.77), "zero_shot": scores(0.0455, 0.88),
                   "seasonal_naive": scores(0.069, 1.04)},
        "items": [{"item_id": f"item_{i:03d}", "fine_tuned": {"wql": 0.0301, "mase": 0.7},
                   "zero_shot": {"wql": 0.0402, "mase": 0.8}, "seasonal_naive": {"wql": 0.0703, "mase": 1.1}}
                  for i in range(25)],
        "items_truncated": False,
        "validation": {"zero_shot_wql": 0.0487, "zero_shot_loss": 1.2, "best_wql": best, "best_step": 200,
                       "history": [[0, 0.0487, 1.2], [100, 0.045, 1.1], [200, best, 1.0], [300, 0.06, 1.05]],
                       "early_stopped": early_stopped, "stopped_at_step": 300 if early_stopped else None},
        "beats_zero_shot": beats, "exported": exported,
        "warnings": [] if beats is not False else [
            f"fine-tuned model does not beat the base model (zero-shot) on validation: WQL {best} vs 0.0487"],
    }  # fmt: skip
    validate("training", training)
    return training


def _forecast_item(item_id: str) -> dict:
    return {
        "item_id": item_id,
        "context_timestamps": ["2024-02-10T00:00:00Z", "2024-02-10T01:00:00Z"],
        "context_values": [1.0, 2.0],
        "horizon_timestamps": ["2024-02-10T02:00:00Z", "2024-02-10T03:00:00Z"],
        "actual": [3.0, 2.0],
        "median": [2.5, 2.6],
        "q10": [2.0, 2.1],
        "q90": [3.0, 3.1],
        "zero_shot_median": [2.2, 2.3],
        "zero_shot_q10": [1.8, 1.9],
        "zero_shot_q90": [2.8, 2.9],
        "seasonal_naive": [1.0, 2.0],
    }


def _write(tmp_path, training: dict, forecasts: dict | None = None):
    run = tmp_path / "dev" / "20261125-140502"
    (run / "logs").mkdir(parents=True)
    (run / "logs" / "training.json").write_text(json.dumps(training))
    if forecasts is not None:
        (run / "evaluation").mkdir()
        (run / "evaluation" / "forecasts.json").write_text(json.dumps(forecasts))
    return write_report(run)


def _plot_notes(result) -> list[str]:
    return [n for n in result.notes if not n.startswith("Cost")]  # no launch record here: no price


def _cells(page: str) -> str:
    return page.replace("<b>", "").replace("</b>", "")


def test_report_compares_the_three_models_overall_per_window_and_per_item(tmp_path):
    training = _evaluated(True, early_stopped=True)
    result = _write(tmp_path, training, {"items": [_forecast_item("a"), _forecast_item("b")]})
    assert {"validation.png", "forecasts.png"} <= {p.name for p in result.images}
    assert result.evaluation == training["evaluation"] and not _plot_notes(result)
    page = result.index.read_text()
    cells = _cells(page)
    assert (
        "Fine-tuned beats zero-shot on validation (WQL 0.0412 vs 0.0487) and seasonal naive on test" in page
    )
    assert "NOT beat" not in page
    # overall: fine-tuned, zero-shot and seasonal naive WQL and MASE side by side, the lowest in bold
    assert (
        "<td>0.0311</td><td>0.7700</td><td>0.0455</td><td>0.8800</td><td>0.0690</td><td>1.0400</td>" in cells
    )
    assert "<td><b>0.0311</b></td>" in page
    # per window (test-2 = overall - 0.001) and per item
    assert (
        "<td>0.0301</td><td>0.7600</td><td>0.0445</td><td>0.8700</td><td>0.0680</td><td>1.0300</td>" in cells
    )
    assert "test-1 (3 items, from 2024-03-01T00:00:00Z)" in page and "test-2 (3 items)" in page
    assert "item_019" in page and "item_020" not in page and "the first 20 items" in page
    assert "early stopping ended training at step 300" in page and "MASE season 24 (gluonts)" in page
    assert "Forecasts on the last test window: fine-tuned, zero-shot and seasonal naive" in page


def test_report_says_prominently_when_fine_tuning_does_not_beat_the_base(tmp_path):
    page = _write(tmp_path / "kept", _evaluated(False, exported="base")).index.read_text()
    assert "class='verdict bad alarm'" in page
    assert (
        "The fine-tuned model does NOT beat the base model (zero-shot) on validation: WQL 0.0533 vs 0.0487; "
        "models/ holds the base model (keep_base_if_worse)." in page
    )
    assert "fine-tuned model does not beat the base model (zero-shot) on validation: WQL 0.0533" in page
    anyway = _write(tmp_path / "anyway", _evaluated(False)).index.read_text()
    assert (
        "models/ holds the fine-tuned model anyway (set keep_base_if_worse = true to export the base)"
        in anyway
    )
    assert "Fine-tuned beats zero-shot" not in anyway


def test_report_of_an_old_run_without_evaluation_renders_as_before(tmp_path):
    item = _forecast_item("a")
    for key in ("zero_shot_median", "zero_shot_q10", "zero_shot_q90"):
        del item[key]
    result = _write(tmp_path, examples("training")[0], {"items": [item]})
    page = result.index.read_text()
    assert result.evaluation is None and "validation.png" not in {p.name for p in result.images}
    assert "the model beats the baseline" in page and "Forecasts on held-out series" in page
    assert "zero-shot" not in page and not _plot_notes(result)


def test_a_validation_without_history_is_a_note_not_a_failure(tmp_path):
    training = _evaluated(None)
    training["evaluation"]["validation"].update(history=[], best_wql=None, best_step=None, zero_shot_wql=None)
    result = _write(tmp_path, training)
    assert "Validation did not measure the base model (zero-shot)" in result.index.read_text()
    assert any("no validation history" in n for n in result.notes)
