"""Small S3 reading (and JSON writing) helpers shared by the control-plane operations."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from botocore.exceptions import ClientError

from common.aws import is_not_found
from schemas import validate


class DocumentError(ValueError):
    """A JSON document in S3 that is not JSON or fails its schema."""


def get_bytes(s3: Any, bucket: str, key: str) -> bytes | None:
    """The object's bytes, or ``None`` when it does not exist."""
    try:
        return bytes(s3.get_object(Bucket=bucket, Key=key)["Body"].read())
    except ClientError as exc:
        if is_not_found(exc):
            return None
        raise


def get_json(s3: Any, bucket: str, key: str, kind: str | None = None) -> dict[str, Any] | None:
    """The JSON object at ``key`` validated against schema ``kind``; ``None`` when absent.

    Raises:
        DocumentError: not JSON, or invalid (with the JSON path).
    """
    body = get_bytes(s3, bucket, key)
    if body is None:
        return None
    return parse_json(body, f"s3://{bucket}/{key}", kind)


def parse_json(body: bytes, source: str, kind: str | None = None) -> dict[str, Any]:
    """Decode and (when ``kind`` is given) validate one document.

    Raises:
        DocumentError: naming the source and the JSON path of the problem.
    """
    from schemas import SchemaValidationError

    try:
        doc = json.loads(body)
    except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, nesting, a 5000-digit integer
        raise DocumentError(f"{source} is not JSON: {exc}") from None
    if kind is not None:
        try:
            validate(kind, doc, source=source)
        except SchemaValidationError as exc:
            raise DocumentError(str(exc)) from None
    if not isinstance(doc, dict):
        raise DocumentError(f"{source} is not a JSON object")
    return doc


def put_json(s3: Any, bucket: str, key: str, doc: dict[str, Any]) -> None:
    """Write ``doc`` as indented JSON at ``key`` (validate it before: this writes what it is given)."""
    s3.put_object(
        Bucket=bucket, Key=key, Body=json.dumps(doc, indent=2).encode(), ContentType="application/json"
    )


def iter_objects(s3: Any, bucket: str, prefix: str) -> Iterator[dict[str, Any]]:
    """Every object under ``prefix`` (``Key``, ``Size``, ``ETag`` ...)."""
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        yield from page.get("Contents", [])


def common_prefixes(s3: Any, bucket: str, prefix: str) -> list[str]:
    """The "folders" directly under ``prefix``."""
    out: list[str] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/"):
        out += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
    return out
