"""The recovery handler's one port to the world: :class:`Cloud`.

The handler's logic (``recovery.handler``) decides; a ``Cloud`` acts. ``recovery.aws.AwsCloud``
is the boto3 one (Lambda, and local mode against moto); tests pass fakes.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from common.state_store import StateStore


class Refused(Exception):  # noqa: N818 - a refusal of a place, not a failure of the handler
    """RunInstances refused a placement with a capacity or quota code (``common.placement``)."""

    def __init__(self, code: str, message: str = "") -> None:
        self.code, self.message = code, message
        super().__init__(f"{code}: {message}" if message else code)


@dataclass(frozen=True, kw_only=True)
class InstanceInfo:
    """One instance tagged for this project, as a listing sees it.

    Attributes:
        state: the EC2 state name (``common.ec2``).
        env / run_id: from its ``Environment`` / ``RunId`` tags (``None`` when untagged).
        launched_at: its ``LaunchTime`` (aware UTC).
        market: ``spot`` or ``on-demand`` (its ``InstanceLifecycle``).
        batch_host: AWS Batch launched it (``common.tags.BATCH_HOST_TAG_KEYS``): Batch's, never a run's.
    """

    instance_id: str
    state: str
    env: str | None
    run_id: str | None
    launched_at: datetime | None
    instance_type: str | None = None
    az: str | None = None
    market: str | None = None
    batch_host: bool = False


class Cloud(Protocol):
    """What the handler may do. Every method may raise the backend's errors (botocore's)."""

    def store(self, env: str) -> StateStore:
        """The state store of ``env``."""
        ...

    def envs(self) -> list[str]:
        """The envs this handler serves (the schedule sweeps each)."""
        ...

    def project_instances(self) -> list[InstanceInfo]:
        """Every instance tagged ``Project`` for this project, in any state EC2 still lists."""
        ...

    def run_instance(self, request: dict[str, Any]) -> str:
        """Launch one instance with these RunInstances arguments; its id.

        Raises:
            Refused: a capacity or quota code (``common.placement.refusal``).
        """
        ...

    def after_launch(self, instance_id: str, request: dict[str, Any]) -> None:
        """What follows a launch: nothing on AWS (cloud-init boots it); local mode starts it."""
        ...

    def terminate(self, instance_id: str) -> None:
        """Terminate the instance (an instance already gone is no error)."""
        ...

    def instance_state(self, instance_id: str) -> str:
        """The state a DescribeInstances shows now (``common.ec2.NOT_FOUND`` when EC2 forgot it)."""
        ...

    def spot_price(self, instance_type: str, az: str) -> float | None:
        """The current spot price (USD/hour) of the type in the AZ, ``None`` when unknown."""
        ...

    def read_json(self, key: str) -> dict[str, Any] | None:
        """The JSON object at ``key`` in the training bucket, ``None`` when absent."""
        ...

    def write_json(self, key: str, doc: dict[str, Any]) -> None:
        """Write ``doc`` at ``key`` in the training bucket (cleanup_status.json)."""
        ...

    def verification(self, env: str, *, checked_at: str) -> dict[str, Any]:
        """What still bills in ``env``: cleanup_status.json's ``verification`` (``common.cleanup_status``)."""
        ...

    def publish(self, kind: str, *, topic_arn: str | None = None, **fields: Any) -> None:
        """Send one notification (``common.notify.NotifyEvent`` fields) to ``topic_arn``.

        A no-op when ``topic_arn`` is ``None`` (notifications off); never raises for SNS.
        """
        ...
