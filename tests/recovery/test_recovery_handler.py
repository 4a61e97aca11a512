"""The handler through a real StateStore on moto: one relaunch per interruption, whatever the deliveries."""

from __future__ import annotations

from datetime import timedelta

import pytest
from recovery_fakes import ENV, RUN, event

from common.layout import RunPaths
from common.state_store import StateStore
from common.status import RunStatus
from recovery.actions import Action
from recovery.handler import handle


def _actions(outcomes):
    return [o.action for o in outcomes]


def _state(cloud):
    snap = cloud.store(ENV).read()
    return None if snap is None else snap.doc


def test_an_instance_that_ended_while_training_is_relaunched_in_another_az_first(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.RELAUNCHED]
    assert len(cloud.launched) == 1 and cloud.started == ["i-0002"]
    assert cloud.launched[0]["NetworkInterfaces"][0]["SubnetId"] == "subnet-b"  # us-east-1a was interrupted
    doc = _state(cloud)
    assert doc["status"] == "recovering" and doc["instance_id"] == "i-0002" and doc["attempt"] == 2
    assert doc["recovery"]["trigger"] == "instance-ended" and doc["recoveries"] == 1
    first, second = doc["attempts"]
    assert first["end"] == "vanished" and first["ended_at"] is not None
    assert second["availability_zone"] == "us-east-1b" and second["market"] == "spot"
    assert second["price_per_hour"] == 0.31 and second["end"] is None
    assert [k for k, _ in cloud.published] == ["recovered"]
    assert cloud.published[0][1]["attempt"] == 2 and cloud.published[0][1]["run_id"] == RUN


def test_a_run_left_interrupted_is_relaunched_once_its_instance_is_gone(cloud, start_run, clock):
    start_run(RunStatus.INTERRUPTED)
    assert _actions(handle(event("spot_warning"), cloud, clock=clock)) == [Action.NOTHING]  # still uploading
    cloud.end_instance("i-0001")
    out = handle(event("instance_ended", event_id="ev-2"), cloud, clock=clock)
    assert _actions(out) == [Action.RELAUNCHED]
    assert _state(cloud)["attempts"][0]["end"] == "interrupted"


def test_the_spot_warning_is_noted_and_nothing_launched(cloud, start_run, clock):
    start_run()
    out = handle(event("spot_warning", at="2026-11-25T14:06:00Z"), cloud, clock=clock)
    assert _actions(out) == [Action.NOTED] and cloud.launched == []
    assert _state(cloud)["attempts"][0]["notice_at"] == "2026-11-25T14:06:00Z"


