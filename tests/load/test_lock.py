"""The lock under load: racing writers, and conditional writes whose response was lost.

A conditional write (``PutObject IfNoneMatch/IfMatch``, ``DeleteObject IfMatch``) can reach S3,
be applied, and lose its response (a reset connection, a read timeout); botocore's standard
retry mode then sends the same request again, and S3 answers it by the key's new state: 412
Precondition Failed for a create of a key that now exists or an ``If-Match`` on an ETag that
changed (AWS: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html),
404 for a delete of a key that is gone. The store must know its own write in those answers,
never report the lock as another run's or the transition as illegal.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from botocore.exceptions import ReadTimeoutError

from common import attempts, layout
from common.errors import LockHeldError
from common.state_doc import new_state
from common.state_store import ConflictError, StateStore
from common.status import RunStatus
from localaws import moto
from reliability import record

ENV = "dev"
RUN = "20261201-120000"


def _doc(run_id: str = RUN) -> dict[str, Any]:
    doc = new_state(env=ENV, run_id=run_id, market="spot", total_steps=10, now="2026-12-01T12:00:00Z")
    return {**doc, **attempts.policy(max_recoveries=2, max_runtime_minutes=60)}


class LostResponse:
    """Sends the ``n``-th matching request itself (S3 applies it), then raises a read timeout,
    as a response lost on the way back: botocore retries the very same request."""

    def __init__(self, client: Any, method: str, key: str, *, n: int = 1) -> None:
        self.client, self.method, self.key, self.n = client, method, key, n
        self.seen = self.injected = 0
        client.meta.events.register("before-send.s3.*", self._send)

    def _send(self, request: Any, **_: Any) -> None:
        if request.method != self.method or not request.url.split("?")[0].endswith("/" + self.key):
            return
        self.seen += 1
        if self.seen != self.n:
            return
        applied = self.client._endpoint.http_session.send(request)  # noqa: SLF001 - the real send
        assert applied.status_code < 300, applied.status_code  # S3 applied it; the answer is lost
        self.injected += 1
        record.count(record.Total.FAULTS_INJECTED)
        raise ReadTimeoutError(endpoint_url=request.url)


@pytest.fixture
def store(s3, bucket) -> StateStore:
    return StateStore(s3, bucket, ENV)


@pytest.mark.row("load-lock-lost-answer")
def test_a_lock_whose_create_landed_but_whose_answer_was_lost_is_still_taken(s3, store):
    lost = LostResponse(s3, "PUT", layout.state_key(ENV))
    snap = store.acquire(_doc())  # before the fix: LockHeldError naming this very run
    assert lost.injected == 1 and lost.seen == 2  # sent, lost, sent again: 412
    assert snap.run_id == RUN and store.read().etag == snap.etag


@pytest.mark.row("load-lock-lost-answer")
def test_a_lock_someone_else_created_is_still_refused(s3, store):
    store.acquire(_doc("20261201-110000"))
    with pytest.raises(LockHeldError, match="20261201-110000"):
        store.acquire(_doc())


@pytest.mark.row("load-lock-lost-answer")
def test_a_transition_whose_write_landed_but_whose_answer_was_lost_is_not_illegal(s3, store):
    store.acquire(_doc())
    lost = LostResponse(s3, "PUT", layout.state_key(ENV))
    snap = store.transition(RUN, RunStatus.DATA_SYNC)  # before: re-applied on its own result
    assert lost.injected == 1
    assert (
        snap.doc["status"] == "data_sync"
        and [h["status"] for h in snap.doc["history"]].count("data_sync") == 1
    )
    assert store.read().etag == snap.etag


@pytest.mark.row("load-lock-lost-answer")
def test_a_release_whose_delete_landed_but_whose_answer_was_lost_says_released(s3, store):
    store.acquire(_doc())
    lost = LostResponse(s3, "DELETE", layout.state_key(ENV))
    assert store.release(RUN) is True  # before: False, "it was not there"
    assert lost.injected == 1 and store.read() is None


@pytest.mark.row("load-lock-lost-answer")
def test_a_release_of_a_lock_already_gone_says_so(store):
    assert store.release(RUN) is False


@pytest.mark.row("load-lock-lost-answer")
def test_a_recovery_claim_whose_answer_was_lost_is_never_taken_for_a_win_but_stays_in_place(s3, store):
    """Two deliveries of one event write the very same claim: a lost answer is no proof of a win,
    so the handler hears "conflict" and re-reads -- and finds the claim in place (the run is not
    left unclaimed, and no second handler can take it while it is in grace)."""
    snap = store.acquire(_doc())
    snap = store.transition(RUN, RunStatus.DATA_SYNC, snapshot=snap)
    snap = store.transition(RUN, RunStatus.INTERRUPTED, snapshot=snap)
    lost = LostResponse(s3, "PUT", layout.state_key(ENV))
    with pytest.raises(ConflictError):
        store.claim_recovery(snap, trigger="schedule", event_id="e-1", now="2026-12-01T12:05:00Z")
    assert lost.injected == 1
    held = store.read()
    assert held.doc["status"] == "recovering" and held.doc["recovery"]["event_id"] == "e-1"
    with pytest.raises(ConflictError):  # a duplicate delivery deciding on the old snapshot loses
        store.claim_recovery(snap, trigger="schedule", event_id="e-1", now="2026-12-01T12:05:00Z")


@pytest.mark.row("load-lock-contention")
def test_racing_acquires_and_releases_never_hold_the_lock_twice(local_aws, bucket):
    """8 threads take and give back one env's lock 5 times each; no two ever hold it at once."""
    holders: list[str] = []
    overlaps: list[tuple[str, str]] = []
    guard = threading.Lock()
    wins: dict[str, int] = {}

    def worker(n: int) -> None:
        store = StateStore(moto.attach(local_aws.endpoint_url).client("s3"), bucket, ENV)
        run_id = f"20261201-12000{n}"
        while wins.get(run_id, 0) < 5:
            try:
                store.acquire(_doc(run_id))
            except LockHeldError:
                time.sleep(0.01)
                continue
            with guard:
                if holders:
                    overlaps.append((holders[-1], run_id))
                holders.append(run_id)
                wins[run_id] = wins.get(run_id, 0) + 1
            with guard:
                holders.remove(run_id)
            assert store.release(run_id) is True

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert overlaps == [] and sum(wins.values()) == 40
    assert StateStore(local_aws.client("s3"), bucket, ENV).read() is None


@pytest.mark.row("load-lock-contention")
def test_clearing_a_stale_lock_never_deletes_a_lock_taken_since_it_was_judged(store):
    """``verify --fix`` judges a lock stale, then (after waiting for terminations) clears it; if
    meanwhile that run released it and a new launch took the lock, the new lock must stay."""
    stale = store.acquire(_doc("20261201-110000"))
    assert store.release("20261201-110000") is True
    fresh = store.acquire(_doc())  # a new launch in the window
    assert store.force_clear(etag=stale.etag) is False
    assert store.read().etag == fresh.etag
    assert store.force_clear(etag=fresh.etag) is True and store.read() is None
    store.acquire(_doc())
    assert store.force_clear() is True and store.read() is None  # no ETag: whatever it holds
    assert store.force_clear() is False
