"""Interruption and recovery: spot notice -> checkpoint durable -> first resumed step (issue 14, item 4).

Full mode interrupts a real local run of the tiny pretrained Chronos-2 as AWS would: once a
checkpoint is in S3 the instance's fake IMDS posts a spot notice, the trainer checkpoints and
powers off, the local recovery pump (:mod:`control.local_recovery`) hands the events to the
recovery handler, which relaunches, and the new instance resumes. The latencies are the run's
own record: training.json's ``interruptions`` (``notice_at``, ``checkpoint_durable_at``,
``replacement_launched_at``, ``first_resumed_step_at``, ``steps_lost``).

The checkpoint's own round trip is measured apart, for the tiny model and (full mode only: it
moves GBs) a random-init model of Chronos-2's size (~119M parameters: 1.4 GB with Adam's
state): the trainer saves a real checkpoint after one step (:func:`trainer.finetune.train`),
the checkpoint uploader's transfer puts it in a local S3 (moto), the resume's restore
(:func:`trainer.checkpoint_sync.restore_checkpoint`) gets it back, and its weights and
optimizer state are loaded.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import local_run
from bench.core import Section, Settings, Table
from bench.gpu import chronos2_config
from common import layout
from common.timeutil import parse_iso, wait_until

log = logging.getLogger(__name__)

NOTICE_S = 120.0  # EC2's spot interruption warning
NOTICE_COLUMN = "save + upload, share of the 2-min notice"
STEPS, CHECKPOINT_EVERY = 200, 20
BUCKET = "bench-checkpoints"
# Chronos-2's size (amazon/chronos-2: T5-base-like encoder), random weights.
ROUNDTRIP_CONTEXT, ROUNDTRIP_BATCH = 256, 4  # the one step's size; the checkpoint's does not depend on it


# -- the arithmetic ----------------------------------------------------------------------------------
def _between(start: str | None, end: str | None) -> float | None:
    if not start or not end:
        return None
    return (parse_iso(end) - parse_iso(start)).total_seconds()


LATENCIES = (
    ("notice -> checkpoint durable in S3", "notice_at", "checkpoint_durable_at"),
    ("notice -> replacement launched", "notice_at", "replacement_launched_at"),
    ("replacement launched -> first resumed step", "replacement_launched_at", "first_resumed_step_at"),
    ("notice -> first resumed step", "notice_at", "first_resumed_step_at"),
)


def latencies(gap: dict[str, Any]) -> list[tuple[str, float | None]]:
    """One interruption's intervals in seconds (``None`` where a stamp is missing)."""
    return [(name, _between(gap.get(start), gap.get(end))) for name, start, end in LATENCIES]


def in_steps(seconds: float | None, steps_per_s: float | None) -> float | None:
    """``seconds`` as a number of training steps at ``steps_per_s``."""
    if seconds is None or not steps_per_s:
        return None
    return seconds * steps_per_s


@dataclass(frozen=True, kw_only=True)
class Roundtrip:
    """One checkpoint through S3: its size and each leg's seconds."""

    model: str
    params: int
    bytes: int
    save_s: float
    upload_s: float
    download_s: float
    load_s: float

    @property
    def durable_s(self) -> float:
        """Save + upload: what must fit in the spot notice."""
        return self.save_s + self.upload_s

    @property
    def restore_s(self) -> float:
        """Download + load: what the replacement pays before its first step."""
        return self.download_s + self.load_s


def rate_mb(size: int, seconds: float) -> float:
    """MB (10^6 bytes) per second; 0 for no time."""
    return size / 1e6 / seconds if seconds > 0 else 0.0


def estimate_resume(tiny_total_s: float | None, tiny: Roundtrip, big: Roundtrip) -> float | None:
    """Notice -> first resumed step with ``big``'s checkpoint: the tiny run's, its checkpoint swapped."""
    if tiny_total_s is None:
        return None
    return tiny_total_s - (tiny.durable_s + tiny.restore_s) + big.durable_s + big.restore_s


