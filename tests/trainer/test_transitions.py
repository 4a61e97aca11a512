"""The trainer's state writes report a status only once it is written."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from common.state_doc import new_state
from common.state_store import StateStore
from common.status import CompletionStatus, RunStatus
from common.timeutil import iso
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier
from trainer.stopping import StopSwitch
from trainer.transitions import RunState

RUN_ID = "20261125-140502"
NOW = iso(datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC))


@pytest.fixture
def state(s3, bucket):
    store = StateStore(s3, bucket, "dev")
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=NOW))
    store.transition(RUN_ID, RunStatus.DATA_SYNC)
    store.transition(RUN_ID, RunStatus.TRAINING)
    errors = ErrorLog()
    retrier = Retrier(ExponentialBackoff(max_retries=0), errors=errors, sleep=lambda s: None)
    return RunState(store=store, run_id=RUN_ID, retrier=retrier, stops=StopSwitch(), errors=errors)


def _denied(*args, **kwargs):
    raise ClientError({"Error": {"Code": "InternalError", "Message": "boom"}}, "PutObject")


@pytest.mark.row("records-status-after-write")
def test_a_final_status_that_could_not_be_written_is_not_reported_as_the_status_now(
    state, monkeypatch, caplog
):
    """Before: ``final`` returned ``failed`` (training.json and the sentinel said so) while the
    state file still said ``training``."""
    monkeypatch.setattr(state.store, "update", _denied)
    with caplog.at_level(logging.ERROR, logger="trainer.transitions"):
        now = state.final(CompletionStatus.FAILED, "the data is bad")
    assert now is RunStatus.TRAINING and state.store.read().status is RunStatus.TRAINING
    assert "could not write status failed" in caplog.text and "still says training" in caplog.text


@pytest.mark.row("records-status-after-write")
def test_a_phase_status_not_written_while_the_run_finishes_is_not_logged_as_written(state, caplog):
    """Before: the lock gone while finishing, ``advance`` still logged "status -> results_sync"."""
    state.store.release(RUN_ID)
    state.stops.finishing = True
    with caplog.at_level(logging.INFO, logger="trainer.transitions"):
        state.advance(RunStatus.RESULTS_SYNC)
    assert "status -> results_sync" not in caplog.text
    assert "status results_sync not written" in caplog.text
