"""Resumable Chronos-2 fine-tuning (full or LoRA) with exact resume: :func:`train`.

Training uses ``Chronos2Dataset`` and ``Chronos2Trainer`` directly
(``Chronos2Pipeline.fit`` keeps no optimizer state). A resume from a checkpoint
reproduces the per-step losses and final weights of an uninterrupted run bit for bit
(same seed, data, num_steps, batch size, lr, device) on CPU (same ``cpu_threads``);
on CUDA (bf16/tf32 kernels) a resume continues from the same state but is not
promised to be bit-identical. The training child (:mod:`trainer.train`) calls it.

Layout under ``TrainConfig.output_dir``::

    checkpoints/checkpoint-<step>/   full checkpoints (see :mod:`trainer.checkpoints`)
    model/                           final model: Chronos2Pipeline.from_pretrained(model/)
                                     (LoRA merged into the base), plus training_info.json
"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from common.layout import TRAINER_STATE_NAME, checkpoint_step
from trainer.callbacks import ControlCallback, RestoreTorchRngCallback, TrainHooks
from trainer.checkpoints import check_resumable
from trainer.model import BaseModelInfo, load_base_model, seed_everything
from trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "training_info.json"

# fit's LoRA defaults (chronos.chronos2.pipeline.Chronos2Pipeline.fit)
LORA_DEFAULTS: dict[str, Any] = {
    "r": 8,
    "lora_alpha": 16,
    "target_modules": [
        "self_attention.q",
        "self_attention.v",
        "self_attention.k",
        "self_attention.o",
        "output_patch_embedding.output_layer",
    ],
}


@dataclass(frozen=True, kw_only=True)
class TrainResult:
    """What a :func:`train` call did.

    Attributes:
        final_step: global step reached.
        total_steps: ``num_steps`` requested.
        losses: ``(step, loss)`` for every step so far, including steps before a resume.
        final_model_dir: the saved final model, ``None`` when interrupted.
        checkpoints: checkpoint folders saved by this call, oldest first.
        interrupted: stopped before ``total_steps`` (``should_stop``).
        resumed_from: the checkpoint this call resumed from.
        duration_s: wall time of the call (model build, training, final save).
        steps_per_s: optimizer steps per second of this call's training loop.
        base_model: where the weights came from.
        trainable_params: parameters updated by training.
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

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "final_step": self.final_step,
            "total_steps": self.total_steps,
            "losses": [[s, loss] for s, loss in self.losses],
            "final_model_dir": str(self.final_model_dir) if self.final_model_dir else None,
            "checkpoints": [str(p) for p in self.checkpoints],
            "interrupted": self.interrupted,
            "resumed_from": str(self.resumed_from) if self.resumed_from else None,
            "duration_s": self.duration_s,
            "steps_per_s": self.steps_per_s,
            "base_model": self.base_model.to_dict(),
            "trainable_params": self.trainable_params,
        }


def train(
    model_source: str,
    train_inputs: Sequence[dict[str, Any]],
    config: TrainConfig,
    *,
    resume_from: Path | None = None,
    hooks: TrainHooks | None = None,
) -> TrainResult:
    """Train (or resume training) and save the final model.

    Args:
        model_source: base model string (see :func:`trainer.model.load_base_model`).
        train_inputs: Chronos-2 input dicts (``Dataset.train_inputs``).
        config: hyperparameters and output folder.
        resume_from: a complete checkpoint folder to resume from.
        hooks: progress callbacks, checkpoint and stop requests (none by default).

    Returns:
        The :class:`TrainResult`.

    Raises:
        trainer.checkpoints.CheckpointError: ``resume_from`` is incomplete or was made
            with other settings.
        trainer.model.ModelLoadError: the base model cannot be loaded.
        ValueError: the inputs are empty or too short for the config.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.monotonic()
    if resume_from is not None:
        resume_from = Path(resume_from).resolve()
        check_resumable(resume_from, config)
    hooks = hooks or TrainHooks()
    control = ControlCallback(total=config.num_steps, hooks=hooks, step_delay_s=config.step_delay_s)
    extra = [control, *hooks.callbacks]
    if resume_from is not None:
        extra.insert(0, RestoreTorchRngCallback(resume_from))
    threads = torch.get_num_threads()
    if config.device == "cpu" and config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        run = _run(model_source, train_inputs, config, control, extra, resume_from)
    finally:
        torch.set_num_threads(threads)
    result = run.result(config, control, resume_from, time.monotonic() - started)
    logger.info(
        "training %s at step %d/%d (%.1f steps/s)",
        "interrupted" if result.interrupted else "finished", result.final_step, config.num_steps,
        result.steps_per_s,
    )  # fmt: skip
    return result


@dataclass(frozen=True, kw_only=True)
class _Run:
    """What the training loop left: the trainer, its base model and the loop's time."""

    trainer: Any
    info: BaseModelInfo
    trainable: int
    loop_s: float
    final_dir: Path | None

    def result(
        self, config: TrainConfig, control: ControlCallback, resume_from: Path | None, duration_s: float
    ) -> TrainResult:
        final_step = int(self.trainer.state.global_step)
        start_step = (checkpoint_step(resume_from.name) or 0) if resume_from else 0
        return TrainResult(
            final_step=final_step,
            total_steps=config.num_steps,
            losses=tuple(
                (int(entry["step"]), float(entry["loss"]))
                for entry in self.trainer.state.log_history
                if "loss" in entry and "step" in entry
            ),
            final_model_dir=self.final_dir,
            checkpoints=tuple(control.saved),
            interrupted=final_step < config.num_steps,
            resumed_from=resume_from,
            duration_s=duration_s,
            steps_per_s=(final_step - start_step) / self.loop_s if self.loop_s > 0 else 0.0,
            base_model=self.info,
            trainable_params=self.trainable,
        )


