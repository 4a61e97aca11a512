"""What bills in an env: this project's EC2 resources of the env, listed by tag.

``verify`` lists them to find orphans; ``kill`` and ``verify --fix`` count them into
the ``verification`` of the cleanup_status.json they write (``common.cleanup_status``).
Instances bill in every state of ``common.ec2.BILLING_STATES`` (a stopped instance
bills its volumes); a detached (``available``) volume bills by the GB-month; a spot
request that is ``open`` or ``active`` can start an instance.
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from common.cleanup_status import count_or_unknown, verification
from common.ec2 import BILLING_STATES
from common.tags import RUN_ID_KEY, env_filters, is_batch_host, tag_value

OPEN_SPOT_STATES = ("open", "active")


def billing_instances(ec2: Any, env: str) -> list[dict[str, Any]]:
    """Instances of ``env`` in a billing state."""
    filters = env_filters(env) + [{"Name": "instance-state-name", "Values": list(BILLING_STATES)}]
    out = []
    for page in ec2.get_paginator("describe_instances").paginate(Filters=filters):
        for res in page.get("Reservations", []):
            out += res.get("Instances", [])
    return out


def run_instance_ids(ec2: Any, env: str, run_id: str) -> list[str]:
    """The instances of run ``run_id`` in a billing state, found by their ``RunId`` tag, sorted
    (never a Batch host: Batch owns those, ``common.tags.is_batch_host``)."""
    return sorted(
        i["InstanceId"]
        for i in billing_instances(ec2, env)
        if tag_value(i, RUN_ID_KEY) == run_id and not is_batch_host(i)
    )


def available_volumes(ec2: Any, env: str) -> list[dict[str, Any]]:
    """Detached volumes of ``env``."""
    filters = env_filters(env) + [{"Name": "status", "Values": ["available"]}]
    out = []
    for page in ec2.get_paginator("describe_volumes").paginate(Filters=filters):
        out += page.get("Volumes", [])
    return out


def open_spot_requests(ec2: Any, env: str) -> list[dict[str, Any]]:
    """Spot requests of ``env`` that are open or active."""
    filters = env_filters(env) + [{"Name": "state", "Values": list(OPEN_SPOT_STATES)}]
    return list(ec2.describe_spot_instance_requests(Filters=filters).get("SpotInstanceRequests", []))


def billing_verification(ec2: Any, env: str, *, checked_at: str) -> dict[str, Any]:
    """The cleanup-status ``verification`` for ``env``: instances in a billing state, available volumes.

    A count AWS would not answer (access denied, unreachable) is ``None`` with the
    reason under ``unknown``, never 0.
    """
    aws_errors = (ClientError, BotoCoreError)
    return verification(
        checked_at=checked_at,
        instances_running=count_or_unknown(
            "ec2:DescribeInstances", lambda: len(billing_instances(ec2, env)), aws_errors
        ),
        volumes_available=count_or_unknown(
            "ec2:DescribeVolumes", lambda: len(available_volumes(ec2, env)), aws_errors
        ),
    )
