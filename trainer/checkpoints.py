"""Local checkpoint folders: which are complete, the newest to resume from, and whether it fits.

A checkpoint is ``checkpoints/checkpoint-<step>/`` (names from :mod:`common.layout`)
holding weights or a LoRA adapter, optimizer, scheduler and RNG states, then
``trainer_state.json`` written last (its presence marks the folder complete) and
``base_model.json`` (what a LoRA adapter applies to). Torch-free: the trainer's driver
checks checkpoints without importing the training stack.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from common.layout import CHECKPOINT_PREFIX, TRAINER_STATE_NAME, checkpoint_step
from trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)

BASE_MODEL_INFO_NAME = "base_model.json"
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")
STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")


class CheckpointError(Exception):
    """A checkpoint cannot be resumed from; the message says which and why."""


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or ``None`` when it is.

    Complete: ``trainer_state.json`` (written last) loads and names the folder's step,
    and weights, optimizer, scheduler and RNG state files are present.
    """
    path = Path(path)
    step = checkpoint_step(path.name)
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
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        return "no model or adapter weights"
    missing = [f for f in STATE_FILES if not (path / f).is_file()]
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
    steps = {p: checkpoint_step(p.name) for p in directory.iterdir() if p.is_dir()}
    candidates = {p: s for p, s in steps.items() if s is not None}
    for path in sorted(candidates, key=candidates.__getitem__, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None


def check_resumable(path: Path, config: TrainConfig) -> None:
    """Raise unless ``path`` is complete and was made with ``config``'s steps, batch and mode.

    Raises:
        CheckpointError: naming the checkpoint and what differs.
    """
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
