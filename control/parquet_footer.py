"""The schema of a parquet object in S3, read from its footer alone (one or two ranged GETs).

``invoke doctor`` checks the training data's columns against the run spec without
downloading the data: parquet keeps its schema at the end of the file, so the last
64 KiB (more only when the footer says so) are enough.
"""

from __future__ import annotations

from typing import Any

from common.runspec import DataSpec
from control.data_check_schema import FOOTER_READ_BYTES, open_parquet

__all__ = ["FOOTER_READ_BYTES", "read_footer_schema", "schema_problems"]


def read_footer_schema(s3: Any, bucket: str, key: str, size: int) -> Any:
    """The arrow schema of a parquet object from its footer alone (one or two ranged GETs).

    Raises:
        ValueError: not a parquet file.
    """
    parquet, _ = open_parquet(s3, bucket, key, size)  # NotParquet is a ValueError
    return parquet.schema_arrow


def schema_problems(schema: Any, data: DataSpec) -> list[str]:
    """What the columns the spec names lack in ``schema``: missing columns, wrong types. Pure."""
    import pyarrow as pa

    names = list(schema.names)
    wanted = [
        data.item_id_column,
        data.timestamp_column,
        data.target_column,
        *data.past_covariates,
        *data.known_covariates,
    ]
    problems = []
    missing = [c for c in wanted if c not in names]
    if missing:
        problems.append(f"missing column(s) {', '.join(missing)} (has: {', '.join(names)})")
    if data.timestamp_column in names:
        kind = schema.field(data.timestamp_column).type
        if not (
            pa.types.is_timestamp(kind)
            or pa.types.is_date(kind)
            or pa.types.is_string(kind)
            or pa.types.is_large_string(kind)
        ):
            problems.append(f"column {data.timestamp_column} has type {kind}, expected a timestamp")
    if data.target_column in names:
        kind = schema.field(data.target_column).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            problems.append(f"column {data.target_column} has type {kind}, expected numbers")
    return problems