# -- the interrupted run -----------------------------------------------------------------------------
def checkpoints_in_s3(world: local_run.World, run_id: str) -> list[int]:
    """Steps of the run's complete checkpoints in S3 (``trainer_state.json`` present)."""
    prefix = layout.RunPaths(env=local_run.ENV, run_id=run_id).checkpoints
    pages = world.s3.get_paginator("list_objects_v2").paginate(Bucket=world.bucket, Prefix=prefix)
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    steps = {
        layout.checkpoint_step(k[len(prefix) :].split("/")[0])
        for k in keys
        if k.endswith("/trainer_state.json")
    }
    return sorted(s for s in steps if s is not None)


def spot_notice(world: local_run.World, instance_id: str) -> None:
    """The instance's fake IMDS starts answering ``spot/instance-action``."""
    import requests

    from control.localdir import read_json

    record = read_json(world.local_dir.instance_file(instance_id)) or {}
    requests.post(record["imds_url"] + "/_fake/spot-notice", timeout=10).raise_for_status()


def interrupted_run(
    world: local_run.World, *, steps: int = STEPS, every: int = CHECKPOINT_EVERY
) -> dict[str, Any]:
    """A run noticed once its first checkpoint is in S3, recovered, finished; its training.json."""
    launched = local_run.launch(
        world, local_run.run_spec(steps, recoveries=1, checkpoint_interval=every), name="spot"
    )
    iid = launched.instance_id

    def training_with_checkpoint() -> bool:
        doc = local_run.state_doc(world) or {}
        return (
            doc.get("status") == "training"
            and doc.get("instance_id") == iid
            and bool(checkpoints_in_s3(world, launched.run_id))
        )

    wait_until(training_with_checkpoint, timeout=local_run.RUN_TIMEOUT_S, what="a checkpoint of attempt 1")
    spot_notice(world, iid)
    wait_until(
        lambda: local_run.state_doc(world) is None, timeout=local_run.RUN_TIMEOUT_S, what="the run to end"
    )
    wait_until(
        lambda: all(s == "terminated" for _, s in local_run.run_instances(world, launched.run_id)),
        timeout=60,
        what="the last instance to terminate",
    )
    return local_run.training_json(world, launched.run_id)


# -- the checkpoint round trip -----------------------------------------------------------------------
def save_random_base(folder: Path) -> int:
    """A random-init model of Chronos-2's size saved as a base folder; its parameter count."""
    from chronos.chronos2 import Chronos2Model

    model = Chronos2Model(chronos2_config())
    model.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


@contextmanager
def local_s3(root: Path) -> Iterator[Any]:
    """A moto server of its own on 127.0.0.1 (IAM off) with an empty bucket: its S3 client."""
    from common.aws import client as make_client
    from control import localenv
    from control.localdir import LocalDir
    from localaws import moto
    from trainer.errors import CLIENT_CONFIG

    local_dir = LocalDir(root / ".local-s3")
    try:
        endpoint, _, _ = localenv.start_server(local_dir)
        s3 = make_client(moto.attach(endpoint).session(), "s3", endpoint_url=endpoint, config=CLIENT_CONFIG)
        s3.create_bucket(Bucket=BUCKET)
        yield s3
    finally:
        localenv.down(local_dir=local_dir)


