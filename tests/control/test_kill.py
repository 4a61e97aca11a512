"""kill without a cooperating instance: the control plane terminates it and writes cleanup_status itself."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from common import layout
from common import tags as common_tags
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import RunStatus
from common.timeutil import iso
from schemas import validate

RUN_ID = "20261125-140502"


def test_kill_terminates_an_unresponsive_instance_and_cleans_up(dev, local_aws, cli):
    s3, ec2 = local_aws.client("s3"), local_aws.client("ec2")
    tags = common_tags.tag_list(common_tags.tags("dev", extra={"RunId": RUN_ID}))
    instance = ec2.run_instances(
        MinCount=1,
        MaxCount=1,
        LaunchTemplate={"LaunchTemplateId": dev["launch_template_id"]},
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )["Instances"][0]["InstanceId"]
    store = StateStore(s3, dev["bucket"], "dev")
    store.acquire(
        new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=100, now=iso(datetime.now(UTC)))
    )
    store.set_instance(RUN_ID, instance_id=instance)
    store.transition(RUN_ID, RunStatus.DATA_SYNC)

    proc = cli("kill", "--env=dev", "--local", "--grace=1")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert f"killed run {RUN_ID} (was data_sync)" in proc.stdout
    assert f"terminated {instance} through the API" in proc.stdout
    assert "written by this command" in proc.stdout
    state = ec2.describe_instances(InstanceIds=[instance])["Reservations"][0]["Instances"][0]["State"]["Name"]
    assert state == "terminated"
    assert store.read() is None
    key = layout.RunPaths(env="dev", run_id=RUN_ID).cleanup_status
    cleanup = validate(
        "cleanup-status", json.loads(s3.get_object(Bucket=dev["bucket"], Key=key)["Body"].read())
    )
    assert cleanup["written_by"] == "control" and cleanup["state_file_removed"]
    assert cleanup["verification"] == {
        **cleanup["verification"],
        "instances_running": 0,
        "volumes_available": 0,
    }
    assert cli("verify", "--env=dev", "--local").returncode == 0

    again = cli("kill", "--env=dev", "--local")
    assert again.returncode == 0 and "nothing to kill" in again.stdout


def test_control_cleanup_status_records_a_denied_check_as_unknown(local_aws, bucket):
    from botocore.exceptions import ClientError

    from control.backend import Clients
    from control.kill import Killer

    class NoDescribeVolumes:
        def __init__(self, real):
            self._real = real

        def get_paginator(self, name):
            if name == "describe_volumes":
                raise ClientError(
                    {
                        "Error": {"Code": "UnauthorizedOperation", "Message": "not authorized"},
                        "ResponseMetadata": {"HTTPStatusCode": 403},
                    },
                    "DescribeVolumes",
                )
            return self._real.get_paginator(name)

        def __getattr__(self, name):
            return getattr(self._real, name)

    s3 = local_aws.client("s3")
    store = StateStore(s3, bucket, "dev")
    now = iso(datetime.now(UTC))
    store.acquire(new_state(env="dev", run_id=RUN_ID, market="spot", total_steps=10, now=now))
    clients = Clients(s3=s3, ec2=NoDescribeVolumes(local_aws.client("ec2")), sts=None)
    result = Killer(clients, bucket, "dev", sleep=lambda s: None).kill(grace_s=0, reason="test")
    assert result.cleanup_written_by == "control" and store.read() is None
    key = layout.RunPaths(env="dev", run_id=RUN_ID).cleanup_status
    doc = validate("cleanup-status", json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()))
    assert doc["verification"]["instances_running"] == 0
    assert doc["verification"]["volumes_available"] is None
    assert "ec2:DescribeVolumes" in doc["verification"]["unknown"]["volumes_available"]
    assert "UnauthorizedOperation" in doc["verification"]["unknown"]["volumes_available"]
