"""Whether a copy is right: file count, total bytes, the SHA-256 of a sample; and the source files.

A fast wrong client is no win: :mod:`bench.transfer` counts a time only once its copy
(a download's folder, an upload's listing and objects) checks out here.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

SAMPLE = 5  # files whose SHA-256 is checked per result


class ShapeLike(Protocol):
    files: int
    size: int


Expected = dict[str, tuple[int, str]]  # relative path -> (size, sha256)


def make_source(folder: Path, shape: ShapeLike, seed: int = 0) -> Expected:
    """Write the shape's files (random bytes) under ``folder``; what a copy must hold."""
    rng = hashlib.sha256(f"{seed}".encode()).digest()
    expected: Expected = {}
    for i in range(shape.files):
        rel = f"{2026 + i % 10}/part-{i:04d}.parquet"
        body = os.urandom(shape.size - 32) + hashlib.sha256(rng + rel.encode()).digest()
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)
        expected[rel] = (len(body), hashlib.sha256(body).hexdigest())
    return expected


def sample_of(names: Sequence[str], n: int = SAMPLE) -> list[str]:
    """``n`` names spread evenly over the sorted ``names`` (all of them when fewer)."""
    ordered = sorted(names)
    if len(ordered) <= n:
        return ordered
    step = len(ordered) / n
    return [ordered[int(i * step)] for i in range(n)]


def check_copy(found: dict[str, int], expected: Expected, digest: Any) -> str | None:
    """Why a copy is wrong (``None``: right): ``found`` maps names to sizes, ``digest(name)`` hashes one."""
    if len(found) != len(expected):
        return f"{len(found)} files, expected {len(expected)}"
    total, want = sum(found.values()), sum(size for size, _ in expected.values())
    if total != want:
        return f"{total} bytes, expected {want}"
    missing = sorted(set(expected) - set(found))
    if missing:
        return f"{missing[0]} missing"
    for name in sample_of(list(expected)):
        if digest(name) != expected[name][1]:
            return f"{name}: SHA-256 differs"
    return None


def check_folder(folder: Path, expected: Expected) -> str | None:
    files = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    return check_copy(files, expected, lambda name: hashlib.sha256((folder / name).read_bytes()).hexdigest())


def check_prefix(s3: Any, bucket: str, prefix: str, expected: Expected) -> str | None:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    found = {o["Key"][len(prefix) :]: int(o["Size"]) for page in pages for o in page.get("Contents", [])}

    def digest(name: str) -> str:
        return hashlib.sha256(s3.get_object(Bucket=bucket, Key=prefix + name)["Body"].read()).hexdigest()

    return check_copy(found, expected, digest)


def delete_prefix(s3: Any, bucket: str, prefix: str) -> None:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    keys = [{"Key": o["Key"]} for page in pages for o in page.get("Contents", [])]
    for i in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[i : i + 1000], "Quiet": True})
