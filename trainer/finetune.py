"""Resumable Chronos-2 fine-tuning (full or LoRA) with exact resume: :func:`train`.

Training uses ``Chronos2Dataset`` and ``Chronos2Trainer`` directly
(``Chronos2Pipeline.fit`` keeps no optimizer state). A resume from a checkpoint
reproduces the per-step losses and final weights of an uninterrupted run bit for bit
(same seed, data, num_steps, batch size, lr, device) on CPU (same ``cpu_threads``);
on CUDA (bf16/tf32 kernels) a resume continues from the same state but is not
promised to be bit-identical. The training child (:mod:`trainer.train`) calls it.

With a validation window (:mod:`trainer.validation`) the base model is scored before
the first step (zero-shot), every ``eval_interval`` steps and at the last step; the
best weights (lowest validation WQL) are kept and are the final model, and
``early_stopping_patience`` validations without a better WQL end training early (a
completed run). Without one the last weights are the final model.

Under torchrun (``TrainConfig.world_size`` > 1, :mod:`trainer.distributed`) every rank runs
this function: the Trainer does DDP, each rank takes its share of one batch stream, and rank 0
alone writes the run's files (checkpoint files, ``best-model/``, ``model/``); the other ranks
return the same result without a final model folder of their own.

Layout under ``TrainConfig.output_dir``::

    checkpoints/checkpoint-<step>/   full checkpoints (see :mod:`trainer.checkpoints`)
    best-model/                      the best weights so far (full: model folder; LoRA: adapter)
    model/                           final model: Chronos2Pipeline.from_pretrained(model/)
                                     (LoRA merged into the base), plus training_info.json
    adapter/                         LoRA only: the final model's adapter alone
"""

from __future__ import annotations

import contextlib
import gc
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from common.layout import checkpoint_step
from trainer import precision as prec
from trainer.best_model import BestModel, save_final_model
from trainer.callbacks import (
    CheckpointFilesCallback,
    ControlCallback,
    RestoreTorchRngCallback,
    TrainHooks,
    ValidationCallback,
    json_writer,
)
from trainer.checkpoints import BASE_MODEL_INFO_NAME, RUN_SETTINGS_NAME, check_resumable, run_settings
from trainer.distributed import World
from trainer.fallbacks import PRECISION_RECORD_NAME, run_attempts
from trainer.hf_trainer import LORA_DEFAULTS, build_trainer, load_finished_checkpoint, training_arguments
from trainer.model import BaseModelInfo
from trainer.train_config import TrainConfig
from trainer.validation import ValidationState

logger = logging.getLogger(__name__)

