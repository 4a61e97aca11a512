"""Notifications: the optional SNS topic and its email subscription (stack config ``notify_email``)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.spec import notify as spec_notify
from infra.spec import zero_idle as spec_zero_idle


@dataclass(frozen=True, kw_only=True)
class NotificationsArgs:
    """Inputs of :class:`Notifications`."""

    env: str
    email: str
    tags: Mapping[str, str]


class Notifications(pulumi.ComponentResource):
    """The topic ``chronos-{env}-notify`` and an email subscription to it.

    SNS asks the address to confirm the subscription before it delivers anything. A
    topic and a subscription bill nothing while idle (SNS charges per publish and
    per delivery).
    """

    def __init__(
        self, name: str, args: NotificationsArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Notifications", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        self.topic = aws.sns.Topic(
            f"{name}-topic", name=spec_notify.topic_name(args.env), tags=dict(args.tags), opts=child
        )
        self.subscription = aws.sns.TopicSubscription(
            f"{name}-email",
            topic=self.topic.arn,
            protocol=spec_notify.EMAIL_PROTOCOL,
            endpoint=args.email,
            opts=child,
        )
        self.topic_arn: pulumi.Output[str] = self.topic.arn
        self.register_outputs({"topic_arn": self.topic_arn})
