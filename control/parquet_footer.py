"""The schema of a parquet object in S3, read from its footer alone (one or two ranged GETs).

``invoke doctor`` checks the training data's columns against the run spec without
downloading the data: parquet keeps its schema at the end of the file, so the last
64 KiB (more only when the footer says so) are enough.
"""

from __future__ import annotations

import io
from typing import Any

from common.runspec import DataSpec

FOOTER_READ_BYTES = 64 * 1024


class _Tail(io.RawIOBase):
    """A read-only file of ``size`` bytes of which only the last ``len(tail)`` are known.

    pyarrow reads a parquet footer from the end; any read before the tail is an error.
    """

    def __init__(self, size: int, tail: bytes) -> None:
        super().__init__()
        self.size, self.tail, self.pos = size, tail, 0
        self.start = size - len(tail)

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
        if self.pos < self.start:
            raise OSError(f"read at {self.pos} before the fetched footer (from {self.start})")
        chunk = self.tail[self.pos - self.start : self.pos - self.start + len(buffer)]
        buffer[: len(chunk)] = chunk
        self.pos += len(chunk)
        return len(chunk)


def read_footer_schema(s3: Any, bucket: str, key: str, size: int) -> Any:
    """The arrow schema of a parquet object from its footer alone (one or two ranged GETs).

    Raises:
        ValueError: not a parquet file.
    """
    import pyarrow.parquet as pq

    def tail(n: int) -> bytes:
        n = min(n, size)
        return s3.get_object(Bucket=bucket, Key=key, Range=f"bytes={size - n}-{size - 1}")["Body"].read()

    if size < 12:
        raise ValueError("too small to be parquet")
    data = tail(FOOTER_READ_BYTES)
    if data[-4:] != b"PAR1":
        raise ValueError("no parquet footer (magic PAR1 missing)")
    need = int.from_bytes(data[-8:-4], "little") + 8
    if need > len(data):
        data = tail(need)
    return pq.ParquetFile(_Tail(size, data)).schema_arrow


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