def test_two_deliveries_of_one_event_launch_one_instance(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    first = handle(event("instance_ended"), cloud, clock=clock)
    second = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(first) == [Action.RELAUNCHED] and _actions(second) == [Action.NOTHING]
    assert len(cloud.launched) == 1


class RacingStore(StateStore):
    """Runs ``race`` (the other delivery) after this handler read and decided, before its claim."""

    race = None

    def claim_recovery(self, snapshot, **kw):
        race, RacingStore.race = RacingStore.race, None
        if race is not None:
            race()
        return super().claim_recovery(snapshot, **kw)


def test_an_event_racing_the_schedule_launches_exactly_one_instance(cloud, start_run, clock):
    """Both decide on one document; the schedule's claim lands first, the event's conditional claim loses."""
    start_run()
    cloud.end_instance("i-0001")
    cloud.store_class = RacingStore
    other = []
    RacingStore.race = lambda: other.extend(handle(event("schedule", None, "tick-1"), cloud, clock=clock))
    mine = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(other) == [Action.RELAUNCHED]
    assert _actions(mine) == [Action.NOTHING] and "i-0002" in mine[0].reason  # listed before it launched
    assert len(cloud.launched) == 1 and cloud.terminated == []
    assert _state(cloud)["recovery"]["event_id"] == "tick-1"


def test_a_duplicate_delivered_while_the_first_is_launching_launches_nothing(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    other = []
    cloud.on_run_instance = lambda: other.extend(handle(event("instance_ended"), cloud, clock=clock))
    mine = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(mine) == [Action.RELAUNCHED]
    assert _actions(other) == [Action.NOTHING] and "another delivery claimed" in other[0].reason
    assert len(cloud.launched) == 1


def test_a_kill_during_the_relaunch_terminates_the_new_instance(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    cloud.on_run_instance = lambda: cloud.store(ENV).request_kill(RUN, reason="test kill")
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.TERMINATED]
    assert cloud.terminated == ["i-0002"] and cloud.started == []
    doc = _state(cloud)
    assert doc["status"] == "killed" and doc["instance_id"] is None
    assert _actions(handle(event("schedule", None, "tick-2"), cloud, clock=clock)) == [Action.NOTHING]
    assert len(cloud.launched) == 1


def test_a_killed_or_finished_run_is_never_relaunched(cloud, start_run, clock):
    start_run()
    cloud.store(ENV).request_kill(RUN)
    cloud.end_instance("i-0001")
    assert _actions(handle(event("instance_ended"), cloud, clock=clock)) == [Action.NOTHING]
    cloud.store(ENV).release(RUN)
    assert _actions(handle(event("schedule", None), cloud, clock=clock)) == [Action.NOTHING]
    assert cloud.launched == []


def test_past_max_recoveries_the_run_fails_with_the_reason(cloud, start_run, clock, s3, bucket):
    start_run(max_recoveries=1, recoveries=1, notify_topic_arn="arn:aws:sns:us-east-1:1:t")
    cloud.end_instance("i-0001")
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.FAILED] and cloud.launched == []
    assert "interrupted 2 times; max_recoveries is 1" in out[0].reason
    assert _state(cloud) is None  # the lock is released
    status = cloud.read_json(RunPaths(env=ENV, run_id=RUN).cleanup_status)
    assert status["written_by"] == "recovery" and status["state_file_removed"] is True
    assert [k for k, _ in cloud.published] == ["failed"]


def test_max_recoveries_zero_never_relaunches(cloud, start_run, clock):
    start_run(RunStatus.INTERRUPTED, max_recoveries=0)
    key = RunPaths(env=ENV, run_id=RUN).cleanup_status
    cloud.write_json(
        key, {"written_by": "instance", "state_file_removed": False}
    )  # the trainer left the lock
    cloud.end_instance("i-0001")
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.FAILED] and "max_recoveries is 0" in out[0].reason
    assert cloud.launched == [] and _state(cloud) is None
    assert cloud.read_json(key)["written_by"] == "recovery" and cloud.read_json(key)["state_file_removed"]


def test_an_instance_that_vanished_without_an_event_is_relaunched_on_schedule(cloud, start_run, clock):
    start_run()
    del cloud.instances["i-0001"]  # EC2 forgot it; its terminated event was lost
    assert _actions(handle(event("schedule", None, "t1"), cloud, clock=clock)) == [Action.NOTHING]  # may lag
    clock.tick(400)
    out = handle(event("schedule", None, "t2"), cloud, clock=clock)
    assert _actions(out) == [Action.RELAUNCHED] and _state(cloud)["recovery"]["trigger"] == "schedule"


def _checkpoint(s3, bucket):
    key = RunPaths(env=ENV, run_id=RUN).checkpoints + "checkpoint-50/trainer_state.json"
    s3.put_object(Bucket=bucket, Key=key, Body=b"{}")
    return key


def test_an_instance_past_its_max_runtime_is_terminated_and_the_run_failed(
    cloud, start_run, clock, s3, bucket
):
    start_run(max_runtime=60)
    key = _checkpoint(s3, bucket)
    clock.tick(70 * 60)
    cloud.store(ENV).heartbeat(RUN)
    assert _actions(handle(event("schedule", None, "t1"), cloud, clock=clock)) == [Action.NOTHING]  # margin
    clock.tick(10 * 60)
    cloud.store(ENV).heartbeat(RUN)
    out = handle(event("schedule", None, "t2"), cloud, clock=clock)
    assert _actions(out) == [Action.FAILED] and out[0].reason.startswith("max_runtime_exceeded")
    assert cloud.terminated == ["i-0001"] and _state(cloud) is None
    status = cloud.read_json(RunPaths(env=ENV, run_id=RUN).cleanup_status)
    assert status["written_by"] == "recovery" and status["verification"]["instances_running"] == 0
    assert status["reason"] == out[0].reason  # what `invoke runs` shows when the run left no log
    assert [(a["resource"], a["action"], a["status"]) for a in status["actions"]][0] == (
        "i-0001",
        "terminate",
        "succeeded",
    )
    assert s3.head_object(Bucket=bucket, Key=key)  # checkpoints stay


