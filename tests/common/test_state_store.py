"""The state file as lock and live view, against moto's server on 127.0.0.1."""

from __future__ import annotations

import json
import threading
from datetime import UTC, datetime

import pytest

from common.errors import CorruptStateError, LockHeldError, UserError
from common.state_doc import IllegalTransitionError, new_state
from common.state_store import NotHeldError, StateStore
from common.status import RunStatus
from common.timeutil import iso


@pytest.fixture
def store(s3, bucket, clock):
    return StateStore(s3, bucket, "dev", clock=clock)


def _doc(run_id="20261125-140502", clock=None):
    now = iso(clock() if clock else datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC))
    return new_state(env="dev", run_id=run_id, market="spot", total_steps=100, now=now)


def test_sixteen_threads_acquire_at_once_exactly_one_wins(local_aws, bucket):
    barrier = threading.Barrier(16)
    winners, refused, other = [], [], []

    def contend(i: int) -> None:
        store = StateStore(local_aws.client("s3"), bucket, "dev")
        doc = _doc(run_id=f"20261125-1405{i:02d}")
        barrier.wait()
        try:
            store.acquire(doc)
            winners.append(doc["run_id"])
        except LockHeldError as exc:
            refused.append(exc)
        except Exception as exc:  # noqa: BLE001 - any other error is reported below  # pragma: no cover
            other.append(exc)

    threads = [threading.Thread(target=contend, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert other == []
    assert len(winners) == 1
    assert len(refused) == 15
    assert all(exc.run_id == winners[0] for exc in refused)
    held = StateStore(local_aws.client("s3"), bucket, "dev").read()
    assert held.run_id == winners[0]


def test_lock_held_message_names_run_since_and_commands(store, clock):
    store.acquire(_doc(clock=clock))
    with pytest.raises(LockHeldError) as info:
        store.acquire(_doc(run_id="20261125-150000"))
    msg = str(info.value)
    assert "20261125-140502" in msg and "since 2026-11-25T14:05:02Z" in msg
    assert "invoke monitor --env=dev" in msg and "invoke kill --env=dev" in msg
    assert isinstance(info.value, UserError)


def test_legal_transitions_are_recorded_in_history(store, clock):
    snap = store.acquire(_doc(clock=clock))
    for status in (RunStatus.DATA_SYNC, RunStatus.TRAINING, RunStatus.RESULTS_SYNC, RunStatus.CLEANUP):
        clock.tick(10)
        snap = store.transition(snap.run_id, status, snapshot=snap)
    assert [h["status"] for h in snap.doc["history"]] == [
        "initialization",
        "data_sync",
        "training",
        "results_sync",
        "cleanup",
    ]
    assert snap.doc["updated_at"] == "2026-11-25T14:05:42Z"
    assert store.read().doc == snap.doc


def test_illegal_transition_is_refused_and_nothing_written(store):
    snap = store.acquire(_doc())
    with pytest.raises(IllegalTransitionError, match="initialization -> results_sync"):
        store.transition(snap.run_id, RunStatus.RESULTS_SYNC)
    assert store.read().status is RunStatus.INITIALIZATION


def test_stale_etag_write_is_refused_and_the_writer_rereads(store, s3, bucket, clock):
    """The trainer holds an old snapshot; kill wrote meanwhile; the trainer must see `killed`."""
    snap = store.acquire(_doc(clock=clock))
    snap = store.transition(snap.run_id, RunStatus.DATA_SYNC, snapshot=snap)
    other = StateStore(s3, bucket, "dev", clock=clock)
    other.request_kill(snap.run_id, reason="test kill")
    # Using the stale snapshot: the IfMatch write gets 412, the store re-reads, and the
    # transition is re-decided on the newest document: killed -> training is illegal.
    with pytest.raises(IllegalTransitionError, match="killed -> training"):
        store.transition(snap.run_id, RunStatus.TRAINING, snapshot=snap)
    # A heartbeat from the stale snapshot is re-applied on the fresh doc and keeps `killed`.
    clock.tick(30)
    beat = store.heartbeat(snap.run_id, progress={"step": 5}, snapshot=snap)
    assert beat.status is RunStatus.KILLED
    assert beat.doc["progress"]["step"] == 5
    assert beat.doc["kill_reason"] == "test kill"


def test_raw_stale_etag_put_gets_412(store, s3, bucket, clock):
    snap = store.acquire(_doc())
    clock.tick(5)
    store.heartbeat(snap.run_id)
    with pytest.raises(Exception) as info:
        s3.put_object(Bucket=bucket, Key=store.key, Body=b"{}", IfMatch=snap.etag)
    assert info.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412


def test_kill_is_idempotent_and_leaves_final_states_alone(store):
    snap = store.acquire(_doc())
    first = store.request_kill(snap.run_id)
    second = store.request_kill(snap.run_id)
    assert first.status is second.status is RunStatus.KILLED
    assert [h["status"] for h in second.doc["history"]].count("killed") == 1


def test_conflict_409_is_reread_and_retried(store, s3, bucket, monkeypatch):
    snap = store.acquire(_doc())
    from botocore.exceptions import ClientError

    real_put = s3.put_object
    calls = {"n": 0}

    def flaky_put(**kw):
        calls["n"] += 1
        if calls["n"] == 1:
            raise ClientError(
                {
                    "Error": {"Code": "ConditionalRequestConflict", "Message": "conflict"},
                    "ResponseMetadata": {"HTTPStatusCode": 409},
                },
                "PutObject",
            )
        return real_put(**kw)

    monkeypatch.setattr(s3, "put_object", flaky_put)
    out = store.transition(snap.run_id, RunStatus.DATA_SYNC, snapshot=snap)
    assert calls["n"] == 2
    assert out.status is RunStatus.DATA_SYNC


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b"{not json", "not JSON"),
        (json.dumps({**_doc(), "run_id": "x"}).encode(), "at $.run_id"),
    ],
)
def test_corrupt_state_gives_a_clear_error(store, s3, bucket, body, reason):
    s3.put_object(Bucket=bucket, Key="dev/system-state.json", Body=body)
    with pytest.raises(CorruptStateError) as info:
        store.read()
    msg = str(info.value)
    assert f"s3://{bucket}/dev/system-state.json" in msg
    assert reason in msg
    assert "invoke verify --env=dev --fix --yes" in msg
    assert "\n" not in msg
    # acquire on a corrupt lock also reports it instead of overwriting
    with pytest.raises(CorruptStateError):
        store.acquire(_doc())
    assert s3.get_object(Bucket=bucket, Key="dev/system-state.json")["Body"].read() == body


