"""Build the Chronos-2 model that training starts from, and the base model's zero-shot pipeline.

A base is resolved first (:func:`trainer.base_model.resolve_base`: ``tiny``,
``tiny-pretrained``, a local folder or a pinned Hugging Face snapshot) and then loaded
here with an explicit dtype: :func:`load_base_model` for training, :func:`base_pipeline`
for zero-shot forecasts. ``"tiny"``/``"tiny-<d_model>"`` is a small random-init model
(no weights; the seed fixes them) for unit tests.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch

from trainer.base_model import (
    DEFAULT_TINY_D_MODEL,
    TINY_PREFIX,
    BaseRef,
    ModelLoadError,
    parse_tiny,
    resolve_base,
)

__all__ = [
    "DEFAULT_TINY_D_MODEL",
    "TINY_PREFIX",
    "BaseModelInfo",
    "ModelLoadError",
    "base_pipeline",
    "load_base_model",
    "parse_tiny",
    "seed_everything",
    "tiny_config",
]

logger = logging.getLogger(__name__)

TINY_QUANTILES: tuple[float, ...] = (
    0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99,
)  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class BaseModelInfo:
    """What the training started from, recorded in checkpoints and metadata.

    Attributes:
        base: the base string as given (``"tiny"``, ``"tiny-pretrained"``, a path, a Hub id).
        kind: ``"tiny"``, ``"bundled"``, ``"local"`` or ``"hub"``.
        resolved: what was loaded: the folder (bundled, local, the Hub snapshot) or the
            tiny config name (``"tiny-32"``).
        revision: hub: the commit sha; bundled/local: sha256 of the weights; tiny: ``None``.
        param_count: number of parameters of the base model.
        d_model: hidden size of the model.
        dtype: the dtype the weights were loaded in (``"float32"``).
        model_id: the Hub id without ``@revision`` (hub), else ``base``.
    """

    base: str
    kind: str
    resolved: str
    revision: str | None
    param_count: int
    d_model: int
    dtype: str = "float32"
    model_id: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict."""
        return {
            "base": self.base,
            "kind": self.kind,
            "resolved": self.resolved,
            "revision": self.revision,
            "param_count": self.param_count,
            "d_model": self.d_model,
            "dtype": self.dtype,
            "model_id": self.model_id or self.base,
        }

    def base_ref(self) -> BaseRef:
        """The :class:`BaseRef` this model was loaded from."""
        return BaseRef(base=self.base, kind=self.kind, location=self.resolved, revision=self.revision)


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


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (CPU and CUDA) the way the Trainer does."""
    from transformers.trainer_utils import set_seed

    set_seed(seed)


def load_base_model(
    base: str | BaseRef | Mapping[str, Any],
    *,
    device: str = "cpu",
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
) -> tuple[Any, BaseModelInfo]:
    """Build or load the base Chronos-2 model.

    The global RNGs are seeded with ``seed`` first, so a ``tiny`` model is the same
    for the same seed in every process.

    Args:
        base: a base string (resolved with :func:`trainer.base_model.resolve_base`), a
            :class:`BaseRef` already resolved, or its ``to_dict()``.
        device: ``"cpu"`` or ``"cuda"``.
        seed: seed for the random init (and the global RNGs).
        dtype: dtype of the weights (``from_pretrained(dtype=...)``); float32 to train.

    Returns:
        ``(model, info)``: a ``Chronos2Model`` on ``device`` in train mode, and its
        ``BaseModelInfo`` (with the base's revision).

    Raises:
        ModelLoadError: unknown/unloadable base, or a Hub id not in the cache while offline.
    """
    from chronos.chronos2 import Chronos2Model

    ref = _as_ref(base)
    seed_everything(seed)
    if ref.kind == "tiny":
        d_model = parse_tiny(ref.location) or DEFAULT_TINY_D_MODEL
        model = Chronos2Model(tiny_config(d_model=d_model)).to(dtype)
    else:
        model = _from_pretrained(ref.location, dtype=dtype, base=ref.base)
    model = model.to(torch.device(device))
    model.train()
    info = BaseModelInfo(
        base=ref.base,
        kind=ref.kind,
        resolved=ref.location,
        revision=ref.revision,
        param_count=sum(p.numel() for p in model.parameters()),
        d_model=int(model.config.d_model),
        dtype=str(dtype).removeprefix("torch."),
        model_id=ref.model_id,
    )
    logger.info("base model %s (%s, %s): %d parameters", ref.base, ref.kind, info.dtype, info.param_count)
    return model, info


def base_pipeline(ref: str | BaseRef | Mapping[str, Any], device: str = "cpu", *, seed: int = 0) -> Any:
    """The base model, untrained, as a ``Chronos2Pipeline`` in eval mode (zero-shot forecasts).

    ``seed`` matters only for a ``tiny`` (random-init) base: pass the run's seed to get
    the weights its training started from. ``pipeline.save_pretrained(folder)`` gives a
    folder to export when the base itself is exported.

    Raises:
        ModelLoadError: as :func:`load_base_model`.
    """
    from chronos.chronos2 import Chronos2Pipeline

    model, _ = load_base_model(ref, device=device, seed=seed)
    model.eval()
    return Chronos2Pipeline(model=model)


def _as_ref(base: str | BaseRef | Mapping[str, Any]) -> BaseRef:
    if isinstance(base, BaseRef):
        return base
    if isinstance(base, Mapping):
        try:
            return BaseRef.from_dict(base)
        except ValueError as exc:
            raise ModelLoadError(str(exc)) from exc
    return resolve_base(base)


def _from_pretrained(folder: str, *, dtype: torch.dtype, base: str) -> Any:
    from chronos.chronos2 import Chronos2Pipeline

    try:
        pipeline = Chronos2Pipeline.from_pretrained(folder, dtype=dtype)
    except OSError as exc:
        raise ModelLoadError(f"cannot load base model {base!r} from {folder}: {exc}") from exc
    except (ValueError, AssertionError, KeyError, RuntimeError) as exc:
        raise ModelLoadError(f"{base!r} is not a loadable Chronos-2 model ({folder}): {exc}") from exc
    model = pipeline.model
    if type(model).__name__ != "Chronos2Model":
        raise ModelLoadError(f"{base!r} is a {type(model).__name__}, not a Chronos-2 model")
    return model
