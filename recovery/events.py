"""What wakes the recovery handler: the two EC2 events and the schedule, as one :class:`Event`.

The shapes parsed are AWS's documented examples:

- ``EC2 Spot Instance Interruption Warning`` (source ``aws.ec2``; ``detail.instance-id``,
  ``detail.instance-action`` one of ``hibernate | stop | terminate``), emitted two minutes
  before the interruption, best effort:
  https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/spot-instance-termination-notices.html
- ``EC2 Instance State-change Notification`` (source ``aws.ec2``; ``detail.instance-id``,
  ``detail.state`` one of ``pending | running | stopping | stopped | shutting-down |
  terminated``): https://docs.aws.amazon.com/AWSEC2/latest/UserGuide/monitoring-instance-state-changes.html
- the schedule rule's ``Scheduled Event`` (source ``aws.events``, ``detail`` ``{}``):
  https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-run-lambda-schedule.html

Every event has an ``id``; EventBridge delivers at least once, so the same ``id`` may
arrive twice (the handler's claim, a conditional write, makes that harmless).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from common.attempts import Trigger
from common.ec2 import GONE_STATES

SPOT_WARNING = "EC2 Spot Instance Interruption Warning"
STATE_CHANGE = "EC2 Instance State-change Notification"
SCHEDULED = "Scheduled Event"


class EventKind(StrEnum):
    """What happened."""

    SPOT_WARNING = "spot_warning"  # the instance will be interrupted in two minutes
    INSTANCE_ENDED = "instance_ended"  # the instance is shutting down or terminated
    SCHEDULE = "schedule"  # the periodic sweep

    @property
    def trigger(self) -> Trigger:
        """The ``recovery.trigger`` a claim made for this kind records."""
        return {
            EventKind.SPOT_WARNING: Trigger.SPOT_WARNING,
            EventKind.INSTANCE_ENDED: Trigger.INSTANCE_ENDED,
            EventKind.SCHEDULE: Trigger.SCHEDULE,
        }[self]


class UnknownEventError(ValueError):
    """An event the handler does not act on (another detail type, or an instance not ending)."""


@dataclass(frozen=True, kw_only=True)
class Event:
    """One delivery to the handler.

    Attributes:
        kind: what happened.
        instance_id: the instance it happened to (``None`` for the schedule).
        env: the env it concerns, when the sender knows it (EC2 events do not carry tags:
            the handler finds the env from the instance's tags or its state files).
        event_id: the sender's id; a redelivery carries the same one.
        at: when it happened (RFC 3339 UTC, as the event's ``time``).
    """

    kind: EventKind
    instance_id: str | None
    env: str | None
    event_id: str
    at: str


def from_eventbridge(event: Mapping[str, Any], *, env: str | None = None) -> Event:
    """The :class:`Event` an EventBridge delivery describes.

    Args:
        event: the delivery, as Lambda passes it.
        env: the env the receiving function serves (``CHRONOS_ENV``), if any.

    Raises:
        UnknownEventError: not one of the three shapes, or a state change that is no end
            (``pending``, ``running``, ...): nothing to do.
    """
    detail_type = event.get("detail-type")
    detail = event.get("detail") or {}
    event_id, at = str(event.get("id") or ""), str(event.get("time") or "")
    if not event_id or not at:
        raise UnknownEventError(f"an event without id or time: {dict(event)!r:.200}")
    if detail_type == SCHEDULED and event.get("source") == "aws.events":
        return Event(kind=EventKind.SCHEDULE, instance_id=None, env=env, event_id=event_id, at=at)
    if event.get("source") != "aws.ec2" or not detail.get("instance-id"):
        raise UnknownEventError(f"not an event the recovery handler acts on: {detail_type!r}")
    instance_id = str(detail["instance-id"])
    if detail_type == SPOT_WARNING:
        kind = EventKind.SPOT_WARNING
    elif detail_type == STATE_CHANGE and detail.get("state") in GONE_STATES:
        kind = EventKind.INSTANCE_ENDED
    else:
        raise UnknownEventError(f"{detail_type!r} ({detail.get('state')!r}) needs no recovery")
    return Event(kind=kind, instance_id=instance_id, env=env, event_id=event_id, at=at)


def schedule_tick(*, event_id: str, at: str, env: str | None = None) -> Event:
    """A schedule event made locally (the local event pump ticks every few seconds)."""
    return Event(kind=EventKind.SCHEDULE, instance_id=None, env=env, event_id=event_id, at=at)
