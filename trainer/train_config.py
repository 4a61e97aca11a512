"""What one training run is asked to do: :class:`TrainConfig`, built from the run spec.

Torch-free, so the trainer's driver builds the training child's config without
importing the training stack. Every hyperparameter the run spec names (batch size,
seed, checkpoint interval ...) is required here and comes from the validated spec
through :meth:`TrainConfig.from_spec`: the schema (``schemas/run-spec.schema.json``)
is the only place that gives it a default. The fields without a default in the
schema are settings of the machine or of a test (device, threads, throttling).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.gpus import batch_split_problem
from common.runspec import ModelSpec

CHECKPOINTS_DIRNAME = "checkpoints"
FINAL_MODEL_DIRNAME = "model"
FINETUNE_MODES = ("full", "lora")
DEVICES = ("cpu", "cuda")
PRECISIONS = ("auto", "fp32", "fp16", "bf16")
GPU_LOG_INTERVAL = 10  # log_interval "auto" on CUDA: each loss report is a device sync


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
        eval_interval: score the validation window every this many steps (and at step 0,
            the base model, and at the last step).
        early_stopping_patience: stop after this many validations without a better
            validation WQL; ``None``: never.
        precision: ``auto``, ``fp32``, ``fp16`` or ``bf16`` (see :mod:`trainer.precision`).
        log_interval: report the loss every this many steps.
        device: ``"cpu"`` or ``"cuda"``.
        min_past: fewest past steps per training window (``None``: prediction_length).
        save_total_limit: keep at most this many checkpoints locally (``None``: all).
        step_delay_s: sleep after each step (throttle for demos and tests; no effect
            on results).
        cpu_threads: torch intra-op threads while training on CPU (set for the call,
            restored after). 1 is fastest for small models on small machines and avoids
            OpenMP spin-wait slowdowns (10x measured) when other processes share the
            cores; ``None`` keeps torch's default. Ignored on CUDA.
        world_size: data-parallel training processes (one per GPU, under torchrun;
            :mod:`trainer.distributed`). ``batch_size`` stays the effective batch: each
            process takes ``batch_size / world_size`` series per optimizer step.
        micro_batch: series per forward pass on each process (``None``: the whole share,
            no gradient accumulation); must divide ``batch_size / world_size``.

    Raises:
        ValueError: a value out of range, naming the field.
    """

    prediction_length: int
    context_length: int
    num_steps: int
    learning_rate: float
    output_dir: Path
    batch_size: int
    finetune_mode: str
    checkpoint_interval: int
    seed: int
    eval_interval: int
    early_stopping_patience: int | None
    precision: str
    log_interval: int
    device: str = "cpu"
    min_past: int | None = None
    save_total_limit: int | None = None
    step_delay_s: float = 0.0
    cpu_threads: int | None = 1
    world_size: int = 1
    micro_batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "output_dir", Path(self.output_dir))
        for name in ("prediction_length", "context_length", "num_steps", "batch_size",
                     "checkpoint_interval", "eval_interval", "log_interval"):  # fmt: skip
            if int(getattr(self, name)) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if not self.learning_rate > 0:
            raise ValueError(f"TrainConfig.learning_rate must be > 0, got {self.learning_rate}")
        if self.finetune_mode not in FINETUNE_MODES:
            raise ValueError(
                f"TrainConfig.finetune_mode must be one of {FINETUNE_MODES}, got {self.finetune_mode!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(f"TrainConfig.precision must be one of {PRECISIONS}, got {self.precision!r}")
        if self.device not in DEVICES:
            raise ValueError(f"TrainConfig.device must be one of {DEVICES}, got {self.device!r}")
        self._check_optional()

    def _check_optional(self) -> None:
        if self.min_past is not None and self.min_past < 1:
            raise ValueError(f"TrainConfig.min_past must be >= 1, got {self.min_past}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ValueError("TrainConfig.early_stopping_patience must be >= 1 or None")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError("TrainConfig.save_total_limit must be >= 1 or None")
        if self.step_delay_s < 0:
            raise ValueError("TrainConfig.step_delay_s must be >= 0")
        if self.cpu_threads is not None and self.cpu_threads < 1:
            raise ValueError("TrainConfig.cpu_threads must be >= 1 or None")
        self._check_split()

    def _check_split(self) -> None:
        if self.world_size < 1:
            raise ValueError(f"TrainConfig.world_size must be >= 1, got {self.world_size}")
        problem = batch_split_problem(self.batch_size, self.world_size)
        if problem is not None:
            raise ValueError(problem)
        share = self.batch_size // self.world_size
        if self.micro_batch is not None and (self.micro_batch < 1 or share % self.micro_batch):
            raise ValueError(
                f"TrainConfig.micro_batch {self.micro_batch} must divide the {share} series each of "
                f"the {self.world_size} processes takes per step"
            )

    @property
    def per_rank_batch(self) -> int:
        """Series per optimizer step on each training process."""
        return self.batch_size // self.world_size

    @classmethod
    def from_spec(
        cls,
        model: ModelSpec,
        *,
        output_dir: Path,
        device: str = "cpu",
        step_delay_s: float = 0.0,
        world_size: int = 1,
    ) -> TrainConfig:
        """The training of a resolved run spec's ``model`` section (see :meth:`RunSpec.resolved`).

        Raises:
            ValueError: ``context_length`` or ``learning_rate`` still ``"auto"``.
        """
        if isinstance(model.context_length, str) or isinstance(model.learning_rate, str):
            raise ValueError("resolve the run spec first: context_length and learning_rate are 'auto'")
        log_interval = model.log_interval
        if isinstance(log_interval, str):  # "auto"
            log_interval = GPU_LOG_INTERVAL if device == "cuda" else 1
        return cls(
            prediction_length=model.prediction_length,
            context_length=model.context_length,
            num_steps=model.num_steps,
            learning_rate=float(model.learning_rate),
            output_dir=output_dir,
            batch_size=model.batch_size,
            finetune_mode=model.finetune_mode.value,
            checkpoint_interval=model.checkpoint_interval,
            seed=model.seed,
            eval_interval=model.eval_interval,
            early_stopping_patience=model.early_stopping_patience,
            precision=model.precision,
            log_interval=int(log_interval),
            device=device,
            step_delay_s=step_delay_s,
            world_size=world_size,
        )

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
        """Build from a dict; unknown keys are an error.

        Raises:
            ValueError: an unknown key or a value out of range.
            TypeError: a required key missing.
        """
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys: {', '.join(sorted(unknown))}")
        return cls(**data)
