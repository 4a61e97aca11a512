"""kill without a cooperating instance: the control plane terminates it and writes cleanup_status itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from common import layout
from common import tags as common_tags
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import RunStatus
from common.timeutil import iso
from schemas import validate

RUN_ID = "20261125-140502"


def test_kill_terminates_an_unresponsive_instance_and_cleans_up(dev, local_aws, cli):
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    tags = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": RUN_ID}))
    instance = ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        LaunchTemplate={"LaunchTemplateId": dev["launch_template_id"]},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    store = StateStore(s3, dev["bucket"], "dev")
    store.acquire(
        new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=100, now=iso(datetime.now(UTC)))
    )
    store.set_instance(RUN_ID, instance_id=instance)
    store.transition(RUN_ID, RunStatus.DATA_SYNC)

    proc = cli("kill", "--env=dev", "--local", "--grace=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"killed run {RUN_ID} (was data_sync)" in proc.stdout
    assert f"terminated {instance} through the API" in proc.stdout
    assert "written by this command" in proc.stdout
    state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
    assert store.read() is None
    key = layout.RunPaths(env="dev", run_id=RUN_ID).cleanup_status
    cleanup = validate(
        "cleanup-status", json.loads(s3.get_object(Bucket=dev["bucket"], Key=key)["Body"].read())
    )
    assert cleanup["written_by"] == "control" and cleanup["state_file_removed"]
    assert cleanup["verification"] == {
        **cleanup["verification"],
        "instances_running": 0,
        "volumes_available": 0,
    }
    assert cli("verify", "--env=dev", "--local").returncode == 0

    again = cli("kill", "--env=dev", "--local")
    assert again.returncode == 0 and "nothing to kill" in again.stdout


def test_control_cleanup_status_records_a_denied_check_as_unknown(local_aws, bucket):
    from botocore.exceptions import ClientError

    from control.backend import Clients
    from control.kill import Killer

    class NoDescribeVolumes:
        def __init__(self, real):
            self._real = real

        def get_paginator(self, name):
            if name == "describe_volumes":
                raise ClientError(
                    {
                        "Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"},
                        "ResponseMetadata": {"HTTPStatusCode": 403},
                    },
                    "DescribeVolumes",
                )
            return self._real.get_paginator(name)

        def __getattr__(self, name):
            return getattr(self._real, name)

    s3 = local_aws.client("s3")
    store = StateStore(s3, bucket, "dev")
    now = iso(datetime.now(UTC))
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=now))
    clients = Clients(s3=s3, ec2=NoDescribeVolumes(local_aws.client("ec2")), sts=None)
    result = Killer(clients, bucket, "dev", sleep=lambda s: None).kill(grace_s=0, reason="test")
    assert result.cleanup_written_by == "control" and store.read() is None
    key = layout.RunPaths(env="dev", run_id=RUN_ID).cleanup_status
    doc = validate("cleanup-status", json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert doc["verification"]["instances_running"] == 0
    assert doc["verification"]["volumes_available"] is None
    assert "ec2:DescribeVolumes" in doc["verification"]["unknown"]["volumes_available"]
    assert "UnauthorizedOperation" in doc["verification"]["unknown"]["volumes_available"]


class _Clock:
    """A monotonic clock that moves only when the code under test sleeps."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.t += seconds


class _TerminateLags:
    """EC2 whose TerminateInstances answers while DescribeInstances keeps showing the instance running."""

    def __init__(self, real, instance_id: str) -> None:
        self._real, self._id, self.terminate_calls = real, instance_id, 0

    def terminate_instances(self, **kwargs):
        self.terminate_calls += 1
        return {"TerminatingInstances": [{"InstanceId": self._id}]}

    def __getattr__(self, name):
        return getattr(self._real, name)


class _DeleteLost:
    """A state store whose delete answers but leaves the file."""

    def __init__(self, real: StateStore) -> None:
        self._real = real

    def release(self, run_id: str) -> bool:
        return True

    def __getattr__(self, name):
        return getattr(self._real, name)


def _held_run(local_aws, bucket) -> tuple[StateStore, str]:
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    tags = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": RUN_ID}))
    instance = ec2.run_instances(
        ImageId="ami-03cf127a",
        MinCount=1,
        MaxCount=1,
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    store = StateStore(s3, bucket, "dev")
    now = iso(datetime.now(UTC))
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=now))
    store.set_instance(RUN_ID, instance_id=instance)
    return store, instance


def _cleanup_doc(s3, bucket) -> dict:
    key = layout.RunPaths(env="dev", run_id=RUN_ID).cleanup_status
    return validate("cleanup-status", json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))