def _run(
    model_source: str,
    train_inputs: Sequence[dict[str, Any]],
    config: TrainConfig,
    control: ControlCallback,
    callbacks: list[Any],
    resume_from: Path | None,
) -> _Run:
    """Build the trainer, train (or load the finished last checkpoint), save the final model."""
    trainer, info, trainable = _build_trainer(model_source, train_inputs, config, callbacks)
    control.base_model = {**info.to_dict(), "seed": config.seed}
    loop_started = time.monotonic()
    if resume_from is not None and checkpoint_step(resume_from.name) == config.num_steps:
        _load_finished_checkpoint(trainer, resume_from)
    else:
        trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
    loop_s = time.monotonic() - loop_started
    interrupted = int(trainer.state.global_step) < config.num_steps
    final_dir = None if interrupted else _save_final_model(trainer.model, info, config)
    return _Run(trainer=trainer, info=info, trainable=trainable, loop_s=loop_s, final_dir=final_dir)


def _build_trainer(
    model_source: str,
    train_inputs: Sequence[dict[str, Any]],
    config: TrainConfig,
    callbacks: list[Any],
) -> tuple[Any, BaseModelInfo, int]:
    """Seeded model (and LoRA wrapper), training dataset and ``Chronos2Trainer``."""
    from chronos.chronos2.dataset import Chronos2Dataset, DatasetMode
    from chronos.chronos2.trainer import Chronos2Trainer
    from transformers.trainer_callback import PrinterCallback

    model, info = load_base_model(model_source, device=config.device, seed=config.seed)
    output_patch_size = int(model.chronos_config.output_patch_size)
    if config.finetune_mode == "lora":
        from peft import LoraConfig, get_peft_model

        seed_everything(config.seed)
        model = get_peft_model(model, LoraConfig(**LORA_DEFAULTS))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    dataset = Chronos2Dataset(
        inputs=list(train_inputs),
        context_length=config.context_length,
        prediction_length=config.prediction_length,
        batch_size=config.batch_size,
        output_patch_size=output_patch_size,
        min_past=config.min_past if config.min_past is not None else config.prediction_length,
        mode=DatasetMode.TRAIN,
    )
    trainer = Chronos2Trainer(
        model=model,
        args=training_arguments(config),
        train_dataset=dataset,
        callbacks=callbacks,
    )
    trainer.pop_callback(PrinterCallback)
    logger.info(
        "training %s (%s) for %d steps; %d trainable parameters",
        info.base, config.finetune_mode, config.num_steps, trainable,
    )  # fmt: skip
    return trainer, info, trainable


def _load_finished_checkpoint(trainer: Any, checkpoint: Path) -> None:
    """Take weights and state from the last step's checkpoint without training.

    ``Trainer.train`` would run one step past ``max_steps`` when resumed at the end.
    """
    from transformers.trainer_callback import TrainerState

    logger.info("%s is the last step: loading it, no training left", checkpoint)
    trainer._load_from_checkpoint(str(checkpoint))
    trainer.state = TrainerState.load_from_json(str(checkpoint / TRAINER_STATE_NAME))


def training_arguments(config: TrainConfig) -> Any:
    """The ``TrainingArguments`` of ``config`` (batch, lr schedule, seed, save steps, precision)."""
    from transformers.training_args import TrainingArguments

    on_gpu = config.device == "cuda"
    has_sm80 = on_gpu and torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    args = TrainingArguments(
        output_dir=str(config.checkpoints_dir),
        per_device_train_batch_size=config.batch_size,
        learning_rate=config.learning_rate,
        lr_scheduler_type="linear",
        warmup_steps=0,
        optim="adamw_torch_fused",
        logging_strategy="steps",
        logging_steps=1,
        disable_tqdm=True,
        report_to="none",
        max_steps=config.num_steps,
        gradient_accumulation_steps=1,
        dataloader_num_workers=0,
        tf32=has_sm80,
        bf16=has_sm80,
        save_strategy="steps",
        save_steps=config.checkpoint_interval,
        save_only_model=False,
        save_total_limit=config.save_total_limit,
        prediction_loss_only=True,
        eval_strategy="no",
        ignore_data_skip=True,
        seed=config.seed,
        use_cpu=not on_gpu,
    )
    if on_gpu:
        args._n_gpu = 1  # no DataParallel (as fit's disable_data_parallel)
    return args


def _save_final_model(model: Any, info: BaseModelInfo, config: TrainConfig) -> Path:
    from chronos.chronos2 import Chronos2Pipeline

    if config.finetune_mode == "lora":
        model = model.merge_and_unload()
    chronos_config = model.chronos_config
    chronos_config.context_length = max(chronos_config.context_length, config.context_length)
    chronos_config.max_output_patches = max(
        chronos_config.max_output_patches,
        math.ceil(config.prediction_length / chronos_config.output_patch_size),
    )
    model.config.chronos_config = chronos_config.__dict__
    model.eval()
    final_dir = config.final_model_dir
    staging = final_dir.with_name(final_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    Chronos2Pipeline(model=model).save_pretrained(staging)
    training_info = {
        "base_model": info.to_dict(),
        "finetune_mode": config.finetune_mode,
        "lora": LORA_DEFAULTS if config.finetune_mode == "lora" else None,
        "final_step": config.num_steps,
        "train_config": config.to_dict(),
    }
    (staging / TRAINING_INFO_NAME).write_text(json.dumps(training_info, indent=2))
    shutil.rmtree(final_dir, ignore_errors=True)
    staging.rename(final_dir)
    logger.info("final model saved to %s", final_dir)
    return final_dir
