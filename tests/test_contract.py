"""The contract round trip: documents the trainer writes are read and validated by the control plane."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.layout import RunPaths
from common.status import CompletionStatus, ErrorClass, RunStatus, Severity
from control.runs import read_run
from control.s3io import DocumentError, get_json
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier, error_record
from trainer.finalize import Ending, Outputs, finalize
from trainer.record import TrainingLog
from trainer.transfers import Transfers

PATHS = RunPaths(env="dev", run_id="20261125-140502")


def _finalized_run(s3, bucket: str, tmp_path: Path, completion: CompletionStatus) -> TrainingLog:
    errors = ErrorLog()
    retrier = Retrier(ExponentialBackoff(max_retries=1), errors=errors, sleep=lambda _s: None)
    record = TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=errors)
    with record.phase("training") as details:
        details["steps"] = 60
    record.metrics.update(model_wql=0.038, baseline_wql=0.072, final_loss=0.31)
    record.loss_curve += [[1, 2.5], [60, 0.31]]
    errors.add(
        error_record(
            error_class=ErrorClass.RETRIABLE,
            severity=Severity.WARNING,
            component="data_sync",
            message="SlowDown on GetObject",
            retry_count=1,
            max_retries=6,
        )
    )
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"w" * 4096)
    status = RunStatus.RESULTS_SYNC if completion is CompletionStatus.NORMAL else RunStatus.INTERRUPTED
    result = finalize(
        transfers=Transfers(s3, bucket, retrier),
        paths=PATHS,
        record=record,
        outputs=Outputs(model_dir=model),
        ending=Ending(
            status=status,
            completion=completion,
            exit_code=0 if completion is CompletionStatus.NORMAL else 3,
            reason="completed" if completion is CompletionStatus.NORMAL else "spot interruption notice",
        ),
        lock_path=tmp_path / "finalize.lock",
    )
    assert result.succeeded and not result.noop
    return record


@pytest.mark.parametrize(
    ("completion", "shown"),
    [
        (CompletionStatus.NORMAL, "succeeded"),
        (CompletionStatus.INTERRUPTED, "interrupted"),
    ],
)
def test_trainer_documents_are_read_and_validated_by_the_control_plane(
    s3, bucket, tmp_path, completion, shown
):
    _finalized_run(s3, bucket, tmp_path, completion)
    # control side: each document passes its schema on read
    training = get_json(s3, bucket, PATHS.training_log, "training")
    sentinel = get_json(s3, bucket, PATHS.success, "sentinel")
    assert training["completion_status"] == sentinel["completion_status"] == completion.value
    assert training["errors"][0]["retry_count"] == 1
    assert {a["key"] for a in training["artifacts"]} >= {PATHS.models + "model.safetensors"}
    summary = read_run(s3, bucket, "dev", PATHS.run_id)
    assert summary.status == shown
    assert summary.metrics["model_wql"] == pytest.approx(0.038)
    assert summary.errors == 1


def test_a_document_the_control_plane_cannot_trust_is_reported_with_its_path(s3, bucket, tmp_path):
    _finalized_run(s3, bucket, tmp_path, CompletionStatus.NORMAL)
    doc = json.loads(s3.get_object(Bucket=bucket, Key=PATHS.training_log)["Body"].read())
    doc["phases"][0]["status"] = "done"
    s3.put_object(Bucket=bucket, Key=PATHS.training_log, Body=json.dumps(doc).encode())
    with pytest.raises(DocumentError, match=r"\$\.phases\[0\]\.status"):
        get_json(s3, bucket, PATHS.training_log, "training")
    summary = read_run(s3, bucket, "dev", PATHS.run_id)
    assert summary.status == "invalid"
    assert "$.phases[0].status" in summary.problem
