"""``__main__.py``: reads the stack config, fails preview in one line on bad config, exports."""

from __future__ import annotations

import runpy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pulumi
import pytest
from pulumi_harness import PROJECT, RecordingMocks, run_program

from infra.outputs import OUTPUT_KEYS, RECOVERY_OUTPUT_KEYS, read_outputs

MAIN = Path(__file__).resolve().parents[2] / "__main__.py"


@pytest.fixture
def stack_config() -> Iterator[dict[str, str]]:
    """Config of the mocked stack (``project:key`` -> value), cleared afterwards."""
    values: dict[str, str] = {"aws:region": "us-east-1"}
    yield values
    pulumi.runtime.set_all_config({})


def run_main(config: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    exported: dict[str, Any] = {}
    monkeypatch.setattr(pulumi, "export", lambda key, value: exported.__setitem__(key, value))

    def program() -> dict[str, Any]:
        pulumi.runtime.set_all_config(config)
        runpy.run_path(str(MAIN), run_name="__main__")
        return exported

    return run_program(program, RecordingMocks()).outputs


def test_program_exports_every_key_the_outputs_reader_needs(
    stack_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    stack_config[f"{PROJECT}:env"] = "dev"
    outputs = run_main(stack_config, monkeypatch)
    assert set(outputs) == set(OUTPUT_KEYS) | set(RECOVERY_OUTPUT_KEYS)
    assert read_outputs(outputs).bucket == "chronos-training-dev-123456789012-us-east-1"


def test_env_defaults_to_the_stack_name(
    stack_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert run_main(stack_config, monkeypatch)["env"] == "dev"


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("env", "Prod_1", "env name 'Prod_1' is invalid"),
        ("instance_type", "p4d.24xlarge", "instance type 'p4d.24xlarge' is not allowed"),
        ("budget_monthly_usd", "lots", "budget_monthly_usd must be a number"),
        ("instanceType", "g5.xlarge", "unknown config key(s) ['instanceType']"),
    ],
)
def test_invalid_config_stops_with_one_line(
    stack_config: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
    key: str,
    value: str,
    message: str,
) -> None:
    stack_config[f"{PROJECT}:{key}"] = value
    with pytest.raises(pulumi.RunError) as raised:
        run_main(stack_config, monkeypatch)
    text = str(raised.value)
    assert message in text
    assert "\n" not in text


def test_a_typo_passed_the_way_the_cli_passes_config_is_caught(
    stack_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Defect: the CLI hands config over in PULUMI_CONFIG, which the typo check never read."""
    import json

    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{PROJECT}:instanceType": "g5.xlarge"}))
    with pytest.raises(pulumi.RunError) as raised:
        run_main(stack_config, monkeypatch)
    assert "unknown config key(s) ['instanceType']" in str(raised.value)


def test_valid_config_from_pulumi_config_is_read(
    stack_config: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    monkeypatch.setenv("PULUMI_CONFIG", json.dumps({f"{PROJECT}:env": "staging"}))
    assert run_main(stack_config, monkeypatch)["env"] == "staging"
