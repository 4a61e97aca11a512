"""GPU training precision and batch shape: what the device runs, and what to fall back to.

:func:`plan_precision` turns the run spec's ``precision`` (``auto``, ``fp32``, ``fp16``,
``bf16``) and the device into a :class:`PrecisionPlan`: the resolved mode, why, and the
batch split into a per-device micro-batch times gradient accumulation (same effective
batch). The training loop asks :func:`after_oom` for the next plan on a CUDA
out-of-memory (half the micro-batch, twice the accumulation) and :func:`after_nan` when
:class:`NanGuard` sees a non-finite loss under fp16/bf16 (fp32, same batches); it retries
from the last checkpoint and records each change in a :class:`PrecisionRecord`. The plan
is written into the output folder and every checkpoint (:data:`PLAN_FILE`), so a resume
keeps what was learnt (:func:`resume_plan`).

fp16 needs a gradient scaler, and the Trainer brings one: ``TrainingArguments(fp16=True)``
sets ``mixed_precision = "fp16"`` (transformers/training_args.py, ``__post_init__``
"Mixed Precision"), ``Trainer._build_accelerator_args`` hands it to ``accelerate.Accelerator``,
whose ``__init__`` creates ``self.scaler = get_grad_scaler(...)`` when the device is not the
CPU (accelerate/accelerator.py), a ``torch.amp.GradScaler("cuda")``
(accelerate/utils/modeling.py ``get_grad_scaler``); ``Accelerator.backward`` runs
``scaler.scale(loss).backward()`` and ``clip_grad_norm_`` unscales first. The Trainer saves
its state as ``scaler.pt`` in each checkpoint (trainer.py ``_save_scaler``) and, on resume,
loads it into ``accelerator.scaler`` whenever the file exists (``_load_scaler``): a resume in
another mode must drop it first (:func:`strip_scaler_state`).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from transformers.trainer_callback import TrainerCallback

from common.layout import checkpoint_name
from trainer.train_config import DEVICES, PRECISIONS

logger = logging.getLogger(__name__)

PLAN_FILE = "precision.json"
SCALER_FILE = "scaler.pt"  # transformers.trainer.SCALER_NAME: the GradScaler state of an fp16 checkpoint
MODES = ("fp32", "fp16", "bf16")
OOM_MESSAGES = ("CUDA out of memory", "CUBLAS_STATUS_ALLOC_FAILED", "CUDA error: out of memory")
GRAD_NORM_PATIENCE = 3  # fp16: logs in a row with an infinite gradient norm before giving up on the scaler


@dataclass(frozen=True, kw_only=True)
class PrecisionPlan:
    """How one training attempt runs on its device.

    Attributes:
        mode: ``"fp32"``, ``"fp16"`` or ``"bf16"`` (resolved; never ``auto``).
        reason: why this mode, e.g. ``"auto: sm86 supports bf16"``.
        micro_batch: series per forward pass on the device.
        grad_accum: micro-batches per optimizer step; ``micro_batch * grad_accum`` is the
            spec's batch size.
        tf32: TF32 matmuls (sm80+ only).

    Raises:
        ValueError: an unknown mode or a batch split below 1.
    """

    mode: str
    reason: str
    micro_batch: int
    grad_accum: int
    tf32: bool = False

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"precision mode must be one of {MODES}, got {self.mode!r}")
        if self.micro_batch < 1 or self.grad_accum < 1:
            raise ValueError(
                f"micro_batch and grad_accum must be >= 1, got {self.micro_batch} x {self.grad_accum}"
            )

    @property
    def batch_size(self) -> int:
        """The effective batch: series per optimizer step."""
        return self.micro_batch * self.grad_accum

    def describe(self) -> str:
        """Short label, e.g. ``"fp16, micro-batch 16 x 2"``."""
        return f"{self.mode}, micro-batch {self.micro_batch} x {self.grad_accum}"

    def training_args(self) -> dict[str, Any]:
        """Keyword arguments for ``transformers.TrainingArguments``.

        ``logging_nan_inf_filter`` is off: with it on (the default) the Trainer replaces a NaN
        step loss by the window's average before logging, and :class:`NanGuard` never sees it.
        The chronos training dataset makes its own batches: build it with ``micro_batch``.
        """
        return {
            "fp16": self.mode == "fp16",
            "bf16": self.mode == "bf16",
            "tf32": self.tf32,
            "per_device_train_batch_size": self.micro_batch,
            "gradient_accumulation_steps": self.grad_accum,
            "logging_nan_inf_filter": False,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionPlan:
        """The plan :meth:`to_dict` wrote.

        Raises:
            ValueError: a missing or mistyped field.
        """
        try:
            return cls(
                mode=str(data["mode"]),
                reason=str(data["reason"]),
                micro_batch=int(data["micro_batch"]),
                grad_accum=int(data["grad_accum"]),
                tf32=bool(data.get("tf32", False)),
            )
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a precision plan (missing or mistyped field: {exc})") from exc


def plan_precision(
    setting: str, *, device: str, capability: tuple[int, int] | None, batch_size: int
) -> PrecisionPlan:
    """The plan for ``setting`` on ``device``: the whole batch in one micro-batch.

    On CPU everything runs in fp32. On CUDA ``auto`` takes bf16 on sm80+ (A10G, A100),
    fp16 on sm70/sm75 (V100, T4) and fp32 below; an explicit ``fp16`` or ``fp32`` is
    honoured. TF32 matmuls are on for sm80+ except when fp32 is asked for explicitly.

    Args:
        setting: the run spec's precision: ``auto``, ``fp32``, ``fp16`` or ``bf16``.
        device: ``"cpu"`` or ``"cuda"``.
        capability: the GPU's compute capability (:func:`capability`); ``None`` unknown.
        batch_size: the spec's batch size.

    Raises:
        ValueError: an unknown setting or device, a batch size below 1, or bf16 on a GPU
            older than sm80.
    """
    if setting not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {setting!r}")
    if device not in DEVICES:
        raise ValueError(f"device must be one of {DEVICES}, got {device!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    mode, reason, tf32 = _decide(setting, device, capability)
    return PrecisionPlan(mode=mode, reason=reason, micro_batch=batch_size, grad_accum=1, tf32=tf32)


def _decide(setting: str, device: str, capability: tuple[int, int] | None) -> tuple[str, str, bool]:
    if device == "cpu":
        return (
            "fp32",
            "cpu: fp32" if setting in ("auto", "fp32") else f"cpu: {setting} needs a GPU, fp32 on CPU",
            False,
        )
    if capability is None:
        if setting == "bf16":
            raise ValueError(
                "bf16 needs an sm80+ GPU (A10G, A100); this GPU's capability is unknown: use 'fp16' or 'auto'"
            )
        if setting == "auto":
            return "fp32", "auto: GPU capability unknown, fp32", False
        return setting, f"{setting} requested", False
    sm = f"sm{capability[0]}{capability[1]}"
    ampere = capability[0] >= 8
    if setting == "bf16" and not ampere:
        raise ValueError(
            f"bf16 needs an sm80+ GPU (A10G, A100); this GPU is {sm}: use precision = 'fp16' or 'auto'"
        )
    if setting == "fp32":
        return "fp32", f"fp32 requested ({sm})", False
    if setting != "auto":
        return setting, f"{setting} requested ({sm})", ampere
    if ampere:
        return "bf16", f"auto: {sm} supports bf16", True
    if capability[0] == 7:
        return "fp16", f"auto: {sm} has no bf16, fp16 with a gradient scaler", False
    return "fp32", f"auto: {sm} has no fast fp16 or bf16, fp32", False


def after_oom(plan: PrecisionPlan) -> PrecisionPlan | None:
    """The plan after a CUDA out-of-memory: a smaller micro-batch, the same effective batch.

    An even micro-batch halves; an odd one drops to the largest divisor of the batch size
    below it (batch 12: 12 -> 6 -> 3 -> 2 -> 1). ``None`` when the micro-batch is already 1.
    """
    if plan.micro_batch <= 1:
        return None
    batch = plan.batch_size
    if plan.micro_batch % 2 == 0:
        micro = plan.micro_batch // 2
    else:
        micro = max(d for d in range(1, plan.micro_batch) if batch % d == 0)
    return replace(plan, micro_batch=micro, grad_accum=batch // micro)


def after_nan(plan: PrecisionPlan) -> PrecisionPlan | None:
    """The plan after a non-finite loss: fp32 with the same batches; ``None`` from fp32."""
    if plan.mode == "fp32":
        return None
    return replace(plan, mode="fp32", reason=f"{plan.mode} gave a non-finite loss, fp32")


def resume_plan(planned: PrecisionPlan, saved: PrecisionPlan | None) -> PrecisionPlan:
    """The plan to resume with: this device's plan, keeping what the checkpoint learnt.

    A checkpoint that had fallen back to fp32 stays in fp32, and its smaller micro-batch is
    kept when it splits the same batch; otherwise the current device decides (a bf16
    checkpoint resumed on a T4 continues in fp16).
    """
    if saved is None:
        return planned
    plan = planned
    if saved.mode == "fp32" and planned.mode != "fp32":
        plan = replace(plan, mode="fp32", reason=saved.reason)
    if saved.batch_size == planned.batch_size and saved.micro_batch < planned.micro_batch:
        plan = replace(plan, micro_batch=saved.micro_batch, grad_accum=saved.grad_accum)
    return plan


def regroup(plan: PrecisionPlan, micro_batch: int) -> PrecisionPlan:
    """``plan`` with ``micro_batch`` series per forward pass, the accumulation keeping its batch.

    Raises:
        ValueError: ``micro_batch`` does not divide the plan's batch.
    """
    if micro_batch < 1 or plan.batch_size % micro_batch:
        raise ValueError(f"micro-batch {micro_batch} does not divide the batch of {plan.batch_size}")
    return replace(plan, micro_batch=micro_batch, grad_accum=plan.batch_size // micro_batch)


def strip_scaler_state(checkpoint: Path, plan: PrecisionPlan) -> bool:
    """Remove an fp16 checkpoint's gradient-scaler state before resuming it in another mode.

    The Trainer loads ``scaler.pt`` whenever the file exists, into a scaler that only fp16
    creates (an ``AttributeError`` on ``None`` otherwise). Returns whether a file was removed.
    """
    path = Path(checkpoint) / SCALER_FILE
    if plan.mode == "fp16" or not path.is_file():
        return False
    path.unlink()
    logger.info("resuming %s in %s: dropped its fp16 gradient-scaler state", checkpoint, plan.mode)
    return True


class NonFiniteLoss(Exception):
    """A logged training loss (or gradient norm) is NaN or infinite.

    Attributes:
        step: the optimizer step of the log.
        loss: the non-finite value.
        mode: the precision it happened in.
        what: ``"loss"`` or ``"grad_norm"``.
        fallback: whether another precision can retry (fp16/bf16: fp32; fp32: none).
    """

    def __init__(self, step: int, loss: float, *, mode: str = "fp16", what: str = "loss") -> None:
        self.step, self.loss, self.mode, self.what = step, loss, mode, what
        self.fallback = mode != "fp32"
        label = "training loss" if what == "loss" else "gradient norm"
        if self.fallback:
            advice = "retry from the last checkpoint in fp32"
        else:
            advice = (
                "no precision left to fall back to: lower learning_rate or check the data for extreme values"
            )
        super().__init__(f"the {label} is {loss} at step {step} under {mode}: {advice}")


class NanGuard(TrainerCallback):
    """Stops training with :class:`NonFiniteLoss` when a logged loss is not finite.

    A non-finite gradient norm stops it too: at once in fp32/bf16 (the optimizer would write
    NaN into the weights), and in fp16 after ``grad_norm_patience`` logs in a row, since the
    gradient scaler skips an overflowing step and lowers its scale by itself.
    """

    def __init__(self, plan: PrecisionPlan, *, grad_norm_patience: int = GRAD_NORM_PATIENCE) -> None:
        self.plan = plan
        self.grad_norm_patience = grad_norm_patience
        self.bad_grad_norms = 0

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        logs = logs or {}
        step = int(state.global_step)
        loss = logs.get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise NonFiniteLoss(step, float(loss), mode=self.plan.mode)
        grad_norm = logs.get("grad_norm")
        if grad_norm is None:
            return control
        if math.isfinite(float(grad_norm)):
            self.bad_grad_norms = 0
            return control
        self.bad_grad_norms += 1
        if self.plan.mode != "fp16" or self.bad_grad_norms >= self.grad_norm_patience:
            raise NonFiniteLoss(step, float(grad_norm), mode=self.plan.mode, what="grad_norm")
        logger.info(
            "step %d: gradient norm %s under fp16, the gradient scaler skips the step", step, grad_norm
        )
        return control


class PlanSaver(TrainerCallback):
    """Writes the plan into every checkpoint, so a resume keeps it (:func:`resume_plan`).

    Put it before the callback that ships a saved checkpoint, so the plan travels with it.
    """

    def __init__(self, plan: PrecisionPlan) -> None:
        self.plan = plan

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        save_plan(self.plan, Path(args.output_dir) / checkpoint_name(state.global_step))
        return control


def is_cuda_oom(exc: BaseException) -> bool:
    """Whether ``exc`` (or what it was raised from) is a CUDA out-of-memory."""
    import torch

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, torch.cuda.OutOfMemoryError):
            return True
        if isinstance(current, RuntimeError) and any(m in str(current) for m in OOM_MESSAGES):
            return True
        current = current.__cause__ or current.__context__
    return False


def capability() -> tuple[int, int] | None:
    """The CUDA device's compute capability, e.g. ``(8, 6)``; ``None`` without CUDA."""
    import torch

    if not torch.cuda.is_available():
        return None
    major, minor = torch.cuda.get_device_capability()
    return int(major), int(minor)


