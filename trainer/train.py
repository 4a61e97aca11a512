"""Resumable Chronos-2 fine-tuning (full or LoRA) with exact resume.

In-process API: :func:`train`, :func:`find_latest_complete_checkpoint`,
:class:`TrainConfig`, :class:`TrainResult`. Training uses ``Chronos2Dataset`` and
``Chronos2Trainer`` directly (``Chronos2Pipeline.fit`` keeps no optimizer state).
A resume from a checkpoint reproduces the per-step losses and final weights of an
uninterrupted run bit for bit (same seed, data, num_steps, batch size, lr, device).

Layout under ``TrainConfig.output_dir``::

    checkpoints/checkpoint-<step>/   full checkpoints (weights or LoRA adapter, optimizer,
                                     scheduler, RNG states); trainer_state.json written last,
                                     then base_model.json (what a LoRA adapter applies to)
    model/                           final model: Chronos2Pipeline.from_pretrained(model/)
                                     (LoRA merged into the base), plus training_info.json

Child-process protocol (``python -m trainer.train --config cfg.json``)
----------------------------------------------------------------------
``cfg.json``::

    {
      "base_model": "tiny" | "/abs/model/dir" | "amazon/chronos-2[@revision]",
      "train": {<TrainConfig fields>, "output_dir": "/abs/dir"},
      "inputs": "/abs/train_inputs.npz",            # written by trainer.data.save_inputs
        or "data": {"files": ["/abs/a.parquet", ...], "spec": {<DataSpec fields>}},
      "resume_from": null | "auto" | "/abs/checkpoints/checkpoint-40",
      "progress_path": "/abs/progress.jsonl",
      "result_path": "/abs/result.json"
    }

``resume_from: "auto"`` resumes from the newest complete checkpoint under
``<output_dir>/checkpoints`` (none: start fresh).

Progress file: JSON lines, appended and flushed one event per line:

- ``{"event": "start", "ts", "pid", "total", "start_step", "resume_from"}``
- ``{"event": "step", "step", "total", "loss", "ts"}`` after every optimizer step
- ``{"event": "checkpoint", "step", "path", "ts"}`` once the checkpoint folder is complete
- ``{"event": "end", "status", "step", "exit_code", "ts"[, "error"]}``

``ts`` is Unix time in seconds. ``status`` is ``completed``, ``interrupted`` or
``failed``. The result file (written atomically at exit) holds
:meth:`TrainResult.to_dict` plus ``status`` and ``exit_code``. A SIGKILLed child
writes no ``end`` event and no result: resume with ``"resume_from": "auto"``.
Determinism: bit-exact resume holds on CPU (same ``cpu_threads``); on CUDA
(bf16/tf32 kernels) a resume continues from the same state but is not promised
to be bit-identical.

Signals: SIGTERM or SIGINT -> checkpoint at the end of the current step, then stop
(exit 3); SIGUSR1 -> checkpoint at the end of the current step and go on.

Exit codes: 0 completed all steps (final model saved); 3 stopped early on request
after saving a checkpoint; 4 invalid training data (the message names file/item);
2 invalid config, arguments, inputs file, base model or checkpoint; 1 any other
failure. On failure the result file holds ``{"status": "failed", "error", "exit_code"}``
(not for exit 2 from an unreadable config: nothing says where to write then).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from trainer.model import BaseModelInfo, load_base_model, seed_everything

logger = logging.getLogger(__name__)

CHECKPOINTS_DIRNAME = "checkpoints"
FINAL_MODEL_DIRNAME = "model"
TRAINING_INFO_NAME = "training_info.json"
BASE_MODEL_INFO_NAME = "base_model.json"
CHECKPOINT_PREFIX = "checkpoint-"
TRAINER_STATE_NAME = "trainer_state.json"
FINETUNE_MODES = ("full", "lora")
DEVICES = ("cpu", "cuda")
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

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_BAD_CONFIG = 2
EXIT_STOPPED = 3
EXIT_BAD_DATA = 4


class CheckpointError(Exception):
    """A checkpoint cannot be resumed from; the message says which and why."""


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Hyperparameters and where outputs go. Keep them identical across resumes.

    Attributes:
        prediction_length: horizon trained for.
        context_length: longest context per training window.
        num_steps: total optimizer steps (the lr schedule depends on it).
        learning_rate: peak lr of the linear schedule (~1e-3 for a random-init tiny
            model, ~1e-5/1e-6 to fine-tune pretrained weights).
        output_dir: holds ``checkpoints/`` and ``model/``.
        batch_size: series per batch (targets and covariates count).
        finetune_mode: ``"full"`` or ``"lora"`` (fit's LoRA defaults).
        checkpoint_interval: save a full checkpoint every this many steps.
        seed: seeds model init, LoRA init and data sampling.
        device: ``"cpu"`` or ``"cuda"``.
        min_past: fewest past steps per training window (``None``: prediction_length).
        save_total_limit: keep at most this many checkpoints locally (``None``: all).
        step_delay_s: sleep after each step (throttle for demos and tests; no effect
            on results).
        cpu_threads: torch intra-op threads while training on CPU (set for the call,
            restored after). 1 is fastest for small models on small machines and avoids
            OpenMP spin-wait slowdowns (10x measured) when other processes share the
            cores; ``None`` keeps torch's default. Ignored on CUDA.
    """

    prediction_length: int
    context_length: int
    num_steps: int
    learning_rate: float
    output_dir: Path
    batch_size: int = 64
    finetune_mode: str = "full"
    checkpoint_interval: int = 100
    seed: int = 0
    device: str = "cpu"
    min_past: int | None = None
    save_total_limit: int | None = None
    step_delay_s: float = 0.0
    cpu_threads: int | None = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        for name in ("prediction_length", "context_length", "num_steps", "batch_size",
                     "checkpoint_interval"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.finetune_mode not in FINETUNE_MODES:
            raise ValueError(
                f"TrainConfig.finetune_mode must be one of {FINETUNE_MODES}, got {self.finetune_mode!r}"
            )
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device must be one of {DEVICES}, got {self.device!r}")
        if self.min_past is not None and self.min_past < 1:
            raise ValueError(f"TrainConfig.min_past must be >= 1, got {self.min_past}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError("TrainConfig.save_total_limit must be >= 1 or None")
        if self.step_delay_s < 0:
            raise ValueError("TrainConfig.step_delay_s must be >= 0")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError("TrainConfig.cpu_threads must be >= 1 or None")

    @property
    def checkpoints_dir(self) -> Path:
        """Folder of the ``checkpoint-<step>`` folders."""
        return self.output_dir / CHECKPOINTS_DIRNAME

    @property
    def final_model_dir(self) -> Path:
        """Folder of the final model."""
        return self.output_dir / FINAL_MODEL_DIRNAME

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        data = asdict(self)
        data["output_dir"] = str(self.output_dir)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Build from a dict; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {', '.join(sorted(unknown))}")
        return cls(**data)


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


def checkpoint_step(path: Path) -> int | None:
    """Step number of a ``checkpoint-<step>`` folder name, else ``None``."""
    name = Path(path).name
    if not name.startswith(CHECKPOINT_PREFIX):
        return None
    suffix = name[len(CHECKPOINT_PREFIX) :]
    return int(suffix) if suffix.isdigit() else None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or ``None`` when it is.

    Complete: ``trainer_state.json`` (written last) loads and names the folder's step,
    and weights, optimizer, scheduler and RNG state files are present.
    """
    path = Path(path)
    step = checkpoint_step(path)
    if step is None:
        return f"{path.name} is not named {CHECKPOINT_PREFIX}<step>"
    state_file = path / TRAINER_STATE_NAME
    if not state_file.is_file():
        return f"{TRAINER_STATE_NAME} is missing"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        return f"{TRAINER_STATE_NAME} does not load ({exc})"
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"{TRAINER_STATE_NAME} does not record global_step {step}"
    weights = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")
    if not any((path / w).is_file() for w in weights):
        return "no model or adapter weights"
    missing = [f for f in ("optimizer.pt", "scheduler.pt", "rng_state.pth") if not (path / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    return None


def find_latest_complete_checkpoint(directory: Path) -> Path | None:
    """Newest complete ``checkpoint-<step>`` folder in ``directory``.

    Torn folders (interrupted while saving) are skipped with a warning.

    Args:
        directory: the checkpoints folder (``TrainConfig.checkpoints_dir``).

    Returns:
        The folder, or ``None`` when there is none (or ``directory`` does not exist).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    candidates = [p for p in directory.iterdir() if p.is_dir() and checkpoint_step(p) is not None]
    for path in sorted(candidates, key=lambda p: checkpoint_step(p) or 0, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None


def train(
    model_source: str,
    train_inputs: Sequence[dict[str, Any]],
    config: TrainConfig,
    *,
    resume_from: Path | None = None,
    callbacks: Sequence[Any] = (),
    on_step: Callable[[int, int, float], None] | None = None,
    should_checkpoint_now: Callable[[], bool] | None = None,
    should_stop: Callable[[], bool] | None = None,
    on_checkpoint_saved: Callable[[Path, int], None] | None = None,
) -> TrainResult:
    """Train (or resume training) and save the final model.

    Args:
        model_source: base model string (see :func:`trainer.model.load_base_model`).
        train_inputs: Chronos-2 input dicts (``Dataset.train_inputs``).
        config: hyperparameters and output folder.
        resume_from: a complete checkpoint folder to resume from.
        callbacks: extra ``transformers.TrainerCallback`` objects.
        on_step: called after every step with ``(step, total_steps, loss)``.
        should_checkpoint_now: polled at the end of every step (before ``on_step`` of that
            step); ``True`` saves a checkpoint of that step.
        should_stop: polled at the end of every step, first; ``True`` saves a checkpoint of
            that step and stops (``interrupted`` unless it was the last step).
        on_checkpoint_saved: called with ``(folder, step)`` once a checkpoint is complete.

    Returns:
        The :class:`TrainResult`.

    Raises:
        CheckpointError: ``resume_from`` is incomplete or was made with other settings.
        trainer.model.ModelLoadError: the base model cannot be loaded.
        ValueError: the inputs are empty or too short for the config.
    """
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    started = time.monotonic()
    if resume_from is not None:
        resume_from = Path(resume_from).resolve()
        _check_resumable(resume_from, config)
    control = _ControlCallback(
        total=config.num_steps,
        on_step=on_step,
        should_checkpoint_now=should_checkpoint_now,
        should_stop=should_stop,
        on_checkpoint_saved=on_checkpoint_saved,
        step_delay_s=config.step_delay_s,
    )
    extra = [control, *callbacks]
    if resume_from is not None:
        extra.insert(0, _RestoreTorchRngCallback(resume_from))
    threads = torch.get_num_threads()
    if config.device == "cpu" and config.cpu_threads is not None:
        torch.set_num_threads(config.cpu_threads)
    try:
        trainer, info, trainable = _build_trainer(model_source, train_inputs, config, extra)
        control.base_model = {**info.to_dict(), "seed": config.seed}
        loop_started = time.monotonic()
        if resume_from is not None and checkpoint_step(resume_from) == config.num_steps:
            _load_finished_checkpoint(trainer, resume_from)
        else:
            trainer.train(resume_from_checkpoint=str(resume_from) if resume_from else None)
        loop_s = time.monotonic() - loop_started
        final_step = int(trainer.state.global_step)
        interrupted = final_step < config.num_steps
        final_dir = None if interrupted else _save_final_model(trainer.model, info, config)
    finally:
        torch.set_num_threads(threads)
    start_step = (checkpoint_step(resume_from) or 0) if resume_from else 0
    result = TrainResult(
        final_step=final_step,
        total_steps=config.num_steps,
        losses=tuple(
            (int(entry["step"]), float(entry["loss"]))
            for entry in trainer.state.log_history
            if "loss" in entry and "step" in entry
        ),
        final_model_dir=final_dir,
        checkpoints=tuple(control.saved),
        interrupted=interrupted,
        resumed_from=resume_from,
        duration_s=time.monotonic() - started,
        steps_per_s=(final_step - start_step) / loop_s if loop_s > 0 else 0.0,
        base_model=info,
        trainable_params=trainable,
    )
    logger.info(
        "training %s at step %d/%d (%.1f steps/s)",
        "interrupted" if interrupted else "finished", final_step, config.num_steps,
        result.steps_per_s,
    )  # fmt: skip
    return result


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
        args=_training_arguments(config),
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


def _training_arguments(config: TrainConfig) -> Any:
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


def _check_resumable(path: Path, config: TrainConfig) -> None:
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"cannot resume from {path}: {problem}")
    state = json.loads((path / TRAINER_STATE_NAME).read_text())
    expected = {"max_steps": config.num_steps, "train_batch_size": config.batch_size}
    for key, value in expected.items():
        if key in state and state[key] != value:
            raise CheckpointError(
                f"cannot resume from {path}: it was trained with {key}={state[key]}, "
                f"this run has {value} (keep num_steps and batch_size identical across resumes)"
            )
    is_adapter = (path / "adapter_model.safetensors").is_file()
    if is_adapter != (config.finetune_mode == "lora"):
        kind = "a LoRA adapter" if is_adapter else "full weights"
        raise CheckpointError(
            f"cannot resume from {path}: it holds {kind}, this run is finetune_mode={config.finetune_mode!r}"
        )


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


def _trainer_callback_base() -> type:
    from transformers.trainer_callback import TrainerCallback

    return TrainerCallback


class _ControlCallback(_trainer_callback_base()):  # type: ignore[misc]
    """Per-step loss reporting, on-demand checkpoints, stop requests, saved-checkpoint hook."""

    def __init__(
        self,
        *,
        total: int,
        on_step: Callable[[int, int, float], None] | None,
        should_checkpoint_now: Callable[[], bool] | None,
        should_stop: Callable[[], bool] | None,
        on_checkpoint_saved: Callable[[Path, int], None] | None,
        step_delay_s: float,
    ) -> None:
        self.total = total
        self.on_step = on_step
        self.should_checkpoint_now = should_checkpoint_now
        self.should_stop = should_stop
        self.on_checkpoint_saved = on_checkpoint_saved
        self.step_delay_s = step_delay_s
        self.saved: list[Path] = []
        self.base_model: dict[str, Any] | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if self.should_stop is not None and self.should_stop():
            logger.info("stop requested: checkpoint at step %d, then stop", state.global_step)
            control.should_save = True
            control.should_training_stop = True
        elif self.should_checkpoint_now is not None and self.should_checkpoint_now():
            logger.info("checkpoint requested at step %d", state.global_step)
            control.should_save = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        if logs and "loss" in logs and self.on_step is not None:
            self.on_step(int(state.global_step), self.total, float(logs["loss"]))
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        path = Path(args.output_dir) / f"{CHECKPOINT_PREFIX}{state.global_step}"
        if self.base_model is not None:
            (path / BASE_MODEL_INFO_NAME).write_text(json.dumps(self.base_model, indent=2))
        self.saved.append(path)
        logger.info("checkpoint saved: %s", path)
        if self.on_checkpoint_saved is not None:
            self.on_checkpoint_saved(path, int(state.global_step))
        return control


class _RestoreTorchRngCallback(_trainer_callback_base()):  # type: ignore[misc]
    """Re-restore torch's RNG from the checkpoint just before the first resumed step.

    The Trainer restores every RNG before it creates the DataLoader iterator, and that
    creation draws one torch random number (the loader's base seed); the numpy state,
    which drives batch sampling, is already correct and is left alone.
    """

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint
        self.done = False

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.done:
            return control
        self.done = True
        from transformers.trainer_pt_utils import safe_globals

        with safe_globals():
            rng = torch.load(self.checkpoint / "rng_state.pth", weights_only=True)
        torch.random.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.random.set_rng_state(rng["cuda"])
        return control


# ---- child process entry point -------------------------------------------------------


class _ProgressWriter:
    """Append JSON lines to the progress file, one flushed line per event."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"event": event, **fields, "ts": time.time()})
        with self.lock, self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()


class _Flags:
    """Set from signal handlers, polled by the training loop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.checkpoint = threading.Event()

    def take_checkpoint(self) -> bool:
        if self.checkpoint.is_set():
            self.checkpoint.clear()
            return True
        return False


def _load_child_inputs(cfg: dict[str, Any], config: TrainConfig) -> list[dict[str, Any]]:
    from common.runspec import DataSpec
    from trainer.data import load_dataset
    from trainer.inputs_file import load_inputs

    if "inputs" in cfg:
        return load_inputs(Path(cfg["inputs"]))
    if "data" in cfg:
        spec = DataSpec.from_dict(cfg["data"]["spec"], source="data.spec")
        files = [Path(f) for f in cfg["data"]["files"]]
        return load_dataset(
            files, spec, prediction_length=config.prediction_length, min_past=config.min_past
        ).train_inputs
    raise ValueError("config needs 'inputs' (an .npz from save_inputs) or 'data' (files + spec)")


def _resolve_resume(value: Any, config: TrainConfig) -> Path | None:
    if value in (None, ""):
        return None
    if value == "auto":
        return find_latest_complete_checkpoint(config.checkpoints_dir)
    return Path(value)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training as a child process (see the module docstring). Returns the exit code.

    Signal handlers are installed for the call and restored afterwards.
    """
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="training config JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )  # fmt: skip
    try:
        cfg = json.loads(args.config.read_text())
        config = TrainConfig.from_dict(cfg["train"])
        base_model = str(cfg["base_model"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.error("invalid config %s: %s", args.config, exc)
        return EXIT_BAD_CONFIG
    flags = _Flags()
    handlers = {
        signal.SIGTERM: lambda *_: flags.stop.set(),
        signal.SIGINT: lambda *_: flags.stop.set(),
        signal.SIGUSR1: lambda *_: flags.checkpoint.set(),
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        return _run_child(cfg, config, base_model, flags)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_child(cfg: dict[str, Any], config: TrainConfig, base_model: str, flags: _Flags) -> int:
    from common.errors import ConfigError
    from trainer.data_validation import DataValidationError
    from trainer.model import ModelLoadError

    progress = _ProgressWriter(Path(cfg["progress_path"]) if cfg.get("progress_path") else None)
    result_path = Path(cfg["result_path"]) if cfg.get("result_path") else None
    step = 0
    try:
        inputs = _load_child_inputs(cfg, config)
        resume_from = _resolve_resume(cfg.get("resume_from"), config)
        step = (checkpoint_step(resume_from) or 0) if resume_from else 0
        progress.write(
            "start", pid=os.getpid(), total=config.num_steps, start_step=step,
            resume_from=str(resume_from) if resume_from else None,
        )  # fmt: skip
        result = train(
            base_model, inputs, config,
            resume_from=resume_from,
            on_step=lambda s, total, loss: progress.write("step", step=s, total=total, loss=loss),
            should_checkpoint_now=flags.take_checkpoint,
            should_stop=flags.stop.is_set,
            on_checkpoint_saved=lambda p, s: progress.write("checkpoint", step=s, path=str(p)),
        )  # fmt: skip
    except DataValidationError as exc:
        return _fail(progress, result_path, step, EXIT_BAD_DATA, str(exc))
    except (ValueError, ConfigError, CheckpointError, ModelLoadError) as exc:
        return _fail(progress, result_path, step, EXIT_BAD_CONFIG, str(exc))
    except Exception as exc:  # the parent needs a status whatever went wrong
        logger.exception("training failed")
        return _fail(progress, result_path, step, EXIT_FAILED, f"{type(exc).__name__}: {exc}")
    status = "interrupted" if result.interrupted else "completed"
    code = EXIT_STOPPED if result.interrupted else EXIT_OK
    if result_path is not None:
        _write_json(result_path, {"status": status, "exit_code": code, **result.to_dict()})
    progress.write("end", status=status, step=result.final_step, exit_code=code)
    return code


def _fail(progress: _ProgressWriter, result_path: Path | None, step: int, code: int, error: str) -> int:
    logger.error("training failed: %s", error)
    if result_path is not None:
        _write_json(result_path, {"status": "failed", "error": error, "exit_code": code})
    progress.write("end", status="failed", step=step, exit_code=code, error=error)
    return code


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
