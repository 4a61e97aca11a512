"""launch-request.json and the state file's first attempt: what a relaunch needs, written by launch."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from common import layout
from common.placement import LaunchRequest, run_instances_request
from common.runspec import from_dict
from common.state_store import StateStore
from control.backend import Clients
from control.launch_apply import apply_launch
from control.launch_plan import plan_launch
from control.launch_world import gather_world
from schemas import SchemaValidationError, validate

NOW = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)


@pytest.fixture
def repo(tmp_path):
    """A small fixed code tree, so the bundle hash does not follow edits of the real one."""
    (tmp_path / "repo" / "trainer").mkdir(parents=True)
    (tmp_path / "repo" / "trainer" / "__init__.py").write_text("")
    return tmp_path / "repo"


def _world(backend, repo, **instance):
    spec = from_dict({"instance": {"types": ["g5.xlarge", "g4dn.xlarge"], **instance}})
    return spec, gather_world(backend, spec, env="dev", now=NOW, repo_root=repo)


def _market(kwargs) -> str:
    return "spot" if "InstanceMarketOptions" in kwargs else "on-demand"


class _Recording:
    """An EC2 client that records each RunInstances call (and the stored request at that moment);
    ``refuse(kwargs, n)`` returns the code refusing the n-th call, or ``None``."""

    def __init__(self, ec2, s3, key_of, refuse) -> None:
        self.ec2, self.s3, self.key_of, self.refuse = ec2, s3, key_of, refuse
        self.calls, self.stored = [], []

    def run_instances(self, **kwargs):
        self.calls.append(kwargs)
        bucket, key = self.key_of()
        self.stored.append(json.loads(self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
        code = self.refuse(kwargs, len(self.calls))
        if code:
            raise ClientError({"Error": {"Code": code, "Message": "no"}}, "RunInstances")
        return self.ec2.run_instances(**kwargs)

    def __getattr__(self, name):
        return getattr(self.ec2, name)


def _apply(backend, spec, seen, refuse):
    clients = backend.clients()
    paths = layout.RunPaths(env="dev", run_id=seen.run_id)
    ec2 = _Recording(clients.ec2, clients.s3, lambda: (seen.outputs.bucket, paths.launch_request), refuse)
    plan = plan_launch(spec, seen)
    result = apply_launch(plan, Clients(s3=clients.s3, ec2=ec2, sts=clients.sts), clock=lambda: NOW)
    return plan, result, ec2, clients


def test_launch_request_is_written_before_run_instances_and_rebuilds_every_call(backend, dev, repo):
    spec, seen = _world(backend, repo, market="spot-then-on-demand")
    no_spot = lambda kwargs, n: "InsufficientInstanceCapacity" if _market(kwargs) == "spot" else None  # noqa: E731
    plan, result, ec2, _ = _apply(backend, spec, seen, no_spot)
    # Stored before the first call, the same at every call, and valid against its schema.
    assert ec2.stored and all(doc == ec2.stored[0] for doc in ec2.stored)
    doc = ec2.stored[0]
    assert validate("launch-request", doc) is doc
    request = LaunchRequest.from_dict(doc, source="launch-request.json")
    assert (request.run_id, request.env, request.market, request.local) == (
        result.run_id,
        "dev",
        "spot-then-on-demand",
        True,
    )
    assert request.placements == plan.placements and len(request.placements) == 12  # 2 types x 3 AZs x 2
    # Every call launch sent is rebuilt exactly from the stored base and its placement.
    sent = request.attempts()[: len(ec2.calls)]
    assert [req for _, req in sent] == ec2.calls
    assert [run_instances_request(doc["base"], p) for p, _ in sent] == ec2.calls
    assert result.market == "on-demand" and len(ec2.calls) == 7  # six spot refused, then on-demand
    inst = backend.clients().ec2.describe_instances(InstanceIds=[result.instance_id])["Reservations"][0]
    assert "InstanceLifecycle" not in inst["Instances"][0]  # on-demand


def test_the_first_state_holds_attempt_one_the_refusals_and_the_recovery_policy(backend, dev, repo):
    spec, seen = _world(backend, repo, max_recoveries=2, max_runtime="90m")
    first_two = lambda kwargs, n: "capacity-not-available" if n <= 2 else None  # noqa: E731
    _, result, _, clients = _apply(backend, spec, seen, first_two)
    doc = StateStore(clients.s3, seen.outputs.bucket, "dev").read().doc
    assert (doc["attempt"], doc["recoveries"], doc["max_recoveries"], doc["max_runtime_minutes"]) == (
        1,
        0,
        2,
        90,
    )
    assert doc["instance_id"] == result.instance_id and doc["availability_zone"] == "us-east-1c"
    (attempt,) = doc["attempts"]
    assert attempt == {
        "attempt": 1,
        "instance_id": result.instance_id,
        "instance_type": "g5.xlarge",
        "market": "spot",
        "availability_zone": "us-east-1c",
        "price_per_hour": doc["price_per_hour"],
        "price_source": attempt["price_source"],
        "launched_at": "2026-11-25T14:05:02Z",
        "ended_at": None,
        "end": None,
        "notice_at": None,
    }
    assert [(r["availability_zone"], r["code"], r["attempt"]) for r in doc["refused"]] == [
        ("us-east-1a", "capacity-not-available", 1),
        ("us-east-1b", "capacity-not-available", 1),
    ]
    record_key = layout.RunPaths(env="dev", run_id=result.run_id).launch_record
    record = json.loads(clients.s3.get_object(Bucket=seen.outputs.bucket, Key=record_key)["Body"].read())
    assert record["refused"] == doc["refused"] and record["instance_id"] == result.instance_id
    assert result.refused == (
        "g5.xlarge spot us-east-1a: capacity-not-available",
        "g5.xlarge spot us-east-1b: capacity-not-available",
    )


def test_the_schema_refuses_a_base_that_carries_a_placement(backend, dev, repo):
    spec, seen = _world(backend, repo)
    doc = plan_launch(spec, seen).launch_request.to_dict()
    assert LaunchRequest.from_dict(doc).to_dict() == doc  # round trip
    for field, value in (("InstanceType", "g5.xlarge"), ("InstanceMarketOptions", {"MarketType": "spot"})):
        bad = {**doc, "base": {**doc["base"], field: value}}
        with pytest.raises(SchemaValidationError, match=r"\$.base"):
            LaunchRequest.from_dict(bad)
    with pytest.raises(SchemaValidationError, match="placements"):
        LaunchRequest.from_dict({**doc, "placements": []})


def test_the_dry_run_plan_names_the_launch_request_upload(backend, dev, repo):
    spec, seen = _world(backend, repo)
    plan = plan_launch(spec, seen)
    keys = [u["key"] for u in plan.summary()["uploads"]]
    paths = layout.RunPaths(env="dev", run_id=seen.run_id)
    assert keys.index(paths.launch_request) == keys.index(paths.run_spec) + 1
    assert plan.summary()["max_recoveries"] == 3 and plan.summary()["cost_limit"] is None


def test_the_first_state_names_the_notification_topic_only_when_the_stack_has_one(backend, dev, repo):
    from dataclasses import replace

    spec, seen = _world(backend, repo)
    assert "notify_topic_arn" not in plan_launch(spec, seen).state_doc
    topic = "arn:aws:sns:us-east-1:123456789012:chronos-dev-notify"
    with_topic = replace(seen, outputs=replace(seen.outputs, notify_topic_arn=topic))
    assert plan_launch(spec, with_topic).state_doc["notify_topic_arn"] == topic
