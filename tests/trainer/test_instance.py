"""IMDSv2 client against the fake IMDS, and the poweroff strategies against moto."""

from __future__ import annotations

import subprocess
from typing import Any

import pytest

from common.status import Market
from localaws.imds import FakeIMDS
from localaws.moto import free_port
from trainer.instance import (
    IMDS,
    POWEROFF_STRATEGIES,
    ApiTerminate,
    IMDSError,
    ShutdownPoweroff,
    select_poweroff,
)


@pytest.fixture
def imds():
    with FakeIMDS(
        instance_id="i-0abc", instance_type="g5.xlarge", availability_zone="us-east-1b", lifecycle="spot"
    ) as server:
        yield server


def test_identity_comes_from_imdsv2_with_a_token(imds: FakeIMDS):
    identity = IMDS(imds.url).identity()
    assert (identity.instance_id, identity.instance_type, identity.availability_zone) == (
        "i-0abc",
        "g5.xlarge",
        "us-east-1b",
    )
    assert identity.market is Market.SPOT
    assert imds.requests_without_token == 0


def test_spot_notice_and_rebalance_appear_when_set(imds: FakeIMDS):
    client = IMDS(imds.url)
    assert client.spot_action() is None and client.rebalance() is None
    imds.set_rebalance()
    imds.set_spot_notice()
    assert client.spot_action()["action"] == "terminate"
    assert "noticeTime" in client.rebalance()


def test_an_expired_token_is_refreshed_once(imds: FakeIMDS):
    client = IMDS(imds.url)
    client.token()
    imds.tokens.clear()  # the service forgot it (expired)
    assert client.get("instance-id") == "i-0abc"


def test_unreachable_imds_is_an_imds_error():
    with pytest.raises(IMDSError, match="token request"):
        IMDS(f"http://127.0.0.1:{free_port()}", timeout=0.5).identity()


def _instance(ec2: Any) -> str:
    image = "ami-03cf127a"  # one of moto's built-in AMIs (describe_images takes seconds)
    return ec2.run_instances(ImageId=image, MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]


def _state(ec2: Any, instance_id: str) -> str:
    return ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]["State"][
        "Name"
    ]


def test_api_terminate_ends_the_moto_instance(local_aws: Any):
    ec2 = local_aws.client("ec2")
    instance_id = _instance(ec2)
    result = ApiTerminate(ec2)(instance_id)
    assert result.succeeded and result.method == "ec2:TerminateInstances"
    assert _state(ec2, instance_id) in ("shutting-down", "terminated")


def test_shutdown_uses_the_os_and_does_not_call_the_api_when_it_works(local_aws: Any):
    ec2 = local_aws.client("ec2")
    instance_id = _instance(ec2)
    calls: list[list[str]] = []

    def runner(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    result = ShutdownPoweroff(ec2, runner=runner)(instance_id)
    assert result.succeeded and calls == [["sudo", "-n", "shutdown", "-h", "now"]]
    assert _state(ec2, instance_id) == "running"


def test_shutdown_falls_back_to_terminating_itself_through_the_api(local_aws: Any):
    ec2 = local_aws.client("ec2")
    instance_id = _instance(ec2)

    def runner(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(cmd, 1, "", "sudo: a password is required")

    result = ShutdownPoweroff(ec2, runner=runner)(instance_id)
    assert result.succeeded and result.method == "ec2:TerminateInstances"
    assert _state(ec2, instance_id) in ("shutting-down", "terminated")


def test_a_poweroff_that_cannot_happen_says_why():
    def runner(cmd: list[str], **_: Any) -> subprocess.CompletedProcess[str]:
        raise FileNotFoundError("sudo")

    result = ShutdownPoweroff(object(), runner=runner)(None)
    assert not result.succeeded and "instance id unknown" in (result.error or "")


def test_shutdown_in_both_modes_api_only_outside_a_local_instance():
    assert select_poweroff(local=False, ec2=object(), environ={}).name == "shutdown"
    on_instance = {"CHRONOS_ROOT": "/tmp/i-1/root"}
    assert select_poweroff(local=True, ec2=object(), environ=on_instance).name == "shutdown"
    # a local trainer started by a test, not by a local instance: never this machine's shutdown
    assert select_poweroff(local=True, ec2=object(), environ={}).name == "api"
    assert select_poweroff(local=True, ec2=object(), environ=on_instance, batch=True).name == "batch"
    assert set(POWEROFF_STRATEGIES) == {"api", "shutdown", "batch"}
