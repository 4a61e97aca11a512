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


def test_a_final_status_of_an_attempt_another_took_over_is_not_written_and_reads_as_recovering(state):
    """Before: the terminated attempt's ``interrupted`` landed over the relaunched attempt's
    ``data_sync``; that attempt then failed on an illegal transition and the run ended failed."""

    def relaunched(doc):
        doc["instance_id"], doc["attempt"] = "i-0second", 2
        return doc

    state.store.set_instance(RUN_ID, instance_id="i-0first")
    state.store.holder = "i-0first"
    StateStore(state.store.s3, state.store.bucket, "dev").update(RUN_ID, relaunched)
    before = state.store.read()
    assert state.final(CompletionStatus.INTERRUPTED, "SIGTERM") is RunStatus.RECOVERING  # power off only
    assert state.store.read() == before


def test_a_normal_end_reads_a_kill_the_last_phase_did_not_hear(state):
    """Before: a kill written while evaluation ran (between two watcher polls) was never read; the
    run finalized as succeeded (the fault matrix's kill@evaluation, CI)."""
    assert state.final(CompletionStatus.NORMAL, None) is RunStatus.RESULTS_SYNC
    state.store.request_kill(RUN_ID, reason="killed by operator")
    assert state.final(CompletionStatus.NORMAL, None) is RunStatus.KILLED


def test_a_normal_end_of_an_attempt_another_took_over_reads_as_recovering(state):
    state.store.set_instance(RUN_ID, instance_id="i-0first")
    state.store.holder = "i-0first"
    assert state.final(CompletionStatus.NORMAL, None) is RunStatus.RESULTS_SYNC
    StateStore(state.store.s3, state.store.bucket, "dev").set_instance(RUN_ID, instance_id="i-0second")
    assert state.final(CompletionStatus.NORMAL, None) is RunStatus.RECOVERING
