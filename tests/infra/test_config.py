"""infra.config: the stack configuration is validated into a frozen dataclass."""

from __future__ import annotations

import dataclasses

import pytest

from infra.config import CONFIG_KEYS, ConfigError, StackConfig, parse_config
from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names


def test_defaults_need_only_an_env() -> None:
    cfg = parse_config({}, default_env="dev")
    assert cfg == StackConfig(env="dev")
    assert cfg.instance_type == spec_names.DEFAULT_INSTANCE_TYPE
    assert cfg.ami_ssm_parameter == spec_template.DLAMI_SSM_PARAMETER
    assert not cfg.budget_enabled


def test_every_key_is_parsed() -> None:
    raw = {
        "env": "prod",
        "instance_type": "g4dn.2xlarge",
        "cost_center": "forecasting",
        "ami_id": "ami-0123456789abcdef0",
        "ami_ssm_parameter": "/aws/service/deeplearning/ami/x86_64/x/latest/ami-id",
        "max_azs": "3",
        "budget_email": "ops@example.com",
        "budget_monthly_usd": "250.5",
        "debug_profile": "true",
        "notify_email": "runs@example.com",
        "batch": "yes",
        "batch_max_vcpus": "64",
        "batch_image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/chronos:1",
    }
    assert set(raw) == set(CONFIG_KEYS)
    cfg = parse_config(raw, default_env="dev")
    assert (cfg.env, cfg.instance_type, cfg.max_azs) == ("prod", "g4dn.2xlarge", 3)
    assert (cfg.budget_email, cfg.budget_monthly_usd) == ("ops@example.com", 250.5)
    assert cfg.budget_enabled
    assert cfg.debug_profile
    assert (cfg.notify_email, cfg.notify_enabled) == ("runs@example.com", True)
    assert (cfg.batch, cfg.batch_max_vcpus) == (True, 64)
    assert cfg.batch_image == "123456789012.dkr.ecr.us-east-1.amazonaws.com/chronos:1"


def test_notifications_are_off_unless_an_email_is_set() -> None:
    assert not parse_config({"notify_email": "  "}, default_env="dev").notify_enabled


def test_config_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        StackConfig(env="dev").env = "prod"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"env": "Dev"}, "env name 'Dev' is invalid"),
        ({}, "env name '' is invalid"),
        ({"env": "dev", "instance_type": "p3.2xlarge"}, "not allowed"),
        ({"env": "dev", "budget_monthly_usd": "ten"}, "must be a number"),
        ({"env": "dev", "budget_monthly_usd": "-5"}, "positive"),
        ({"env": "dev", "budget_monthly_usd": "nan"}, "positive"),
        ({"env": "dev", "max_azs": "1"}, "at least 2"),
        ({"env": "dev", "max_azs": "two"}, "integer"),
        ({"env": "dev", "ami_id": "ubuntu"}, "ami_id"),
        ({"env": "dev", "budget_email": "not-an-email"}, "budget_email"),
        ({"env": "dev", "notify_email": "me@localhost"}, "notify_email is not an email address"),
        ({"env": "dev", "region": "us-east-1"}, "unknown config key"),
        ({"env": "dev", "debug_profile": "sometimes"}, "debug_profile must be true or false"),
        ({"env": "dev", "debugProfile": "true"}, "unknown config key"),
    ],
)
def test_invalid_values_fail_with_one_line_naming_the_problem(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config(raw)
    assert message in str(raised.value)
    assert "\n" not in str(raised.value)


def test_blank_values_mean_default() -> None:
    cfg = parse_config({"env": "dev", "instance_type": " ", "budget_email": ""})
    assert cfg.instance_type == spec_names.DEFAULT_INSTANCE_TYPE
    assert cfg.budget_email is None


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, False),
        ("", False),
        ("true", True),
        ("True", True),
        ("yes", True),
        ("1", True),
        ("false", False),
        ("no", False),
    ],
)
def test_debug_profile_is_off_unless_set_true(raw: str | None, expected: bool) -> None:
    cfg = parse_config({"env": "dev", "debug_profile": raw})
    assert cfg.debug_profile is expected
    assert parse_config({}, default_env="dev").debug_profile is False
