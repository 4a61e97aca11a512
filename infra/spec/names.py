"""Names: the env and instance-type rules, and the names of named resources.

The env-name rule is :func:`common.layout.check_env` (the one rule; the schema's
``$defs/env`` is tested equal to it); :func:`validate_env` only turns its error into
a :class:`~infra.spec.SpecError`. The instance types are the schema's
``$defs/instance_type`` enum, which the run spec validates against, so a type the
product refuses can never pass the spec.
"""

from __future__ import annotations

from common import layout
from infra.spec import SpecError
from schemas import schema_enum

GPU_INSTANCE_TYPES: frozenset[str] = frozenset(schema_enum("instance_type"))
# The families of those types (``g4dn``, ``g5``): the IAM instance-type patterns.
GPU_INSTANCE_FAMILIES: tuple[str, ...] = tuple(sorted({t.split(".")[0] for t in GPU_INSTANCE_TYPES}))
DEFAULT_INSTANCE_TYPE = "g5.xlarge"


def validate_env(env: str) -> str:
    """Return ``env`` if it is a valid environment name (:func:`common.layout.check_env`).

    Raises:
        SpecError: unless it follows the layout's rule (it becomes part of the
            bucket name, S3 prefixes and IAM resource names).
    """
    try:
        return layout.check_env(env)
    except layout.LayoutError as exc:
        raise SpecError(str(exc)) from None


def validate_instance_type(instance_type: str) -> str:
    """Return ``instance_type`` if it is an allowed GPU type (g4dn.* or g5.*).

    Raises:
        SpecError: for any other type, listing the allowed ones.
    """
    if instance_type not in GPU_INSTANCE_TYPES:
        allowed = ", ".join(sorted(GPU_INSTANCE_TYPES))
        raise SpecError(f"instance type {instance_type!r} is not allowed; use one of: {allowed}")
    return instance_type


def bucket_name(env: str, account: str, region: str) -> str:
    """The training bucket: ``chronos-training-{env}-{account}-{region}``."""
    return f"chronos-training-{validate_env(env)}-{account}-{region}"


def resource_name(env: str, kind: str) -> str:
    """Name for a named (non-bucket) resource, e.g. ``chronos-dev-instance``."""
    return f"chronos-{validate_env(env)}-{kind}"
