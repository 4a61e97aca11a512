"""verify: planted orphans make it exit 1, ``--fix --yes`` removes them, a healthy run is not an orphan."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from common import tags as common_tags
from common.state_doc import new_state
from common.state_store import StateStore
from common.timeutil import iso


def _plant_instance(ec2, dev, *, env="dev", run_id="20261125-140502"):
    tags = common_tags.tag_list(common_tags.tags(env, extra={"RunId": run_id}))
    resp = ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        LaunchTemplate={"LaunchTemplateId": dev["launch_template_id"]},
        SubnetId=sorted(dev["subnets_by_az"].values())[0],
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return resp["Instances"][0]["InstanceId"]


def _plant_volume(ec2, env="dev"):
    return ec2.create_volume(
        AvailabilityZone="us-east-1a",
        Size=100,
        VolumeType="gp3",
        TagSpecifications=[{"ResourceType": "volume", "Tags": common_tags.tag_list(common_tags.tags(env))}],
    )["VolumeId"]


def test_planted_orphans_fail_verify_and_fix_removes_them(dev, local_aws, cli, error_line):
    ec2 = local_aws.client("ec2")
    instance = _plant_instance(ec2, dev)
    volume = _plant_volume(ec2)
    untagged = ec2.create_volume(AvailabilityZone="us-east-1a", Size=8)["VolumeId"]
    spot = ec2.request_spot_instances(
        InstanceCount=1,
        LaunchSpecification={"ImageId": "ami-12c6146b", "InstanceType": "g5.xlarge"},
        TagSpecifications=[
            {"ResourceType": "spot-instances-request", "Tags": common_tags.tag_list(common_tags.tags("dev"))}
        ],
    )["SpotInstanceRequests"][0]["SpotInstanceRequestId"]

    found = cli("verify", "--env=dev", "--local")
    assert found.returncode == 1, found.stdout + found.stderr
    assert instance in found.stdout and volume in found.stdout and spot in found.stdout
    assert untagged not in found.stdout  # only this project's tagged resources are inventoried
    assert "--fix --yes" in found.stdout

    unconfirmed = cli("verify", "--env=dev", "--local", "--fix")
    assert unconfirmed.returncode == 2
    assert "add --yes" in error_line(unconfirmed)
    described = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]
    assert described["State"]["Name"] == "running"

    fixed = cli("verify", "--env=dev", "--local", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert f"terminated {instance}" in fixed.stdout and f"deleted volume {volume}" in fixed.stdout
    assert f"cancelled spot requests {spot}" in fixed.stdout
    assert "clean" in fixed.stdout
    state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
    assert volume not in {v["VolumeId"] for v in ec2.describe_volumes()["Volumes"]}

    again = cli("verify", "--env=dev", "--local")
    assert again.returncode == 0 and "clean" in again.stdout


def test_other_envs_resources_are_not_this_envs_orphans(dev, local_aws, cli):
    ec2 = local_aws.client("ec2")
    _plant_volume(ec2, env="prod")
    assert cli("verify", "--env=dev", "--local").returncode == 0


def test_stale_lock_is_an_orphan_and_fix_clears_it_with_a_cleanup_status(dev, local_aws, cli):
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    run_id = "20261125-140502"
    instance = _plant_instance(ec2, dev, run_id=run_id)
    store = StateStore(s3, dev["bucket"], "dev")
    now = iso(datetime.now(UTC))
    store.acquire(new_state(env="dev", run_id=run_id, market="spot", total_steps=10, now=now, local=True))
    store.set_instance(run_id, instance_id=instance)

    healthy = cli("verify", "--env=dev", "--local", "--json")
    assert healthy.returncode == 0, healthy.stdout  # an active run's instance is not an orphan
    findings = json.loads(healthy.stdout)["before"]["findings"]
    assert {(f["kind"], f["resource"], f["orphaned"]) for f in findings} == {
        ("instance", instance, False),
        ("state-file", store.location, False),
    }

    ec2.terminate_instances(InstanceIds=[instance])  # the instance died without cleaning up
    stale = cli("verify", "--env=dev", "--local", "--json")
    assert stale.returncode == 1
    findings = json.loads(stale.stdout)["before"]["findings"]
    assert [(f["kind"], f["state"], f["orphaned"]) for f in findings] == [("state-file", "stale", True)]
    assert instance in findings[0]["detail"]

    fixed = cli("verify", "--env=dev", "--local", "--fix", "--yes")
    assert fixed.returncode == 0, fixed.stdout + fixed.stderr
    assert store.read() is None
    cleanup = s3.get_object(Bucket=dev["bucket"], Key=f"dev/logs/{run_id}/cleanup_status.json")
    assert b'"written_by": "control"' in cleanup["Body"].read()


def test_old_heartbeat_on_a_running_instance_is_a_stuck_run(dev, local_aws):
    from control.backend import Clients
    from control.verify import Inspector

    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    run_id = "20261125-140502"
    instance = _plant_instance(ec2, dev, run_id=run_id)
    start = datetime(2026, 11, 25, 14, 5, 2, tzinfo=UTC)
    store = StateStore(s3, dev["bucket"], "dev", clock=lambda: start)
    store.acquire(new_state(env="dev", run_id=run_id, market="spot", total_steps=10, now=iso(start)))
    store.set_instance(run_id, instance_id=instance)
    clients = Clients(s3=s3, ec2=ec2, sts=None)
    later = Inspector(clients, dev["bucket"], "dev", clock=lambda: start + timedelta(hours=1)).inventory()
    assert {f.kind for f in later.orphans} == {"instance", "state-file"}
    fresh = Inspector(clients, dev["bucket"], "dev", clock=lambda: start + timedelta(seconds=30)).inventory()
    assert fresh.clean


def test_billing_verification_says_unknown_instead_of_zero(local_aws):
    from botocore.exceptions import EndpointConnectionError

    from control.billing import billing_verification

    class Unreachable:
        def get_paginator(self, name):
            raise EndpointConnectionError(endpoint_url="https://ec2.us-east-1.amazonaws.com/")

    doc = billing_verification(Unreachable(), "dev", checked_at="2026-11-25T14:31:10Z")
    assert doc["instances_running"] is None and doc["volumes_available"] is None
    assert "ec2:DescribeInstances" in doc["unknown"]["instances_running"]
    assert "ec2:DescribeVolumes" in doc["unknown"]["volumes_available"]
    _plant_volume(local_aws.client("ec2"))
    checked = billing_verification(local_aws.client("ec2"), "dev", checked_at="2026-11-25T14:31:10Z")
    assert checked == {"instances_running": 0, "volumes_available": 1, "checked_at": "2026-11-25T14:31:10Z"}
