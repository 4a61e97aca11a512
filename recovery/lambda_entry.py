"""The Lambda function's entry: ``recovery.lambda_entry.handler`` (infra.spec.recovery.HANDLER).

Reads ``CHRONOS_BUCKET`` and ``CHRONOS_ENV`` (set by the stack) and ``AWS_REGION`` (set by
Lambda), parses the EventBridge delivery and runs :func:`recovery.handler.handle`. A
delivery the handler does not act on returns without error; any other error raises, so
Lambda retries the asynchronous invocation (twice, by default: "Asynchronous invocation",
https://docs.aws.amazon.com/lambda/latest/dg/invocation-async.html).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import boto3

from recovery.aws import AwsCloud
from recovery.events import UnknownEventError, from_eventbridge
from recovery.handler import handle

log = logging.getLogger("recovery")
log.setLevel(logging.INFO)


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    """Handle one EventBridge delivery; what was done, per run (also in the function's log)."""
    bucket, env = os.environ["CHRONOS_BUCKET"], os.environ["CHRONOS_ENV"]
    try:
        parsed = from_eventbridge(event, env=env)
    except UnknownEventError as exc:
        log.info("ignored: %s", exc)
        return {"outcomes": [], "ignored": str(exc)}
    session = boto3.Session(region_name=os.environ.get("AWS_REGION"))
    outcomes = handle(parsed, AwsCloud(bucket=bucket, envs=[env], session=session))
    return {
        "event": {"kind": parsed.kind.value, "id": parsed.event_id, "instance_id": parsed.instance_id},
        "outcomes": [
            {
                "env": o.env,
                "run_id": o.run_id,
                "action": o.action.value,
                "reason": o.reason,
                "instance_id": o.instance_id,
            }
            for o in outcomes
        ],
    }
