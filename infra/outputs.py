"""The stack outputs: one shape, one reader, for AWS and local mode alike.

On AWS the mapping comes from ``pulumi stack output --json``; locally the
provisioner (:mod:`infra.local`) writes the same keys. Everything that needs to
know where the bucket or the launch template is reads it with
:func:`read_outputs`.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

from infra.spec import SpecError
from infra.spec import names as spec_names


class OutputsError(ValueError):
    """Stack outputs that are missing keys or hold values of the wrong shape."""


@dataclass(frozen=True, kw_only=True)
class StackOutputs:
    """What the control plane needs to launch, watch and clean up runs."""

    bucket: str
    region: str
    env: str
    account_id: str
    subnets_by_az: Mapping[str, str]
    security_group_id: str
    launch_template_id: str
    instance_profile_arn: str
    instance_role_arn: str
    operator_policy_arn: str
    # Only when the stack config enables ``debug_profile`` (Session Manager debug sessions).
    debug_instance_profile_arn: str | None = None
    debug_role_arn: str | None = None
    # The recovery function and its role (every stack since automatic recovery; absent in
    # outputs of an older stack), and the notification topic (null unless ``notify_email``).
    recovery_function_name: str | None = None
    recovery_role_arn: str | None = None
    notify_topic_arn: str | None = None
    # Only when the stack config enables ``batch`` (sweeps): the queue and job definition a
    # sweep submits to (names), its two compute environments (names) and the jobs' role.
    batch_job_queue: str | None = None
    batch_job_definition: str | None = None
    batch_spot_compute_environment: str | None = None
    batch_on_demand_compute_environment: str | None = None
    batch_job_role_arn: str | None = None

    @property
    def has_batch(self) -> bool:
        """Whether sweeps can be submitted (the stack has its Batch resources)."""
        return self.batch_job_queue is not None

    @property
    def batch_compute_environments(self) -> tuple[str, ...]:
        """The sweep engine's compute environments, spot first (empty without Batch)."""
        pair = (self.batch_spot_compute_environment, self.batch_on_demand_compute_environment)
        return tuple(name for name in pair if name is not None)

    @property
    def has_debug_profile(self) -> bool:
        """Whether runs may launch with ``debug = true``."""
        return self.debug_instance_profile_arn is not None

    @property
    def has_recovery(self) -> bool:
        """Whether the stack has the recovery function (automatic relaunch after an interruption)."""
        return self.recovery_function_name is not None

    def to_dict(self) -> dict[str, Any]:
        """The JSON-ready mapping (the ``pulumi stack output --json`` shape; absent
        optional outputs are left out, as Pulumi leaves out outputs it does not export;
        ``notify_topic_arn`` is null next to the recovery outputs when notifications are off)."""
        data = asdict(self)
        data["subnets_by_az"] = dict(sorted(self.subnets_by_az.items()))
        optional = set(DEBUG_OUTPUT_KEYS) | set(RECOVERY_OUTPUT_KEYS) | set(BATCH_OUTPUT_KEYS)
        if self.has_recovery:
            optional.discard("notify_topic_arn")
        return {k: v for k, v in data.items() if not (k in optional and v is None)}


DEBUG_OUTPUT_KEYS: tuple[str, ...] = ("debug_instance_profile_arn", "debug_role_arn")
RECOVERY_OUTPUT_KEYS: tuple[str, ...] = ("recovery_function_name", "recovery_role_arn", "notify_topic_arn")
BATCH_OUTPUT_KEYS: tuple[str, ...] = (
    "batch_job_queue",
    "batch_job_definition",
    "batch_spot_compute_environment",
    "batch_on_demand_compute_environment",
    "batch_job_role_arn",
)
OUTPUT_KEYS: tuple[str, ...] = tuple(
    f.name
    for f in fields(StackOutputs)
    if f.name not in DEBUG_OUTPUT_KEYS + RECOVERY_OUTPUT_KEYS + BATCH_OUTPUT_KEYS
)  # always present


