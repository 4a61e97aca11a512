"""Notifications: the env's SNS topic, its email subscription and who may publish to it.

Created only when the stack config sets ``notify_email`` (an SNS topic and an email
subscription bill nothing while idle: SNS charges per request and per delivery). The
instance role (end of a run, ``max_cost`` stop) and the recovery function (each recovery,
each failure it decides) may publish to it; the message itself is :mod:`common.notify`.
"""

from __future__ import annotations

from typing import Any

from infra.spec.names import resource_name

TOPIC_KIND = "notify"
EMAIL_PROTOCOL = "email"
PUBLISH_SID = "PublishRunNotifications"


def topic_name(env: str) -> str:
    """``chronos-{env}-notify``."""
    return resource_name(env, TOPIC_KIND)


def topic_arn(env: str, region: str, account_id: str) -> str:
    """The topic's ARN (SNS topic ARNs are ``arn:aws:sns:{region}:{account}:{name}``)."""
    return f"arn:aws:sns:{region}:{account_id}:{topic_name(env)}"


def publish_statement(topic_arn_: str) -> dict[str, Any]:
    """sns:Publish on the env's topic only (spelled out: :mod:`infra.spec.iam` imports this module)."""
    return {"Sid": PUBLISH_SID, "Effect": "Allow", "Action": ["sns:Publish"], "Resource": topic_arn_}


def publish_statements(topic_arn_: str | None) -> list[dict[str, Any]]:
    """:func:`publish_statement` when notifications are on, nothing otherwise."""
    return [publish_statement(topic_arn_)] if topic_arn_ else []
