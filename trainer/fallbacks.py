"""Training attempts under a precision plan, retried with the next plan on OOM or a non-finite loss.

:func:`run_attempts` plans the precision (:func:`trainer.precision.plan_precision`,
keeping what a resumed checkpoint learnt), runs one attempt, and on a CUDA
out-of-memory (:func:`~trainer.precision.after_oom`: half the micro-batch, twice the
accumulation) or a non-finite loss under fp16/bf16 (:func:`~trainer.precision.after_nan`:
fp32) runs the next attempt from the newest complete checkpoint. Each change is in the
:class:`~trainer.precision.PrecisionRecord`, which every checkpoint carries
(``precision_record.json``) beside the plan (``precision.json``), so the record of a
resumed run still names the changes before the interruption.
"""

from __future__ import annotations

import gc
import json
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TypeVar

from common.layout import checkpoint_step
from trainer import precision as prec
from trainer.checkpoints import find_latest_complete_checkpoint, recorded_world_size
from trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)

PRECISION_RECORD_NAME = "precision_record.json"
R = TypeVar("R")
Attempt = Callable[[prec.PrecisionPlan, prec.PrecisionRecord, Path | None], R]


def initial_plan(config: TrainConfig, resume_from: Path | None) -> prec.PrecisionPlan:
    """The plan of the first attempt: this device's, keeping a resumed checkpoint's fallbacks.

    The plan splits one process's share of the batch (``TrainConfig.per_rank_batch``). A
    checkpoint written by another number of processes keeps its micro-batch when it divides
    this share (its data stream then continues batch for batch, see
    :mod:`trainer.distributed`); otherwise the share is one micro-batch again: the effective
    batch and the schedule are the same, the batches drawn after the resume differ.
    """
    planned = prec.plan_precision(
        config.precision,
        device=config.device,
        capability=prec.capability() if config.device == "cuda" else None,
        batch_size=config.per_rank_batch,
    )
    if config.micro_batch is not None:
        planned = prec.regroup(planned, config.micro_batch)
    saved = prec.load_plan(resume_from) if resume_from is not None else None
    plan = prec.resume_plan(planned, saved)
    if saved is None or resume_from is None or recorded_world_size(resume_from) == config.world_size:
        return plan
    if plan.batch_size % saved.micro_batch == 0 and saved.micro_batch <= plan.batch_size:
        plan = prec.regroup(plan, saved.micro_batch)
    else:
        logger.warning(
            "%s was trained %d micro-batches of %d per process; %d processes take %d series each: "
            "the batches drawn from here on differ from an uninterrupted run (same effective batch)",
            resume_from, saved.grad_accum, saved.micro_batch, config.world_size, plan.batch_size,
        )  # fmt: skip
    return plan


def saved_record(checkpoint: Path | None, plan: prec.PrecisionPlan) -> prec.PrecisionRecord:
    """The record a checkpoint carries (its earlier changes), now at ``plan``."""
    path = checkpoint / PRECISION_RECORD_NAME if checkpoint is not None else None
    if path is None or not path.is_file():
        return prec.PrecisionRecord.start(plan)
    return replace(prec.PrecisionRecord.from_dict(json.loads(path.read_text())), final=plan)


def run_attempts(
    config: TrainConfig, resume_from: Path | None, attempt: Attempt[R]
) -> tuple[R, prec.PrecisionRecord]:
    """Run ``attempt(plan, record, resume_from)`` until one returns.

    Raises:
        Exception: what the attempt raised when no other plan is left (or it was not an
            out-of-memory or a non-finite loss).
    """
    plan = initial_plan(config, resume_from)
    record = saved_record(resume_from, plan)
    while True:
        if resume_from is not None:
            prec.strip_scaler_state(resume_from, plan)
        try:
            return attempt(plan, record, resume_from), record
        except Exception as exc:
            nxt, why = next_plan(exc, plan, distributed=config.world_size > 1)
            if nxt is None:
                raise
        resume_from = find_latest_complete_checkpoint(config.checkpoints_dir)
        at_step = (checkpoint_step(resume_from.name) or 0) if resume_from else 0
        logger.warning("%s: retrying from step %d with %s", why, at_step, nxt.describe())
        record, plan = record.changed(nxt, at_step=at_step, why=why), nxt
        _free_device_memory()


def next_plan(
    exc: BaseException, plan: prec.PrecisionPlan, *, distributed: bool = False
) -> tuple[prec.PrecisionPlan | None, str]:
    """The plan to retry with after ``exc`` and why; ``None`` when ``exc`` is not retried.

    Data parallel, an out-of-memory is not retried: it strikes one rank while the others wait
    in a collective, so no retry could be agreed (the run fails; a smaller ``batch_size``
    fixes it). A non-finite loss is seen by every rank at once (the logged loss is the mean
    over the ranks), so its fp32 retry is taken everywhere.
    """
    if prec.is_cuda_oom(exc):
        if distributed:
            return None, ""
        return prec.after_oom(plan), f"CUDA out of memory with {plan.describe()}"
    if isinstance(exc, prec.NonFiniteLoss) and exc.fallback:
        return prec.after_nan(plan), str(exc)
    return None, ""


def _free_device_memory() -> None:
    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
