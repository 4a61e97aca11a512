"""Notifications: one short message per run event, published to the env's SNS topic.

Both sides publish: the instance at the run's end (succeeded, failed, killed) and at a
``max_cost`` stop (budget), the recovery handler at each recovery and at each failure it
decides. :class:`NotifyEvent` holds what a message says, :func:`message` renders it
(subject and body) and :func:`publish` sends it. The topic exists only when the stack
config sets ``notify_email``; its ARN reaches both sides as ``notify_topic_arn`` (the
stack output, the launch record, the state file), ``None`` when notifications are off,
and :func:`publish` is then a no-op.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

log = logging.getLogger(__name__)

# SNS Publish: "Subject ... must be ASCII text that begins with a letter, number, or
# punctuation mark; must not include line breaks or control characters; and must be less
# than 100 characters long." (Amazon SNS API Reference, Publish).
SUBJECT_MAX = 99
BODY_MAX = 4000  # far below SNS's 256 KB; an email a person reads on a phone


class NotifyKind(StrEnum):
    """What happened to the run."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    KILLED = "killed"
    RECOVERED = "recovered"
    BUDGET = "budget"


_HEADLINE = {
    NotifyKind.SUCCEEDED: "succeeded",
    NotifyKind.FAILED: "failed",
    NotifyKind.KILLED: "was killed",
    NotifyKind.RECOVERED: "recovered from an interruption",
    NotifyKind.BUDGET: "stopped at its max_cost",
}
# The one command to look closer, per kind (the run's id and env are filled in).
_LOOK_CLOSER = {
    NotifyKind.SUCCEEDED: "invoke report {run_id} --env={env}",
    NotifyKind.FAILED: "invoke logs {run_id} --env={env}",
    NotifyKind.KILLED: "invoke logs {run_id} --env={env}",
    NotifyKind.RECOVERED: "invoke monitor --env={env} --follow",
    NotifyKind.BUDGET: "invoke logs {run_id} --env={env}",
}


@dataclass(frozen=True, kw_only=True)
class NotifyEvent:
    """One notification: the run, its outcome and what it cost so far.

    Attributes:
        kind: what happened (a :class:`NotifyKind` or its value).
        run_id: the run.
        env: the env the run belongs to.
        reason: why it ended or what recovered it (``None`` when there is nothing to add).
        metrics: evaluation metrics by name (``{"wql": 0.029, "mase": 0.77}``), may be empty.
        cost_usd: the run's cost so far in USD, ``None`` when unknown.
        attempt: the attempt now running or that ended (1 = first launch), ``None`` if unknown.
        step: the last training step reached, ``None`` if unknown.
    """

    kind: NotifyKind
    run_id: str
    env: str
    reason: str | None = None
    metrics: Mapping[str, float] = field(default_factory=dict)
    cost_usd: float | None = None
    attempt: int | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "kind", NotifyKind(self.kind))
        except ValueError:
            known = ", ".join(k.value for k in NotifyKind)
            raise ValueError(f"unknown notification kind {self.kind!r}; use one of: {known}") from None

    @property
    def command(self) -> str:
        """The ``invoke`` command that shows more about this event."""
        return _LOOK_CLOSER[self.kind].format(run_id=self.run_id, env=self.env)


def _ascii_line(text: str) -> str:
    """One printable ASCII line (SNS subjects admit nothing else)."""
    flat = " ".join(text.split())
    return "".join(ch if 32 <= ord(ch) < 127 else "?" for ch in flat)


def _cost(value: float | None) -> str:
    return "unknown" if value is None else f"${value:,.2f}"


def _metrics(metrics: Mapping[str, float]) -> str:
    if not metrics:
        return "none"
    return ", ".join(f"{name} {float(value):.4g}" for name, value in sorted(metrics.items()))


def message(event: NotifyEvent) -> tuple[str, str]:
    """The subject and body of ``event``'s notification.

    Returns:
        ``(subject, body)``: a one-line ASCII subject under 100 characters, and a body
        of a few lines: run id, outcome, metrics, cost and the command to look closer.
    """
    headline = _HEADLINE[event.kind]
    subject = _ascii_line(f"chronos {event.env}: run {event.run_id} {headline}")[:SUBJECT_MAX]
    lines = [
        f"Run {event.run_id} (env {event.env}) {headline}.",
        f"Outcome: {event.kind.value}" + (f" - {event.reason}" if event.reason else ""),
    ]
    if event.attempt is not None:
        lines.append(f"Attempt: {event.attempt}")
    if event.step is not None:
        lines.append(f"Step: {event.step}")
    lines += [
        f"Metrics: {_metrics(event.metrics)}",
        f"Cost so far: {_cost(event.cost_usd)}",
        f"Look closer: {event.command}",
    ]
    return subject, "\n".join(lines)[:BODY_MAX]


def publish(sns: Any, topic_arn: str | None, event: NotifyEvent) -> str | None:
    """Publish ``event`` to ``topic_arn`` once; a no-op when notifications are off.

    The message carries attributes ``run_id``, ``env`` and ``kind`` so a subscription
    can filter on them.

    Args:
        sns: a boto3 SNS client.
        topic_arn: the env's topic (``notify_topic_arn``), ``None`` when not configured.
        event: what to say.

    Returns:
        SNS's message id, or ``None`` when ``topic_arn`` is ``None``.

    Raises:
        botocore.exceptions.ClientError: SNS refused (callers that must not fail on a
            notification use :func:`try_publish`).
    """
    if not topic_arn:
        return None
    subject, body = message(event)
    attributes = {
        name: {"DataType": "String", "StringValue": value}
        for name, value in (("run_id", event.run_id), ("env", event.env), ("kind", event.kind.value))
    }
    response = sns.publish(TopicArn=topic_arn, Subject=subject, Message=body, MessageAttributes=attributes)
    return str(response["MessageId"])


def try_publish(sns: Any, topic_arn: str | None, event: NotifyEvent) -> bool:
    """:func:`publish`, logging a warning instead of raising: a run never fails on a notification.

    Returns:
        True when SNS accepted the message (or notifications are off), False otherwise.
    """
    try:
        publish(sns, topic_arn, event)
    except (ClientError, BotoCoreError) as exc:
        log.warning("notification %s for run %s not sent: %s", event.kind.value, event.run_id, exc)
        return False
    return True