def test_release_only_by_the_owner(store):
    snap = store.acquire(_doc())
    with pytest.raises(NotHeldError):
        store.release("20261125-999999")
    assert store.release(snap.run_id) is True
    assert store.read() is None
    assert store.release(snap.run_id) is False
    store.acquire(_doc(run_id="20261125-150000"))  # free again


def test_update_on_a_released_lock_raises_not_held(store):
    snap = store.acquire(_doc())
    store.release(snap.run_id)
    with pytest.raises(NotHeldError):
        store.heartbeat(snap.run_id)


def test_conditional_get_reports_unchanged(store, clock):
    snap = store.acquire(_doc())
    assert store.read_if_changed(snap.etag) is False
    clock.tick(5)
    beat = store.heartbeat(snap.run_id)
    changed = store.read_if_changed(snap.etag)
    assert changed.etag == beat.etag


def test_writes_are_schema_validated_before_put(store):
    snap = store.acquire(_doc())
    with pytest.raises(Exception, match="progress.step"):
        store.heartbeat(snap.run_id, progress={"step": -3})
    assert store.read().doc["progress"]["step"] == 0


class _PrefixScopedS3:
    """A client that, like S3 for a caller with prefix-scoped ListBucket, answers 403 for missing keys."""

    def __init__(self, s3, *, list_allowed=True):
        self._s3, self.list_allowed = s3, list_allowed

    def __getattr__(self, name):
        return getattr(self._s3, name)

    def get_object(self, **kw):
        from botocore.exceptions import ClientError

        try:
            return self._s3.get_object(**kw)
        except ClientError as exc:
            if exc.response["ResponseMetadata"]["HTTPStatusCode"] == 404:
                raise ClientError(
                    {
                        "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                        "ResponseMetadata": {"HTTPStatusCode": 403},
                    },
                    "GetObject",
                ) from None
            raise

    def list_objects_v2(self, **kw):
        from botocore.exceptions import ClientError

        if not self.list_allowed:
            raise ClientError(
                {
                    "Error": {"Code": "AccessDenied", "Message": "Access Denied"},
                    "ResponseMetadata": {"HTTPStatusCode": 403},
                },
                "ListObjectsV2",
            )
        return self._s3.list_objects_v2(**kw)


