"""The state file's recovery fields: the claim as the arbiter of racing handlers, attempts, refusals."""

from __future__ import annotations

import pytest

from common import attempts as att
from common.state_doc import IllegalTransitionError, new_state
from common.state_store import ClaimLostError, ConflictError, StateStore
from common.status import RunStatus
from common.timeutil import iso
from schemas import SchemaValidationError, validate

RUN = "20261125-140502"


@pytest.fixture
def store(s3, bucket, clock):
    return StateStore(s3, bucket, "dev", clock=clock)


def _attempt(n: int, instance_id: str, at: str, az: str = "us-east-1a") -> dict:
    return att.new_attempt(
        attempt=n,
        instance_id=instance_id,
        instance_type="g5.xlarge",
        market="spot",
        availability_zone=az,
        price_per_hour=0.42,
        price_source="spot-price-history",
        launched_at=at,
    )


@pytest.fixture
def training(store, clock):
    """A run training on its first instance, allowed three recoveries."""
    now = iso(clock())
    doc = new_state(env="dev", run_id=RUN, market="spot", total_steps=100, now=now)
    doc.update(att.policy(max_recoveries=3, max_runtime_minutes=120))
    snap = store.acquire(doc)
    snap = store.add_attempt(RUN, _attempt(1, "i-first", now), snapshot=snap)
    for status in (RunStatus.DATA_SYNC, RunStatus.TRAINING):
        snap = store.transition(RUN, status, snapshot=snap)
    return snap


def test_the_first_attempt_names_the_instance(training):
    doc = training.doc
    assert (
        doc["attempt"] == 1 and doc["instance_id"] == "i-first" and doc["availability_zone"] == "us-east-1a"
    )
    assert doc["attempts"][0]["end"] is None and doc["recoveries"] == 0 and doc["max_recoveries"] == 3


def test_two_handlers_deciding_on_one_snapshot_exactly_one_claims(store, training, clock):
    now = iso(clock())
    won = store.claim_recovery(training, trigger="instance-ended", event_id="ev-1", now=now)
    with pytest.raises(ConflictError):
        store.claim_recovery(training, trigger="instance-ended", event_id="ev-1", now=now)
    doc = store.read().doc
    assert doc == won.doc
    assert doc["status"] == "recovering" and doc["recoveries"] == 1 and doc["instance_id"] is None
    assert doc["recovery"] == {"claimed_at": now, "trigger": "instance-ended", "event_id": "ev-1", "tries": 1}
    assert doc["attempts"][0]["end"] == "vanished" and doc["attempts"][0]["ended_at"] == now
    assert doc["history"][-1] == {"status": "recovering", "at": now, "reason": "instance-ended"}


def test_an_interrupted_run_is_claimed_and_its_attempt_ends_interrupted(store, training, clock):
    snap = store.transition(RUN, RunStatus.INTERRUPTED, reason="spot interruption")
    snap = store.claim_recovery(snap, trigger="spot-warning", event_id="ev-2", now=iso(clock()))
    assert snap.doc["attempts"][0]["end"] == "interrupted"


def test_a_killed_run_cannot_be_claimed(store, training, clock):
    killed = store.request_kill(RUN)
    with pytest.raises(IllegalTransitionError, match="killed -> recovering"):
        store.claim_recovery(killed, trigger="schedule", event_id="ev-3", now=iso(clock()))
    assert store.read().status is RunStatus.KILLED


def test_a_re_claim_renews_the_claim_without_counting_a_recovery(store, training, clock):
    first = store.claim_recovery(training, trigger="instance-ended", event_id="ev-1", now=iso(clock()))
    clock.tick(400)
    again = store.claim_recovery(first, trigger="schedule", event_id="ev-9", now=iso(clock()))
    assert again.doc["recoveries"] == 1 and again.doc["recovery"]["tries"] == 2
    assert [h["status"] for h in again.doc["history"]].count("recovering") == 1


def test_the_relaunch_is_recorded_only_under_its_own_claim(store, training, clock):
    claimed = store.claim_recovery(training, trigger="instance-ended", event_id="ev-1", now=iso(clock()))
    claim = claimed.doc["recovery"]
    snap = store.add_attempt(RUN, _attempt(2, "i-second", iso(clock()), az="us-east-1b"), claim=claim)
    assert snap.doc["attempt"] == 2 and snap.doc["instance_id"] == "i-second"
    assert [a["instance_id"] for a in snap.doc["attempts"]] == ["i-first", "i-second"]
    store.request_kill(RUN)
    with pytest.raises(ClaimLostError, match="killed"):
        store.add_attempt(RUN, _attempt(3, "i-third", iso(clock())), claim=claim)
    assert store.read().doc["instance_id"] == "i-second"


def test_kill_during_recovery_is_a_legal_kill(store, training, clock):
    store.claim_recovery(training, trigger="schedule", event_id="ev-1", now=iso(clock()))
    snap = store.request_kill(RUN, reason="test kill")
    assert snap.status is RunStatus.KILLED and snap.doc["kill_reason"] == "test kill"


def test_the_relaunched_trainer_leaves_recovering_and_the_claim_goes(store, training, clock):
    claimed = store.claim_recovery(training, trigger="schedule", event_id="ev-1", now=iso(clock()))
    store.add_attempt(RUN, _attempt(2, "i-second", iso(clock())), claim=claimed.doc["recovery"])
    snap = store.transition(RUN, RunStatus.INITIALIZATION, reason="resumed")
    assert "recovery" not in snap.doc and snap.doc["attempt"] == 2


def test_end_attempt_notice_and_refusals(store, training, clock):
    at = iso(clock())
    store.note_notice(RUN, at)
    store.add_refused(
        RUN,
        [
            {
                "attempt": 2,
                "market": "spot",
                "instance_type": "g5.xlarge",
                "availability_zone": "us-east-1b",
                "code": "InsufficientInstanceCapacity",
                "at": at,
            }
        ],
    )
    snap = store.end_attempt(RUN, "max_runtime_exceeded", at)
    first = snap.doc["attempts"][0]
    assert first["notice_at"] == at and first["end"] == "max_runtime_exceeded" and first["ended_at"] == at
    assert snap.doc["refused"][0]["code"] == "InsufficientInstanceCapacity"
    again = store.end_attempt(RUN, "failed", iso(clock()))  # an ended attempt keeps its end
    assert again.doc["attempts"][0]["end"] == "max_runtime_exceeded"
    with pytest.raises(ValueError):
        store.end_attempt(RUN, "exploded", at)


def test_the_schema_refuses_a_bad_claim_trigger(training):
    doc = dict(
        training.doc, status="recovering", recovery={"claimed_at": "x", "trigger": "cron", "event_id": "e"}
    )
    with pytest.raises(SchemaValidationError):
        validate("system-state", doc)


def test_the_exhausted_reason_counts_this_interruption():
    assert att.exhausted_reason(4, 3) == "interrupted 4 times; max_recoveries is 3"