@pytest.mark.row("records-recovery-terminate-observed")
def test_a_terminate_the_handler_made_is_succeeded_only_once_a_describe_shows_it_ended(
    cloud, start_run, clock, monkeypatch
):
    """Right after TerminateInstances EC2 shows shutting-down: the handler records the terminate
    requested with what the describe saw, not succeeded (before: succeeded on the call's answer)."""
    from recovery.cloud import InstanceInfo

    def lags(instance_id: str) -> None:
        info = cloud.instances[instance_id]
        cloud.instances[instance_id] = InstanceInfo(**{**info.__dict__, "state": "shutting-down"})

    monkeypatch.setattr(cloud, "end_instance", lags)
    start_run(max_runtime=60)
    clock.tick(80 * 60)
    cloud.store(ENV).heartbeat(RUN)
    out = handle(event("schedule", None, "t2"), cloud, clock=clock)
    assert _actions(out) == [Action.FAILED] and cloud.terminated == ["i-0001"]
    status = cloud.read_json(RunPaths(env=ENV, run_id=RUN).cleanup_status)
    terminate = next(a for a in status["actions"] if a["action"] == "terminate")
    assert (terminate["status"], terminate["observed"]) == ("requested", "DescribeInstances: shutting-down")


@pytest.mark.row("records-recovery-terminate-observed")
def test_a_lock_release_is_succeeded_only_once_a_read_finds_the_state_file_gone(
    cloud, start_run, clock, monkeypatch
):
    """A delete S3 answered but a read still finds: requested with what the read saw, and
    cleanup_status.json does not claim the state file removed (before: succeeded on the answer)."""
    monkeypatch.setattr(StateStore, "release", lambda self, run_id: True)  # answered, not done
    start_run(max_runtime=60)
    clock.tick(80 * 60)
    cloud.store(ENV).heartbeat(RUN)
    assert _actions(handle(event("schedule", None, "t2"), cloud, clock=clock)) == [Action.FAILED]
    status = cloud.read_json(RunPaths(env=ENV, run_id=RUN).cleanup_status)
    delete = next(a for a in status["actions"] if a["action"] == "delete")
    assert delete["status"] == "requested" and delete["observed"].endswith(f"run {RUN} (failed)")
    assert status["state_file_removed"] is False


def test_a_stale_heartbeat_while_training_is_terminated_as_heartbeat_lost(cloud, start_run, clock):
    start_run()
    clock.tick(301)
    out = handle(event("schedule", None), cloud, clock=clock)
    assert _actions(out) == [Action.FAILED] and out[0].reason.startswith("heartbeat_lost")
    assert cloud.terminated == ["i-0001"] and _state(cloud) is None
    assert cloud.published[0][0] == "failed"


