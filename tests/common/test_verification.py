"""The cleanup-status verification: a count, or null with the reason it could not be made."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError

from common.verification import Count, count_or_unknown, verification
from schemas import validate


def test_a_failed_count_is_unknown_with_the_api_action_and_error_code():
    def denied() -> int:
        raise ClientError({"Error": {"Code": "UnauthorizedOperation", "Message": "no"}}, "DescribeVolumes")

    got = count_or_unknown("ec2:DescribeVolumes", denied)
    assert got.value is None
    assert got.reason.startswith("ec2:DescribeVolumes failed: UnauthorizedOperation")
    assert count_or_unknown("ec2:DescribeInstances", lambda: 3) == Count(3)


def test_verification_matches_the_schema_and_names_every_count():
    doc = verification(
        checked_at="2026-11-25T14:31:10Z",
        instances_running=Count(0),
        volumes_available=Count.unknown("ec2:DescribeVolumes", "access denied"),
    )
    assert doc == {
        "instances_running": 0,
        "volumes_available": None,
        "checked_at": "2026-11-25T14:31:10Z",
        "unknown": {"volumes_available": "ec2:DescribeVolumes failed: access denied"},
    }
    validate(
        "cleanup-status",
        {
            "schema_version": 1,
            "run_id": "20261125-140502",
            "instance_id": None,
            "actions": [],
            "verification": doc,
            "state_file_removed": True,
            "completed_at": "2026-11-25T14:31:11Z",
        },
    )
    with pytest.raises(TypeError):
        verification(checked_at="2026-11-25T14:31:10Z", instances_running=Count(0))
