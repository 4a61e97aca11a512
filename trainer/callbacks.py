"""Progress callbacks of the training loop: what :func:`trainer.finetune.train` reports and obeys.

:class:`TrainHooks` is what a caller passes in (loss reports, validations, on-demand
checkpoints, stop requests, saved-checkpoint hook); :class:`ControlCallback` wires them
into the ``transformers`` Trainer, :class:`ValidationCallback` scores the validation
window and keeps the best weights, :class:`CheckpointFilesCallback` writes the run's own
files into a checkpoint before the Trainer's ``trainer_state.json`` (which marks it
complete), and :class:`RestoreTorchRngCallback` keeps a resume exact.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers.trainer_callback import TrainerCallback

from common.layout import checkpoint_name
from trainer.best_model import BestModel
from trainer.distributed import World, rng_state_file
from trainer.train_config import TrainConfig
from trainer.validation import Score, ValidationState, score

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainHooks:
    """What a :func:`~trainer.finetune.train` call reports to and asks of its caller.

    Attributes:
        on_step: called with ``(step, total_steps, loss)`` at every logged step (every
            ``log_interval`` steps and the last one); the loss is the mean since the last.
        on_validation: called with ``{"step", "wql", "loss", "best_step", "best_wql", "zero_shot_wql"}``
            after every validation.
        should_checkpoint_now: polled at the end of every step (before ``on_step`` of that
            step); ``True`` saves a checkpoint of that step.
        should_stop: polled at the end of every step, first; ``True`` saves a checkpoint of
            that step and stops (``interrupted`` unless it was the last step).
        on_checkpoint_saved: called with ``(folder, step)`` once a checkpoint is complete.
        callbacks: extra ``transformers.TrainerCallback`` objects.
    """

    on_step: Callable[[int, int, float], None] | None = None
    on_validation: Callable[[dict[str, Any]], None] | None = None
    should_checkpoint_now: Callable[[], bool] | None = None
    should_stop: Callable[[], bool] | None = None
    on_checkpoint_saved: Callable[[Path, int], None] | None = None
    callbacks: Sequence[Any] = ()


class ControlCallback(TrainerCallback):
    """Per-step loss reporting, on-demand checkpoints, stop requests, saved-checkpoint hook.

    Under torchrun a request seen by any rank acts on every rank at the same step
    (:meth:`trainer.distributed.World.agree`), so no rank trains on while another saves.
    """

    def __init__(
        self, *, total: int, hooks: TrainHooks, step_delay_s: float, world: World | None = None
    ) -> None:
        self.total = total
        self.hooks = hooks
        self.step_delay_s = step_delay_s
        self.world = world or World()
        self.saved: list[Path] = []

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.step_delay_s:
            time.sleep(self.step_delay_s)
        if state.global_step >= self.total:
            control.should_log = True  # the last step is always reported
        hooks = self.hooks
        stop = hooks.should_stop is not None and hooks.should_stop()
        checkpoint = not stop and hooks.should_checkpoint_now is not None and hooks.should_checkpoint_now()
        stop, checkpoint = self.world.agree(stop, checkpoint)
        if stop:
            logger.info("stop requested: checkpoint at step %d, then stop", state.global_step)
            control.should_save = True
            control.should_training_stop = True
        elif checkpoint:
            logger.info("checkpoint requested at step %d", state.global_step)
            control.should_save = True
        return control

    def on_log(self, args: Any, state: Any, control: Any, logs: Any = None, **kwargs: Any) -> Any:
        if logs and "loss" in logs and self.hooks.on_step is not None:
            self.hooks.on_step(int(state.global_step), self.total, float(logs["loss"]))
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        path = Path(args.output_dir) / checkpoint_name(state.global_step)
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

        path = rng_state_file(self.checkpoint)
        if path is None:
            return control
        with safe_globals():
            rng = torch.load(path, weights_only=True)
        torch.random.set_rng_state(rng["cpu"])
        if "cuda" in rng and torch.cuda.is_available():
            torch.cuda.random.set_rng_state(rng["cuda"])
        return control


class ValidationCallback(TrainerCallback):
    """Scores the validation window at step 0, every ``interval`` steps and at the last step.

    A better WQL saves the weights as the best (:class:`~trainer.validation.BestModel`);
    ``patience`` validations in a row without one stop training (saving a checkpoint).

    Args:
        model: the model being trained (the Trainer's, LoRA-wrapped or not).
        window: the validation ``EvalSet``.
        best: where the best weights live.
        state: the history so far (a resume's, or empty).
        config: ``eval_interval``, ``num_steps`` (the last step), ``early_stopping_patience``,
            ``context_length`` and ``batch_size`` (series per forward pass).
        on_validation: :attr:`TrainHooks.on_validation`.
        world: the training processes: rank 0 scores and saves the best weights, every rank
            gets its numbers (a broadcast), so best step and early stop agree everywhere.
    """

    def __init__(
        self, *, model: Any, window: Any, best: BestModel, state: ValidationState, config: TrainConfig,
        on_validation: Callable[[dict[str, Any]], None] | None = None, world: World | None = None,
    ) -> None:  # fmt: skip
        self.model, self.window, self.best, self.state = model, window, best, state
        self.config, self.on_validation, self.world = config, on_validation, world or World()
        self.interval, self.total = config.eval_interval, config.num_steps
        self.patience = config.early_stopping_patience

    def on_train_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if int(state.global_step) == 0 and not self.state.history:
            self.validate(0)  # the base model, before any step: zero-shot
        return control

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        step = int(state.global_step)
        if step % self.interval != 0 and step < self.total:
            return control
        self.validate(step)
        if self.patience is not None and self.state.since_best >= self.patience and step < self.total:
            logger.info(
                "early stopping at step %d: %d validations without a better WQL than %.4f (step %d)",
                step, self.state.since_best, self.state.best_wql, self.state.best_step,
            )  # fmt: skip
            self.state.early_stopped, self.state.stopped_at_step = True, step
            control.should_training_stop = control.should_save = control.should_log = True
        return control

    def validate(self, step: int) -> Score:
        """Score the current weights as of ``step``; save them when they are the best."""
        cfg = self.config
        ctx, batch = cfg.context_length, cfg.per_rank_batch  # rank 0 scores alone: its GPU's share
        scored = (
            score(self.model, self.window, context_length=ctx, batch_size=batch)
            if self.world.is_main
            else None
        )
        wql, loss = self.world.broadcast(scored)
        result = Score(step=step, wql=wql, loss=loss)
        if self.state.add(result) and self.world.is_main:
            self.best.save(self.model, step, wql)
        logger.info("validation at step %d: WQL %.4f, loss %.4f (best %.4f at step %s)",
                    step, wql, loss, self.state.best_wql or float("nan"), self.state.best_step)  # fmt: skip
        if self.on_validation is not None:
            self.on_validation(
                {"step": step, "wql": _finite(wql), "loss": _finite(loss),
                 "best_step": self.state.best_step, "best_wql": _finite(self.state.best_wql),
                 "zero_shot_wql": _finite(zero.wql) if (zero := self.state.zero_shot) else None}
            )  # fmt: skip
        return result

    def write_into(self, checkpoint: Path) -> None:
        """The best weights, then ``validation_state.json``, into ``checkpoint``."""
        if self.state.best_step is not None:
            self.best.link_into(checkpoint)
        self.state.save(checkpoint)


class CheckpointFilesCallback(TrainerCallback):
    """Writes the run's files into a checkpoint folder before the Trainer completes it.

    At the end of a step that will save (``control.should_save``; put this callback last),
    each writer is called with the folder, so they land before ``trainer_state.json``;
    a save this did not foresee gets them at ``on_save`` instead.

    Args:
        writers: functions of the checkpoint folder.
    """

    def __init__(self, writers: Sequence[Callable[[Path], None]]) -> None:
        self.writers = list(writers)
        self.written: int | None = None

    def _write(self, args: Any, state: Any) -> None:
        path = Path(args.output_dir) / checkpoint_name(state.global_step)
        path.mkdir(parents=True, exist_ok=True)
        for writer in self.writers:
            writer(path)
        self.written = int(state.global_step)

    def on_step_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if control.should_save:
            self._write(args, state)
        return control

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        if self.written != int(state.global_step):
            self._write(args, state)
        return control


def json_writer(name: str, data: dict[str, Any]) -> Callable[[Path], None]:
    """A :class:`CheckpointFilesCallback` writer of ``data`` as ``<folder>/<name>``."""

    def write(folder: Path) -> None:
        (folder / name).write_text(json.dumps(data, indent=2))

    return write


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None