def test_a_stale_claim_is_claimed_again_by_the_schedule(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    cloud.refuse = {
        (m, f"us-east-1{z}"): "InsufficientInstanceCapacity" for m in ("spot", "on-demand") for z in "ab"
    }
    assert _actions(handle(event("instance_ended"), cloud, clock=clock)) == [Action.RETRY_LATER]
    doc = _state(cloud)
    assert doc["status"] == "recovering" and doc["instance_id"] is None and len(doc["refused"]) == 4
    assert [r["availability_zone"] for r in doc["refused"]] == ["us-east-1b"] * 2 + ["us-east-1a"] * 2
    clock.tick(60)
    assert _actions(handle(event("schedule", None, "t1"), cloud, clock=clock)) == [Action.NOTHING]
    cloud.refuse = {}
    clock.tick(300)
    out = handle(event("schedule", None, "t2"), cloud, clock=clock)
    assert _actions(out) == [Action.RELAUNCHED]
    doc = _state(cloud)
    assert doc["recovery"]["tries"] == 2 and doc["recoveries"] == 1 and doc["attempt"] == 2


def test_a_quota_refusal_ends_its_market_and_the_run_fails_saying_so(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    cloud.refuse = {("spot", "us-east-1b"): "MaxSpotInstanceCountExceeded"}
    cloud.refuse.update({("on-demand", z): "VcpuLimitExceeded" for z in ("us-east-1a", "us-east-1b")})
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.FAILED] and "quota" in out[0].reason
    assert "g5.xlarge spot us-east-1b: MaxSpotInstanceCountExceeded" in out[0].reason
    assert cloud.launched == []  # spot us-east-1a was skipped: the spot quota ended the market


def test_an_orphan_past_its_max_runtime_is_terminated(cloud, start_run, clock, s3, bucket):
    start_run(max_runtime=600)
    other = "20261124-100000"
    cloud.write_json(RunPaths(env=ENV, run_id=other).run_spec, {"instance": {"max_runtime": "1h"}})
    cloud.add_instance("i-orphan", run_id=other, age_s=2 * 3600)
    out = handle(event("schedule", None), cloud, clock=clock)
    assert Action.TERMINATED in _actions(out) and cloud.terminated == ["i-orphan"]
    assert _state(cloud)["instance_id"] == "i-0001"


def test_a_relaunched_instance_that_died_before_its_trainer_is_a_new_recovery(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    handle(event("instance_ended"), cloud, clock=clock)
    clock.tick(30)
    cloud.end_instance("i-0002")
    out = handle(event("instance_ended", "i-0002", "ev-9"), cloud, clock=clock)
    assert _actions(out) == [Action.RELAUNCHED]
    doc = _state(cloud)
    assert doc["recoveries"] == 2 and doc["attempt"] == 3 and doc["attempts"][1]["end"] == "vanished"


def test_an_old_instance_event_after_the_relaunch_changes_nothing(cloud, start_run, clock):
    start_run()
    cloud.end_instance("i-0001")
    handle(event("instance_ended"), cloud, clock=clock)
    clock.tick(timedelta(minutes=1).total_seconds())
    assert _actions(handle(event("instance_ended", event_id="ev-late"), cloud, clock=clock)) == [
        Action.NOTHING
    ]
    assert len(cloud.launched) == 1


def test_an_aws_batch_host_is_left_to_batch_its_end_and_its_age_change_nothing(cloud, start_run, clock):
    from recovery.cloud import InstanceInfo

    start_run(max_runtime=600)
    other = "20261124-100000-001"  # a sweep member's run id, in case a host carried one
    cloud.write_json(RunPaths(env=ENV, run_id=other).run_spec, {"instance": {"max_runtime": "1h"}})
    cloud.add_instance("i-batchhost", run_id=other, age_s=2 * 3600)
    info = cloud.instances["i-batchhost"]
    cloud.instances["i-batchhost"] = InstanceInfo(**{**info.__dict__, "batch_host": True})
    out = handle(event("schedule", None), cloud, clock=clock)
    # past "its" max runtime, but the host is Batch's (its job has Batch's attempt timeout)
    assert Action.TERMINATED not in _actions(out) and cloud.terminated == []
    cloud.end_instance("i-batchhost")
    assert handle(event("instance_ended", "i-batchhost", "ev-b"), cloud, clock=clock) == []
    assert cloud.launched == [] and _state(cloud)["status"] == "training"


def test_a_batch_jobs_state_is_never_relaunched_by_the_handler(cloud, start_run, clock):
    start_run(
        batch={"sweep_id": "20261125-140502", "job_id": "j-1", "job_queue": "q", "job_definition": "jd"}
    )
    cloud.end_instance("i-0001")
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.NOTHING] and "Batch's retry strategy" in out[0].reason
    assert cloud.launched == []


def _sentinel(cloud, completion):
    import json

    key = RunPaths(env=ENV, run_id=RUN).success
    doc = {"run_id": RUN, "completion_status": completion, "status": "success"}
    cloud.store(ENV).s3.put_object(Bucket=cloud.store(ENV).bucket, Key=key, Body=json.dumps(doc).encode())


def test_an_instance_gone_in_results_sync_after_a_normal_sentinel_is_released_not_relaunched(
    cloud, start_run, clock
):
    """Finalize writes the sentinel last: the results are whole, only the cleanup was left. Before,
    a new instance was launched (and paid for) only to fail on "this run already finished normally"."""
    start_run(RunStatus.RESULTS_SYNC)
    _sentinel(cloud, "normal")
    cloud.end_instance("i-0001")
    out = handle(event("instance_ended"), cloud, clock=clock)
    assert _actions(out) == [Action.RELEASED] and cloud.launched == []
    assert "the results are whole" in out[0].reason and "_SUCCESS (completed)" in out[0].reason
    assert _state(cloud) is None
    status = cloud.read_json(RunPaths(env=ENV, run_id=RUN).cleanup_status)
    assert status["written_by"] == "recovery" and status["state_file_removed"] is True


@pytest.mark.parametrize("completion", ["interrupted", None])
def test_an_instance_gone_in_results_sync_without_a_normal_sentinel_is_relaunched(
    cloud, start_run, clock, completion
):
    start_run(RunStatus.RESULTS_SYNC)
    if completion is not None:
        _sentinel(cloud, completion)
    cloud.end_instance("i-0001")
    assert _actions(handle(event("instance_ended"), cloud, clock=clock)) == [Action.RELAUNCHED]
