"""EC2 instance states and the one describe call every side reads them with.

An instance is *gone* once it is ``shutting-down`` or ``terminated`` (it no longer runs
the trainer and will not bill again) and *billing* in every other state AWS documents:
``pending``, ``running``, ``stopping``, ``stopped`` (a stopped instance bills for its
EBS volumes). See https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/ec2-instance-lifecycle.html.
EC2 forgets a terminated instance after about an hour; DescribeInstances then answers
``InvalidInstanceID.NotFound``, which :func:`instance_state` reports as :data:`NOT_FOUND`.
"""

from __future__ import annotations

from typing import Any

from common.aws import error_code

NOT_FOUND = "not-found"
GONE_STATES = frozenset({"shutting-down", "terminated"})
BILLING_STATES: tuple[str, ...] = ("pending", "running", "stopping", "stopped")
STARTING_STATES = frozenset({"pending", "running"})


def is_gone(state: str | None) -> bool:
    """True when ``state`` (as :func:`instance_state` returns it) means the instance is gone."""
    return state in GONE_STATES or state == NOT_FOUND


def describe_instance(ec2: Any, instance_id: str) -> dict[str, Any] | None:
    """The instance as DescribeInstances returns it, or ``None`` when EC2 does not know it.

    Raises:
        botocore.exceptions.ClientError: for any other error (access denied, throttling):
            callers decide whether "could not check" is a warning or an unknown.
    """
    try:
        resp = ec2.describe_instances(InstanceIds=[instance_id])
    except Exception as exc:  # only NotFound is an answer; anything else goes to the caller
        if error_code(exc) in ("InvalidInstanceID.NotFound", "InvalidInstanceID.Malformed"):
            return None
        raise
    for res in resp.get("Reservations", []):
        for inst in res.get("Instances", []):
            return dict(inst)
    return None


def instance_state(ec2: Any, instance_id: str) -> str:
    """The instance's state name, or :data:`NOT_FOUND` when EC2 does not know it.

    Raises:
        botocore.exceptions.ClientError: as :func:`describe_instance`.
    """
    inst = describe_instance(ec2, instance_id)
    return NOT_FOUND if inst is None else str(inst["State"]["Name"])
