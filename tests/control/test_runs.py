"""Run history reads the sentinel's shape: why the run ended, and _FAILED_UPLOAD's incomplete artifacts."""

from __future__ import annotations

import json

import pytest

from common import layout
from common.status import CompletionStatus
from control.fetch import mirror_name, schema_of
from control.monitor import Outcome, view_of_ended
from control.runs import read_run, status_of_completion
from schemas import examples

PATHS = layout.RunPaths(env="dev", run_id="20261125-140502")


def _sentinel(completion: str, reason: str, status: str = "success") -> dict:
    doc = examples("sentinel")[0]
    doc.update(completion_status=completion, reason=reason, status=status, exit_code=3)
    return doc


def test_a_run_known_by_its_sentinel_says_why_it_ended(s3, bucket):
    doc = _sentinel("interrupted", "max runtime of 60 min reached")
    s3.put_object(Bucket=bucket, Key=PATHS.success, Body=json.dumps(doc).encode())
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    assert (run.status, run.exit_code, run.reason, run.problem) == (
        "interrupted",
        3,
        "max runtime of 60 min reached",
        None,
    )
    view = view_of_ended(run)
    assert view.outcome is Outcome.INTERRUPTED and "max runtime of 60 min reached" in view.advice


@pytest.mark.row("records-recovery-terminate-observed")
def test_a_run_the_recovery_handler_ended_before_any_log_reads_failed_with_its_reason(s3, bucket):
    """An instance SIGKILLed with no recoveries left: the handler fails the run and writes only
    cleanup_status.json. Before: ``unknown``, "the run ended before it wrote its logs"."""
    reason = "instance_vanished: i-0abc gone while training; interrupted 1 times; max_recoveries is 0"
    doc = examples("cleanup-status")[0]
    doc.update(written_by="recovery", reason=reason)
    s3.put_object(Bucket=bucket, Key=PATHS.cleanup_status, Body=json.dumps(doc).encode())
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    assert run.status == "failed" and reason in run.problem
    assert f"invoke launch --env=dev --resume {PATHS.run_id}" in run.problem
    assert view_of_ended(run).outcome is Outcome.FAILED


def test_a_failed_upload_sentinel_is_read_and_its_reason_is_the_problem(s3, bucket):
    doc = _sentinel("failed", "finalize failed: gave up after 6 retries", status="failed_upload")
    s3.put_object(Bucket=bucket, Key=PATHS.failed_upload, Body=json.dumps(doc).encode())
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    assert run.status == "failed" and run.reason == doc["reason"]
    assert "_FAILED_UPLOAD" in run.problem and "gave up after 6 retries" in run.problem


def test_a_sentinel_without_a_reason_is_invalid(s3, bucket):
    doc = _sentinel("normal", "completed")
    del doc["reason"]
    s3.put_object(Bucket=bucket, Key=PATHS.success, Body=json.dumps(doc).encode())
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    assert run.status == "invalid" and "reason" in run.problem


@pytest.mark.parametrize("completion", list(CompletionStatus))
def test_every_completion_status_has_a_history_status(completion):
    assert status_of_completion(completion) != "unknown"
    assert status_of_completion(completion.value) == status_of_completion(completion)
    assert status_of_completion(None) == status_of_completion("results_sync") == "unknown"


def test_fetch_mirrors_every_run_key_under_the_run_dir_and_checks_both_sentinels():
    assert mirror_name(PATHS, PATHS.forecasts) == layout.FORECASTS_KEY
    assert mirror_name(PATHS, PATHS.launch_record) == "user-configs/" + layout.LAUNCH_RECORD_NAME
    assert mirror_name(PATHS, PATHS.trainer_log) == "logs/" + layout.TRAINER_LOG_NAME
    with pytest.raises(layout.LayoutError):
        mirror_name(PATHS, "dev/system-state.json")
    kinds = schema_of(PATHS)
    assert kinds["_SUCCESS"] == kinds["_FAILED_UPLOAD"] == "sentinel"


