"""EventBridge deliveries parsed against AWS's documented example shapes."""

from __future__ import annotations

import pytest

from recovery.events import EventKind, UnknownEventError, from_eventbridge

# EC2 User Guide, "Spot Instance interruption notices" (EC2 Spot Instance Interruption Warning).
SPOT_WARNING = {
    "version": "0",
    "id": "12345678-1234-1234-1234-123456789012",
    "detail-type": "EC2 Spot Instance Interruption Warning",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2026-11-25T14:20:00Z",
    "region": "us-east-2",
    "resources": ["arn:aws:ec2:us-east-2:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "instance-action": "terminate"},
}
# EC2 User Guide, "State change events for Amazon EC2 instances".
STATE_CHANGE = {
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2021-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}
# EventBridge User Guide, a rule on a schedule invoking a Lambda function.
SCHEDULED = {
    "version": "0",
    "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
    "detail-type": "Scheduled Event",
    "source": "aws.events",
    "account": "123456789012",
    "time": "2015-10-08T16:53:06Z",
    "region": "us-east-1",
    "resources": ["arn:aws:events:us-east-1:123456789012:rule/my-scheduled-rule"],
    "detail": {},
}


def test_the_spot_warning():
    ev = from_eventbridge(SPOT_WARNING, env="dev")
    assert ev.kind is EventKind.SPOT_WARNING and ev.instance_id == "i-1234567890abcdef0"
    assert ev.event_id == SPOT_WARNING["id"] and ev.at == "2026-11-25T14:20:00Z" and ev.env == "dev"
    assert ev.kind.trigger.value == "spot-warning"


@pytest.mark.parametrize("state", ["terminated", "shutting-down"])
def test_an_instance_that_ended(state):
    ev = from_eventbridge({**STATE_CHANGE, "detail": {**STATE_CHANGE["detail"], "state": state}})
    assert ev.kind is EventKind.INSTANCE_ENDED and ev.instance_id == "i-1234567890abcdef0" and ev.env is None
    assert ev.kind.trigger.value == "instance-ended"


def test_the_schedule():
    ev = from_eventbridge(SCHEDULED, env="dev")
    assert ev.kind is EventKind.SCHEDULE and ev.instance_id is None and ev.kind.trigger.value == "schedule"


@pytest.mark.parametrize("state", ["pending", "running", "stopping", "stopped"])
def test_a_state_change_that_is_no_end_needs_nothing(state):
    with pytest.raises(UnknownEventError, match="needs no recovery"):
        from_eventbridge({**STATE_CHANGE, "detail": {**STATE_CHANGE["detail"], "state": state}})


@pytest.mark.parametrize(
    "event",
    [
        {**SCHEDULED, "source": "my.app"},
        {**STATE_CHANGE, "detail": {}},
        {k: v for k, v in SPOT_WARNING.items() if k != "id"},
        {
            "detail-type": "EC2 Instance Rebalance Recommendation",
            "source": "aws.ec2",
            "id": "x",
            "time": "t",
            "detail": {"instance-id": "i-1"},
        },
    ],
)
def test_anything_else_is_refused(event):
    with pytest.raises(UnknownEventError):
        from_eventbridge(event)
