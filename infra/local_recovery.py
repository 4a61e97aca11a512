"""Local provisioner, recovery part: the recovery role and the optional notification topic.

Local mode has no Lambda: the local backend runs the recovery handler itself (the local
event pump), signed with this role's credentials, so it is held to the same
least-privilege policy as the function on AWS (:func:`infra.spec.recovery.recovery_role_policy`).
The role trusts Lambda and, locally only, the principal that assumes it for the pump
(``recovery_principal_arn``), in one statement as for the instance role. The topic
(``notify_email``) lives in the local AWS's SNS; nothing is emailed.

Each resource is looked up by name first and only written where it differs.
"""

from __future__ import annotations

import logging

from common.tags import tag_list
from infra.local_support import LocalContext, ensure_inline_policy, ensure_role
from infra.spec import notify as spec_notify
from infra.spec import recovery as spec_recovery

log = logging.getLogger(__name__)


def ensure_notify_topic(ctx: LocalContext, email: str | None) -> str | None:
    """The topic ``chronos-{env}-notify`` with ``email`` subscribed, or ``None`` without an email.

    CreateTopic returns the existing topic's ARN (it is idempotent for one name), and a
    subscription is added only when the address is not subscribed yet.
    """
    if email is None:
        return None
    arn = str(ctx.sns.create_topic(Name=spec_notify.topic_name(ctx.env), Tags=tag_list(ctx.tags))["TopicArn"])
    listed = ctx.sns.list_subscriptions_by_topic(TopicArn=arn)["Subscriptions"]
    if not any(s["Protocol"] == spec_notify.EMAIL_PROTOCOL and s["Endpoint"] == email for s in listed):
        ctx.sns.subscribe(TopicArn=arn, Protocol=spec_notify.EMAIL_PROTOCOL, Endpoint=email)
        log.info("subscribed %s to topic %s", email, arn)
    return arn


def ensure_recovery_identity(
    ctx: LocalContext, scope: spec_recovery.RecoveryScope, recovery_principal_arn: str | None
) -> str:
    """The role ``chronos-{env}-recovery`` and its inline least-privilege policy; returns its ARN."""
    name = spec_recovery.function_name(ctx.env)
    trust = spec_recovery.lambda_trust_policy(recovery_principal_arn)
    role = ensure_role(ctx, name, trust, f"The Chronos recovery function of env {ctx.env}")
    policy_name = f"{name}-least-privilege"
    desired = spec_recovery.recovery_role_policy(scope)
    ensure_inline_policy(ctx, name, policy_name, desired)
    return str(role["Arn"])
