"""A fake Cloud over a real StateStore on the moto server: the handler's conditional writes are real."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from common.cleanup_status import Count, verification
from common.ec2 import NOT_FOUND, is_gone
from common.placement import Placement
from common.state_store import StateStore
from common.status import Market
from recovery.cloud import InstanceInfo, Refused
from recovery.events import Event, EventKind

RUN = "20261125-140502"
ENV = "dev"
BASE = {
    "MinCount": 1,
    "MaxCount": 1,
    "LaunchTemplate": {"LaunchTemplateId": "lt-0abc", "Version": "$Latest"},
    "UserData": "#!/bin/bash\n",
    "NetworkInterfaces": [{"DeviceIndex": 0, "Groups": ["sg-1"]}],
    "BlockDeviceMappings": [],
    "TagSpecifications": [
        {"ResourceType": "instance", "Tags": [{"Key": "Project", "Value": "Chronos-Training"}]}
    ],
}


def placements() -> tuple[Placement, ...]:
    """Spot in a then b, then on-demand in a then b (the strategy order of spot-then-on-demand)."""
    return tuple(
        Placement(
            market=m,
            instance_type="g5.xlarge",
            availability_zone=f"us-east-1{z}",
            subnet_id=f"subnet-{z}",
            price_per_hour=1.006 if m is Market.ON_DEMAND else None,
            price_source="on-demand-table" if m is Market.ON_DEMAND else "unknown",
        )
        for m in (Market.SPOT, Market.ON_DEMAND)
        for z in ("a", "b")
    )


class FakeCloud:
    """Instances in a dict, S3 for real; counts every launch and termination."""

    def __init__(self, s3: Any, bucket: str, clock: Any) -> None:
        self.s3, self.bucket, self.clock = s3, bucket, clock
        self.instances: dict[str, InstanceInfo] = {}
        self.launched: list[dict[str, Any]] = []
        self.started: list[str] = []
        self.terminated: list[str] = []
        self.published: list[tuple[str, dict[str, Any]]] = []
        self.refuse: dict[tuple[str, str], str] = {}  # (market, az) -> error code
        self.on_run_instance: Callable[[], None] | None = None  # runs inside the first launch
        self.store_class = StateStore

    def store(self, env: str) -> StateStore:
        return self.store_class(self.s3, self.bucket, env, clock=self.clock)

    def envs(self) -> list[str]:
        return [ENV]

    def project_instances(self) -> list[InstanceInfo]:
        return list(self.instances.values())

    def add_instance(self, instance_id: str, *, run_id: str = RUN, age_s: float = 60, state: str = "running"):
        self.instances[instance_id] = InstanceInfo(
            instance_id=instance_id,
            state=state,
            env=ENV,
            run_id=run_id,
            launched_at=self.clock() - timedelta(seconds=age_s),
            instance_type="g5.xlarge",
            az="us-east-1a",
            market="spot",
        )

    def end_instance(self, instance_id: str) -> None:
        info = self.instances[instance_id]
        self.instances[instance_id] = InstanceInfo(**{**info.__dict__, "state": "terminated"})

    def run_instance(self, request: dict[str, Any]) -> str:
        market = "spot" if "InstanceMarketOptions" in request else "on-demand"
        subnet = request["NetworkInterfaces"][0]["SubnetId"]
        az = "us-east-1" + subnet.removeprefix("subnet-")
        code = self.refuse.get((market, az))
        if code:
            raise Refused(code, "injected")
        hook, self.on_run_instance = self.on_run_instance, None
        if hook is not None:
            hook()
        self.launched.append(request)
        instance_id = f"i-{len(self.launched) + 1:04d}"
        self.add_instance(instance_id, age_s=0)
        return instance_id

    def after_launch(self, instance_id: str, request: dict[str, Any]) -> None:
        self.started.append(instance_id)

    def terminate(self, instance_id: str) -> None:
        self.terminated.append(instance_id)
        if instance_id in self.instances:
            self.end_instance(instance_id)

    def instance_state(self, instance_id: str) -> str:
        info = self.instances.get(instance_id)
        return NOT_FOUND if info is None else info.state

    def spot_price(self, instance_type: str, az: str) -> float | None:
        return 0.31

    def read_json(self, key: str) -> dict[str, Any] | None:
        try:
            return json.loads(self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read())
        except self.s3.exceptions.NoSuchKey:
            return None

    def write_json(self, key: str, doc: dict[str, Any]) -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(doc).encode())

    def verification(self, env: str, *, checked_at: str) -> dict[str, Any]:
        running = sum(1 for i in self.instances.values() if not is_gone(i.state))
        return verification(
            checked_at=checked_at, instances_running=Count(running), volumes_available=Count(0)
        )

    def publish(self, kind: str, *, topic_arn: str | None = None, **fields: Any) -> None:
        self.published.append((kind, fields))


def event(
    kind: str, instance_id: str | None = "i-0001", event_id: str = "ev-1", at: str = "2026-11-25T14:05:02Z"
):
    return Event(kind=EventKind(kind), instance_id=instance_id, env=None, event_id=event_id, at=at)