def roundtrip(model: str, base: str, inputs: list[dict[str, Any]], s3: Any, work: Path) -> Roundtrip:
    """Save a real trainer checkpoint after one step, upload, download and load it; each leg timed."""
    import torch

    from common.layout import TRAINER_STATE_NAME
    from trainer.callbacks import TrainHooks
    from trainer.checkpoint_sync import restore_checkpoint
    from trainer.checkpoints import checkpoint_problem
    from trainer.errors import ErrorLog, Retrier, retry_policy
    from trainer.finetune import train
    from trainer.train_config import TrainConfig
    from trainer.transfers import Transfers

    stamps: dict[str, Any] = {}
    hooks = TrainHooks(
        on_step=lambda *_: stamps.setdefault("step", time.monotonic()),
        on_checkpoint_saved=lambda path, _: stamps.setdefault("saved", (time.monotonic(), Path(path))),
    )
    config = TrainConfig(
        prediction_length=24,
        context_length=ROUNDTRIP_CONTEXT,
        num_steps=1,
        learning_rate=1e-5,
        output_dir=work / "train",
        batch_size=ROUNDTRIP_BATCH,
        finetune_mode="full",
        checkpoint_interval=1,
        seed=0,
        eval_interval=1,
        early_stopping_patience=None,
        precision="fp32",
        log_interval=1,
    )
    result = train(base, inputs, config, hooks=hooks)
    saved_at, checkpoint = stamps["saved"]
    size = sum(p.stat().st_size for p in checkpoint.rglob("*") if p.is_file())
    transfers = Transfers(s3, BUCKET, Retrier(retry_policy("exponential"), errors=ErrorLog()))
    prefix = f"{model}/checkpoints/"
    try:
        started = time.monotonic()
        transfers.upload_tree(
            checkpoint, f"{prefix}{checkpoint.name}/", component="training", last=(TRAINER_STATE_NAME,)
        )
        upload_s = time.monotonic() - started
        shutil.rmtree(work / "train", ignore_errors=True)  # the replacement starts with an empty disk
        started = time.monotonic()
        step = restore_checkpoint(transfers, prefix, work / "restored", checkpoint_problem)
        download_s = time.monotonic() - started
    finally:
        transfers.close()
    restored = work / "restored" / layout.checkpoint_name(int(step or 0))
    started = time.monotonic()
    _load(restored, torch)
    load_s = time.monotonic() - started
    shutil.rmtree(work, ignore_errors=True)
    return Roundtrip(
        model=model,
        params=int(result.trainable_params),
        bytes=size,
        save_s=saved_at - stamps["step"],
        upload_s=upload_s,
        download_s=download_s,
        load_s=load_s,
    )


def _load(folder: Path, torch: Any) -> None:
    """What a resume reads: the weights into a model, the optimizer, scheduler and RNG states."""
    from chronos.chronos2 import Chronos2Model

    Chronos2Model.from_pretrained(folder)
    for name in ("optimizer.pt", "scheduler.pt", "rng_state.pth"):
        torch.load(folder / name, map_location="cpu", weights_only=False)


# -- the section -------------------------------------------------------------------------------------
INTRO = (
    "A spot interruption of a real local run (the tiny pretrained Chronos-2, batch 32, a checkpoint "
    f"every {CHECKPOINT_EVERY} steps): once a checkpoint is in S3 the instance's fake IMDS shows a "
    "spot notice; the trainer checkpoints and powers off, local mode's recovery pump hands the "
    "events to the recovery handler, which relaunches; the latencies are the run's training.json "
    "`interruptions` (1-s stamps). Apart, a checkpoint's round trip: the trainer's own checkpoint "
    "after one step, uploaded by the checkpoint uploader's transfer to a local S3 (moto), restored "
    "as a resume does, weights and optimizer state loaded; for the tiny model and for a random-init "
    "model of Chronos-2's size (1.4 GB with Adam's state)."
)


def run(settings: Settings) -> Section:
    """The interruption section (see the module docstring)."""
    section = Section(name="interruption", title="Interruption and recovery", intro=INTRO)
    run_doc = None
    if not settings.quick:
        with local_run.local_world(settings.workdir / "run") as world:
            run_doc = interrupted_run(world)
    trips = checkpoint_trips(settings.workdir, full=not settings.quick)
    fill(section, run_doc, trips, quick=settings.quick)
    return section


def checkpoint_trips(workdir: Path, *, full: bool) -> list[Roundtrip]:
    """The tiny model's round trip, and in full mode the Chronos-2-size one."""
    from trainer.synthetic import generate_dataset

    files = generate_dataset(workdir / "data")
    _, data = local_run.training_data(files, local_run.run_spec(1), workdir / "spec")
    with local_s3(workdir) as s3:
        trips = [roundtrip("tiny-pretrained", "tiny-pretrained", data.train_inputs, s3, workdir / "tiny")]
        if full:
            base = workdir / "chronos-2-size"
            save_random_base(base)
            trips.append(roundtrip("chronos-2 size", str(base), data.train_inputs, s3, workdir / "big"))
            shutil.rmtree(base, ignore_errors=True)
    return trips


