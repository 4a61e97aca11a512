"""Stack configuration: parsed and validated once, then frozen.

``parse_config`` is pure (tests feed it dictionaries); ``read_stack_config``
reads the Pulumi stack's values and calls it. Every problem is a
:class:`ConfigError` whose message names the key, in one line.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass

from common import tags as common_tags
from common.gpus import SHAPES
from infra.spec import SpecError
from infra.spec import batch as spec_batch
from infra.spec import launch_template as spec_template
from infra.spec import names as spec_names
from infra.spec import network as spec_network

CONFIG_KEYS: tuple[str, ...] = (
    "env",
    "instance_type",
    "cost_center",
    "ami_id",
    "ami_ssm_parameter",
    "max_azs",
    "budget_email",
    "budget_monthly_usd",
    "debug_profile",
    "notify_email",
    "batch",
    "batch_max_vcpus",
    "batch_image",
)
DEFAULT_BUDGET_USD = 100.0
_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_AMI_RE = re.compile(r"^ami-[0-9a-f]{8,17}$")
_TRUE = frozenset({"true", "yes", "1"})
_FALSE = frozenset({"false", "no", "0"})


class ConfigError(ValueError):
    """Invalid stack configuration; the message is one line naming the key."""


@dataclass(frozen=True, kw_only=True)
class StackConfig:
    """Validated stack configuration."""

    env: str
    instance_type: str = spec_names.DEFAULT_INSTANCE_TYPE
    cost_center: str = common_tags.DEFAULT_COST_CENTER
    ami_id: str | None = None
    ami_ssm_parameter: str = spec_template.DLAMI_SSM_PARAMETER
    max_azs: int | None = None
    budget_email: str | None = None
    budget_monthly_usd: float = DEFAULT_BUDGET_USD
    debug_profile: bool = False  # a second instance profile with Session Manager access
    notify_email: str | None = None  # an SNS topic with this email subscribed: run ends, recoveries
    batch: bool = False  # AWS Batch for sweeps: compute environments (0 vCPUs idle), queue, job definition
    batch_max_vcpus: int = spec_batch.DEFAULT_MAX_VCPUS  # how many vCPUs of jobs run at once
    batch_image: str = spec_batch.DEFAULT_IMAGE  # the jobs' container image (torch + CUDA)

    @property
    def budget_enabled(self) -> bool:
        """A budget is created only when an alert email is configured."""
        return self.budget_email is not None

    @property
    def notify_enabled(self) -> bool:
        """The notification topic is created only when ``notify_email`` is set."""
        return self.notify_email is not None


def _blank_to_none(value: str | None) -> str | None:
    if value is None:
        return None
    value = str(value).strip()
    return value or None


def _parse_budget(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_BUDGET_USD
    try:
        amount = float(raw)
    except ValueError:
        raise ConfigError(f"budget_monthly_usd must be a number, got {raw!r}") from None
    if not math.isfinite(amount) or amount <= 0:
        raise ConfigError(f"budget_monthly_usd must be a positive number, got {raw!r}")
    return amount


def _parse_max_azs(raw: str | None) -> int | None:
    if raw is None:
        return None
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"max_azs must be an integer, got {raw!r}") from None
    if value < spec_network.MIN_AVAILABILITY_ZONES:
        raise ConfigError(f"max_azs must be at least {spec_network.MIN_AVAILABILITY_ZONES}, got {value}")
    return value


def _parse_max_vcpus(raw: str | None, instance_type: str) -> int:
    if raw is None:
        return spec_batch.DEFAULT_MAX_VCPUS
    try:
        value = int(raw)
    except ValueError:
        raise ConfigError(f"batch_max_vcpus must be an integer, got {raw!r}") from None
    vcpus = SHAPES[instance_type].vcpus
    if value < vcpus:
        raise ConfigError(
            f"batch_max_vcpus {value} is below one {instance_type} ({vcpus} vCPUs): no job could start; "
            f"set at least {vcpus}"
        )
    return value


def _parse_flag(key: str, raw: str | None) -> bool:
    if raw is None:
        return False
    if raw.lower() in _TRUE:
        return True
    if raw.lower() in _FALSE:
        return False
    raise ConfigError(f"{key} must be true or false, got {raw!r}")


def _check_optional_formats(ami_id: str | None, emails: Mapping[str, str | None]) -> None:
    if ami_id is not None and not _AMI_RE.fullmatch(ami_id):
        raise ConfigError(f"ami_id must look like ami-0123456789abcdef0, got {ami_id!r}")
    for key, email in emails.items():
        if email is not None and not _EMAIL_RE.fullmatch(email):
            raise ConfigError(f"{key} is not an email address: {email!r}")


def parse_config(raw: Mapping[str, str | None], *, default_env: str | None = None) -> StackConfig:
    """Validate raw string values (keys of :data:`CONFIG_KEYS`) into a StackConfig.

    Args:
        raw: config values as strings; missing or blank means "use the default".
        default_env: env used when ``env`` is not set (the stack name).

    Raises:
        ConfigError: unknown key, bad env name, instance type outside g4dn/g5,
            budget not a positive number, malformed AMI id or email (budget or notify), a
            ``debug_profile`` or ``batch`` that is not true or false, ``batch_max_vcpus`` not
            an integer or below one instance's vCPUs.
    """
    unknown = sorted(set(raw) - set(CONFIG_KEYS))
    if unknown:
        raise ConfigError(f"unknown config key(s) {unknown}; known keys: {list(CONFIG_KEYS)}")
    values = {k: _blank_to_none(v) for k, v in raw.items()}
    try:
        env = spec_names.validate_env(values.get("env") or default_env or "")
        instance_type = spec_names.validate_instance_type(
            values.get("instance_type") or spec_names.DEFAULT_INSTANCE_TYPE
        )
    except SpecError as exc:
        raise ConfigError(str(exc)) from None
    budget_email = values.get("budget_email")
    notify_email = values.get("notify_email")
    _check_optional_formats(
        values.get("ami_id"), {"budget_email": budget_email, "notify_email": notify_email}
    )
    return StackConfig(
        env=env,
        instance_type=instance_type,
        cost_center=values.get("cost_center") or common_tags.DEFAULT_COST_CENTER,
        ami_id=values.get("ami_id"),
        ami_ssm_parameter=values.get("ami_ssm_parameter") or spec_template.DLAMI_SSM_PARAMETER,
        max_azs=_parse_max_azs(values.get("max_azs")),
        budget_email=budget_email,
        budget_monthly_usd=_parse_budget(values.get("budget_monthly_usd")),
        debug_profile=_parse_flag("debug_profile", values.get("debug_profile")),
        notify_email=notify_email,
        batch=_parse_flag("batch", values.get("batch")),
        batch_max_vcpus=_parse_max_vcpus(values.get("batch_max_vcpus"), instance_type),
        batch_image=values.get("batch_image") or spec_batch.DEFAULT_IMAGE,
    )


def read_stack_config() -> StackConfig:
    """Read this project's keys from the running Pulumi stack and validate them.

    Raises:
        ConfigError: as :func:`parse_config`, including for keys of this
            project's namespace that the program does not know (typos).
    """
    import pulumi
    from pulumi.runtime import config as runtime_config

    project = pulumi.get_project()
    namespace = f"{project}:"
    # The CLI hands the program its config in the PULUMI_CONFIG environment variable
    # (runtime.config.get_config_env); mocks and tests set the CONFIG context variable.
    # pulumi.Config reads both, so the typo check must see both.
    keys = set(runtime_config.CONFIG.get()) | set(runtime_config.get_config_env())
    present = {k[len(namespace) :] for k in keys if k.startswith(namespace)}
    config = pulumi.Config()
    raw: dict[str, str | None] = {key: config.get(key) for key in CONFIG_KEYS}
    raw.update({key: "" for key in present - set(CONFIG_KEYS)})
    return parse_config(raw, default_env=pulumi.get_stack())