DISTRIBUTED_KEYS = ("world_size", "per_device_batch", "grad_accum", "effective_batch")
__all__ = ["LORA_DEFAULTS", "TrainResult", "train", "training_arguments"]  # training_arguments: re-exported


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a :func:`train` call did.

    Attributes:
        final_step: global step reached.
        total_steps: ``num_steps`` requested.
        losses: ``(step, loss)`` for every logged step so far (every ``log_interval``
            steps and the last one), including steps before a resume.
        final_model_dir: the saved final model (the best by validation WQL when there is a
            validation window), ``None`` when interrupted.
        adapter_dir: LoRA only: that model's adapter alone, ``None`` otherwise.
        checkpoints: checkpoint folders saved by this call, oldest first.
        interrupted: stopped before ``total_steps`` (``should_stop``), not early stopping.
        resumed_from: the checkpoint this call resumed from.
        duration_s: wall time of the call (model build, training, final save).
        steps_per_s: optimizer steps per second of this call's training loop.
        base_model: where the weights came from.
        trainable_params: parameters updated by training.
        validation: the validations (:meth:`ValidationState.summary`; empty without a window).
        precision: the precision plans (:meth:`trainer.precision.PrecisionRecord.to_dict`).
        distributed: how the batch was split (:data:`DISTRIBUTED_KEYS` of ``run_settings.json``).
    """

    final_step: int
    total_steps: int
    losses: tuple[tuple[int, float], ...] = field(repr=False)
    final_model_dir: Path | None
    checkpoints: tuple[Path, ...]
    interrupted: bool
    resumed_from: Path | None
    duration_s: float
    steps_per_s: float
    base_model: BaseModelInfo
    trainable_params: int
    adapter_dir: Path | None = None
    validation: dict[str, Any] = field(default_factory=lambda: ValidationState().summary())
    precision: dict[str, Any] | None = None
    distributed: dict[str, Any] = field(default_factory=dict)

    @property
    def early_stopped(self) -> bool:
        """Training ended early because validation stopped improving."""
        return bool(self.validation.get("early_stopped"))

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "final_step": self.final_step,
            "total_steps": self.total_steps,
            "losses": [[s, loss] for s, loss in self.losses],
            "final_model_dir": str(self.final_model_dir) if self.final_model_dir else None,
            "adapter_dir": str(self.adapter_dir) if self.adapter_dir else None,
            "checkpoints": [str(p) for p in self.checkpoints],
            "interrupted": self.interrupted,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "duration_s": self.duration_s,
            "steps_per_s": self.steps_per_s,
            "base_model": self.base_model.to_dict(),
            "trainable_params": self.trainable_params,
            "validation": self.validation,
            "precision": self.precision,
            "distributed": self.distributed,
        }


@dataclass(frozen=True, kw_only=True)
class _Setup:
    """What every training attempt of one :func:`train` call shares."""

    model_source: str
    train_inputs: Sequence[dict[str, Any]]
    config: TrainConfig
    hooks: TrainHooks
    validation: Any
    base_revision: str | None
    world: World


def train(
    model_source: str,
    train_inputs: Sequence[dict[str, Any]],
    config: TrainConfig,
    *,
    resume_from: Path | None = None,
    hooks: TrainHooks | None = None,
    validation: Any = None,
    base_revision: str | None = None,
) -> TrainResult:
    """Train (or resume training) and save the final model.

    A CUDA out-of-memory or a non-finite loss under fp16/bf16 retries from the newest
    complete checkpoint with the next precision plan (:func:`trainer.precision.after_oom`,
    :func:`~trainer.precision.after_nan`); the plans are in the result's ``precision``.

    Args:
        model_source: base model string (see :func:`trainer.model.load_base_model`).
        train_inputs: Chronos-2 input dicts (``Dataset.train_inputs``).
        config: hyperparameters and output folder.
        resume_from: a complete checkpoint folder to resume from.
        hooks: progress callbacks, checkpoint and stop requests (none by default).
        validation: the validation window (an ``EvalSet``); ``None``: no validation, the
            last weights are the final model.
        base_revision: the base model's pinned revision; a checkpoint of another is
            refused (``None``: compared with the loaded model's revision).

    Returns:
        The :class:`TrainResult`.

    Raises:
        trainer.checkpoints.CheckpointError: ``resume_from`` is incomplete or was made
            with other settings.
        trainer.model.ModelLoadError: the base model cannot be loaded.
        trainer.precision.NonFiniteLoss: a non-finite loss with no precision left to try.
        ValueError: the inputs are empty or too short for the config.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.monotonic()
    world = World.from_env()
    if world.world_size != config.world_size:
        raise ValueError(f"the config is for {config.world_size} training processes, {world.world_size} run")
    if resume_from is not None:
        resume_from = Path(resume_from).resolve()
        check_resumable(resume_from, config, base_revision=base_revision)
    setup = _Setup(
        model_source=model_source, train_inputs=train_inputs, config=config, hooks=hooks or TrainHooks(),
        validation=validation, base_revision=base_revision, world=world,
    )  # fmt: skip
    threads = torch.get_num_threads()
    if config.device == "cpu" and config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    saved: list[Path] = []

    def attempt(plan: prec.PrecisionPlan, record: prec.PrecisionRecord, checkpoint: Path | None) -> _Run:
        control = ControlCallback(
            total=config.num_steps, hooks=setup.hooks, step_delay_s=config.step_delay_s, world=world
        )
        try:
            return _run(setup, control, plan, record, checkpoint)
        finally:
            saved.extend(control.saved)

    try:
        run, record = run_attempts(config, resume_from, attempt)
    finally:
        torch.set_num_threads(threads)
    result = replace(run, saved=tuple(saved)).result(config, resume_from, time.monotonic() - started, record)
    logger.info(
        "training %s at step %d/%d (%.1f steps/s)",
        "interrupted" if result.interrupted else "early-stopped" if result.early_stopped else "finished",
        result.final_step, config.num_steps, result.steps_per_s,
    )  # fmt: skip
    return result


@dataclass(frozen=True, kw_only=True)
class _Run:
    """What the training loop left: the trainer, its base model, the loop's time, the exports."""

    trainer: Any
    info: BaseModelInfo
    trainable: int
    loop_s: float
    start_step: int
    final_dir: Path | None
    adapter_dir: Path | None
    validation: ValidationState
    saved: tuple[Path, ...]
    split: dict[str, Any]

    def result(
        self, config: TrainConfig, resume_from: Path | None, duration_s: float, record: prec.PrecisionRecord
    ) -> TrainResult:
        final_step = int(self.trainer.state.global_step)
        return TrainResult(
            final_step=final_step,
            total_steps=config.num_steps,
            losses=tuple(
                (int(entry["step"]), float(entry["loss"]))
                for entry in self.trainer.state.log_history
                if "loss" in entry and "step" in entry
            ),
            final_model_dir=self.final_dir,
            adapter_dir=self.adapter_dir,
            checkpoints=self.saved,
            interrupted=final_step < config.num_steps and not self.validation.early_stopped,
            resumed_from=resume_from,
            duration_s=duration_s,
            steps_per_s=(final_step - self.start_step) / self.loop_s if self.loop_s > 0 else 0.0,
            base_model=self.info,
            trainable_params=self.trainable,
            validation=self.validation.summary(),
            precision=record.to_dict(),
            distributed={k: self.split[k] for k in DISTRIBUTED_KEYS if k in self.split},
        )


@contextlib.contextmanager
def frozen_heap() -> Iterator[None]:
    """Keep what lives before the loop (torch, transformers, the model, the data: some 400,000
    objects) out of the garbage collector's scans while training.

    The Trainer starts its loop with accelerate's ``free_memory()``, a full ``gc.collect()``, and
    Python runs a full collection whenever enough young objects survived; each walks every
    tracked object, 0.2 s on the tiny model's heap (about 8% of a 100-step CPU run; the training
    section of BENCHMARKS.md). ``gc.freeze()`` moves the heap as it is to the permanent generation
    (https://docs.python.org/3/library/gc.html#gc.freeze), so those scans see only what the loop
    allocates. ``gc.unfreeze()`` after: what the loop leaves behind becomes collectable again.
    """
    gc.freeze()
    try:
        yield
    finally:
        gc.unfreeze()


def _run(
    setup: _Setup,
    control: ControlCallback,
    plan: prec.PrecisionPlan,
    record: prec.PrecisionRecord,
    resume_from: Path | None,
) -> _Run:
    """One attempt: build the trainer, train (or load a finished checkpoint), save the final model."""
    config, main = setup.config, setup.world.is_main  # rank 0 alone writes (trainer.distributed)
    trainer, info, trainable = build_trainer(
        setup.model_source, setup.train_inputs, config, plan, setup.world
    )
    revision = setup.base_revision or info.revision  # the pinned one when the run names it
    if resume_from is not None and setup.base_revision is None:
        check_resumable(resume_from, config, base_revision=revision)
    state = (ValidationState.load(resume_from) if resume_from is not None else None) or ValidationState()
    best = BestModel(config.output_dir) if setup.validation is not None else None
    if best is not None and resume_from is None and main:
        best.clear()
    elif best is not None and state.best_step is not None and main:
        best.restore_from(resume_from, state.best_step)
    split = run_settings(config, micro_batch=plan.micro_batch, grad_accum=plan.grad_accum)
    writers = [
        json_writer(BASE_MODEL_INFO_NAME, {**info.to_dict(), "revision": revision, "seed": config.seed}),
        json_writer(RUN_SETTINGS_NAME, split),
        json_writer(PRECISION_RECORD_NAME, record.to_dict()),
        lambda folder: prec.save_plan(plan, folder),
    ]
    callbacks: list[Any] = [control, *setup.hooks.callbacks]
    if resume_from is not None:
        callbacks.insert(0, RestoreTorchRngCallback(resume_from))
    if best is not None:
        validator = ValidationCallback(
            model=trainer.model, window=setup.validation, best=best, state=state, config=config,
            on_validation=setup.hooks.on_validation, world=setup.world,
        )  # fmt: skip
        callbacks.append(validator)
        writers.append(validator.write_into)
    callbacks += [prec.NanGuard(plan), CheckpointFilesCallback(writers if main else [])]
    for callback in callbacks:
        trainer.add_callback(callback)
    if main:
        prec.save_plan(plan, config.output_dir)
    start_step = (checkpoint_step(resume_from.name) or 0) if resume_from else 0
    loop_started = time.monotonic()
    if resume_from is not None and (start_step == config.num_steps or state.early_stopped):
        load_finished_checkpoint(trainer, resume_from)
    else:
        with frozen_heap():
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    loop_s = time.monotonic() - loop_started
    step = int(trainer.state.global_step)
    final_dir = adapter_dir = None
    if (step >= config.num_steps or state.early_stopped) and main:
        lora = LORA_DEFAULTS if config.finetune_mode == "lora" else None
        final_dir, adapter_dir = save_final_model(
            trainer.model, info, config, best=best, state=state, step=step, lora_config=lora
        )
    return _Run(
        trainer=trainer, info=info, trainable=trainable, loop_s=loop_s, start_step=start_step,
        final_dir=final_dir, adapter_dir=adapter_dir, validation=state, saved=tuple(control.saved),
        split=split,
    )  # fmt: skip
