"""``AwsCloud``: the recovery handler's :class:`~recovery.cloud.Cloud` on boto3.

The Lambda function uses it with the SDK's defaults; local mode points it at moto
(``endpoint_url``) and starts each relaunched instance through ``on_launch``.

Clients retry in botocore's ``adaptive`` mode: the standard mode's backoff plus a
client-side rate limiter that slows down once the service throttles. A relaunch in a
capacity crunch walks many placements fast, and RunInstances shares its request rate
with the account ("Retry behavior", AWS SDKs and Tools Reference Guide:
https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html; EC2 API
request throttling: https://docs.aws.amazon.com/ec2/latest/devguide/ec2-api-throttling.html).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from common import aws
from common.cleanup_status import count_or_unknown, verification
from common.ec2 import BILLING_STATES, instance_state
from common.notify import NotifyEvent, try_publish
from common.placement import refusal
from common.pricing import spot_price
from common.state_store import StateStore
from common.tags import ENVIRONMENT_KEY, RUN_ID_KEY, env_filters, is_batch_host, project_filters
from common.timeutil import Clock, utc_now
from recovery.cloud import InstanceInfo, Refused

log = logging.getLogger(__name__)

ADAPTIVE_RETRIES = Config(
    retries={"mode": "adaptive", "max_attempts": 10}, connect_timeout=10, read_timeout=30
)
AWS_ERRORS = (ClientError, BotoCoreError)

OnLaunch = Callable[[str, dict[str, Any]], None]


class AwsCloud:
    """The handler's cloud on boto3 clients (S3, EC2, SNS).

    Args:
        bucket: the training bucket.
        envs: the envs served (the Lambda serves its one ``CHRONOS_ENV``).
        session: the boto3 session (default: the environment's credentials and region).
        endpoint_url: local mode's moto endpoint (``None`` on AWS).
        clock: aware UTC now (state writes and spot prices).
        on_launch: local mode's starter of a launched instance (``None``: cloud-init boots it).
    """

    def __init__(
        self,
        *,
        bucket: str,
        envs: Sequence[str],
        session: boto3.Session | None = None,
        endpoint_url: str | None = None,
        clock: Clock = utc_now,
        on_launch: OnLaunch | None = None,
    ) -> None:
        session = session or boto3.Session()
        make = lambda service: aws.client(  # noqa: E731 - three clients, one recipe
            session, service, endpoint_url=endpoint_url, config=ADAPTIVE_RETRIES
        )
        self.s3, self.ec2, self.sns = make("s3"), make("ec2"), make("sns")
        self.bucket, self._envs, self.clock, self.on_launch = bucket, list(envs), clock, on_launch

    def store(self, env: str) -> StateStore:
        return StateStore(self.s3, self.bucket, env, clock=self.clock)

    def envs(self) -> list[str]:
        return list(self._envs)

    def project_instances(self) -> list[InstanceInfo]:
        out = []
        for page in self.ec2.get_paginator("describe_instances").paginate(Filters=project_filters()):
            for res in page.get("Reservations", []):
                out += [_info(inst) for inst in res.get("Instances", [])]
        return out

    def run_instance(self, request: dict[str, Any]) -> str:
        try:
            resp = self.ec2.run_instances(**request)
        except ClientError as exc:
            code = aws.error_code(exc)
            if refusal(code) is not None:
                raise Refused(code, str(exc.response.get("Error", {}).get("Message", ""))) from None
            raise
        return str(resp["Instances"][0]["InstanceId"])

    def after_launch(self, instance_id: str, request: dict[str, Any]) -> None:
        if self.on_launch is not None:
            self.on_launch(instance_id, request)

    def terminate(self, instance_id: str) -> None:
        try:
            self.ec2.terminate_instances(InstanceIds=[instance_id])
        except ClientError as exc:
            if aws.error_code(exc) != "InvalidInstanceID.NotFound":
                raise
            log.info("%s is already gone", instance_id)

    def instance_state(self, instance_id: str) -> str:
        return instance_state(self.ec2, instance_id)

    def spot_price(self, instance_type: str, az: str) -> float | None:
        price = spot_price(self.ec2, instance_type, az, now=self.clock())
        return None if price is None else price.usd_per_hour

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            if aws.is_not_found(exc) or aws.absent_behind_403(self.s3, self.bucket, key, exc):
                return None  # the role lists only {env}/: a missing key answers 403 on AWS
            raise
        doc = json.loads(body)
        return doc if isinstance(doc, dict) else None

    def write_json(self, key: str, doc: dict[str, Any]) -> None:
        body = json.dumps(doc, indent=2, sort_keys=True).encode()
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json")

    def verification(self, env: str, *, checked_at: str) -> dict[str, Any]:
        def instances() -> int:
            states = [{"Name": "instance-state-name", "Values": list(BILLING_STATES)}]
            pages = self.ec2.get_paginator("describe_instances").paginate(Filters=env_filters(env) + states)
            return sum(len(r.get("Instances", [])) for p in pages for r in p.get("Reservations", []))

        def volumes() -> int:
            filters = env_filters(env) + [{"Name": "status", "Values": ["available"]}]
            return len(self.ec2.describe_volumes(Filters=filters).get("Volumes", []))

        return verification(
            checked_at=checked_at,
            instances_running=count_or_unknown("ec2:DescribeInstances", instances, AWS_ERRORS),
            volumes_available=count_or_unknown("ec2:DescribeVolumes", volumes, AWS_ERRORS),
        )

    def publish(self, kind: str, *, topic_arn: str | None = None, **fields: Any) -> None:
        try_publish(self.sns, topic_arn, NotifyEvent(kind=kind, **fields))


def _info(inst: dict[str, Any]) -> InstanceInfo:
    tags = {t["Key"]: t["Value"] for t in inst.get("Tags", [])}
    return InstanceInfo(
        instance_id=str(inst["InstanceId"]),
        state=str(inst["State"]["Name"]),
        env=tags.get(ENVIRONMENT_KEY),
        run_id=tags.get(RUN_ID_KEY),
        launched_at=inst.get("LaunchTime"),
        instance_type=inst.get("InstanceType"),
        az=(inst.get("Placement") or {}).get("AvailabilityZone"),
        market="spot" if inst.get("InstanceLifecycle") == "spot" else "on-demand",
        batch_host=is_batch_host(inst),
    )