def _evaluated(beats: bool | None, exported: str = "fine_tuned") -> dict:
    """A training.json whose evaluation says whether fine-tuning beat the base model on validation."""
    from schemas import validate

    def scores(wql: float) -> dict:
        return {"wql": wql, "mase": 1.0, "windows": [{"name": "test-1", "wql": wql, "mase": 1.0}]}

    training = examples("training")[0]
    best = 0.0412 if beats else 0.0533
    training["metrics"].update(
        zero_shot_wql=0.0455, zero_shot_mase=0.9, val_wql=best, zero_shot_val_wql=0.0487
    )
    training["evaluation"] = {
        "windows": [{"name": "test-1", "items": 2}], "season": 24, "season_source": "gluonts",
        "quantile_levels": [0.1, 0.5, 0.9],
        "models": {"fine_tuned": scores(0.031), "zero_shot": scores(0.0455), "seasonal_naive": scores(0.069)},
        "validation": {"zero_shot_wql": 0.0487, "best_wql": best, "best_step": 200,
                       "history": [[0, 0.0487, 1.0], [200, best, 0.9]], "early_stopped": True,
                       "stopped_at_step": 300},
        "beats_zero_shot": beats, "exported": exported, "warnings": [],
    }  # fmt: skip
    validate("training", training)
    return training


def _text(renderable) -> str:
    from rich.console import Console

    out = Console(record=True, width=250)
    out.print(renderable)
    return out.export_text()


def _put_training(s3, bucket, training: dict) -> None:
    s3.put_object(Bucket=bucket, Key=PATHS.training_log, Body=json.dumps(training).encode())


@pytest.mark.parametrize("exported", ["base", "fine_tuned"])
def test_a_run_whose_fine_tuned_model_lost_to_zero_shot_is_marked(s3, bucket, exported):
    from control.cli.tables import runs_table

    _put_training(s3, bucket, _evaluated(False, exported))
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    assert (run.beats_zero_shot, run.exported, run.best_step, run.early_stopped) == (
        False,
        exported,
        200,
        True,
    )
    assert run.zero_shot_wql == 0.0455 and run.val_wql == 0.0533 and run.zero_shot_val_wql == 0.0487
    listed = _text(runs_table([run], "dev"))
    assert "zero-shot WQL" in listed and "vs base" in listed and "0.0455" in listed and "WORSE" in listed
    assert ("(base exported)" in listed) is (exported == "base")
    doc = json.loads(json.dumps(run.to_dict()))  # what `invoke runs --json` prints
    assert doc["beats_zero_shot"] is False and doc["exported"] == exported and doc["zero_shot_wql"] == 0.0455
    assert doc["val_wql"] == 0.0533 and doc["zero_shot_val_wql"] == 0.0487 and doc["best_step"] == 200
    assert (
        "does NOT beat the base model (zero-shot) on validation: WQL 0.0533 vs 0.0487" in doc["versus_base"]
    )


def test_a_run_whose_fine_tuned_model_beat_zero_shot_is_not_marked(s3, bucket):
    from control.cli.tables import runs_table

    _put_training(s3, bucket, _evaluated(True))
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    listed = _text(runs_table([run], "dev"))
    assert run.beats_zero_shot is True and "better" in listed and "WORSE" not in listed
    assert run.to_dict()["versus_base"] == (
        "the fine-tuned model beats the base model (zero-shot) on validation: WQL 0.0412 vs 0.0487"
    )


def test_a_run_from_before_the_evaluation_lists_without_it(s3, bucket):
    from control.cli.tables import runs_table

    _put_training(s3, bucket, examples("training")[0])
    run = read_run(s3, bucket, "dev", PATHS.run_id)
    doc = run.to_dict()
    assert doc["beats_zero_shot"] is None and doc["zero_shot_wql"] is None and doc["versus_base"] is None
    listed = _text(runs_table([run], "dev"))
    assert "0.0310" in listed and "WORSE" not in listed and "better" not in listed
    assert "no runs yet" in _text(runs_table([], "dev"))


def test_runs_lists_sweep_members_with_their_sweep_and_own_live_state(tmp_path, s3, bucket, moto_batch):
    from datetime import UTC, datetime

    from control.runs import list_runs
    from control.sweep import sweep

    s3.put_object(Bucket=bucket, Key="cached-datasets/training-data/part-0.parquet", Body=b"PAR1")
    grid = tmp_path / "sweep.toml"
    grid.write_text('[grid]\n"model.seed" = [1, 2]\n')
    backend = moto_batch.backend(bucket)
    sweep(backend, env="dev", grid_path=grid, clock=lambda: datetime(2026, 12, 1, 21, 5, 2, tzinfo=UTC))
    found = list_runs(backend, env="dev")
    assert [(r.run_id, r.sweep_id, r.status, r.active) for r in found] == [
        ("20261201-210502-002", "20261201-210502", "initialization", True),
        ("20261201-210502-001", "20261201-210502", "initialization", True),
    ]  # each from its own state file: the env's single-run lock is free
    from control.cli.tables import runs_table

    assert "20261201-210502" in _text(runs_table(found, "dev")).split("20261201-210502-002", 1)[1]
    assert found[0].to_dict()["sweep_id"] == "20261201-210502"
