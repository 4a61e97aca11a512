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