def test_403_for_a_missing_state_file_reads_as_no_run(s3, bucket):
    store = StateStore(_PrefixScopedS3(s3), bucket, "dev")
    assert store.read() is None
    snap = store.acquire(_doc())
    assert store.read().run_id == snap.run_id
    store.release(snap.run_id)
    assert store.read_if_changed(snap.etag) is None


def test_403_without_list_permission_is_access_denied(s3, bucket):
    from common.errors import AccessDeniedError

    store = StateStore(_PrefixScopedS3(s3, list_allowed=False), bucket, "dev")
    with pytest.raises(AccessDeniedError, match=r"s3:GetObject on s3://.*/dev/system-state.json"):
        store.read()


def _on_delete(s3, action):
    """Run ``action(request)`` once, just before the next DeleteObject request is sent.

    Returns the list of the ``If-Match`` headers of every DeleteObject request sent.
    """
    calls = []

    def hook(params, **_):
        calls.append(params["headers"].get("If-Match"))
        if len(calls) == 1:
            action(params)

    s3.meta.events.register("before-call.s3.DeleteObject", hook)
    return calls


def test_release_is_a_conditional_delete_on_the_etag_it_read(store, s3):
    snap = store.acquire(_doc())
    sent = _on_delete(s3, lambda params: None)
    assert store.release(snap.run_id) is True
    assert sent == [snap.etag]  # If-Match: the ETag the ownership check read
    assert store.read() is None


def test_release_after_a_concurrent_write_of_the_same_run_rereads_and_deletes(store, s3, bucket, clock):
    snap = store.acquire(_doc(clock=clock))
    other = StateStore(s3, bucket, "dev", clock=clock)
    clock.tick(5)
    beats = []
    sent = _on_delete(s3, lambda params: beats.append(other.heartbeat(snap.run_id)))
    assert store.release(snap.run_id) is True
    assert sent == [snap.etag, beats[0].etag]  # 412, re-read, the new ETag
    assert store.read() is None


def test_release_never_deletes_a_lock_another_run_took_meanwhile(store, s3, bucket, clock):
    snap = store.acquire(_doc(clock=clock))
    other = StateStore(s3, bucket, "dev", clock=clock)

    def replaced(params):  # the lock is released and taken by the next run between read and delete
        s3.delete_object(Bucket=bucket, Key=store.key)
        other.acquire(_doc(run_id="20261125-150000", clock=clock))

    _on_delete(s3, replaced)
    with pytest.raises(NotHeldError, match="20261125-150000"):
        store.release(snap.run_id)
    assert store.read().run_id == "20261125-150000"


def test_release_when_the_lock_vanished_meanwhile_is_false(store, s3, bucket):
    snap = store.acquire(_doc())
    _on_delete(s3, lambda params: StateStore(s3, bucket, "dev").force_clear())
    assert store.release(snap.run_id) is False


