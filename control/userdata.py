"""User data: the bash script an instance boots with, rendered from ``trainer/bootstrap.sh``.

The template lives with the code the instance runs (the ``trainer`` package); the
laptop fills it here. :func:`render_user_data` gives every ``@@NAME@@`` placeholder a
``shlex.quote``-d value, so no value can break out of its assignment, and refuses a
script over EC2's 16 KB user-data limit.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources

from common.layout import RunPaths
from control.launch_rules import USER_DATA_LIMIT_BYTES

TEMPLATE = "bootstrap.sh"
DEVICES = ("cuda", "cpu")
_PLACEHOLDER = re.compile(r"@@([A-Z_]+)@@")
_ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")


@dataclass(frozen=True, kw_only=True)
class UserData:
    """The values of one run's user data.

    Attributes:
        bucket, env, run_id, region: where the run lives.
        max_runtime_minutes: the dead-man switch (``shutdown -P +N``), scheduled first.
        code_key: key of the code bundle tar.gz.
        python_env_key: key of a packed Python env tar.gz, or ``None`` to use the
            AMI's Python plus ``pip install --no-index`` from ``wheelhouse_prefix``.
        wheelhouse_prefix: prefix of the wheels for that fallback.
        device: ``cuda`` (``cpu`` in local mode).
        local: local mode: the trainer runs with ``--local`` (the base model ``auto``
            resolves to the tiny one); empty on AWS.
        extra_env: more exported variables (names ``[A-Z_][A-Z0-9_]*``).
    """

    bucket: str
    env: str
    run_id: str
    region: str
    max_runtime_minutes: int
    code_key: str
    python_env_key: str | None
    wheelhouse_prefix: str
    device: str = "cuda"
    local: bool = False
    extra_env: Mapping[str, str] = field(default_factory=dict)


def render_user_data(values: UserData) -> str:
    """The bash user data for one run.

    Raises:
        ValueError: a bad run id/env, runtime, device or variable name, or user data
            over EC2's 16 KB limit.
    """
    paths = RunPaths(env=values.env, run_id=values.run_id)
    minutes = values.max_runtime_minutes
    if not isinstance(minutes, int) or minutes < 1:
        raise ValueError(f"max_runtime_minutes must be a positive integer, got {minutes!r}")
    if values.device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {values.device!r}")
    plain = {
        "BUCKET": values.bucket,
        "ENV": values.env,
        "RUN_ID": values.run_id,
        "REGION": values.region,
        "MAX_RUNTIME_MINUTES": str(minutes),
        "CODE_KEY": values.code_key,
        "PYTHON_ENV_KEY": values.python_env_key or "",
        "WHEELHOUSE_PREFIX": values.wheelhouse_prefix,
        "DEVICE": values.device,
        "LOCAL_MODE": "1" if values.local else "",
        "BOOTSTRAP_LOG_KEY": paths.bootstrap_log,
    }
    quoted = {k: shlex.quote(v) for k, v in plain.items()}
    quoted["EXTRA_ENV"] = _exports(values.extra_env)
    text = _PLACEHOLDER.sub(lambda m: quoted[m.group(1)], template())
    if "@@" in text:
        raise ValueError("user data template has a placeholder render_user_data does not fill")
    size = len(text.encode("utf-8"))
    if size > USER_DATA_LIMIT_BYTES:
        raise ValueError(
            f"user data is {size} bytes, over EC2's limit of {USER_DATA_LIMIT_BYTES} "
            "(16 KB before base64): shorten the values or the extra environment"
        )
    return text


def _exports(extra: Mapping[str, str]) -> str:
    bad = [k for k in extra if not _ENV_NAME.match(k)]
    if bad:
        raise ValueError(f"extra_env names must match [A-Z_][A-Z0-9_]*: {bad}")
    if not extra:
        return "# (no extra environment)"
    return "\n".join(f"export {k}={shlex.quote(str(v))}" for k, v in sorted(extra.items()))


@cache
def template() -> str:
    """The raw ``bootstrap.sh`` template, as the ``trainer`` package ships it."""
    return resources.files("trainer").joinpath(TEMPLATE).read_text("utf-8")


def placeholders() -> set[str]:
    """Names of every ``@@NAME@@`` in the template."""
    return set(_PLACEHOLDER.findall(template()))
