"""monitor and verify call the same run stale at the same age (one policy, common.staleness)."""

from __future__ import annotations

import pytest

from common import tags as common_tags
from common.staleness import STALENESS
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import RunStatus
from common.timeutil import iso
from control.backend import Clients
from control.monitor import Monitor, Outcome
from control.verify import Inspector

RUN_ID = "20261125-140502"


def _plant_instance(ec2, dev):
    tags = common_tags.tag_list(common_tags.tags("dev", extra={common_tags.RUN_ID_KEY: RUN_ID}))
    return ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        LaunchTemplate={"LaunchTemplateId": dev["launch_template_id"]},
        SubnetId=sorted(dev["subnets_by_az"].values())[0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]


@pytest.fixture
def sides(dev, local_aws, clock):
    """A held lock, and a monitor and an inspector reading it at the same clock."""
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    store = StateStore(s3, dev["bucket"], "dev", clock=clock)
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=iso(clock())))
    clients = Clients(s3=s3, ec2=ec2, sts=None)
    return {
        "store": store,
        "ec2": ec2,
        "monitor": Monitor(clients, dev["bucket"], "dev", clock=clock),
        "inspector": Inspector(clients, dev["bucket"], "dev", clock=clock),
    }


def _verify_calls_it_stale(inspector: Inspector) -> bool:
    (finding,) = [f for f in inspector.inventory().findings if f.kind == "state-file"]
    return finding.orphaned


@pytest.mark.parametrize("age", [STALENESS.heartbeat_s - 1, STALENESS.heartbeat_s + 1])
def test_an_old_heartbeat_is_stale_for_both_at_the_same_age(sides, dev, clock, age):
    store = sides["store"]
    store.set_instance(RUN_ID, instance_id=_plant_instance(sides["ec2"], dev))
    store.transition(RUN_ID, RunStatus.DATA_SYNC)
    clock.tick(age)
    view = sides["monitor"].poll()
    monitor_says = view.advice is not None and "no heartbeat" in view.advice
    assert monitor_says == _verify_calls_it_stale(sides["inspector"]) == (age > STALENESS.heartbeat_s)


@pytest.mark.parametrize("age", [STALENESS.no_instance_s - 1, STALENESS.no_instance_s + 1])
def test_a_lock_without_an_instance_is_stale_for_both_at_the_same_age(sides, clock, age):
    clock.tick(age)
    monitor_says = sides["monitor"].poll().outcome is Outcome.STALE
    assert monitor_says == _verify_calls_it_stale(sides["inspector"]) == (age > STALENESS.no_instance_s)


def test_a_gone_instance_is_stale_for_both_once_the_grace_has_passed(sides, dev, clock):
    store, ec2, monitor = sides["store"], sides["ec2"], sides["monitor"]
    instance = _plant_instance(ec2, dev)
    store.set_instance(RUN_ID, instance_id=instance)
    ec2.terminate_instances(InstanceIds=[instance])
    assert monitor.poll().outcome is Outcome.RUNNING  # the first sight of it gone starts the grace
    clock.tick(STALENESS.gone_grace_s)
    assert monitor.poll().outcome is Outcome.STALE
    assert _verify_calls_it_stale(sides["inspector"])  # it read the instances before the lock
