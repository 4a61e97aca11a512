"""The handler's side of the hard runtime limit, on moto's EC2: the instance is terminated,
the run failed with the reason, and `invoke verify` finds nothing left billing."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from common import attempts as att
from common.layout import RunPaths
from common.state_doc import new_state
from common.status import RunStatus
from common.tags import tag_list
from common.timeutil import iso
from control.backend import Clients
from control.verify import Inspector
from recovery.actions import Action
from recovery.aws import AwsCloud
from recovery.events import Event, EventKind
from recovery.handler import handle

RUN = "20261201-120000"


@pytest.fixture
def world(local_aws, bucket, clock):
    ec2 = local_aws.client("ec2")
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = tag_list({"Project": "Chronos-Training", "Environment": "dev", "RunId": RUN})
    iid = ec2.run_instances(
        ImageId=image, MinCount=1, MaxCount=1, InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]  # fmt: skip
    clock.now = datetime.now(UTC).replace(microsecond=0)  # moto stamps LaunchTime with the real time
    cloud = AwsCloud(bucket=bucket, envs=["dev"], session=local_aws.session(),
                     endpoint_url=local_aws.endpoint_url, clock=clock)  # fmt: skip
    store = cloud.store("dev")
    doc = new_state(env="dev", run_id=RUN, market="on-demand", total_steps=100, now=iso(clock()))
    doc.update(att.policy(max_recoveries=3, max_runtime_minutes=60))
    snap = store.acquire(doc)
    first = att.new_attempt(
        attempt=1,
        instance_id=iid,
        instance_type="g5.xlarge",
        market="on-demand",
        availability_zone="us-east-1a",
        price_per_hour=1.006,
        price_source="on-demand-table",
        launched_at=iso(clock()),
    )
    snap = store.add_attempt(RUN, first, snapshot=snap)
    for status in (RunStatus.DATA_SYNC, RunStatus.TRAINING):
        snap = store.transition(RUN, status, snapshot=snap)
    clients = Clients(s3=local_aws.client("s3"), ec2=ec2, sts=local_aws.client("sts"))
    return cloud, store, clients, iid


def _schedule(clock) -> Event:
    return Event(kind=EventKind.SCHEDULE, instance_id=None, env="dev", event_id=f"tick-{clock().isoformat()}",
                 at=clock())  # fmt: skip


def _ended_and_clean(world, bucket, clock) -> None:
    cloud, store, clients, iid = world
    state = clients.ec2.describe_instances(InstanceIds=[iid])["Reservations"][0]["Instances"][0]["State"]
    assert state["Name"] in ("shutting-down", "terminated")
    assert store.read() is None  # the lock is released: the next launch may go
    status = cloud.read_json(RunPaths(env="dev", run_id=RUN).cleanup_status)
    assert status["written_by"] == "recovery" and any(a["action"] == "terminate" for a in status["actions"])
    inventory = Inspector(clients, bucket, "dev", clock=clock).inventory()
    assert inventory.clean, inventory.to_dict()


def test_an_instance_past_its_max_runtime_is_terminated_and_verify_is_clean(world, bucket, clock):
    cloud, store, _, _ = world
    clock.tick(80 * 60)  # 60 min max runtime plus more than the handler's margin
    store.heartbeat(RUN)  # alive and beating: only the runtime is over
    out = handle(_schedule(clock), cloud, clock=clock)
    assert [o.action for o in out] == [Action.FAILED] and out[0].reason.startswith("max_runtime_exceeded")
    _ended_and_clean(world, bucket, clock)


def test_a_run_whose_heartbeat_went_stale_is_terminated_and_verify_is_clean(world, bucket, clock):
    cloud = world[0]
    clock.tick(301)  # more than common.staleness's 300 s without a beat while training
    out = handle(_schedule(clock), cloud, clock=clock)
    assert [o.action for o in out] == [Action.FAILED] and out[0].reason.startswith("heartbeat_lost")
    _ended_and_clean(world, bucket, clock)
