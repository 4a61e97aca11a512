"""The doctor's data check: parquet files under the spec's prefix, with the spec's columns (footers only)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import botocore.exceptions

from common.aws import is_access_denied
from common.runspec import RunSpec
from control.doctor.checks import Check, fail, ok
from control.parquet_footer import read_footer_schema, schema_problems
from infra.outputs import StackOutputs

DATA_SAMPLE_FILES = 3


def _sample(items: Sequence[Any], n: int) -> list[Any]:
    if len(items) <= n:
        return list(items)
    step = (len(items) - 1) / (n - 1)
    return [items[round(i * step)] for i in range(n)]


def check_training_data(s3: Any, outputs: StackOutputs, spec: RunSpec) -> Check:
    """Parquet files under the spec's prefix, and a sample's schema (footers only)."""
    name, bucket, prefix = "training data", outputs.bucket, spec.data.prefix
    upload = (
        f"upload your data there (aws s3 cp --recursive DIR s3://{bucket}/{prefix}) "
        "or set data.prefix in the spec"
    )
    objects: list[dict[str, Any]] = []
    try:
        for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
            objects += [o for o in page.get("Contents", []) if o["Key"].endswith(".parquet")]
    except botocore.exceptions.ClientError as exc:
        if is_access_denied(exc):
            return fail(
                name,
                f"access denied listing s3://{bucket}/{prefix} (s3:ListBucket)",
                f"attach the operator policy {outputs.operator_policy_arn} to these credentials",
            )
        raise
    if not objects:
        return fail(name, f"no .parquet file under s3://{bucket}/{prefix}", upload)
    total = sum(int(o.get("Size", 0)) for o in objects)
    sampled = _sample(sorted(objects, key=lambda o: o["Key"]), DATA_SAMPLE_FILES)
    for obj in sampled:
        try:
            schema = read_footer_schema(s3, bucket, obj["Key"], int(obj["Size"]))
        except (ValueError, OSError) as exc:
            return fail(
                name,
                f"s3://{bucket}/{obj['Key']} is not readable parquet: {exc}",
                "replace it with a parquet file (or move it out of the prefix)",
            )
        problems = schema_problems(schema, spec.data)
        if problems:
            return fail(
                name,
                f"s3://{bucket}/{obj['Key']}: {'; '.join(problems)}",
                "rename the columns in the data, or name yours in the spec's [data] "
                "(item_id_column, timestamp_column, target_column, covariates) and pass --spec",
            )
    return ok(
        name,
        f"{len(objects)} files, {total} bytes under {prefix}; footers of {len(sampled)} "
        f"sampled file(s) have the spec's columns",
    )
