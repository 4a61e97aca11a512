"""infra.outputs: one reader for ``pulumi stack output --json`` and the local outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from infra.outputs import (
    OUTPUT_KEYS,
    OutputsError,
    StackOutputs,
    read_outputs,
    read_outputs_file,
    read_outputs_json,
    write_outputs_file,
)

GOOD = {
    "bucket": "chronos-training-dev-123456789012-us-east-1",
    "region": "us-east-1",
    "env": "dev",
    "account_id": "123456789012",
    "subnets_by_az": {"us-east-1b": "subnet-2", "us-east-1a": "subnet-1"},
    "security_group_id": "sg-1",
    "launch_template_id": "lt-1",
    "instance_profile_arn": "arn:aws:iam::123456789012:instance-profile/chronos-dev-instance",
    "instance_role_arn": "arn:aws:iam::123456789012:role/chronos-dev-instance",
    "operator_policy_arn": "arn:aws:iam::123456789012:policy/chronos-dev-operator",
}


def test_a_complete_mapping_reads_and_ignores_extra_keys() -> None:
    outputs = read_outputs({**GOOD, "something_new": 1})
    assert outputs.subnets_by_az == {"us-east-1a": "subnet-1", "us-east-1b": "subnet-2"}
    assert outputs.to_dict() == {**GOOD, "subnets_by_az": dict(sorted(GOOD["subnets_by_az"].items()))}
    assert set(outputs.to_dict()) == set(OUTPUT_KEYS)


def test_missing_keys_are_all_named_with_the_fix() -> None:
    partial = {k: v for k, v in GOOD.items() if k not in ("bucket", "launch_template_id")}
    with pytest.raises(OutputsError, match=r"\['bucket', 'launch_template_id'\].*pulumi up"):
        read_outputs(partial)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("bucket", ""),
        ("region", None),
        ("subnets_by_az", {}),
        ("subnets_by_az", ["subnet-1"]),
        ("subnets_by_az", {"us-east-1a": 3}),
        ("env", "Dev"),
    ],
)
def test_wrong_shapes_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(OutputsError, match=key):
        read_outputs({**GOOD, key: value})


def test_json_text_and_files_round_trip(tmp_path: Path) -> None:
    outputs = read_outputs(GOOD)
    path = write_outputs_file(outputs, tmp_path / "deep" / "outputs.json")
    assert read_outputs_file(path) == outputs
    assert read_outputs_json(json.dumps(GOOD)) == outputs
    assert not list(path.parent.glob(".*tmp"))


def test_text_that_is_not_json_is_a_clear_error() -> None:
    with pytest.raises(OutputsError, match="not valid JSON"):
        read_outputs_json("error: no stack selected")
    with pytest.raises(OutputsError, match="JSON object"):
        read_outputs_json("[]")


def test_outputs_are_frozen() -> None:
    with pytest.raises(AttributeError):
        StackOutputs(**GOOD).bucket = "x"  # type: ignore[misc]
