"""AwsCloud on the moto server, and the Lambda entry end to end on it."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError
from botocore.stub import Stubber

from common.tags import tag_list
from recovery import lambda_entry
from recovery.aws import AwsCloud
from recovery.cloud import Refused


@pytest.fixture
def aws_cloud(local_aws, bucket, clock):
    return AwsCloud(
        bucket=bucket,
        envs=["dev"],
        session=local_aws.session(),
        endpoint_url=local_aws.endpoint_url,
        clock=clock,
    )


def _launch(ec2, run_id="20261125-140502"):
    image = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    tags = tag_list({"Project": "Chronos-Training", "Environment": "dev", "RunId": run_id})
    resp = ec2.run_instances(
        ImageId=image,
        MinCount=1,
        MaxCount=1,
        InstanceType="g5.xlarge",
        TagSpecifications=[{"ResourceType": "instance", "Tags": tags}],
    )
    return resp["Instances"][0]["InstanceId"]


def test_clients_retry_in_adaptive_mode(aws_cloud):
    assert aws_cloud.ec2.meta.config.retries["mode"] == "adaptive"
    assert aws_cloud.s3.meta.config.retries["mode"] == "adaptive"


def test_project_instances_read_the_tags(aws_cloud):
    iid = _launch(aws_cloud.ec2)
    (info,) = aws_cloud.project_instances()
    assert info.instance_id == iid and info.env == "dev" and info.run_id == "20261125-140502"
    assert (
        info.launched_at.tzinfo is not None
        and info.instance_type == "g5.xlarge"
        and info.market == "on-demand"
    )
    aws_cloud.terminate(iid)
    assert aws_cloud.project_instances()[0].state in ("shutting-down", "terminated")
    assert aws_cloud.verification("dev", checked_at="2026-11-25T14:05:02Z")["instances_running"] == 0


@pytest.mark.parametrize("code", ["InsufficientInstanceCapacity", "VcpuLimitExceeded"])
def test_a_capacity_or_quota_code_is_a_refusal(aws_cloud, code):
    with Stubber(aws_cloud.ec2) as stub:
        stub.add_client_error("run_instances", service_error_code=code, service_message="no")
        with pytest.raises(Refused) as info:
            aws_cloud.run_instance({"MinCount": 1, "MaxCount": 1, "ImageId": "ami-1"})
    assert info.value.code == code


def test_any_other_error_is_no_refusal(aws_cloud):
    with Stubber(aws_cloud.ec2) as stub:
        stub.add_client_error(
            "run_instances", service_error_code="UnauthorizedOperation", http_status_code=403
        )
        with pytest.raises(ClientError):
            aws_cloud.run_instance({"MinCount": 1, "MaxCount": 1, "ImageId": "ami-1"})


def test_json_in_the_bucket(aws_cloud):
    assert aws_cloud.read_json("dev/logs/x/cleanup_status.json") is None
    aws_cloud.write_json("dev/logs/x/cleanup_status.json", {"a": 1})
    assert aws_cloud.read_json("dev/logs/x/cleanup_status.json") == {"a": 1}


def test_publish_without_a_topic_is_a_no_op(aws_cloud):
    aws_cloud.publish("recovered", run_id="20261125-140502", env="dev", attempt=2)


def test_the_lambda_entry_ignores_what_it_does_not_act_on_and_sweeps_on_schedule(
    local_aws, bucket, monkeypatch
):
    monkeypatch.setenv("CHRONOS_BUCKET", bucket)
    monkeypatch.setenv("CHRONOS_ENV", "dev")
    monkeypatch.setenv("AWS_ENDPOINT_URL", local_aws.endpoint_url)
    running = {
        "id": "e1",
        "time": "2026-11-25T14:05:02Z",
        "source": "aws.ec2",
        "detail-type": "EC2 Instance State-change Notification",
        "detail": {"instance-id": "i-1", "state": "running"},
    }
    assert lambda_entry.handler(running, None)["outcomes"] == []
    tick = {
        "id": "e2",
        "time": "2026-11-25T14:05:02Z",
        "source": "aws.events",
        "detail-type": "Scheduled Event",
    }
    result = lambda_entry.handler(tick, None)
    assert result["event"]["kind"] == "schedule"
    assert result["outcomes"] == [
        {
            "env": "dev",
            "run_id": None,
            "action": "nothing",
            "reason": "no run holds the lock",
            "instance_id": None,
        }
    ]