def test_sweep_members_each_hold_their_own_lock_beside_the_single_run(s3, bucket, clock):
    single = StateStore(s3, bucket, "dev", clock=clock)
    single.acquire(_doc(clock=clock))
    members = [StateStore(s3, bucket, "dev", run_id=f"20261201-210502-00{n}", clock=clock) for n in (1, 2)]
    for m in members:
        m.acquire(_doc(run_id=m.key.split("/")[4], clock=clock))  # no LockHeldError: one lock per member
    assert members[0].key == "dev/sweeps/20261201-210502/runs/20261201-210502-001/system-state.json"
    assert [m.read().run_id for m in members] == ["20261201-210502-001", "20261201-210502-002"]
    assert single.read().run_id == "20261125-140502"
    with pytest.raises(LockHeldError) as info:  # a member's own lock is still a lock
        members[0].acquire(_doc(run_id="20261201-210502-001", clock=clock))
    assert info.value.run_id == "20261201-210502-001"
    assert members[1].release("20261201-210502-002") is True
    assert members[1].read() is None and members[0].read() is not None and single.read() is not None


def _claimed_by(store, run_id, instance_id, *, attempt=2):
    """The state as the recovery handler's relaunch left it: attempt ``attempt`` on ``instance_id``."""

    def mutate(doc):
        doc["instance_id"], doc["attempt"] = instance_id, attempt
        return doc

    return StateStore(store.s3, store.bucket, store.env, clock=store.clock).update(run_id, mutate)


def test_a_holder_writes_while_the_state_names_its_instance_and_is_refused_once_another_attempt_took_over(
    store,
):
    """An attempt terminated from outside runs on through its host's shutdown while the relaunch
    works: before, its writes (``interrupted`` over the relaunch's ``data_sync``) landed, since the
    run id alone decided."""
    from common.state_store import TakenOverError

    doc = _doc()
    store.acquire(doc)
    store.set_instance(doc["run_id"], instance_id="i-0first")
    store.holder = "i-0first"
    store.transition(doc["run_id"], RunStatus.DATA_SYNC)  # its own run: written
    _claimed_by(store, doc["run_id"], "i-0second")
    before = store.read()
    with pytest.raises(TakenOverError, match=r"taken over \(attempt 2, on instance i-0second\).*i-0first"):
        store.transition(doc["run_id"], RunStatus.INTERRUPTED)
    with pytest.raises(TakenOverError):
        store.release(doc["run_id"])
    with pytest.raises(TakenOverError):
        store.update_once(before, lambda d: d)
    assert store.read() == before  # nothing written, nothing deleted
    assert isinstance(TakenOverError("x"), NotHeldError)  # every caller's lock-lost path handles it


def test_a_holder_is_refused_while_the_recovery_handler_claims_its_run(store):
    from common.state_store import TakenOverError

    doc = _doc()
    store.acquire(doc)
    store.set_instance(doc["run_id"], instance_id="i-0first")
    store.holder = "i-0first"
    _claimed_by(store, doc["run_id"], None)  # claimed: no instance until the relaunch records one
    with pytest.raises(TakenOverError, match="claimed by the recovery handler"):
        store.heartbeat(doc["run_id"], progress={"step": 1, "total_steps": 100})


def test_without_a_holder_the_run_id_alone_decides(store):
    """The control plane and the recovery handler write any attempt's state of their run."""
    doc = _doc()
    store.acquire(doc)
    _claimed_by(store, doc["run_id"], "i-0second")
    assert store.request_kill(doc["run_id"]).status is RunStatus.KILLED


def test_an_acquire_that_keeps_meeting_a_lock_gone_by_the_read_gives_up_with_a_conflict(
    store, s3, monkeypatch
):
    """Before: each 412 whose re-read found no lock retried with no bound (a recursion)."""
    from botocore.exceptions import ClientError

    from common.state_store import ConflictError

    def taken(**kw):
        raise ClientError(
            {"Error": {"Code": "PreconditionFailed"}, "ResponseMetadata": {"HTTPStatusCode": 412}},
            "PutObject",
        )

    monkeypatch.setattr(s3, "put_object", taken)  # every create meets a lock the read then misses
    with pytest.raises(ConflictError, match="taken and released 9 times"):
        store.acquire(_doc())