def save_plan(plan: PrecisionPlan, folder: Path) -> Path:
    """Write ``plan`` as ``folder/precision.json`` (atomically). Returns the file."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PLAN_FILE
    tmp = path.with_name(f".{PLAN_FILE}.tmp")
    tmp.write_text(json.dumps(plan.to_dict(), indent=2))
    os.replace(tmp, path)
    return path


def load_plan(folder: Path) -> PrecisionPlan | None:
    """The plan saved in ``folder``; ``None`` when there is none.

    Raises:
        ValueError: the file is not a plan (names the file).
    """
    path = Path(folder) / PLAN_FILE
    if not path.is_file():
        return None
    try:
        return PrecisionPlan.from_dict(json.loads(path.read_text()))
    except (json.JSONDecodeError, ValueError) as exc:
        raise ValueError(f"{path} is not a precision plan ({exc}): delete it to plan again") from exc


@dataclass(frozen=True, kw_only=True)
class PrecisionRecord:
    """The plans of a training run, for its result file: the first, the last, each change."""

    initial: PrecisionPlan
    final: PrecisionPlan
    changes: tuple[dict[str, Any], ...] = field(default=())

    @classmethod
    def start(cls, plan: PrecisionPlan) -> PrecisionRecord:
        return cls(initial=plan, final=plan)

    def changed(self, plan: PrecisionPlan, *, at_step: int, why: str) -> PrecisionRecord:
        """This record after moving to ``plan`` at ``at_step`` because of ``why``."""
        change = {"at_step": at_step, "from": self.final.to_dict(), "to": plan.to_dict(), "why": why}
        return replace(self, final=plan, changes=(*self.changes, change))

    def to_dict(self) -> dict[str, Any]:
        return {
            "initial": self.initial.to_dict(),
            "final": self.final.to_dict(),
            "changes": list(self.changes),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PrecisionRecord:
        return cls(
            initial=PrecisionPlan.from_dict(data["initial"]),
            final=PrecisionPlan.from_dict(data["final"]),
            changes=tuple(data.get("changes", ())),
        )
