"""verify --fix records only what a describe confirmed, and every instance it terminated under its run."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from common import layout
from common import tags as common_tags
from common.state_doc import new_state
from common.state_store import StateStore
from common.timeutil import iso
from schemas import validate

RUN = "20261125-140502"
OTHER_RUN = "20261124-090000"
START = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)
LATER = START + timedelta(hours=1)  # every heartbeat is stale by then


def _instance(ec2: Any, run_id: str) -> str:
    tags = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": run_id}))
    return ec2.run_instances(
        ImageId="ami-03cf127a",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]


def _volume(ec2: Any, run_id: str) -> str:
    tags = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": run_id}))
    return ec2.create_volume(
        AvailabilityZone="us-east-1a", Size=8, TagSpecifications=[{"ResourceType": "volume", "Tags": tags}]
    )["VolumeId"]


def _stuck_run(s3: Any, bucket: str, instance_id: str) -> StateStore:
    """A lock whose trainer stopped beating an hour ago on a running instance."""
    store = StateStore(s3, bucket, "dev", clock=lambda: START)
    store.acquire(new_state(env="dev", run_id=RUN, market="spot", total_steps=10, now=iso(START)))
    store.set_instance(RUN, instance_id=instance_id)
    return store


def _cleanup_doc(s3: Any, bucket: str, run_id: str) -> dict[str, Any]:
    key = layout.RunPaths(env="dev", run_id=run_id).cleanup_status
    return validate("cleanup-status", json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


def _inspector(s3: Any, ec2: Any, bucket: str) -> Any:
    from control.backend import Clients
    from control.verify import Inspector

    return Inspector(
        Clients(s3=s3, ec2=ec2, sts=None), bucket, "dev", clock=lambda: LATER, sleep=lambda s: None
    )


@pytest.mark.row("records-verify-fix-each-instance")
def test_fix_records_each_terminated_instance_under_its_own_run(local_aws: Any, bucket: str):
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    extra = _instance(ec2, RUN)  # listed first: a second instance of the run, not the run's
    run_instance = _instance(ec2, RUN)
    other = _instance(ec2, OTHER_RUN)  # an orphan of another run
    _stuck_run(s3, bucket, run_instance)
    insp = _inspector(s3, ec2, bucket)
    before = insp.inventory()
    assert {f.resource for f in before.orphans if f.kind == "instance"} == {extra, run_instance, other}
    done = insp.fix(before)
    for iid in (extra, run_instance, other):
        assert f"terminated {iid}" in done, done

    doc = _cleanup_doc(s3, bucket, RUN)
    assert doc["instance_id"] == run_instance  # the lock's instance, not the first one terminated
    terminated = {a["resource"]: a for a in doc["actions"] if a["action"] == "terminate"}
    assert set(terminated) == {extra, run_instance}  # the other run's instance is not this run's
    assert all(a["status"] == "succeeded" for a in terminated.values())
    assert all(a["observed"] == "DescribeInstances: terminated" for a in terminated.values())
    delete = {a["action"]: a for a in doc["actions"]}["delete"]
    assert delete["status"] == "succeeded" and doc["state_file_removed"] is True

    theirs = _cleanup_doc(s3, bucket, OTHER_RUN)
    assert theirs["instance_id"] == other and theirs["written_by"] == "control"
    assert [(a["resource"], a["action"], a["status"]) for a in theirs["actions"]] == [
        (other, "terminate", "succeeded")
    ]


class _Lagging:
    """EC2 whose TerminateInstances and DeleteVolume answer while the describes still show them."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[str] = []

    def terminate_instances(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("TerminateInstances")
        return {"TerminatingInstances": [{"InstanceId": i} for i in kwargs["InstanceIds"]]}

    def delete_volume(self, **kwargs: Any) -> dict[str, Any]:
        self.calls.append("DeleteVolume")
        return {}

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class _ClearLost:
    """A state store whose forced delete answers but leaves the file."""

    def __init__(self, real: StateStore) -> None:
        self._real = real

    def force_clear(self, *, etag: str | None = None) -> bool:
        return True

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


@pytest.mark.row("records-verify-fix-confirmed")
@pytest.mark.row("records-status-after-write")
def test_fix_records_requested_until_a_describe_confirms(local_aws: Any, bucket: str):
    s3, real_ec2 = local_aws.client("s3"), local_aws.client("ec2")
    instance = _instance(real_ec2, RUN)
    volume = _volume(real_ec2, RUN)
    store = _stuck_run(s3, bucket, instance)
    ec2 = _Lagging(real_ec2)
    insp = _inspector(s3, ec2, bucket)
    insp.store = _ClearLost(insp.store)
    done = insp.fix(insp.inventory())
    assert "TerminateInstances" in ec2.calls and "DeleteVolume" in ec2.calls
    assert not any(d.startswith(f"terminated {instance}") for d in done), done
    assert not any(d.startswith(f"deleted volume {volume}") for d in done), done
    assert not any(d.startswith("removed stale lock") for d in done), done
    assert any(f"requested termination of {instance}" in d and "running" in d for d in done), done
    assert any(f"requested deletion of volume {volume}" in d and "available" in d for d in done), done
    assert store.read() is not None

    doc = _cleanup_doc(s3, bucket, RUN)
    actions = {(a["resource"], a["action"]): a for a in doc["actions"]}
    terminate = actions[(instance, "terminate")]
    assert terminate["status"] == "requested" and "DescribeInstances: running" in terminate["observed"]
    deleted = actions[(volume, "delete")]
    assert deleted["status"] == "requested" and "DescribeVolumes: available" in deleted["observed"]
    lock = actions[(store.location, "delete")]
    assert lock["status"] == "requested" and "still there" in lock["observed"]
    assert doc["state_file_removed"] is False


@pytest.mark.row("records-verify-fix-confirmed")
def test_fix_records_a_deleted_volume_as_succeeded_once_describe_no_longer_finds_it(
    local_aws: Any, bucket: str
):
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    volume = _volume(ec2, RUN)
    insp = _inspector(s3, ec2, bucket)
    done = insp.fix(insp.inventory())
    assert f"deleted volume {volume}" in done
    [action] = _cleanup_doc(s3, bucket, RUN)["actions"]
    assert (action["resource"], action["action"], action["status"]) == (volume, "delete", "succeeded")
    assert action["observed"] == "DescribeVolumes: gone"


@pytest.mark.row("records-verify-fix-confirmed")
def test_fix_never_deletes_a_lock_a_new_launch_took_after_the_stale_one_was_judged(
    local_aws: Any, bucket: str
):
    """verify judges the lock stale, then terminates and waits; if the stale run's lock was
    released meanwhile and a new launch took it, --fix must leave the new lock (before: deleted
    whatever the state file held)."""
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    store = _stuck_run(s3, bucket, _instance(ec2, RUN))
    insp = _inspector(s3, ec2, bucket)
    before = insp.inventory()
    assert any(f.kind == "state-file" and f.orphaned for f in before.orphans)
    store.release(RUN)  # the slow trainer ends its run ...
    fresh = new_state(env="dev", run_id=OTHER_RUN, market="spot", total_steps=10, now=iso(LATER))
    store.acquire(fresh)  # ... and a new launch takes the lock
    done = insp.fix(before)
    held = store.read()
    assert held is not None and held.run_id == OTHER_RUN, "the new run's lock was deleted"
    assert any("removed stale lock" in d for d in done), done  # the stale lock is gone all the same
