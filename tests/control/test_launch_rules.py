"""The rules AWS applies to a launch and moto skips: tagged types, block devices, user data size,
and quota errors that stop the launch instead of falling back."""

from __future__ import annotations

from typing import Any

import pytest

from common import tags as common_tags
from common.status import Market
from control.launch_rules import (
    USER_DATA_LIMIT_BYTES,
    TemplateFacts,
    launch_problems,
    quota_for,
    quota_message,
    root_volume_mapping,
)
from infra.spec import launch_template as spec_template
from infra.spec import tags as spec_tags

TAGS = common_tags.tag_list(common_tags.tags("dev"))


def _template(**changes: Any) -> TemplateFacts:
    data = spec_template.launch_template_data(
        image_id="ami-1",
        instance_type="g5.xlarge",
        instance_profile_arn="arn:p",
        security_group_id="sg-1",
        resource_tags=common_tags.tags("dev"),
    )
    data.update(changes.pop("data", {}))
    return TemplateFacts(
        version="1",
        data=data,
        image_id="ami-1",
        image_name="DLAMI",
        root_device=changes.pop("root_device", "/dev/sda1"),
    )


def _request(market: Market, **changes: Any) -> dict[str, Any]:
    request = {
        "UserData": "#!/bin/bash\necho hi\n",
        "BlockDeviceMappings": root_volume_mapping("/dev/sda1", 200),
        "TagSpecifications": [
            {"ResourceType": k, "Tags": TAGS} for k in spec_tags.launch_tagged_types(market.value)
        ],
    }
    request.update(changes)
    return request


@pytest.mark.parametrize("market", list(Market))
def test_the_projects_own_launch_breaks_no_rule(market: Market) -> None:
    assert launch_problems(_template(), _request(market), market) == []


def test_a_template_tagging_the_spot_request_fails_on_demand() -> None:
    """The defect: the template tagged spot-instances-request, so every on-demand launch failed."""
    old = _template(
        data={
            "TagSpecifications": [
                {"ResourceType": k, "Tags": TAGS}
                for k in ("instance", "volume", "network-interface", "spot-instances-request")
            ]
        }
    )
    (problem,) = launch_problems(old, _request(Market.ON_DEMAND), Market.ON_DEMAND)
    assert "'spot-instances-request'" in problem and "on-demand" in problem
    assert launch_problems(old, _request(Market.SPOT), Market.SPOT) == []


def test_the_request_must_not_tag_the_spot_request_on_demand() -> None:
    request = _request(
        Market.ON_DEMAND, TagSpecifications=[{"ResourceType": "spot-instances-request", "Tags": TAGS}]
    )
    assert launch_problems(_template(), request, Market.ON_DEMAND)


def test_block_devices_must_name_the_amis_root_device() -> None:
    """A mapping for /dev/sda1 on an AMI rooted at /dev/xvda adds an empty volume: root size unchanged."""
    problems = launch_problems(_template(root_device="/dev/xvda"), _request(Market.SPOT), Market.SPOT)
    assert any("/dev/sda1 is not the AMI's root device /dev/xvda" in p for p in problems)
    without_override = _request(Market.SPOT)
    del without_override["BlockDeviceMappings"]  # then the template's mapping is the effective one
    assert launch_problems(_template(root_device="/dev/xvda"), without_override, Market.SPOT)
    assert launch_problems(_template(root_device=None), _request(Market.SPOT), Market.SPOT)


def test_user_data_over_16_kb_is_refused() -> None:
    fits = _request(Market.SPOT, UserData="x" * USER_DATA_LIMIT_BYTES)
    assert launch_problems(_template(), fits, Market.SPOT) == []
    over = _request(Market.SPOT, UserData="x" * (USER_DATA_LIMIT_BYTES + 1))
    (problem,) = launch_problems(_template(), over, Market.SPOT)
    assert "16384" in problem


def test_root_volume_mapping_restates_the_whole_volume() -> None:
    assert root_volume_mapping("/dev/sda1", 250) == [
        {
            "DeviceName": "/dev/sda1",
            "Ebs": {"VolumeSize": 250, "VolumeType": "gp3", "Encrypted": True, "DeleteOnTermination": True},
        }
    ]


def test_quota_messages_name_the_quota_and_how_to_raise_it() -> None:
    assert quota_for(Market.SPOT).name == "All G and VT Spot Instance Requests"
    assert quota_for(Market.ON_DEMAND).name == "Running On-Demand G and VT instances"
    line = quota_message("MaxSpotInstanceCountExceeded", Market.SPOT, "us-east-1", 4)
    assert "All G and VT Spot Instance Requests" in line and "L-3819A6DF" in line
    assert "aws service-quotas request-service-quota-increase" in line and "--desired-value 4" in line
    assert "\n" not in line
