"""The informative documents of a run (the launch record, the stored run spec, cleanup_status.json):
read for the run history's facts, and ignored (logged) when absent or unusable."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from common import layout
from common.timeutil import parse_iso
from control.s3io import DocumentError, get_json
from schemas import SchemaValidationError, schema_for, validate_timestamp

log = logging.getLogger(__name__)


def quiet_json(s3: Any, bucket: str, key: str, kind: str | None = None) -> dict[str, Any] | None:
    """An informative document (validated against ``kind`` when it has a schema); ``None`` when
    absent or unusable (logged): the summary goes on without it."""
    try:
        return get_json(s3, bucket, key, kind)
    except DocumentError as exc:
        log.info("ignoring %s: %s", key, exc)
        return None


def launch_facts(s3: Any, bucket: str, paths: layout.RunPaths) -> dict[str, Any]:
    """What the launch record says (instance, market, price, start), over the run id's start time."""
    record = quiet_json(s3, bucket, paths.launch_record)
    base: dict[str, Any] = {
        "run_id": paths.run_id,
        "env": paths.env,
        "started_at": layout.parse_run_id(paths.run_id),
    }
    if record:  # no schema: each fact is taken only when it has its type
        base.update(
            instance_id=_text(record.get("instance_id")),
            instance_type=_text(record.get("instance_type")),
            market=_text(record.get("market")),
            price_per_hour=_number(record.get("price_per_hour")),
        )
        launched = _time(record.get("launched_at"))
        if launched is not None:
            base["started_at"] = launched
    return base


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> datetime | None:
    """A timestamp the schemas would accept, else ``None``."""
    try:
        validate_timestamp(value)
    except SchemaValidationError:
        return None
    return parse_iso(value)


def volume_gb(s3: Any, bucket: str, paths: layout.RunPaths) -> float:
    """The run's root volume (its stored run spec), else the run-spec schema's default."""
    spec = quiet_json(s3, bucket, paths.run_spec, "run-spec") or {}
    size = (spec.get("instance") or {}).get("root_volume_gb")
    if size is None:
        size = schema_for("run-spec")["properties"]["instance"]["properties"]["root_volume_gb"]["default"]
    return float(size)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None