def _require_str(mapping: Mapping[str, Any], key: str) -> str:
    value = mapping[key]
    if not isinstance(value, str) or not value:
        raise OutputsError(f"stack output {key!r} must be a non-empty string, got {value!r}")
    return value


def _require_subnets(mapping: Mapping[str, Any]) -> dict[str, str]:
    value = mapping["subnets_by_az"]
    if (
        not isinstance(value, Mapping)
        or not value
        or not all(isinstance(k, str) and isinstance(v, str) and v for k, v in value.items())
    ):
        raise OutputsError(
            f"stack output 'subnets_by_az' must map availability zones to subnet ids, got {value!r}"
        )
    return dict(value)


def read_outputs(mapping: Mapping[str, Any]) -> StackOutputs:
    """Validate a stack-output mapping into :class:`StackOutputs` (extra keys ignored).

    Raises:
        OutputsError: naming every missing key (and how to create them), or the
            first key whose value has the wrong shape.
    """
    if not isinstance(mapping, Mapping):
        raise OutputsError(f"stack outputs must be a JSON object, got {type(mapping).__name__}")
    missing = [key for key in OUTPUT_KEYS if key not in mapping]
    if missing:
        raise OutputsError(
            f"stack outputs are missing {missing}: run `pulumi up` (AWS) or the local provisioner first"
        )
    values: dict[str, Any] = {
        key: _require_str(mapping, key) for key in OUTPUT_KEYS if key != "subnets_by_az"
    }
    values["subnets_by_az"] = _require_subnets(mapping)
    values.update(_all_or_none(mapping, DEBUG_OUTPUT_KEYS))
    values.update(_all_or_none(mapping, BATCH_OUTPUT_KEYS))
    values.update(_recovery_outputs(mapping))
    try:
        spec_names.validate_env(values["env"])
    except SpecError as exc:
        raise OutputsError(f"stack output 'env': {exc}") from None
    return StackOutputs(**values)


def _all_or_none(mapping: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    """An optional group of outputs (debug, batch): all of them or none."""
    present = [key for key in keys if mapping.get(key) is not None]
    if not present:
        return {}
    if len(present) != len(keys):
        missing = sorted(set(keys) - set(present))
        raise OutputsError(f"stack outputs have {present} but not {missing}: run `pulumi up` again")
    return {key: _require_str(mapping, key) for key in keys}


def _recovery_outputs(mapping: Mapping[str, Any]) -> dict[str, str | None]:
    """The recovery outputs: the function and its role both or neither; the topic ARN or null."""
    names = ("recovery_function_name", "recovery_role_arn")
    present = [key for key in names if mapping.get(key) is not None]
    values: dict[str, str | None] = {}
    if present:
        if len(present) != len(names):
            missing = sorted(set(names) - set(present))
            raise OutputsError(f"stack outputs have {present} but not {missing}: run `pulumi up` again")
        values = {key: _require_str(mapping, key) for key in names}
    if mapping.get("notify_topic_arn") is not None:
        values["notify_topic_arn"] = _require_str(mapping, "notify_topic_arn")
    return values


def read_outputs_json(text: str) -> StackOutputs:
    """Parse the text of ``pulumi stack output --json`` (or the local outputs file).

    Raises:
        OutputsError: if the text is not JSON or the outputs are incomplete.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise OutputsError(f"stack outputs are not valid JSON: {exc}") from None
    return read_outputs(data)


def read_outputs_file(path: Path) -> StackOutputs:
    """Read outputs written by :func:`write_outputs_file` or saved from Pulumi."""
    return read_outputs_json(Path(path).read_text(encoding="utf-8"))


def write_outputs_file(outputs: StackOutputs, path: Path) -> Path:
    """Write outputs as pretty JSON (atomically: a temporary file then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(outputs.to_dict(), indent=2, sort_keys=True) + "\n", "utf-8")
    tmp.replace(path)
    return path
