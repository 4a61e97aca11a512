"""Build the Chronos-2 model that training starts from.

A base model is named by one string (the run spec's ``base_model``):

- ``"tiny"`` or ``"tiny-<d_model>"`` (``tiny-32``, ``tiny-64``): a small random-init
  Chronos-2 for local mode and tests (no download; the seed fixes the weights);
- a local directory holding a saved Chronos-2 model (``config.json`` + weights);
- otherwise a Hugging Face model id such as ``"amazon/chronos-2"`` (optionally
  ``"<id>@<revision>"``), downloaded through ``from_pretrained``.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

logger = logging.getLogger(__name__)

TINY_PREFIX = "tiny"
DEFAULT_TINY_D_MODEL = 32
TINY_QUANTILES: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
)  # fmt: skip


class ModelLoadError(Exception):
    """The base model could not be built or loaded; the message (one line) says which and why."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(message.split()))


@dataclass(frozen=True, kw_only=True)
class BaseModelInfo:
    """What the training started from, recorded in checkpoints and metadata.

    Attributes:
        base: the base string as given (``"tiny"``, a path, or a Hugging Face id).
        kind: ``"tiny"``, ``"local"`` or ``"hub"``.
        resolved: absolute path for ``local``, the model id for ``hub``, the config
            name for ``tiny``.
        revision: the Hugging Face commit/revision when known, else ``None``.
        param_count: number of parameters of the base model.
        d_model: hidden size of the model.
    """

    base: str
    kind: str
    resolved: str
    revision: str | None
    param_count: int
    d_model: int

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "base": self.base,
            "kind": self.kind,
            "resolved": self.resolved,
            "revision": self.revision,
            "param_count": self.param_count,
            "d_model": self.d_model,
        }


def tiny_config(*, d_model: int = DEFAULT_TINY_D_MODEL, context_length: int = 128) -> Any:
    """Return the config of a tiny random-init Chronos-2 model (~54k params at d_model=32).

    Args:
        d_model: hidden size (32 or 64 are the tested sizes; any multiple of 4 works).
        context_length: the model's default context length.

    Returns:
        A ``Chronos2CoreConfig``.

    Raises:
        ModelLoadError: if ``d_model`` is not a positive multiple of 4.
    """
    from chronos.chronos2.config import Chronos2CoreConfig

    if d_model <= 0 or d_model % 4 != 0:
        raise ModelLoadError(f"tiny model d_model must be a positive multiple of 4, got {d_model}")
    return Chronos2CoreConfig(
        d_model=d_model,
        d_kv=d_model // 4,
        d_ff=2 * d_model,
        num_layers=2,
        num_heads=4,
        chronos_config={
            "context_length": context_length,
            "input_patch_size": 16,
            "input_patch_stride": 16,
            "output_patch_size": 16,
            "quantiles": list(TINY_QUANTILES),
            "use_reg_token": True,
            "use_arcsinh": True,
            "max_output_patches": 4,
            "time_encoding_scale": context_length,
        },
        architectures=["Chronos2Model"],
        chronos_pipeline_class="Chronos2Pipeline",
    )


def parse_tiny(base: str) -> int | None:
    """Return the d_model of a ``tiny``/``tiny-<d_model>`` base string, else ``None``."""
    if base == TINY_PREFIX:
        return DEFAULT_TINY_D_MODEL
    match = re.fullmatch(rf"{TINY_PREFIX}-(\d+)", base)
    return int(match.group(1)) if match else None


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) the way the Trainer does."""
    from transformers.trainer_utils import set_seed

    set_seed(seed)


def load_base_model(base: str, *, device: str = "cpu", seed: int = 0) -> tuple[Any, BaseModelInfo]:
    """Build or load the base Chronos-2 model.

    The global RNGs are seeded with ``seed`` first, so a ``tiny`` model is the same
    for the same seed in every process.

    Args:
        base: ``"tiny"``/``"tiny-<d_model>"``, a local model directory, or a Hugging Face
            id (``"amazon/chronos-2"``, optionally ``"<id>@<revision>"``).
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed for the random init (and the global RNGs).

    Returns:
        ``(model, info)``: a ``Chronos2Model`` on ``device`` in train mode, and its
        ``BaseModelInfo``.

    Raises:
        ModelLoadError: unknown/unloadable base, or a Hub id while offline.
    """
    from chronos.chronos2 import Chronos2Model

    seed_everything(seed)
    tiny_d_model = parse_tiny(base)
    revision: str | None = None
    if tiny_d_model is not None:
        model = Chronos2Model(tiny_config(d_model=tiny_d_model))
        kind, resolved = "tiny", f"tiny-{tiny_d_model}"
    elif _looks_like_path(base):
        path = Path(base).expanduser().resolve()
        if not (path / "config.json").is_file():
            raise ModelLoadError(f"base model directory {path} has no config.json")
        model = _from_pretrained(str(path), revision=None, base=base)
        kind, resolved = "local", str(path)
    else:
        model_id, _, revision_given = base.partition("@")
        model = _from_pretrained(model_id, revision=revision_given or None, base=base)
        kind, resolved = "hub", model_id
        revision = _hub_revision(model) or revision_given or None
    model = model.to(torch.device(device))
    model.train()
    info = BaseModelInfo(
        base=base,
        kind=kind,
        resolved=resolved,
        revision=revision,
        param_count=sum(p.numel() for p in model.parameters()),
        d_model=int(model.config.d_model),
    )
    logger.info("base model %s (%s): %d parameters", base, kind, info.param_count)
    return model, info


def _looks_like_path(base: str) -> bool:
    return base.startswith(("/", ".", "~")) or Path(base).expanduser().exists()


def _from_pretrained(name: str, *, revision: str | None, base: str) -> Any:
    from chronos.chronos2 import Chronos2Pipeline

    kwargs: dict[str, Any] = {}
    if revision:
        kwargs["revision"] = revision
    try:
        pipeline = Chronos2Pipeline.from_pretrained(name, **kwargs)
    except OSError as exc:
        offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
        hint = " (HF_HUB_OFFLINE is set: no download possible)" if offline else ""
        raise ModelLoadError(f"cannot load base model {base!r}{hint}: {exc}") from exc
    except (ValueError, AssertionError, KeyError) as exc:
        raise ModelLoadError(f"{base!r} is not a Chronos-2 model: {exc}") from exc
    model = pipeline.model
    if type(model).__name__ != "Chronos2Model":
        raise ModelLoadError(f"{base!r} is a {type(model).__name__}, not a Chronos-2 model")
    return model


def _hub_revision(model: Any) -> str | None:
    """Best effort: the commit hash of the snapshot ``from_pretrained`` resolved."""
    commit = getattr(model.config, "_commit_hash", None)
    return str(commit) if commit else None
