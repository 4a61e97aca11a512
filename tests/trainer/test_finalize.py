"""Finalize: artifacts with sha256, training.json, the sentinel last; idempotent; _FAILED_UPLOAD.

Time is a fake clock (``clock`` fixture): the sentinel's ``finalized_at`` is exactly its time.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pytest

from common.exitcodes import ExitCode
from common.layout import RunPaths
from common.status import CompletionStatus, RunStatus, SentinelStatus
from common.timeutil import iso
from schemas import SchemaValidationError, validate
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier
from trainer.finalize import Ending, Outputs, finalize, sentinel
from trainer.record import TrainingLog
from trainer.transfers import Transfers

PATHS = RunPaths(env="dev", run_id="20261125-140502")
WRITES = (
    "PutObject",
    "CreateMultipartUpload",
    "UploadPart",
    "CompleteMultipartUpload",
    "CopyObject",
    "DeleteObject",
)


class Writes:
    """Keys of every write request the client sends."""

    def __init__(self, s3: Any) -> None:
        self.keys: list[str] = []
        for op in WRITES:
            s3.meta.events.register(f"before-parameter-build.s3.{op}", self._seen)

    def _seen(self, params: dict[str, Any], **_: Any) -> None:
        self.keys.append(params.get("Key", ""))


def make_outputs(tmp_path: Path) -> Outputs:
    model = tmp_path / "model"
    model.mkdir()
    (model / "config.json").write_text('{"architectures": ["Chronos2Model"]}')
    (model / "model.safetensors").write_bytes(b"\x00weights" * 1000)
    forecasts = tmp_path / "forecasts.json"
    forecasts.write_text(json.dumps({"items": []}))
    log_file = tmp_path / "trainer.log"
    log_file.write_text("2026-11-25T14:05:02Z INFO trainer: hello\n")
    ckpt = tmp_path / "checkpoints" / "checkpoint-10"
    ckpt.mkdir(parents=True)
    (ckpt / "optimizer.pt").write_bytes(b"o" * 100)
    (ckpt / "trainer_state.json").write_text('{"global_step": 10}')
    return Outputs(
        model_dir=model,
        checkpoints_dir=tmp_path / "checkpoints",
        forecasts=forecasts,
        trainer_log=log_file,
        model_metadata=None,
    )


def setup(s3: Any, bucket: str, max_retries: int = 2) -> tuple[Transfers, TrainingLog, list[float]]:
    sleeps: list[float] = []
    errors = ErrorLog()
    retrier = Retrier(ExponentialBackoff(max_retries=max_retries), errors=errors, sleep=sleeps.append)
    record = TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=errors)
    return Transfers(s3, bucket, retrier), record, sleeps


REASONS = {
    CompletionStatus.NORMAL: "completed",
    CompletionStatus.INTERRUPTED: "spot interruption notice: terminate at 2026-11-25T14:33:00Z",
    CompletionStatus.KILLED: "killed by alice",
    CompletionStatus.FAILED: "terminal error in preflight: no GPU: nvidia-smi not found on PATH",
}


def ending(completion: CompletionStatus = CompletionStatus.NORMAL) -> Ending:
    status = RunStatus.RESULTS_SYNC if completion is CompletionStatus.NORMAL else RunStatus(completion.value)
    return Ending(
        status=status,
        completion=completion,
        exit_code=ExitCode.for_completion(completion),
        reason=REASONS[completion],
    )


def do_finalize(
    transfers: Transfers,
    record: TrainingLog,
    outputs: Outputs,
    tmp_path: Path,
    completion: CompletionStatus = CompletionStatus.NORMAL,
    clock: Any = None,
) -> Any:
    extra = {"clock": clock} if clock is not None else {}
    return finalize(
        transfers=transfers,
        paths=PATHS,
        record=record,
        outputs=outputs,
        ending=ending(completion),
        lock_path=tmp_path / "finalize.lock",
        **extra,
    )


def read(s3: Any, bucket: str, key: str) -> Any:
    return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_finalize_uploads_everything_and_writes_the_sentinel_last(
    s3: Any, bucket: str, tmp_path: Path, caplog
):
    caplog.set_level(logging.INFO)
    transfers, record, _ = setup(s3, bucket)
    writes = Writes(s3)
    result = do_finalize(transfers, record, make_outputs(tmp_path), tmp_path)
    assert result.succeeded and not result.noop
    assert writes.keys[-1] == PATHS.success and writes.keys[-2] == PATHS.training_log
    done = validate("sentinel", read(s3, bucket, PATHS.success))
    assert done["completion_status"] == "normal" and done["status"] == "success"
    assert done["reason"] == "completed" and done["exit_code"] == 0
    training = validate(
        "training", json.loads(s3.get_object(Bucket=bucket, Key=PATHS.training_log)["Body"].read())
    )
    artifacts = {a["key"]: a for a in training["artifacts"]}
    weights = artifacts[PATHS.models + "model.safetensors"]
    assert weights["sha256"] == hashlib.sha256(b"\x00weights" * 1000).hexdigest() and weights["size"] == 8000
    assert PATHS.checkpoints + "checkpoint-10/trainer_state.json" in artifacts  # not uploaded before: now
    assert PATHS.prefix + "evaluation/forecasts.json" in artifacts
    assert s3.get_object(Bucket=bucket, Key=PATHS.logs + "trainer.log")["Body"].read().startswith(b"2026")
    lines = [r.message for r in caplog.records if r.message.startswith("STATE:")]
    assert lines[0].startswith("STATE: FINALIZE_START") and lines[-1].startswith("STATE: FINALIZE_SUCCESS")
    assert any(line.startswith("STATE: UPLOAD_SUCCESS") for line in lines)
    assert all(re.match(r"STATE: [A-Z_]+ \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", line) for line in lines)


def test_finalize_twice_the_second_is_a_no_op_without_any_upload(s3: Any, bucket: str, tmp_path: Path):
    transfers, record, _ = setup(s3, bucket)
    outputs = make_outputs(tmp_path)
    assert do_finalize(transfers, record, outputs, tmp_path).succeeded
    writes = Writes(s3)
    second = do_finalize(transfers, record, outputs, tmp_path)
    assert second.noop and second.succeeded
    assert writes.keys == []


def _finalize_as(transfers, record, tmp_path, attempt, completion=CompletionStatus.NORMAL, name="a"):
    (tmp_path / name).mkdir()
    return finalize(
        transfers=transfers,
        paths=PATHS,
        record=record,
        outputs=make_outputs(tmp_path / name),
        ending=dataclasses.replace(ending(completion), attempt=attempt),
        lock_path=tmp_path / "finalize.lock",
    )


def test_a_later_attempt_finalizes_over_an_earlier_attempts_late_sentinel_of_an_unfinished_run(
    s3: Any, bucket: str, tmp_path: Path
):
    """Attempt 1, terminated from outside, wrote its ``interrupted`` sentinel in its shutdown grace
    after attempt 2's data_sync had cleared the previous one: attempt 2's finalize was a no-op and
    its results never went up (the window the fault matrix's terminate column left open)."""
    transfers, record, _ = setup(s3, bucket)
    assert _finalize_as(transfers, record, tmp_path, 1, CompletionStatus.INTERRUPTED, "first").succeeded
    late = validate("sentinel", read(s3, bucket, PATHS.success))
    assert (late["attempt"], late["completion_status"]) == (1, "interrupted")
    _, second_record, _ = setup(s3, bucket)
    result = _finalize_as(transfers, second_record, tmp_path, 2, name="second")
    assert result.succeeded and not result.noop
    done = validate("sentinel", read(s3, bucket, PATHS.success))
    assert (done["attempt"], done["completion_status"]) == (2, "normal")
    assert read(s3, bucket, PATHS.training_log)["completion_status"] == "normal"


@pytest.mark.parametrize(
    ("first", "completion", "again"),
    [
        (1, CompletionStatus.NORMAL, 2),  # the run finished: a later attempt changes nothing
        (2, CompletionStatus.INTERRUPTED, 2),  # the same attempt finalizing twice
        (None, CompletionStatus.INTERRUPTED, 2),  # a sentinel from before the field: final
    ],
)
def test_a_sentinel_of_a_finished_run_or_of_this_attempt_keeps_finalize_a_no_op(
    s3: Any, bucket: str, tmp_path: Path, first, completion, again
):
    transfers, record, _ = setup(s3, bucket)
    assert _finalize_as(transfers, record, tmp_path, first, completion, "first").succeeded
    before = read(s3, bucket, PATHS.success)
    writes = Writes(s3)
    _, second_record, _ = setup(s3, bucket)
    assert _finalize_as(transfers, second_record, tmp_path, again, name="second").noop
    assert writes.keys == [] and read(s3, bucket, PATHS.success) == before
    assert ("attempt" in before) is (first is not None)


def test_an_upload_that_fails_after_every_retry_leaves_failed_upload(
    s3: Any, bucket: str, tmp_path: Path, caplog
):
    from botocore.exceptions import ClientError

    caplog.set_level(logging.INFO)
    transfers, record, sleeps = setup(s3, bucket, max_retries=2)

    def broken(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key", "").endswith("model.safetensors"):
            raise ClientError(
                {
                    "Error": {"Code": "InternalError", "Message": "boom"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "PutObject",
            )

    s3.meta.events.register("before-parameter-build.s3.PutObject", broken)
    result = do_finalize(transfers, record, make_outputs(tmp_path), tmp_path)
    assert not result.succeeded and "gave up after 2 retries" in (result.error or "")
    assert sleeps == [1, 2]
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    assert PATHS.success not in keys and PATHS.failed_upload in keys
    failed = validate("sentinel", read(s3, bucket, PATHS.failed_upload))  # the sentinel's shape
    assert failed["status"] == "failed_upload" and failed["completion_status"] == "failed"
    assert failed["exit_code"] == 1 and failed["reason"].startswith("finalize failed: ")
    assert "model.safetensors" in failed["reason"]
    training = validate(
        "training", json.loads(s3.get_object(Bucket=bucket, Key=PATHS.training_log)["Body"].read())
    )
    assert training["completion_status"] == "failed"
    assert [e["retry_count"] for e in training["errors"] if e["error_class"] == "retriable"][:2] == [1, 2]
    messages = [r.message for r in caplog.records]
    assert any(m.startswith("STATE: UPLOAD_FAIL") for m in messages)
    assert any(m.startswith("STATE: FINALIZE_FAILED") for m in messages)


def test_an_interrupted_run_finalizes_without_a_model(s3: Any, bucket: str, tmp_path: Path):
    transfers, record, _ = setup(s3, bucket)
    outputs = Outputs(trainer_log=None)
    assert do_finalize(transfers, record, outputs, tmp_path, CompletionStatus.INTERRUPTED).succeeded
    done = read(s3, bucket, PATHS.success)
    assert done["completion_status"] == "interrupted" and done["exit_code"] == 3
    assert done["status"] == "success" and done["reason"].startswith("spot interruption notice")


def test_phases_record_status_and_duration():
    record = TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=ErrorLog())
    with record.phase("preflight") as details:
        details["gpu"] = None
    with pytest.raises(RuntimeError), record.phase("data_sync"):
        raise RuntimeError("x")
    doc = record.document(status=RunStatus.FAILED, completion=CompletionStatus.FAILED, exit_code=1)
    assert [(p["name"], p["status"]) for p in doc["phases"]] == [
        ("preflight", "succeeded"),
        ("data_sync", "failed"),
    ]
    assert all(p["duration_s"] >= 0 and p["ended_at"] for p in doc["phases"])


@pytest.mark.parametrize("completion", list(CompletionStatus))
def test_the_sentinel_says_success_how_the_run_ended_and_why_at_the_clocks_time(
    s3: Any, bucket: str, tmp_path: Path, clock: Any, completion: CompletionStatus
):
    transfers, _, _ = setup(s3, bucket)
    record = TrainingLog(run_id=PATHS.run_id, env=PATHS.env, errors=ErrorLog(), clock=clock)
    clock.tick(90)
    assert do_finalize(transfers, record, Outputs(), tmp_path, completion, clock=clock).succeeded
    assert read(s3, bucket, PATHS.success) == {
        "run_id": PATHS.run_id,
        "finalized_at": iso(clock.now),
        "status": "success",
        "completion_status": completion.value,
        "exit_code": int(ExitCode.for_completion(completion)),
        "reason": REASONS[completion],
    }
    training = read(s3, bucket, PATHS.training_log)
    assert training["ended_at"] == iso(clock.now) and training["started_at"] == "2026-11-25T14:05:02Z"


def test_a_sentinel_without_a_reason_or_with_a_run_phase_as_status_is_refused():
    doc = sentinel(
        PATHS.run_id,
        status=SentinelStatus.SUCCESS,
        completion=CompletionStatus.NORMAL,
        exit_code=0,
        reason="completed",
        at="2026-11-25T14:31:09Z",
    )
    with pytest.raises(SchemaValidationError, match=r"\$: 'reason' is a required property"):
        validate("sentinel", {k: v for k, v in doc.items() if k != "reason"})
    with pytest.raises(SchemaValidationError, match=r"at \$\.status"):
        validate("sentinel", {**doc, "status": "results_sync"})
    long = sentinel(
        PATHS.run_id,
        status=SentinelStatus.FAILED_UPLOAD,
        completion=CompletionStatus.FAILED,
        exit_code=1,
        reason="x" * 900,
        at="2026-11-25T14:31:09Z",
    )
    assert len(long["reason"]) == 500


def test_one_transient_error_while_failing_still_leaves_failed_upload_and_training_json(
    s3: Any, bucket: str, tmp_path: Path
):
    from botocore.exceptions import ClientError

    transfers, record, sleeps = setup(s3, bucket, max_retries=2)
    once = {PATHS.failed_upload: 1, PATHS.training_log: 1}  # one 500 each, then S3 answers

    def broken(params: dict[str, Any], **_: Any) -> None:
        key = params.get("Key", "")
        if key.endswith("model.safetensors") or once.get(key, 0) > 0:
            once[key] = once.get(key, 0) - 1
            raise ClientError(
                {
                    "Error": {"Code": "InternalError", "Message": "boom"},
                    "ResponseMetadata": {"HTTPStatusCode": 500},
                },
                "PutObject",
            )

    s3.meta.events.register("before-parameter-build.s3.PutObject", broken)
    result = do_finalize(transfers, record, make_outputs(tmp_path), tmp_path)
    assert not result.succeeded
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket).get("Contents", [])}
    # before: the sentinel and training.json were written once, no retry: both lost to one 500
    assert PATHS.failed_upload in keys and PATHS.training_log in keys, keys
    assert read(s3, bucket, PATHS.failed_upload)["status"] == "failed_upload"
    assert read(s3, bucket, PATHS.training_log)["completion_status"] == "failed"
    assert sleeps == [1, 2, 1, 1]  # the model's two retries, then one quick retry for each document


@pytest.mark.row("records-status-after-write")
def test_a_sentinel_that_fails_after_training_json_leaves_the_finalize_phase_failed(
    s3: Any, bucket: str, tmp_path: Path
):
    """training.json goes up before ``_SUCCESS``; when ``_SUCCESS`` then fails, the best-effort
    training.json must not say finalize succeeded (before: ``succeeded`` with the sentinel key)."""
    from botocore.exceptions import ClientError

    transfers, record, _ = setup(s3, bucket, max_retries=0)

    def refuse_success(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == PATHS.success:
            raise ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject")

    s3.meta.events.register("before-parameter-build.s3.PutObject", refuse_success)
    assert not do_finalize(transfers, record, make_outputs(tmp_path), tmp_path).succeeded
    doc = read(s3, bucket, PATHS.training_log)
    [phase] = [p for p in doc["phases"] if p["name"] == "finalize"]
    assert phase["status"] == "failed" and "_SUCCESS" in phase["details"]["error"], phase
    assert doc["completion_status"] == "failed"
