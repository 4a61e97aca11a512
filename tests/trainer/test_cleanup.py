"""Cleanup: lock released, nothing else left billing, cleanup_status.json, then poweroff."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from common.layout import RunPaths
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import RunStatus
from common.timeutil import iso, utc_now
from schemas import validate
from trainer.cleanup import Cleanup
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier
from trainer.instance import ApiTerminate, PoweroffResult
from trainer.transfers import Transfers

PATHS = RunPaths(env="dev", run_id="20261125-140502")
TAGS = [{"Key": "Project", "Value": "Chronos-Training"}, {"Key": "Environment", "Value": "dev"}]


def launch(ec2: Any, tags: list[dict[str, str]] = TAGS) -> str:
    image = "ami-03cf127a"  # one of moto's built-in AMIs (describe_images takes seconds)
    return ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, TagSpecifications=[{"ResourceType": "instance", "Tags": tags}]
    )["Instances"][0]["InstanceId"]


def make(
    local_aws: Any, bucket: str, tmp_path: Path, *, poweroff: Any = None, held: bool = True
) -> tuple[Cleanup, StateStore, str, ErrorLog]:
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    store = StateStore(s3, bucket, "dev")
    instance_id = launch(ec2)
    if held:
        store.acquire(
            new_state(env="dev", run_id=PATHS.run_id, market="spot", total_steps=10, now=iso(utc_now()))
        )
        store.transition(PATHS.run_id, RunStatus.FAILED)
    errors = ErrorLog()
    retrier = Retrier(ExponentialBackoff(max_retries=1), errors=errors, sleep=lambda s: None)
    log_file = tmp_path / "trainer.log"
    log_file.write_text("last words\n")
    cleanup = Cleanup(
        store=store,
        paths=PATHS,
        transfers=Transfers(s3, bucket, retrier),
        ec2=ec2,
        instance_id=instance_id,
        poweroff=poweroff or ApiTerminate(ec2),
        retrier=retrier,
        errors=errors,
        trainer_log=log_file,
    )
    return cleanup, store, instance_id, errors


def status_doc(s3: Any, bucket: str) -> dict[str, Any]:
    return validate(
        "cleanup-status", json.loads(s3.get_object(Bucket=bucket, Key=PATHS.cleanup_status)["Body"].read())
    )


def test_cleanup_releases_the_lock_writes_its_status_and_terminates_itself(
    local_aws: Any, bucket: str, tmp_path: Path
):
    cleanup, store, instance_id, errors = make(local_aws, bucket, tmp_path)
    other = launch(local_aws.client("ec2"))  # another instance of this env, still running
    launch(local_aws.client("ec2"), tags=[{"Key": "Project", "Value": "someone-else"}])
    result = cleanup.run()
    assert result.succeeded
    assert store.read() is None
    doc = status_doc(local_aws.client("s3"), bucket)
    assert doc["written_by"] == "instance" and doc["state_file_removed"] is True
    assert doc["instance_id"] == instance_id
    assert doc["verification"]["instances_running"] == 1  # `other`, not itself, not the untagged one
    actions = {a["action"]: a for a in doc["actions"]}
    assert actions["status->cleanup"]["status"] == "succeeded" and actions["delete"]["status"] == "succeeded"
    assert actions["poweroff (api)"]["status"] == "requested"  # the instance cannot see its own end
    state = local_aws.client("ec2").describe_instances(InstanceIds=[instance_id, other])
    states = {i["InstanceId"]: i["State"]["Name"] for r in state["Reservations"] for i in r["Instances"]}
    assert states[instance_id] in ("shutting-down", "terminated") and states[other] == "running"
    log_body = local_aws.client("s3").get_object(Bucket=bucket, Key=PATHS.logs + "trainer.log")["Body"].read()
    assert log_body == b"last words\n" and errors.records() == []


def test_a_lock_already_gone_is_skipped_and_reported_removed(local_aws: Any, bucket: str, tmp_path: Path):
    """The recovery handler released the lock (the instance vanished in results_sync after its
    finalize) while this instance finished in the shutdown's grace: nothing to delete, and the
    state file is gone all the same. It used to say ``state_file_removed: false`` (CI drew it in
    the terminate column), a record that the env was still locked when it was not."""
    cleanup, _, instance_id, _ = make(local_aws, bucket, tmp_path, held=False)
    assert cleanup.run().succeeded
    doc = status_doc(local_aws.client("s3"), bucket)
    assert doc["state_file_removed"] is True
    actions = {a["action"]: a for a in doc["actions"]}
    assert actions["delete"]["status"] == "skipped" and "already gone" in actions["delete"]["error"]
    assert actions["status->cleanup"]["status"] == "skipped"


def test_a_lock_now_another_runs_is_left_and_this_runs_is_reported_removed(
    local_aws: Any, bucket: str, tmp_path: Path
):
    cleanup, store, _, _ = make(local_aws, bucket, tmp_path, held=False)
    newer = "20261125-150000"
    store.acquire(new_state(env="dev", run_id=newer, market="spot", total_steps=10, now=iso(utc_now())))
    assert cleanup.run().succeeded
    assert (snap := store.read()) is not None and snap.run_id == newer  # the new launch's lock stays
    doc = status_doc(local_aws.client("s3"), bucket)
    assert doc["state_file_removed"] is True
    assert {a["action"]: a["status"] for a in doc["actions"]}["delete"] == "skipped"


def test_a_lock_taken_over_by_a_later_attempt_is_left_and_not_reported_removed(
    local_aws: Any, bucket: str, tmp_path: Path
):
    """The recovery handler relaunched the run while this instance finished: the state file is
    the relaunch's now, this run's and still there."""
    cleanup, store, instance_id, _ = make(local_aws, bucket, tmp_path)
    store.update(PATHS.run_id, lambda doc: {**doc, "instance_id": "i-0relaunch00000001"})
    store.holder = cleanup.store.holder = instance_id
    assert cleanup.run().succeeded
    assert (snap := store.read()) is not None and snap.doc["instance_id"] == "i-0relaunch00000001"
    doc = status_doc(local_aws.client("s3"), bucket)
    assert doc["state_file_removed"] is False
    delete = {a["action"]: a for a in doc["actions"]}["delete"]
    assert delete["status"] == "skipped" and "taken over" in delete["error"], delete


def test_a_failed_poweroff_is_recorded_as_a_cleanup_error(local_aws: Any, bucket: str, tmp_path: Path):
    class Stuck:
        name = "shutdown"

        def __call__(self, instance_id: str | None) -> PoweroffResult:
            return PoweroffResult(succeeded=False, method="sudo -n shutdown -h now", error="no sudo")

    cleanup, _, _, errors = make(local_aws, bucket, tmp_path, poweroff=Stuck())
    assert not cleanup.run().succeeded
    doc = status_doc(local_aws.client("s3"), bucket)
    assert doc["actions"][-1]["status"] == "failed" and doc["actions"][-1]["error"] == "no sudo"
    assert errors.records()[-1]["error_class"] == "cleanup"


class _Denied:
    """The EC2 client of an instance role that lacks some Describe permissions."""

    def __init__(self, real: Any, denied: set[str]) -> None:
        self._real, self._denied = real, denied

    def _deny(self, operation: str) -> Any:
        from botocore.exceptions import ClientError

        raise ClientError(
            {
                "Error": {
                    "Code": "UnauthorizedOperation",
                    "Message": "You are not authorized to perform this operation.",
                },
                "ResponseMetadata": {"HTTPStatusCode": 403},
            },
            operation,
        )

    def describe_volumes(self, **kwargs: Any) -> Any:
        if "DescribeVolumes" in self._denied:
            self._deny("DescribeVolumes")
        return self._real.describe_volumes(**kwargs)

    def get_paginator(self, name: str) -> Any:
        if name == "describe_instances" and "DescribeInstances" in self._denied:
            self._deny("DescribeInstances")
        return self._real.get_paginator(name)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def test_a_check_that_could_not_be_made_is_unknown_with_its_reason_never_zero(
    local_aws: Any, bucket: str, tmp_path: Path
):
    cleanup, store, _, errors = make(local_aws, bucket, tmp_path)
    cleanup.ec2 = _Denied(cleanup.ec2, {"DescribeVolumes"})
    assert cleanup.run().succeeded  # a failed check does not stop cleanup
    assert store.read() is None
    verification = status_doc(local_aws.client("s3"), bucket)["verification"]
    assert verification["instances_running"] == 0  # this one was checked
    assert verification["volumes_available"] is None
    reason = verification["unknown"]["volumes_available"]
    assert "ec2:DescribeVolumes" in reason and "access denied" in reason
    assert set(verification["unknown"]) == {"volumes_available"}
    assert any("ec2:volumes" in r["message"] for r in errors.records() if r["error_class"] == "cleanup")


def test_every_check_can_be_unknown(local_aws: Any, bucket: str, tmp_path: Path):
    cleanup, _, _, _ = make(local_aws, bucket, tmp_path)
    cleanup.ec2 = _Denied(cleanup.ec2, {"DescribeVolumes", "DescribeInstances"})
    cleanup.poweroff = ApiTerminate(local_aws.client("ec2"))
    assert cleanup.run().succeeded
    verification = status_doc(local_aws.client("s3"), bucket)["verification"]
    assert verification["instances_running"] is None and verification["volumes_available"] is None
    assert "ec2:DescribeInstances" in verification["unknown"]["instances_running"]


def test_a_run_that_may_recover_keeps_its_lock_but_still_reports_and_powers_off(
    local_aws: Any, bucket: str, tmp_path: Path
):
    cleanup, store, instance_id, _ = make(local_aws, bucket, tmp_path)
    cleanup.keep_lock = "left for the recovery handler (recovery 1 of 3)"
    result = cleanup.run()
    assert result.succeeded
    snap = store.read()
    # untouched: not moved to cleanup, not deleted
    assert snap is not None and snap.status is RunStatus.FAILED
    doc = status_doc(local_aws.client("s3"), bucket)
    assert doc["state_file_removed"] is False
    actions = {a["action"]: a for a in doc["actions"]}
    assert actions["delete"]["status"] == "skipped" and "recovery handler" in actions["delete"]["error"]
    assert actions["status->cleanup"]["status"] == "skipped"
    assert actions["poweroff (api)"]["status"] == "requested"


def test_the_final_status_never_ends_a_run_the_recovery_handler_claimed(local_aws: Any, bucket: str):
    from common.status import CompletionStatus
    from trainer.stopping import StopSwitch
    from trainer.transitions import RunState

    store = StateStore(local_aws.client("s3"), bucket, "dev")
    doc = new_state(env="dev", run_id=PATHS.run_id, market="spot", total_steps=10, now=iso(utc_now()))
    store.acquire(
        {
            **doc,
            "status": "recovering",
            "history": [*doc["history"], {"status": "recovering", "at": doc["started_at"]}],
        }
    )
    errors = ErrorLog()
    state = RunState(
        store=store,
        run_id=PATHS.run_id,
        retrier=Retrier(ExponentialBackoff(max_retries=1), errors=errors, sleep=lambda s: None),
        stops=StopSwitch(),
        errors=errors,
    )
    assert (
        state.final(CompletionStatus.FAILED, "interrupted 2 times; max_recoveries is 1")
        is RunStatus.RECOVERING
    )
    assert store.read().status is RunStatus.RECOVERING


class _DeleteIgnored:
    """A state store whose delete answers success but leaves the file (or whose read then fails)."""

    def __init__(self, real: StateStore, *, read_fails: bool = False) -> None:
        self._real, self._read_fails, self.deleted = real, read_fails, False

    def release(self, run_id: str) -> bool:
        self._real.read()  # the ownership check a real release makes; the delete "answers" but is lost
        self.deleted = True
        return True

    def read(self) -> Any:
        if self.deleted and self._read_fails:
            raise ConnectionError("GetObject timed out")
        return self._real.read()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.row("records-cleanup-confirmed")
@pytest.mark.parametrize("read_fails", [False, True], ids=["file-still-there", "read-fails"])
def test_a_state_delete_is_succeeded_only_once_a_read_finds_the_file_gone(
    local_aws: Any, bucket: str, tmp_path: Path, read_fails: bool
):
    cleanup, store, _, _ = make(local_aws, bucket, tmp_path)
    cleanup.store = _DeleteIgnored(store, read_fails=read_fails)
    assert cleanup.run().succeeded
    assert store.read() is not None  # the delete was lost: the lock is still there
    doc = status_doc(local_aws.client("s3"), bucket)
    delete = {a["action"]: a for a in doc["actions"]}["delete"]
    assert delete["status"] == "requested", delete
    assert ("GetObject timed out" if read_fails else "still there") in delete["observed"]
    assert doc["state_file_removed"] is False


@pytest.mark.row("records-cleanup-confirmed")
@pytest.mark.row("records-status-after-write")
def test_a_confirmed_delete_says_what_the_read_saw_and_the_poweroff_is_only_requested(
    local_aws: Any, bucket: str, tmp_path: Path
):
    cleanup, store, instance_id, _ = make(local_aws, bucket, tmp_path)
    assert cleanup.run().succeeded
    doc = status_doc(local_aws.client("s3"), bucket)
    actions = {a["action"]: a for a in doc["actions"]}
    assert actions["delete"]["status"] == "succeeded" and "gone" in actions["delete"]["observed"]
    assert doc["state_file_removed"] is True and store.read() is None
    # the instance cannot describe its own end: the poweroff is requested, never succeeded
    poweroff = actions["poweroff (api)"]
    assert poweroff["status"] == "requested" and poweroff["resource"] == instance_id
    assert "cannot observe" in poweroff["observed"]


def test_one_transient_error_does_not_lose_the_last_trainer_log(local_aws: Any, bucket: str, tmp_path: Path):
    """The last trainer.log goes up right before the poweroff; one 500 used to lose it (no retry)."""
    from botocore.exceptions import ClientError

    cleanup, _, _, _ = make(local_aws, bucket, tmp_path)
    s3 = cleanup.transfers.s3
    left = {"n": 1}

    def once(params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == PATHS.logs + "trainer.log" and left["n"]:
            left["n"] -= 1
            raise ClientError(
                {"Error": {"Code": "InternalError"}, "ResponseMetadata": {"HTTPStatusCode": 500}}, "PutObject"
            )

    s3.meta.events.register("before-parameter-build.s3.PutObject", once)
    assert cleanup.run().succeeded and left["n"] == 0
    body = local_aws.client("s3").get_object(Bucket=bucket, Key=PATHS.logs + "trainer.log")["Body"].read()
    assert body == b"last words\n"


def test_a_batch_job_releases_its_lock_and_leaves_the_host_to_batch(
    local_aws: Any, bucket: str, tmp_path: Path
):
    """No poweroff as an AWS Batch job: recorded skipped (not 'requested'), the host still runs."""
    from trainer.instance import BatchOwnsTheHost

    cleanup, store, instance_id, errors = make(local_aws, bucket, tmp_path, poweroff=BatchOwnsTheHost())
    assert cleanup.run().succeeded
    assert store.read() is None
    doc = status_doc(local_aws.client("s3"), bucket)
    poweroff = {a["action"]: a for a in doc["actions"]}["poweroff (batch)"]
    assert poweroff["status"] == "skipped" and "AWS Batch owns the host" in (poweroff["observed"] or "")
    state = local_aws.client("ec2").describe_instances(InstanceIds=[instance_id])["Reservations"][0]
    assert state["Instances"][0]["State"]["Name"] == "running" and errors.records() == []
