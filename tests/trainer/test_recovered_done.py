"""A recovered attempt that finds the run already finished normally ends it as done, not failed.

The previous attempt's finalize wrote ``_SUCCESS`` (the sentinel is last: the results are whole)
and its instance went away during cleanup, before the recovery handler could read the sentinel
(the handler releases such a run when it can: ``recovery.handler._unless_results_whole``). The
relaunched attempt then used to fail in data_sync on "this run already finished normally",
sending a `failed` notification for a run whose results were whole.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from common import attempts as att
from common.status import CompletionStatus, RunStatus, SentinelStatus
from common.timeutil import iso, utc_now
from schemas import validate
from tests.trainer import test_run_local as run_local
from tests.trainer.test_run_local import PATHS, RUN_ID, Staged
from trainer import sync
from trainer.context import Deps
from trainer.errors import ErrorLog, NoRetry, Retrier, TerminalError
from trainer.finalize import sentinel
from trainer.run import run
from trainer.transfers import Transfers

# the local run's fixtures (the staged run, the fake IMDS, the synthetic data)
imds_factory, staged_factory, synthetic_files = (
    run_local.imds_factory, run_local.staged_factory, run_local.synthetic_files,
)  # fmt: skip


def _relaunched_after_results_sync(staged: Staged, imds_factory: Callable, workdir: Path) -> Staged:
    """The first attempt reached results_sync; the handler claimed the run and relaunched it."""
    store = staged.store
    for status in (RunStatus.DATA_SYNC, RunStatus.TRAINING, RunStatus.RESULTS_SYNC):
        store.transition(RUN_ID, status)
    now = iso(utc_now())
    claimed = store.claim_recovery(store.read(), trigger="instance-ended", event_id="ev-1", now=now)
    new_id = staged.ec2.run_instances(
        ImageId="ami-03cf127a", MinCount=1, MaxCount=1, InstanceType="g5.xlarge"
    )["Instances"][0]["InstanceId"]
    attempt = att.new_attempt(
        attempt=2,
        instance_id=new_id,
        instance_type="g5.xlarge",
        market="spot",
        availability_zone="us-east-1a",
        price_per_hour=1.0,
        price_source="on-demand-table",
        launched_at=now,
    )
    store.add_attempt(RUN_ID, attempt, claim=claimed.doc["recovery"])
    return Staged(
        **{**staged.__dict__, "imds": imds_factory(new_id), "instance_id": new_id, "workdir": workdir}
    )


def _put(staged: Staged, key: str, doc: dict[str, Any]) -> bytes:
    body = json.dumps(doc).encode()
    staged.s3.put_object(Bucket=staged.bucket, Key=key, Body=body)
    return body


def test_a_recovered_attempt_finding_a_normal_sentinel_releases_the_run_and_keeps_its_results(
    local_aws: Any, staged_factory: Callable, imds_factory: Callable, tmp_path: Path
) -> None:
    staged = staged_factory(num_steps=5)
    done = sentinel(
        RUN_ID,
        status=SentinelStatus.SUCCESS,
        completion=CompletionStatus.NORMAL,
        exit_code=0,
        reason="completed",
        at=iso(utc_now()),
    )
    kept = {PATHS.success: _put(staged, PATHS.success, done)}
    kept[PATHS.training_log] = _put(staged, PATHS.training_log, {"written_by": "the first attempt"})
    kept[PATHS.trainer_log] = b"the first attempt's trainer log\n"  # each attempt uploads its own
    staged.s3.put_object(Bucket=staged.bucket, Key=PATHS.trainer_log, Body=kept[PATHS.trainer_log])
    second = _relaunched_after_results_sync(staged, imds_factory, tmp_path / "second")

    assert run(second.options(), Deps()) == 0
    for key, body in kept.items():  # the first attempt's record and sentinel are untouched
        assert second.s3.get_object(Bucket=second.bucket, Key=key)["Body"].read() == body, key
    assert second.store.read() is None  # the lock is released: the env is free for the next run
    status = validate("cleanup-status", second.json(PATHS.cleanup_status))
    assert status["instance_id"] == second.instance_id and status["state_file_removed"] is True
    assert second.instance_state() in ("shutting-down", "terminated")
    log = second.s3.get_object(Bucket=second.bucket, Key=PATHS.trainer_log_of(2))["Body"].read().decode()
    assert "is already done: the previous attempt finished the run normally" in log
    assert "invalid" not in log.lower() and "launch a new run instead" not in log


def test_only_a_recovered_attempt_takes_a_normal_sentinel_as_done(local_aws: Any, bucket: str) -> None:
    """A user's resume of a finished run is still refused: there is nothing to resume."""
    s3 = local_aws.client("s3")
    transfers = Transfers(s3, bucket, Retrier(NoRetry(), errors=ErrorLog()))
    s3.put_object(Bucket=bucket, Key=PATHS.success, Body=json.dumps({"completion_status": "normal"}).encode())
    with pytest.raises(TerminalError, match="already finished normally .*; launch a new run instead"):
        sync.clear_previous_sentinel(transfers, PATHS.success, PATHS.failed_upload)
    with pytest.raises(sync.AlreadyFinished, match="the previous attempt finished the run normally"):
        sync.clear_previous_sentinel(transfers, PATHS.success, PATHS.failed_upload, recovered=True)
    assert s3.get_object(Bucket=bucket, Key=PATHS.success)  # never removed
    s3.put_object(
        Bucket=bucket, Key=PATHS.success, Body=json.dumps({"completion_status": "interrupted"}).encode()
    )
    assert sync.clear_previous_sentinel(transfers, PATHS.success, PATHS.failed_upload, recovered=True) == (
        "interrupted"
    )
