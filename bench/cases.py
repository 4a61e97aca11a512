"""The benchmarks. Each returns a :class:`bench.report.Result` measured side by side."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from tempfile import TemporaryDirectory

from boto3.s3.transfer import TransferConfig

from bench.report import Result
from common.layout import TRAINING_DATA
from common.state_doc import new_state
from common.state_store import StateStore
from common.status import Market, RunStatus
from localaws import moto

BUCKET = "bench-bucket"


def _timed(fn: Callable[[], object]) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def s3_download_many(rounds: int = 5, n: int = 64, size: int = 256 * 1024) -> Result:
    """data_sync's parallel transfer manager against a one-at-a-time GetObject loop."""
    aws = moto.start()
    try:
        s3 = aws.client("s3")
        s3.create_bucket(Bucket=BUCKET)
        payload = b"x" * size
        keys = [f"{TRAINING_DATA}2026/11/part-{i:03d}.parquet" for i in range(n)]
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda k: s3.put_object(Bucket=BUCKET, Key=k, Body=payload), keys))
        res = Result(
            name=f"s3-download-{n}x{size // 1024}KiB",
            what=f"download {n} x {size // 1024} KiB from moto (127.0.0.1)",
            baseline="sequential get_object",
            candidate="boto3 transfer manager, 8 threads",
            unit="s",
            notes="moto is one Python server process on 2 cores and serves these requests about one at a "
            "time, so here threads only add overhead; this run cannot show the gain of parallel "
            "requests on S3, which serves them concurrently.",
        )
        cfg = TransferConfig(max_concurrency=8)
        for _ in range(rounds):
            with TemporaryDirectory() as tmp:

                def sequential(t=tmp) -> None:
                    for k in keys:
                        body = s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()
                        Path(t, k.replace("/", "_")).write_bytes(body)

                res.baseline_values.append(_timed(sequential))
            with TemporaryDirectory() as tmp:

                def parallel(t=tmp) -> None:
                    with ThreadPoolExecutor(8) as pool:
                        list(
                            pool.map(
                                lambda k: s3.download_file(
                                    BUCKET, k, str(Path(t, k.replace("/", "_"))), Config=cfg
                                ),
                                keys,
                            )
                        )

                res.candidate_values.append(_timed(parallel))
        return res
    finally:
        aws.stop()


def monitor_poll(rounds: int = 5) -> Result:
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
        polls = 50
        size = len(json.dumps(doc, indent=2, sort_keys=True))
        res = Result(
            name="monitor-poll",
            what=f"{polls} polls of an unchanged {size / 1024:.1f} KiB state file",
            baseline="full GET + parse + validate",
            candidate="conditional GET (If-None-Match)",
            unit="s",
            notes=f"the conditional GET transfers 0 body bytes per unchanged poll (full GET: {size} B).",
        )
        for _ in range(rounds):
            res.baseline_values.append(_timed(lambda: [store.read() for _ in range(polls)]))
            res.candidate_values.append(
                _timed(lambda: [store.read_if_changed(snap.etag) for _ in range(polls)])
            )
        return res
    finally:
        aws.stop()


def _threads_result(steps: int, batch_size: int, threads: int, contended: bool) -> Result:
    """The empty :class:`Result` of one ``training_threads`` benchmark."""
    return Result(
        name="training-cpu-threads" + ("-contended" if contended else ""),
        what=f"tiny Chronos-2, {steps} steps, batch {batch_size}, CPU"
        + (", one core kept busy by another process" if contended else ", idle machine"),
        baseline=f"torch default ({threads} threads)",
        candidate="1 thread (trainer default)",
        unit="s",
        notes="local mode pins the training child to one CPU thread: on an idle machine two threads "
        "gain nothing for this tiny model, and when another process holds a core the second "
        "OpenMP thread spin-waits for it."
        if contended
        else "",
    )


def training_threads(rounds: int = 3, steps: int = 150, contended: bool = False) -> Result:
    """The trainer's CPU default (one torch thread) against torch's default thread count.

    ``contended``: a busy process holds one core meanwhile, as the moto server and
    the trainer's parent process do in local mode.
    """
    import subprocess
    import sys

    import torch

    from common.runspec import DataSpec
    from trainer.data import load_dataset
    from trainer.finetune import train
    from trainer.synthetic import TINY_TRAINING, generate_dataset
    from trainer.train_config import TrainConfig

    with TemporaryDirectory() as tmp:
        files = generate_dataset(Path(tmp) / "data", seed=0)
        horizon, context = int(TINY_TRAINING["prediction_length"]), int(TINY_TRAINING["context_length"])
        inputs = load_dataset(
            files, DataSpec.from_dict({"frequency": "h"}), prediction_length=horizon, backtest_windows=1
        ).train_inputs
        res = _threads_result(steps, int(TINY_TRAINING["batch_size"]), torch.get_num_threads(), contended)
        busy = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if contended else None
        try:
            for i in range(rounds):
                for values, n in ((res.baseline_values, None), (res.candidate_values, 1)):
                    cfg = TrainConfig(
                        prediction_length=horizon,
                        context_length=context,
                        num_steps=steps,
                        batch_size=int(TINY_TRAINING["batch_size"]),
                        learning_rate=float(TINY_TRAINING["learning_rate"]),
                        finetune_mode="full",
                        checkpoint_interval=steps,
                        output_dir=Path(tmp) / f"run-{i}-{n}",
                        cpu_threads=n,
                        seed=i,
                        eval_interval=steps,
                        early_stopping_patience=None,
                        precision="auto",
                        log_interval=1,
                    )
                    values.append(train("tiny", inputs, cfg).duration_s)
        finally:
            if busy is not None:
                busy.kill()
                busy.wait()
        return res


ALL: list[tuple[str, Callable[..., Result]]] = [
    ("s3-download-small-files", s3_download_many),
    ("s3-download-large-files", lambda rounds: s3_download_many(rounds, n=8, size=32 * 1024 * 1024)),
    ("monitor-poll", monitor_poll),
    ("training-cpu-threads", training_threads),
    ("training-cpu-threads-contended", lambda rounds: training_threads(rounds, contended=True)),
]


def extra_sections() -> list[str]:
    """Free-form sections appended to BENCHMARKS.md (e.g. GPU numbers recorded elsewhere)."""
    path = Path(__file__).with_name("gpu.md")
    return [path.read_text()] if path.exists() else []
