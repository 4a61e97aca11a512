"""The measurements of the first BENCHMARKS.md, until their sections take them over.

The transfer rows move to :mod:`bench.transfer`, the CPU-thread training rows to
:mod:`bench.training`, monitor's conditional poll to :mod:`bench.control_plane`; this
module goes once they have. :func:`run` is a section of its own meanwhile.
"""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

from bench.core import Section, Settings, Table, interleave, median, ratio
from common.layout import TRAINING_DATA
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import Market, RunStatus
from localaws import moto

NAME = "earlier"
BUCKET = "bench-bucket"
COLUMNS = ["benchmark", "baseline", "candidate", "baseline median (s)", "candidate median (s)", "ratio"]


def run(settings: Settings) -> Section:
    """The earlier rows side by side: downloads, monitor's poll, CPU threads."""
    rows = Table(title="Baseline against candidate (ratio: baseline / candidate)", columns=COLUMNS)
    rounds = settings.rounds
    s3_download_many(rows, rounds, n=16 if settings.quick else 64, size=256 * 1024)
    if not settings.quick:
        s3_download_many(rows, rounds, n=8, size=32 * 1024 * 1024)
    monitor_poll(rows, rounds, polls=10 if settings.quick else 50)
    if not settings.quick:  # two torch runs per round: too slow for the quick run
        training_threads(rows, settings.workdir, min(rounds, 3), steps=150, contended=False)
        training_threads(rows, settings.workdir, min(rounds, 3), steps=150, contended=True)
    return Section(
        name=NAME,
        title="Earlier measurements",
        intro="The rows of the first BENCHMARKS.md, measured as before (moto on 127.0.0.1), "
        "until the sections above take them over.",
        tables=[rows],
        notes=[
            "moto is one Python server process and serves requests about one at a time, so "
            "threads add overhead there; the data-sync section measures a concurrent server too.",
            "local mode pins the training child to one CPU thread: when another process holds a "
            "core, a second OpenMP thread spin-waits for it.",
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


def monitor_poll(rows: Table, rounds: int, *, polls: int) -> None:
    """monitor's conditional GET (304 when unchanged) against a full GET of the state file."""
    aws = moto.start()
    try:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        store = StateStore(s3, BUCKET, "dev")
        doc = new_state(
            env="dev",
            run_id="20261125-140502",
            market=Market.SPOT,
            total_steps=1000,
            now="2026-11-25T14:05:02Z",
        )
        doc["history"] += [{"status": RunStatus.INITIALIZATION.value, "at": "2026-11-25T14:05:02Z"}] * 40
        snap = store.acquire(doc)
        size = len(json.dumps(doc, indent=2, sort_keys=True))
        full, cond = "full GET + parse + validate", "conditional GET (If-None-Match)"
        times = interleave(
            {
                full: lambda: [store.read() for _ in range(polls)],
                cond: lambda: [store.read_if_changed(snap.etag) for _ in range(polls)],
            },
            rounds,
        )
        _add(rows, f"{polls} polls of an unchanged {size / 1024:.1f} KiB state file", full, cond, times)
    finally:
        aws.stop()


def training_threads(rows: Table, workdir: Path, rounds: int, *, steps: int, contended: bool) -> None:
    """The trainer's CPU default (one torch thread) against torch's default thread count."""
    import torch

    from common.runspec import DataSpec
    from trainer.data import load_dataset
    from trainer.finetune import train
    from trainer.synthetic import TINY_TRAINING, generate_dataset
    from trainer.train_config import TrainConfig

    files = generate_dataset(workdir / "threads-data", seed=0)
    horizon, context = int(TINY_TRAINING["prediction_length"]), int(TINY_TRAINING["context_length"])
    inputs = load_dataset(
        files, DataSpec.from_dict({"frequency": "h"}), prediction_length=horizon, backtest_windows=1
    ).train_inputs
    default, one = f"torch default ({torch.get_num_threads()} threads)", "1 thread (trainer default)"
    times: dict[str, list[float]] = {default: [], one: []}
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if contended else None
    try:
        for i in range(rounds):
            for name, n in ((default, None), (one, 1)):
                cfg = TrainConfig(
                    prediction_length=horizon, context_length=context, num_steps=steps,
                    batch_size=int(TINY_TRAINING["batch_size"]),
                    learning_rate=float(TINY_TRAINING["learning_rate"]),
                    finetune_mode="full", checkpoint_interval=steps, output_dir=workdir / f"threads-{i}-{n}",
                    cpu_threads=n, seed=i, eval_interval=steps, early_stopping_patience=None,
                    precision="auto", log_interval=1,
                )  # fmt: skip
                times[name].append(train("tiny", inputs, cfg).duration_s)
    finally:
        if busy is not None:
            busy.kill()
            busy.wait()
    what = f"tiny Chronos-2, {steps} steps, CPU" + (", one core kept busy" if contended else "")
    _add(rows, what, default, one, times)
