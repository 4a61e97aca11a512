"""The trainer's state writes when S3 applies a write but its answer is lost.

S3: "Requests that receive an InternalError response might not have processed. For example, if
a PUT request returns InternalError, a subsequent GET might retrieve the old value or the
updated value" (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html). The
trainer's clients have botocore's retries off: its :class:`trainer.errors.Retrier` calls the
state store again, which re-reads and re-decides on the document its own lost write stored.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from common import layout
from common.aws import client
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import CompletionStatus, RunStatus
from reliability import record
from reliability.s3faults import FaultProxy, Kind, Rule
from trainer.errors import CLIENT_CONFIG, ErrorLog, ExponentialBackoff, Retrier
from trainer.stopping import StopSwitch
from trainer.transitions import RunState

BUCKET = "chronos-training-dev-123456789012-us-east-1"
RUN_ID = "20261125-140502"


@pytest.fixture
def proxy(local_aws: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FaultProxy]:
    monkeypatch.setenv(record.RESULTS_VAR, str(tmp_path / "results"))
    local_aws.client("s3").create_bucket(Bucket=BUCKET)
    with FaultProxy(local_aws.endpoint_url) as p:
        yield p


def run_state(proxy: FaultProxy, sleeps: list[float]) -> RunState:
    """The trainer's RunState on a client as the trainer builds it (botocore retries off)."""
    session = boto3.Session(aws_access_key_id="a", aws_secret_access_key="b", region_name="us-east-1")
    s3 = client(session, "s3", endpoint_url=proxy.url, config=CLIENT_CONFIG)
    store = StateStore(s3, BUCKET, "dev")
    doc = new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now="2026-11-25T14:05:02Z")
    store.acquire(doc)
    errors = ErrorLog()
    retrier = Retrier(ExponentialBackoff(), errors=errors, sleep=sleeps.append)
    return RunState(store=store, run_id=RUN_ID, retrier=retrier, stops=StopSwitch(), errors=errors)


def lose_next_state_answer(proxy: FaultProxy) -> Rule:
    return proxy.add(
        Rule(
            kind=Kind.INTERNAL_ERROR, operations="PutObject", key=layout.state_key("dev"), count=1, after=True
        )
    )


def test_a_transition_whose_answer_was_lost_is_the_run_moving_on(proxy: FaultProxy):
    sleeps: list[float] = []
    state = run_state(proxy, sleeps)
    rule = lose_next_state_answer(proxy)
    state.advance(RunStatus.DATA_SYNC)  # before the fix: TerminalError "cannot move to data_sync"
    assert rule.fired == 1 and sleeps == [1.0]
    snap = state.store.read()
    assert snap is not None and snap.doc["status"] == "data_sync"
    assert [h["status"] for h in snap.doc["history"]].count("data_sync") == 1, snap.doc["history"]
    state.advance(RunStatus.TRAINING)  # the run goes on from there
    assert state.store.read().doc["status"] == "training"


def test_a_final_status_whose_answer_was_lost_is_the_status_written(proxy: FaultProxy):
    sleeps: list[float] = []
    state = run_state(proxy, sleeps)
    for status in (RunStatus.DATA_SYNC, RunStatus.TRAINING):
        state.advance(status)
    rule = lose_next_state_answer(proxy)
    assert state.final(CompletionStatus.FAILED, "boom") is RunStatus.FAILED
    assert rule.fired == 1
    snap = state.store.read()
    assert snap is not None and snap.doc["status"] == "failed"
    assert [h["status"] for h in snap.doc["history"]].count("failed") == 1, snap.doc["history"]
