"""The transfer rows of the first BENCHMARKS.md, until :mod:`bench.transfer` takes them over.

The CPU-thread training rows now live in :mod:`bench.training` and monitor's conditional
poll in :mod:`bench.control_plane`; this module goes once the data-sync section lands.
:func:`run` is a section of its own meanwhile.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.core import Section, Settings, Table, interleave, median, ratio
from common.layout import TRAINING_DATA
from localaws import moto

NAME = "earlier"
BUCKET = "bench-bucket"
COLUMNS = ["benchmark", "baseline", "candidate", "baseline median (s)", "candidate median (s)", "ratio"]


def run(settings: Settings) -> Section:
    """The earlier download rows side by side."""
    rows = Table(title="Baseline against candidate (ratio: baseline / candidate)", columns=COLUMNS)
    rounds = settings.rounds
    s3_download_many(rows, rounds, n=16 if settings.quick else 64, size=256 * 1024)
    if not settings.quick:
        s3_download_many(rows, rounds, n=8, size=32 * 1024 * 1024)
    return Section(
        name=NAME,
        title="Earlier measurements",
        intro="The download rows of the first BENCHMARKS.md, measured as before (moto on 127.0.0.1), "
        "until the data-sync section takes them over.",
        tables=[rows],
        notes=[
            "moto is one Python server process and serves requests about one at a time, so "
            "threads add overhead there; the data-sync section measures a concurrent server too.",
        ],
    )


def _add(rows: Table, name: str, baseline: str, candidate: str, times: dict[str, list[float]]) -> None:
    b, c = median(times[baseline]), median(times[candidate])
    rows.add(name, baseline, candidate, b, c, ratio(b, c))


def s3_download_many(rows: Table, rounds: int, *, n: int, size: int) -> None:
    """A one-at-a-time GetObject loop against boto3's transfer manager on 8 threads."""
    aws = moto.start()
    try:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        payload = b"x" * size
        keys = [f"{TRAINING_DATA}2026/11/part-{i:03d}.parquet" for i in range(n)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=payload), keys))

        def sequential() -> None:
            with TemporaryDirectory() as tmp:
                for k in keys:
                    Path(tmp, k.replace("/", "_")).write_bytes(
                        s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()
                    )

        def parallel() -> None:
            with TemporaryDirectory() as tmp, ThreadPoolExecutor(8) as pool:
                list(
                    pool.map(lambda k: s3.download_file(BUCKET, k, str(Path(tmp, k.replace("/", "_")))), keys)
                )

        times = interleave(
            {"sequential get_object": sequential, "transfer manager, 8 threads": parallel}, rounds
        )
        name = f"download {n} x {size // 1024} KiB from moto"
        _add(rows, name, "sequential get_object", "transfer manager, 8 threads", times)
    finally:
        aws.stop()
