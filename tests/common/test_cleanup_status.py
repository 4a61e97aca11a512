"""cleanup_status.json: the one builder, and its verification (a count, or null with the reason)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from botocore.exceptions import ClientError

from common.cleanup_status import ActionStatus, CleanupLog, Count, count_or_unknown, verification
from schemas import SchemaValidationError, schema_for, validate

NOW = datetime(2026, 11, 25, 14, 31, 10, tzinfo=UTC)


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


def _log(written_by: str = "control") -> CleanupLog:
    return CleanupLog(
        run_id="20261125-140502", instance_id="i-0abc", written_by=written_by, clock=lambda: NOW
    )


def test_the_log_builds_a_schema_valid_document_with_every_action_in_order():
    log = _log("instance")
    log.record("i-0abc", "terminate", "succeeded")
    log.record("s3://b/dev/system-state.json", "delete", ActionStatus.SKIPPED, "already removed")
    checked = verification(
        checked_at="2026-11-25T14:31:10Z", instances_running=Count(0), volumes_available=Count(0)
    )
    doc = log.document(verification=checked, state_file_removed=True)
    assert doc["written_by"] == "instance" and doc["instance_id"] == "i-0abc"
    assert [(a["action"], a["status"], a["error"]) for a in doc["actions"]] == [
        ("terminate", "succeeded", None),
        ("delete", "skipped", "already removed"),
    ]
    assert doc["actions"][0]["at"] == doc["completed_at"] == "2026-11-25T14:31:10Z"
    validate("cleanup-status", doc)


def test_a_replaced_last_action_says_what_really_happened():
    log = _log()
    log.record("i-0abc", "poweroff (shutdown)", "succeeded")
    log.replace_last("i-0abc", "poweroff (api)", "failed", "still running")
    assert [(a["action"], a["status"]) for a in log.actions] == [("poweroff (api)", "failed")]
    with pytest.raises(IndexError):
        _log().replace_last("x", "y", "failed")


def test_the_log_refuses_an_unknown_status_or_writer_and_an_invalid_document():
    with pytest.raises(ValueError):
        _log().record("i-0abc", "terminate", "done")
    with pytest.raises(ValueError):
        _log(written_by="laptop")
    with pytest.raises(SchemaValidationError):
        _log().document(verification={"instances_running": 0}, state_file_removed=True)


def test_action_statuses_are_the_schema_enum():
    items = schema_for("cleanup-status")["properties"]["actions"]["items"]
    assert sorted(items["properties"]["status"]["enum"]) == sorted(s.value for s in ActionStatus)


@pytest.mark.row("records-action-requested")
def test_an_unconfirmed_action_is_requested_with_what_the_describe_saw():
    log = _log()
    log.record("i-0abc", "terminate", ActionStatus.SUCCEEDED, observed="DescribeInstances: terminated")
    log.record("vol-0abc", "delete", ActionStatus.REQUESTED, observed="DescribeVolumes: deleting after 60 s")
    checked = verification(
        checked_at="2026-11-25T14:31:10Z", instances_running=Count(0), volumes_available=Count(1)
    )
    doc = log.document(verification=checked, state_file_removed=True)
    assert [(a["status"], a.get("observed")) for a in doc["actions"]] == [
        ("succeeded", "DescribeInstances: terminated"),
        ("requested", "DescribeVolumes: deleting after 60 s"),
    ]
    # a document written before `requested` and `observed` existed still reads
    old = {
        "schema_version": 1,
        "run_id": "20261125-140502",
        "instance_id": "i-0abc",
        "written_by": "instance",
        "actions": [
            {
                "resource": "i-0abc",
                "action": "poweroff (shutdown)",
                "status": "succeeded",
                "at": "2026-11-25T14:31:11Z",
                "error": None,
            }
        ],
        "verification": {
            "instances_running": 0,
            "volumes_available": 0,
            "checked_at": "2026-11-25T14:31:10Z",
        },
        "state_file_removed": True,
        "completed_at": "2026-11-25T14:31:11Z",
    }
    assert validate("cleanup-status", old) == old
    for example in schema_for("cleanup-status")["examples"]:
        validate("cleanup-status", example)
