"""Validation during training: the score of the current weights and the best weights so far.

:func:`score` forecasts the validation window (a :class:`trainer.data.EvalSet`) with the
model being trained and returns two numbers:

- ``wql``: :func:`trainer.metrics.wql` of ``Chronos2Pipeline.predict_quantiles`` at the
  levels 0.1 .. 0.9 (NaN targets ignored), with the context length and output patches
  the exported model will have, so it is what evaluating the exported model would give;
- ``loss``: the model's own training loss on the window (``Chronos2Model.forward`` with
  ``future_target``: the quantile loss over all model quantiles in the scaled space, the
  number the training loss reports), averaged over the window's batches weighted by
  their observed target values.

Scoring runs in eval mode under ``torch.no_grad`` and leaves the model in the mode it
found, and it leaves the torch, numpy and python RNGs as it found them (the prediction
DataLoader draws a torch random number), so an exact resume stays bit-identical with
validation on.

:class:`ValidationState` is the history and the best step; it is written into every
checkpoint as ``validation_state.json`` (the best weights: :mod:`trainer.best_model`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.checkpoints import VALIDATION_STATE_NAME
from trainer.metrics import DEFAULT_QUANTILE_LEVELS, wql

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Score:
    """One validation: the step, the window's WQL and the model's loss on it."""

    step: int
    wql: float
    loss: float


def score(model: Any, window: Any, *, context_length: int, batch_size: int = 256) -> tuple[float, float]:
    """``(wql, loss)`` of ``model`` (a ``Chronos2Model``, LoRA-wrapped or not) on ``window``.

    Args:
        model: the model being trained; left in the mode and RNG state it was in.
        window: an ``EvalSet`` (``inputs``, ``future`` (n_items, H), ``prediction_length``).
        context_length: the training context length (the exported model's context is the
            larger of it and the base model's).
        batch_size: series per forward pass.
    """
    core = _core_model(model)
    was_training = model.training
    model.eval()
    try:
        with _preserved_rng(), torch.no_grad(), _export_shape(core, context_length, window.prediction_length):
            return _wql(core, window, batch_size), _loss(core, window, batch_size)
    finally:
        model.train(was_training)


def _core_model(model: Any) -> Any:
    """The ``Chronos2Model`` under a peft wrapper (its LoRA layers stay active)."""
    get_base = getattr(model, "get_base_model", None)
    return get_base() if callable(get_base) else model


def _wql(core: Any, window: Any, batch_size: int) -> float:
    from chronos.chronos2 import Chronos2Pipeline

    levels = list(DEFAULT_QUANTILE_LEVELS)
    quantiles, _ = Chronos2Pipeline(model=core).predict_quantiles(
        window.inputs,
        prediction_length=int(window.prediction_length),
        quantile_levels=levels,
        batch_size=batch_size,
        limit_prediction_length=False,
    )
    preds = np.stack([q[0].float().cpu().numpy() for q in quantiles])
    future = np.asarray(window.future, dtype=np.float64)
    if not np.nansum(np.abs(future)) > 0:  # all zero or missing: no WQL, no best to choose
        logger.warning("validation WQL is undefined: the validation window's values are all zero or missing")
        return float("nan")
    return wql(future, preds, levels)


def _loss(core: Any, window: Any, batch_size: int) -> float:
    from chronos.chronos2.dataset import Chronos2Dataset, DatasetMode

    horizon = int(window.prediction_length)
    patch = int(core.chronos_config.output_patch_size)
    dataset = Chronos2Dataset(
        inputs=list(window.inputs),
        context_length=int(core.chronos_config.context_length),
        prediction_length=horizon,
        batch_size=batch_size,
        output_patch_size=patch,
        mode=DatasetMode.TEST,
    )
    future = torch.as_tensor(np.asarray(window.future, dtype=np.float32))
    total, weight, item = 0.0, 0, 0
    for batch in dataset:  # no DataLoader: plain iteration draws no random numbers
        target = torch.full((batch["context"].shape[0], horizon), torch.nan)
        for start, end in batch["target_idx_ranges"]:
            target[start:end] = future[item : item + end - start]
            item += end - start
        observed = int((~torch.isnan(target)).sum())
        if observed == 0:
            continue
        out = core(
            context=batch["context"].to(core.device, torch.float32),
            group_ids=batch["group_ids"].to(core.device),
            future_covariates=batch["future_covariates"].to(core.device, torch.float32),
            num_output_patches=math.ceil(horizon / patch),
            future_target=target.to(core.device),
        )
        total += float(out.loss) * observed
        weight += observed
    return total / weight if weight else float("nan")


@contextlib.contextmanager
def _export_shape(core: Any, context_length: int, horizon: int) -> Iterator[None]:
    """The context length and output patches the exported model gets, for the call."""
    cfg = core.chronos_config
    saved = (cfg.context_length, cfg.max_output_patches)
    cfg.context_length = max(cfg.context_length, context_length)
    cfg.max_output_patches = max(cfg.max_output_patches, math.ceil(horizon / cfg.output_patch_size))
    try:
        yield
    finally:
        cfg.context_length, cfg.max_output_patches = saved


@contextlib.contextmanager
def _preserved_rng() -> Iterator[None]:
    py_state, np_state = random.getstate(), np.random.get_state()
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        try:
            yield
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


@dataclass(kw_only=True)
class ValidationState:
    """The validations so far: history, best, patience, early stop.

    Attributes:
        history: one :class:`Score` per validation, oldest first (step 0 is the base model).
        best_step: step of the lowest WQL (the first one on ties).
        best_wql: that WQL.
        since_best: validations since the best one (the patience counter; validations
            with an undefined WQL do not count).
        early_stopped: training stopped because ``since_best`` reached the patience.
        stopped_at_step: the step it stopped at.
    """

    history: list[Score] = field(default_factory=list)
    best_step: int | None = None
    best_wql: float | None = None
    since_best: int = 0
    early_stopped: bool = False
    stopped_at_step: int | None = None

    def add(self, result: Score) -> bool:
        """Record ``result``; whether it is the new best."""
        self.history.append(result)
        better = math.isfinite(result.wql) and (self.best_wql is None or result.wql < self.best_wql)
        if better:
            self.best_step, self.best_wql, self.since_best = result.step, result.wql, 0
        elif math.isfinite(result.wql):  # an undefined WQL is no evidence either way
            self.since_best += 1
        return better

    @property
    def zero_shot(self) -> Score | None:
        """The validation of the base model (step 0), when it was made."""
        first = self.history[0] if self.history else None
        return first if first is not None and first.step == 0 else None

    def summary(self) -> dict[str, Any]:
        """The result file's ``validation`` block."""
        zero = self.zero_shot
        return {
            "zero_shot_wql": _number(zero.wql) if zero else None,
            "zero_shot_loss": _number(zero.loss) if zero else None,
            "best_wql": _number(self.best_wql),
            "best_step": self.best_step,
            "history": [[s.step, _number(s.wql), _number(s.loss)] for s in self.history],
            "early_stopped": self.early_stopped,
            "stopped_at_step": self.stopped_at_step,
        }

    def to_dict(self) -> dict[str, Any]:
        return {**self.summary(), "since_best": self.since_best}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ValidationState:
        history = [Score(step=int(s), wql=_float(w), loss=_float(v)) for s, w, v in data.get("history", [])]
        return cls(
            history=history,
            best_step=data.get("best_step"),
            best_wql=data.get("best_wql"),
            since_best=int(data.get("since_best", 0)),
            early_stopped=bool(data.get("early_stopped", False)),
            stopped_at_step=data.get("stopped_at_step"),
        )

    def save(self, folder: Path) -> Path:
        """Write ``folder/validation_state.json`` (atomically)."""
        path = Path(folder) / VALIDATION_STATE_NAME
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=2))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, folder: Path) -> ValidationState | None:
        """The state saved in ``folder``; ``None`` when there is none."""
        path = Path(folder) / VALIDATION_STATE_NAME
        if not path.is_file():
            return None
        return cls.from_dict(json.loads(path.read_text()))


def _number(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def _float(value: Any) -> float:
    return float("nan") if value is None else float(value)
