"""The laptop side knows `recovering`: monitor shows it running, verify calls it healthy, kill stops it."""

from __future__ import annotations

import pytest
from recovery_fakes import ENV, RUN, event

from common.layout import RunPaths
from control.backend import Clients
from control.kill import Killer
from control.monitor import Monitor, Outcome
from control.verify import Inspector
from recovery.actions import Action
from recovery.handler import handle


@pytest.fixture
def recovering(cloud, start_run, clock):
    """A run an hour old, claimed for recovery with every placement refused (no instance yet)."""
    start_run()
    clock.tick(3600)
    cloud.store(ENV).heartbeat(RUN)
    cloud.end_instance("i-0001")
    cloud.refuse = {(m, f"us-east-1{z}"): "InsufficientCapacity" for m in ("spot", "on-demand") for z in "ab"}
    assert [o.action for o in handle(event("instance_ended"), cloud, clock=clock)] == [Action.RETRY_LATER]
    return cloud


@pytest.fixture
def clients(local_aws):
    return Clients(s3=local_aws.client("s3"), ec2=local_aws.client("ec2"), sts=local_aws.client("sts"))


def test_monitor_shows_a_fresh_claim_running_with_the_next_attempt(recovering, clients, bucket, clock):
    view = Monitor(clients, bucket, ENV, clock=clock).poll()
    assert view.outcome is Outcome.RUNNING and view.status == "recovering"
    assert view.advice.startswith("recovering: attempt 2 (launching)")
    clock.tick(601)
    assert Monitor(clients, bucket, ENV, clock=clock).poll().outcome is Outcome.STALE


def test_verify_calls_a_recovering_lock_healthy_within_the_claim_grace(recovering, clients, bucket, clock):
    inventory = Inspector(clients, bucket, ENV, clock=clock).inventory()
    assert inventory.clean and inventory.active_run_id == RUN
    clock.tick(601)
    assert not Inspector(clients, bucket, ENV, clock=clock).inventory().clean


def test_kill_during_recovery_clears_the_lock_and_nothing_is_relaunched(recovering, clients, bucket, clock):
    result = Killer(clients, bucket, ENV, clock=clock, sleep=lambda s: None).kill(
        grace_s=0, reason="test kill"
    )
    assert result.status_before == "recovering" and result.state_cleared_by_control
    assert recovering.store(ENV).read() is None
    assert recovering.read_json(RunPaths(env=ENV, run_id=RUN).cleanup_status)["written_by"] == "control"
    recovering.refuse = {}
    clock.tick(400)
    assert [o.action for o in handle(event("schedule", None, "t9"), recovering, clock=clock)] == [
        Action.NOTHING
    ]
    assert recovering.launched == []