@pytest.mark.row("records-kill-confirmed")
@pytest.mark.row("records-status-after-write")
def test_a_terminate_no_describe_confirmed_is_requested_not_succeeded(local_aws, bucket):
    from control.backend import Clients
    from control.kill import Killer

    s3 = local_aws.client("s3")
    store, instance = _held_run(local_aws, bucket)
    ec2 = _TerminateLags(local_aws.client("ec2"), instance)
    clock = _Clock()
    killer = Killer(
        Clients(s3=s3, ec2=ec2, sts=None),
        bucket,
        "dev",
        sleep=clock.sleep,
        monotonic=clock,
        terminate_wait_s=3,
    )
    result = killer.kill(grace_s=2, reason="test")
    assert ec2.terminate_calls == 1 and result.termination_requested
    assert not result.terminated_by_control  # nothing saw it terminated
    assert not any(a.startswith(f"terminated {instance}") for a in result.actions), result.actions
    assert any(f"requested termination of {instance}" in a and "running" in a for a in result.actions)
    terminate = {a["action"]: a for a in _cleanup_doc(s3, bucket)["actions"]}["terminate"]
    assert terminate["status"] == "requested" and terminate["resource"] == instance
    assert "DescribeInstances: running" in terminate["observed"]


@pytest.mark.row("records-kill-confirmed")
def test_a_confirmed_terminate_and_a_lost_state_delete_are_recorded_as_seen(local_aws, bucket):
    from control.backend import Clients
    from control.kill import Killer

    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    store, instance = _held_run(local_aws, bucket)
    clock = _Clock()
    killer = Killer(
        Clients(s3=s3, ec2=ec2, sts=None),
        bucket,
        "dev",
        sleep=clock.sleep,
        monotonic=clock,
        terminate_wait_s=3,
    )
    killer.store = _DeleteLost(killer.store)
    result = killer.kill(grace_s=2, reason="test")
    assert result.terminated_by_control and f"terminated {instance} through the API" in result.actions
    assert store.read() is not None  # the delete was lost
    assert not result.state_cleared_by_control
    assert not any(a.startswith("removed ") for a in result.actions), result.actions
    doc = _cleanup_doc(s3, bucket)
    actions = {a["action"]: a for a in doc["actions"]}
    assert actions["terminate"]["status"] == "succeeded"
    assert actions["terminate"]["observed"] == "DescribeInstances: terminated"
    assert actions["delete"]["status"] == "requested" and "still there" in actions["delete"]["observed"]
    assert doc["state_file_removed"] is False


class _ShuttingDown:
    """EC2 that shows the instance shutting down (gone, not yet terminated)."""

    def __init__(self, real) -> None:
        self._real = real

    def describe_instances(self, **kwargs):
        resp = self._real.describe_instances(**kwargs)
        for res in resp["Reservations"]:
            for inst in res["Instances"]:
                inst["State"] = {"Code": 32, "Name": "shutting-down"}
        return resp

    def __getattr__(self, name):
        return getattr(self._real, name)


@pytest.mark.row("records-kill-confirmed")
def test_an_instance_already_shutting_down_is_recorded_as_seen_not_as_terminated(local_aws, bucket):
    from control.backend import Clients
    from control.kill import Killer

    s3 = local_aws.client("s3")
    store, instance = _held_run(local_aws, bucket)
    clock = _Clock()
    ec2 = _ShuttingDown(local_aws.client("ec2"))
    killer = Killer(
        Clients(s3=s3, ec2=ec2, sts=None),
        bucket,
        "dev",
        sleep=clock.sleep,
        monotonic=clock,
        terminate_wait_s=3,
    )
    result = killer.kill(grace_s=2, reason="test")
    assert not result.termination_requested and store.read() is None
    terminate = {a["action"]: a for a in _cleanup_doc(s3, bucket)["actions"]}["terminate"]
    assert terminate["status"] == "skipped" and terminate["error"] == "already shutting-down"
    assert terminate["observed"] == "DescribeInstances: shutting-down"


def test_a_run_with_no_instance_recorded_has_its_tagged_instances_terminated(local_aws, bucket):
    """The launch died between RunInstances and recording the instance: before, kill cleared the
    lock and left the instance (tagged with the run id) billing until `invoke verify --fix`."""
    from control.backend import Clients
    from control.kill import Killer

    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    tags = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": RUN_ID}))
    other = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": "20261125-090000"}))
    batch = common_tags.tag_list(
        common_tags.tags("dev", extra={"RunId": RUN_ID, common_tags.BATCH_HOST_KEY: "chronos-dev-spot"})
    )

    def launched(tag_list):
        return ec2.run_instances(
            ImageId="ami-03cf127a", MinCount=1, MaxCount=1,
            TagSpecifications=[{"ResourceType": "instance", "Tags": tag_list}],
        )["Instances"][0]["InstanceId"]  # fmt: skip

    ours, foreign, host = launched(tags), launched(other), launched(batch)
    store = StateStore(s3, bucket, "dev")
    store.acquire(
        new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=iso(datetime.now(UTC)))
    )
    clock = _Clock()
    killer = Killer(Clients(s3=s3, ec2=ec2, sts=None), bucket, "dev", sleep=clock.sleep, monotonic=clock)
    result = killer.kill(grace_s=0, reason="test")

    def state(iid):
        return ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]["Name"]

    assert result.instance_id == ours and result.terminated_by_control, result.actions
    assert any(f"found {ours} by its RunId tag" in a for a in result.actions), result.actions
    assert state(ours) == "terminated"
    assert state(foreign) == "running" and state(host) == "running"  # another run's; Batch's own
    assert store.read() is None
    terminate = {a["action"]: a for a in _cleanup_doc(s3, bucket)["actions"]}["terminate"]
    assert terminate["status"] == "succeeded" and terminate["resource"] == ours
