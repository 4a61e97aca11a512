"""The best weights of a validated training, and the final model exported from them.

:class:`BestModel` keeps the best weights so far in ``<output_dir>/best-model/`` (full
fine-tuning: a model folder; LoRA: the adapter alone; ``best.json`` names the step) and
hard-links them into each checkpoint's ``best-model/``, so a resume (or a restore of the
checkpoint folder from S3) brings them back. :func:`save_final_model` writes the final
model: the best weights when there are some, else the last, merged
(``Chronos2Pipeline.from_pretrained``-loadable), and for LoRA the adapter alone beside it.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.checkpoints import BEST_INFO_NAME, BEST_MODEL_DIRNAME, best_model_problem
from trainer.model import BaseModelInfo
from trainer.train_config import TrainConfig
from trainer.validation import ValidationState

logger = logging.getLogger(__name__)

TRAINING_INFO_NAME = "training_info.json"
ADAPTER_DIRNAME = "adapter"


class BestModel:
    """The best weights so far, in ``<output_dir>/best-model/``.

    Full fine-tuning keeps a model folder (``config.json``, ``model.safetensors``), LoRA the
    adapter alone (``adapter_config.json``, ``adapter_model.safetensors``); ``best.json``
    names the step. A new best is written beside the old one and swapped in, so files
    hard-linked into earlier checkpoints keep their content.
    """

    def __init__(self, output_dir: Path) -> None:
        self.folder = Path(output_dir) / BEST_MODEL_DIRNAME

    def save(self, model: Any, step: int, wql_value: float) -> None:
        """Save ``model``'s trainable weights as the best of ``step``."""
        staging = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(str(staging))
        wql_json = wql_value if math.isfinite(wql_value) else None
        (staging / BEST_INFO_NAME).write_text(json.dumps({"step": step, "wql": wql_json}))
        _swap(staging, self.folder)
        logger.info("best validation so far at step %d (WQL %.4f)", step, wql_value)

    def clear(self) -> None:
        """Forget a previous training's best (a fresh start in the same folder)."""
        shutil.rmtree(self.folder, ignore_errors=True)

    def step(self) -> int | None:
        """The step of the saved best, ``None`` when there is none."""
        try:
            return int(json.loads((self.folder / BEST_INFO_NAME).read_text())["step"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def link_into(self, checkpoint: Path) -> None:
        """Put the best weights into ``checkpoint/best-model/`` (hard links, else copies)."""
        target = Path(checkpoint) / BEST_MODEL_DIRNAME
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        for item in self.folder.iterdir():
            if item.is_file():
                _link_or_copy(item, target / item.name)

    def restore_from(self, checkpoint: Path, step: int) -> None:
        """Make the checkpoint's best model (of ``step``) the current best.

        Raises:
            ValueError: the checkpoint does not hold it.
        """
        source = Path(checkpoint) / BEST_MODEL_DIRNAME
        problem = best_model_problem(source, step)
        if problem is not None:
            raise ValueError(f"{checkpoint}: {problem}")
        staging = self.folder.with_name(self.folder.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir(parents=True)
        for item in source.iterdir():
            if item.is_file():
                _link_or_copy(item, staging / item.name)
        _swap(staging, self.folder)


def _swap(staging: Path, folder: Path) -> None:
    old = folder.with_name(folder.name + ".old")
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        folder.rename(old)
    staging.rename(folder)
    shutil.rmtree(old, ignore_errors=True)


def _link_or_copy(source: Path, target: Path) -> None:
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)


def save_final_model(
    model: Any, info: BaseModelInfo, config: TrainConfig, *, best: BestModel | None, state: ValidationState,
    step: int, lora_config: dict[str, Any] | None,
) -> tuple[Path, Path | None]:  # fmt: skip
    """Save the final model: the best weights (when validated) or the last, merged.

    Args:
        model: the trained model (LoRA-wrapped for LoRA); the best weights are loaded into it.
        info: the base model, for ``training_info.json``.
        config: the training's config (the export's context length and output patches).
        best: the best weights (``None``: no validation).
        state: the validations (for ``training_info.json``).
        step: the step training ended at.
        lora_config: the LoRA settings (``None``: full fine-tuning).

    Returns:
        ``(final_model_dir, adapter_dir)``; ``adapter_dir`` is ``None`` unless LoRA.
    """
    from chronos.chronos2 import Chronos2Pipeline

    lora = lora_config is not None
    if best is not None and best.step() is not None:
        _load_best(model, best, lora=lora)
    adapter_dir = None
    if lora:
        adapter_dir = config.output_dir / ADAPTER_DIRNAME
        _replace_folder(adapter_dir, model.save_pretrained)
        model = model.merge_and_unload()
    chronos_config = model.chronos_config
    chronos_config.context_length = max(chronos_config.context_length, config.context_length)
    chronos_config.max_output_patches = max(
        chronos_config.max_output_patches,
        math.ceil(config.prediction_length / chronos_config.output_patch_size),
    )
    model.config.chronos_config = chronos_config.__dict__
    model.eval()
    training_info = {
        "base_model": info.to_dict(),
        "finetune_mode": config.finetune_mode,
        "lora": lora_config,
        "final_step": step,
        "best_step": state.best_step,
        "validation": state.summary(),
        "train_config": config.to_dict(),
    }

    def save(folder: Path) -> None:
        Chronos2Pipeline(model=model).save_pretrained(folder)
        (folder / TRAINING_INFO_NAME).write_text(json.dumps(training_info, indent=2))

    final_dir = config.final_model_dir
    _replace_folder(final_dir, save)
    logger.info("final model (step %s) saved to %s", state.best_step if best else step, final_dir)
    return final_dir, adapter_dir


def _load_best(model: Any, best: BestModel, *, lora: bool) -> None:
    """Put the best weights (model folder or adapter) into the live model."""
    from safetensors.torch import load_file

    if lora:
        from peft import set_peft_model_state_dict

        set_peft_model_state_dict(model, load_file(str(best.folder / "adapter_model.safetensors")))
    else:
        model.load_state_dict(load_file(str(best.folder / "model.safetensors")))


def _replace_folder(folder: Path, write: Callable[[Path], Any]) -> None:
    staging = folder.with_name(folder.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    write(staging)
    shutil.rmtree(folder, ignore_errors=True)
    staging.rename(folder)
