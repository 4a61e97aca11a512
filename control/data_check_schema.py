"""The parquet objects under the data prefix, read from their footers: schema, row counts, types.

:class:`RangedObject` is a seekable file over one S3 object whose reads are ranged
``GetObject`` requests, so ``pyarrow.parquet.ParquetFile`` reads the footer (and,
for the sample, single column chunks) without downloading the file. The checks on
the schemas are pure: each column the run spec names must exist with a type the
trainer reads, and what the trainer requires to agree across files does.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from common.runspec import RunSpec

FOOTER_READ_BYTES = 64 * 1024


class RangedObject(io.RawIOBase):
    """A read-only, seekable file over one S3 object: each read the cache lacks is one ranged GET."""

    def __init__(self, s3: Any, bucket: str, key: str, size: int) -> None:
        super().__init__()
        self.s3, self.bucket, self.key, self.size = s3, bucket, key, size
        self.pos = 0
        self.fetched = 0  # bytes received
        self._cache: list[tuple[int, bytes]] = []

    def fetch(self, start: int, end: int) -> bytes:
        """Bytes ``[start, end)``, from the cache or one ranged GET (then cached)."""
        start, end = max(0, start), min(end, self.size)
        for at, data in self._cache:
            if at <= start and end <= at + len(data):
                return data[start - at : end - at]
        if end <= start:
            return b""
        got = self.s3.get_object(Bucket=self.bucket, Key=self.key, Range=f"bytes={start}-{end - 1}")
        data = got["Body"].read()
        self.fetched += len(data)
        self._cache.append((start, data))
        return data

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.pos, io.SEEK_END: self.size}[whence]
        self.pos = base + offset
        return self.pos

    def readinto(self, buffer: Any) -> int:
        data = self.fetch(self.pos, self.pos + len(buffer))
        buffer[: len(data)] = data
        self.pos += len(data)
        return len(data)


class NotParquet(ValueError):
    """The object is not a parquet file."""


def open_parquet(s3: Any, bucket: str, key: str, size: int) -> tuple[pq.ParquetFile, RangedObject]:
    """A parquet file over ranged GETs: its footer is read at once (one or two GETs).

    Raises:
        NotParquet: too small, no ``PAR1`` magic, or a footer pyarrow cannot read.
    """
    if size < 12:
        raise NotParquet(f"{size} bytes is too small to be parquet")
    obj = RangedObject(s3, bucket, key, size)
    tail = obj.fetch(size - FOOTER_READ_BYTES, size)
    if tail[-4:] != b"PAR1":
        raise NotParquet("no parquet footer (the magic bytes PAR1 are missing)")
    need = int.from_bytes(tail[-8:-4], "little") + 8
    if need > len(tail):
        obj.fetch(size - need, size)
    try:
        return pq.ParquetFile(obj), obj
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:  # a damaged footer's names
        raise NotParquet(f"unreadable parquet footer ({' '.join(str(exc).split())})") from None


# ------------------------------------------------------------------ columns and types


def _numeric(t: pa.DataType) -> bool:
    return pa.types.is_integer(t) or pa.types.is_floating(t)


def _stringy(t: pa.DataType) -> bool:
    if pa.types.is_dictionary(t):
        return _stringy(t.value_type)
    return pa.types.is_string(t) or pa.types.is_large_string(t)


_EXPECTED: dict[str, tuple[Callable[[pa.DataType], bool], str]] = {
    "item_id_column": (lambda t: _stringy(t) or pa.types.is_integer(t), "strings or integers"),
    "timestamp_column": (
        lambda t: (
            pa.types.is_timestamp(t)
            or pa.types.is_date(t)
            or pa.types.is_string(t)
            or pa.types.is_large_string(t)
        ),
        "timestamps (a timestamp, date or ISO 8601 string column)",
    ),
    "target_column": (_numeric, "numbers"),
    "past_covariates": (
        lambda t: _numeric(t) or pa.types.is_boolean(t) or _stringy(t),
        "numbers, booleans or strings",
    ),
}
_EXPECTED["known_covariates"] = _EXPECTED["past_covariates"]


def column_roles(spec: RunSpec) -> list[tuple[str, str]]:
    """``(column, spec field)`` for every column the run spec names, in order."""
    d = spec.data
    roles = [(d.item_id_column, "item_id_column"), (d.timestamp_column, "timestamp_column")]
    roles.append((d.target_column, "target_column"))
    roles += [(c, "past_covariates") for c in d.past_covariates]
    return roles + [(c, "known_covariates") for c in d.known_covariates]


def schema_errors(schema: pa.Schema, spec: RunSpec) -> list[str]:
    """What the file's schema lacks for the spec, one message per column (no key). Pure."""
    names = list(schema.names)
    problems = []
    for column, role in column_roles(spec):
        if column not in names:
            problems.append(
                f"column {column!r} is missing (has: {', '.join(names)}; set data.{role} in the run spec)"
            )
            continue
        fits, expected = _EXPECTED[role]
        kind = schema.field(column).type
        if not fits(kind):
            problems.append(
                f"column {column!r} has type {'string' if _stringy(kind) else kind}, expected {expected} "
                f"(set data.{role} in the run spec)"
            )
    return problems


def _zone(schema: pa.Schema, column: str) -> str | None:
    kind = schema.field(column).type
    return kind.tz if pa.types.is_timestamp(kind) else None


def across_files(schemas: list[tuple[str, pa.Schema]], spec: RunSpec) -> list[str]:
    """What the trainer needs to agree across files: one timezone, each covariate numeric or not.

    ``schemas``: ``(location, schema)`` of the files whose columns are fine. Pure.
    """
    problems = []
    ts = spec.data.timestamp_column
    zones: dict[str | None, str] = {}
    for where, schema in schemas:
        zones.setdefault(_zone(schema, ts), where)
    if len(zones) > 1:
        (a, at_a), (b, at_b) = list(zones.items())[:2]
        problems.append(
            f"{at_b}: column {ts!r} has timezone {b or 'none'}, {at_a} has {a or 'none'}; "
            "store every file's timestamps in one timezone"
        )
    for column, role in column_roles(spec):
        if role not in ("past_covariates", "known_covariates"):
            continue
        kinds: dict[bool, str] = {}
        for where, schema in schemas:
            kind = schema.field(column).type
            kinds.setdefault(_numeric(kind) or pa.types.is_boolean(kind), where)
        if len(kinds) > 1:
            problems.append(
                f"{kinds[False]}: column {column!r} holds strings, {kinds[True]} numbers; "
                "give the column one type in every file"
            )
    return problems
