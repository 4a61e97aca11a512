"""cleanup_status.json: a count that could not be checked is null with its reason, never a number."""

from __future__ import annotations

import copy

import pytest

import schemas
from schemas import SchemaValidationError, validate


def _doc(**verification):
    doc = copy.deepcopy(schemas.examples("cleanup-status")[0])
    doc["verification"] = {"checked_at": "2026-11-25T14:31:10Z", **verification}
    return doc


def test_counts_that_were_checked_need_no_reason():
    # documents written before counts could be unknown stay valid (schema_version 1)
    assert validate("cleanup-status", _doc(instances_running=0, volumes_available=2))


def test_an_unknown_count_is_null_with_its_reason():
    doc = _doc(
        instances_running=0,
        volumes_available=None,
        unknown={"volumes_available": "ec2:DescribeVolumes failed: access denied"},
    )
    assert validate("cleanup-status", doc)
    assert any(ex["verification"].get("unknown") for ex in schemas.examples("cleanup-status"))


@pytest.mark.parametrize(
    "verification",
    [
        {"instances_running": 0, "volumes_available": None},  # null without a reason
        {"instances_running": None, "volumes_available": 0, "unknown": {"volumes_available": "denied"}},
        {"instances_running": 0, "volumes_available": 0, "unknown": {"volumes_available": "denied"}},  # both
        {"instances_running": 0, "volumes_available": None, "unknown": {"volumes_available": ""}},
        {"instances_running": 0, "volumes_available": None, "unknown": {"disks": "denied"}},
    ],
)
def test_a_null_without_reason_or_a_reason_beside_a_number_is_refused(verification):
    with pytest.raises(SchemaValidationError) as info:
        validate("cleanup-status", _doc(**verification))
    assert info.value.path.startswith("$.verification")
