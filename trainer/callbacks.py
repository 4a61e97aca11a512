"""Progress callbacks of the training loop: what :func:`trainer.finetune.train` reports and obeys.

:class:`TrainHooks` is what a caller passes in (per-step loss, on-demand checkpoints,
stop requests, saved-checkpoint hook); :class:`ControlCallback` wires them into the
``transformers`` Trainer, and :class:`RestoreTorchRngCallback` keeps a resume exact.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import TrainerCallback

from common.layout import checkpoint_name
from trainer.checkpoints import BASE_MODEL_INFO_NAME

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainHooks:
    """What a :func:`~trainer.finetune.train` call reports to and asks of its caller.

    Attributes:
        on_step: called after every step with ``(step, total_steps, loss)``.
        should_checkpoint_now: polled at the end of every step (before ``on_step`` of that
            step); ``True`` saves a checkpoint of that step.
        should_stop: polled at the end of every step, first; ``True`` saves a checkpoint of
            that step and stops (``interrupted`` unless it was the last step).
        on_checkpoint_saved: called with ``(folder, step)`` once a checkpoint is complete.
        callbacks: extra ``transformers.TrainerCallback`` objects.
    """

    on_step: Callable[[int, int, float], None] | None = None
    should_checkpoint_now: Callable[[], bool] | None = None
    should_stop: Callable[[], bool] | None = None
    on_checkpoint_saved: Callable[[Path, int], None] | None = None
    callbacks: Sequence[Any] = ()


class ControlCallback(TrainerCallback):
    """Per-step loss reporting, on-demand checkpoints, stop requests, saved-checkpoint hook."""

    def __init__(self, *, total: int, hooks: TrainHooks, step_delay_s: float) -> None:
        self.total = total
        self.hooks = hooks
        self.step_delay_s = step_delay_s
        self.saved: list[Path] = []
        self.base_model: dict[str, Any] | None = None

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        hooks = self.hooks
        if hooks.should_stop is not None and hooks.should_stop():
            logger.info("stop requested: checkpoint at step %d, then stop", state.global_step)
            control.should_save = True
            control.should_training_stop = True
        elif hooks.should_checkpoint_now is not None and hooks.should_checkpoint_now():
            logger.info("checkpoint requested at step %d", state.global_step)
            control.should_save = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        if logs and "loss" in logs and self.hooks.on_step is not None:
            self.hooks.on_step(int(state.global_step), self.total, float(logs["loss"]))
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        path = Path(args.output_dir) / checkpoint_name(state.global_step)
        if self.base_model is not None:
            (path / BASE_MODEL_INFO_NAME).write_text(json.dumps(self.base_model, indent=2))
        self.saved.append(path)
        logger.info("checkpoint saved: %s", path)
        if self.hooks.on_checkpoint_saved is not None:
            self.hooks.on_checkpoint_saved(path, int(state.global_step))
        return control


class RestoreTorchRngCallback(TrainerCallback):
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