def fill(section: Section, run_doc: dict[str, Any] | None, trips: list[Roundtrip], *, quick: bool) -> None:
    """The section's tables and notes."""
    rate = float(((run_doc or {}).get("metrics") or {}).get("steps_per_s") or 0.0) or None
    gaps = (run_doc or {}).get("interruptions") or []
    if run_doc is not None:
        table = Table(
            title="One spot interruption of the tiny model, recovered automatically",
            columns=["interval", "seconds", "vs one training step (x)"],
        )
        for gap in gaps:
            for name, seconds in latencies(gap):
                table.add(name, seconds, in_steps(seconds, rate))
            table.add("steps lost", gap.get("steps_lost"), None)
        section.tables.append(table)
    columns = ["model", "parameters", "MB", "save s", "upload s", "download s", "load s"]
    trip_table = Table(title="A checkpoint through S3 (moto on 127.0.0.1)", columns=[*columns, NOTICE_COLUMN])
    for t in trips:
        legs = (t.save_s, t.upload_s, t.download_s, t.load_s)
        trip_table.add(t.model, t.params, t.bytes / 1e6, *legs, t.durable_s / NOTICE_S)
    section.tables.append(trip_table)
    section.notes += notes(gaps, trips, rate, quick=quick)


def notes(
    gaps: list[dict[str, Any]], trips: list[Roundtrip], rate: float | None, *, quick: bool
) -> list[str]:
    """What dominates, steps lost, and what quick mode left out."""
    out: list[str] = []
    for gap in gaps:
        spans = dict(latencies(gap))
        boot = spans["replacement launched -> first resumed step"]
        total = spans["notice -> first resumed step"]
        if boot is not None and total:
            out.append(
                f"Interruption of attempt {gap['attempt']}: {total:.0f} s from notice to the first "
                f"resumed step, {boot / total:.0%} of it the replacement booting to its first step; "
                f"steps lost: {gap.get('steps_lost')} (the trainer checkpoints on the notice)."
            )
        durable = spans["notice -> checkpoint durable in S3"]
        if durable is not None and durable <= 0:
            out.append(
                "The checkpoint resumed from was already durable before the notice (a periodic one "
                "at the step the notice stopped): nothing was lost."
            )
    if len(trips) > 1 and gaps:
        tiny, big = trips[0], trips[-1]
        total = dict(latencies(gaps[0]))["notice -> first resumed step"]
        guess = estimate_resume(total, tiny, big)
        if guess is not None:
            out.append(
                f"With the Chronos-2-size checkpoint, notice to first resumed step would be about "
                f"{guess:.0f} s (the tiny run's, its checkpoint legs swapped); the checkpoint is "
                f"durable {big.durable_s:.0f} s after the notice, "
                f"{big.durable_s / NOTICE_S:.0%} of the 2-minute warning."
            )
    for t in trips:
        legs = {"save": t.save_s, "upload": t.upload_s, "download": t.download_s, "load": t.load_s}
        top = max(legs, key=legs.__getitem__)
        up, down = rate_mb(t.bytes, t.upload_s), rate_mb(t.bytes, t.download_s)
        out.append(
            f"{t.model}: {t.bytes / 1e6:.1f} MB, {sum(legs.values()):.1f} s round trip, {top} dominates "
            f"({legs[top]:.1f} s); upload {up:.0f} MB/s, download {down:.0f} MB/s."
        )
    if len(trips) > 1:
        out.append(
            "The S3 legs are moto's speed: one Python server process on this machine's cores; S3 serves the "
            "multipart parts concurrently, so on AWS they are bounded by the instance's network instead."
        )
    if rate:
        out.append(
            f"Step time from the run's {rate:.1f} steps/s (the tiny model on CPU); the intervals in steps "
            "say how many steps of training each one costs."
        )
    if quick:
        out.append(
            "Quick mode: no interrupted run (two boots take minutes) and no Chronos-2-size checkpoint "
            "(it moves GBs); the tiny model's checkpoint round trip only. `make bench` measures both."
        )
    return out
