"""Budget: an optional monthly AWS Budget that emails when spend runs high."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from common import tags as common_tags
from infra.spec import names as spec_names
from infra.spec import zero_idle as spec_zero_idle

ACTUAL_ALERT_PERCENT = 80.0
FORECAST_ALERT_PERCENT = 100.0


@dataclass(frozen=True, kw_only=True)
class BudgetArgs:
    """Inputs of :class:`Budget`."""

    env: str
    monthly_usd: float
    email: str
    tags: Mapping[str, str]


def notifications(email: str) -> list[dict[str, object]]:
    """Alert at 80 % of actual spend and at 100 % of forecast spend."""
    return [
        {
            "comparison_operator": "GREATER_THAN",
            "notification_type": kind,
            "threshold": percent,
            "threshold_type": "PERCENTAGE",
            "subscriber_email_addresses": [email],
        }
        for kind, percent in (("ACTUAL", ACTUAL_ALERT_PERCENT), ("FORECASTED", FORECAST_ALERT_PERCENT))
    ]


class Budget(pulumi.ComponentResource):
    """Monthly cost budget over resources tagged Project=Chronos-Training.

    The ``Project`` tag must be activated once as a cost allocation tag (Billing
    console) for the filter to see spend. Budgets without actions are free.
    """

    def __init__(self, name: str, args: BudgetArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__(f"{spec_zero_idle.COMPONENT_TYPE_PREFIX}Budget", name, None, opts)
        self.budget = aws.budgets.Budget(
            f"{name}-monthly",
            name=spec_names.resource_name(args.env, "monthly"),
            budget_type="COST",
            limit_amount=f"{args.monthly_usd:.2f}",
            limit_unit="USD",
            time_unit="MONTHLY",
            cost_filters=[{"name": "TagKeyValue", "values": [f"user:Project${common_tags.PROJECT_TAG}"]}],
            notifications=notifications(args.email),
            tags=dict(args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.budget_name: pulumi.Output[str] = self.budget.name
        self.register_outputs({"budget_name": self.budget_name})
