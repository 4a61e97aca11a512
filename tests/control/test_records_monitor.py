"""monitor never hides a DescribeInstances it could not make: "state unknown: <reason>", STALE when old."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from common.exitcodes import ExitCode
from common.staleness import StalenessPolicy
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import RunStatus
from common.timeutil import iso
from control.backend import Clients
from control.monitor import Monitor, Outcome

RUN_ID = "20261125-140502"
POLICY = StalenessPolicy(heartbeat_s=120, gone_grace_s=20)
ERRORS = {
    "denied": ("UnauthorizedOperation", 403, "You are not authorized to perform this operation."),
    "throttled": ("RequestLimitExceeded", 503, "Request limit exceeded."),
}


class _Failing:
    """EC2 whose DescribeInstances fails with ``code`` until ``heal()``."""

    def __init__(self, real: Any, code: str, status: int, message: str) -> None:
        self._real, self.error, self.healed = real, (code, status, message), False

    def describe_instances(self, **kwargs: Any) -> Any:
        if not self.healed:
            code, status, message = self.error
            raise ClientError(
                {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
                "DescribeInstances",
            )
        return self._real.describe_instances(**kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _watched(local_aws: Any, bucket: str, clock: Any, kind: str) -> tuple[Monitor, _Failing]:
    s3, real = local_aws.client("s3"), local_aws.client("ec2")
    instance = real.run_instances(ImageId="ami-03cf127a", MinCount=1, MaxCount=1)["Instances"][0][
        "InstanceId"
    ]
    store = StateStore(s3, bucket, "dev", clock=clock)
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=100, now=iso(clock())))
    store.set_instance(RUN_ID, instance_id=instance, instance_type="g5.xlarge")
    store.transition(RUN_ID, RunStatus.DATA_SYNC)
    ec2 = _Failing(real, *ERRORS[kind])
    return Monitor(Clients(s3=s3, ec2=ec2, sts=None), bucket, "dev", clock=clock, policy=POLICY), ec2


@pytest.mark.row("records-monitor-state-unknown")
@pytest.mark.parametrize("kind", sorted(ERRORS))
def test_an_unreadable_instance_state_is_shown_and_an_old_heartbeat_makes_it_stale(
    local_aws: Any, bucket: str, clock: Any, kind: str
):
    mon, ec2 = _watched(local_aws, bucket, clock, kind)
    code = ERRORS[kind][0]

    fresh = mon.poll()  # the trainer beats: it is alive, but the view says what it could not see
    assert fresh.outcome is Outcome.RUNNING
    assert fresh.instance_state == "unknown"
    assert fresh.state_unknown is not None and fresh.state_unknown.startswith(f"state unknown: {code}")
    assert (
        fresh.advice is not None
        and "state unknown" in fresh.advice
        and "ec2:DescribeInstances" in fresh.advice
    )
    assert fresh.to_dict()["state_unknown"] == fresh.state_unknown

    clock.tick(POLICY.heartbeat_s + 1)  # no beat since, and still no describe
    old = mon.poll()
    assert old.outcome is Outcome.STALE and old.outcome.exit_code is ExitCode.STALE
    assert old.advice is not None and old.advice.startswith(f"state unknown: {code}")
    assert "no heartbeat" in old.advice and "invoke verify" in old.advice

    ec2.healed = True  # the describe works again: the known state, and the plain stuck-trainer advice
    seen = mon.poll()
    assert seen.instance_state == "running" and seen.state_unknown is None
    assert seen.outcome is Outcome.RUNNING and "no heartbeat" in (seen.advice or "")
