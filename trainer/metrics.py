"""Forecast accuracy on the held-out tail: WQL and MASE, for the model and a baseline.

Definitions (as GluonTS computes them):

- WQL (weighted quantile loss, ``mean_weighted_sum_quantile_loss``): for each level
  ``q``, ``2 * sum(pinball_q) / sum(|y|)`` over every item and step; then the mean
  over levels. ``pinball_q = max(q * (y - yhat), (q - 1) * (y - yhat))``.
- MASE: per item, ``mean(|y - yhat|) / mean(|y_past[t] - y_past[t - season]|)``
  (the in-sample seasonal-naive error of the item's past); aggregated as the mean
  over items, skipping items whose scale is zero or undefined.

The seasonal-naive baseline repeats the last observed season. For its WQL the
point forecast is used for every quantile level (a degenerate distribution), so
its WQL equals its weighted absolute error; this is the usual convention when a
baseline has no distribution (AutoGluon/fev report it the same way).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
_SEASONS = {
    "min": 60 * 24, "T": 60 * 24, "h": 24, "H": 24, "D": 7, "B": 5,
    "W": 52, "M": 12, "ME": 12, "MS": 12, "Q": 4, "QE": 4, "QS": 4,
    "Y": 1, "YE": 1, "YS": 1, "A": 1, "s": 60, "S": 60,
}  # fmt: skip


def season_for_frequency(frequency: str) -> int:
    """Seasonal period for a pandas frequency alias (``h`` -> 24, ``D`` -> 7, ``15min`` -> 96).

    Multiples divide the base period when they divide it evenly (``2h`` -> 12), else 1.

    Raises:
        ValueError: for an alias that is not a frequency.
    """
    from pandas.tseries.frequencies import to_offset

    try:
        offset = to_offset(frequency)
    except ValueError as exc:
        raise ValueError(f"unknown frequency {frequency!r}") from exc
    name = offset.name.split("-")[0]
    base = _SEASONS.get(name, 1)
    n = max(int(offset.n), 1)
    return base // n if base % n == 0 else 1


def pinball(y_true: np.ndarray, y_pred: np.ndarray, level: float) -> np.ndarray:
    """Elementwise pinball (quantile) loss of ``y_pred`` at ``level``."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return np.maximum(level * diff, (level - 1.0) * diff)


def wql(y_true: np.ndarray, quantile_preds: np.ndarray, quantile_levels: Sequence[float]) -> float:
    """Weighted quantile loss, averaged over levels (GluonTS definition).

    Args:
        y_true: actual values, any shape ``S``.
        quantile_preds: forecasts of shape ``S + (len(quantile_levels),)``.
        quantile_levels: the levels in the last axis of ``quantile_preds``.

    Returns:
        ``mean_q 2 * sum(pinball_q) / sum(|y_true|)``; NaN targets are ignored.

    Raises:
        ValueError: shapes disagree, or ``sum(|y_true|)`` is zero.
    """
    y = np.asarray(y_true, dtype=np.float64)
    preds = np.asarray(quantile_preds, dtype=np.float64)
    levels = list(quantile_levels)
    if preds.shape != (*y.shape, len(levels)):
        raise ValueError(f"quantile_preds has shape {preds.shape}, expected {(*y.shape, len(levels))}")
    mask = ~np.isnan(y)
    denominator = np.abs(y[mask]).sum()
    if denominator == 0:
        raise ValueError("WQL is undefined: the actual values sum to zero in absolute value")
    losses = [2.0 * pinball(y[mask], preds[..., k][mask], q).sum() for k, q in enumerate(levels)]
    return float(np.mean(losses) / denominator)


def mase(y_true: np.ndarray, point_pred: np.ndarray, y_past: np.ndarray, season: int) -> float:
    """Mean absolute scaled error of one series (GluonTS definition).

    Args:
        y_true: actual future values, shape ``(h,)``.
        point_pred: point forecast, shape ``(h,)``.
        y_past: the series before the forecast start.
        season: seasonal period of the scale; falls back to 1 when the past is not
            longer than one season.

    Returns:
        ``mean|y - yhat| / mean|y_past[t] - y_past[t-season]|``; ``nan`` when the scale is
        zero or undefined.
    """
    y = np.asarray(y_true, dtype=np.float64)
    yhat = np.asarray(point_pred, dtype=np.float64)
    past = np.asarray(y_past, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"point_pred has shape {yhat.shape}, expected {y.shape}")
    m = season if past.size > season else 1
    if past.size <= m:
        return float("nan")
    scale = np.nanmean(np.abs(past[m:] - past[:-m]))
    if not np.isfinite(scale) or scale == 0:
        return float("nan")
    return float(np.nanmean(np.abs(y - yhat)) / scale)


def seasonal_naive(
    past: np.ndarray,
    horizon: int,
    season: int,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the last season (the last value when the past is shorter than a season).

    Args:
        past: observed values, shape ``(n,)``, ``n >= 1``.
        horizon: steps to forecast.
        season: seasonal period.
        quantile_levels: levels of the returned quantile forecast.

    Returns:
        ``(point, quantiles)``: shapes ``(horizon,)`` and ``(horizon, len(levels))``; every
        quantile equals the point forecast.
    """
    values = np.asarray(past, dtype=np.float64)
    if values.size == 0:
        raise ValueError("seasonal_naive needs at least one past value")
    m = season if values.size >= season else 1
    last = values[-m:]
    point = last[np.arange(horizon) % m]
    return point, np.repeat(point[:, None], len(quantile_levels), axis=1)


def evaluate(
    model_or_pipeline_dir: Any,
    eval_set: Any,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    season: int | None = None,
    *,
    batch_size: int = 256,
) -> dict[str, Any]:
    """Score the model and the seasonal-naive baseline on the held-out tail.

    Args:
        model_or_pipeline_dir: a saved model folder (``Chronos2Pipeline.from_pretrained``),
            a ``Chronos2Pipeline`` or a ``Chronos2Model``.
        eval_set: a :class:`trainer.data.EvalSet`.
        quantile_levels: levels for WQL.
        season: seasonal period; ``None`` derives it from ``eval_set.frequency``.
        batch_size: prediction batch size.

    Returns:
        ``{"model_wql", "model_mase", "seasonal_naive_wql", "seasonal_naive_mase",
        "season", "n_items", "prediction_length", "quantile_levels"}``.
    """
    import torch
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    pipeline = _as_pipeline(model_or_pipeline_dir)
    levels = [float(q) for q in quantile_levels]
    horizon = int(eval_set.prediction_length)
    season = season if season is not None else season_for_frequency(eval_set.frequency)
    with torch.no_grad():
        quantiles, _ = pipeline.predict_quantiles(
            eval_set.inputs, prediction_length=horizon, quantile_levels=levels,
            batch_size=batch_size,
        )  # fmt: skip
    # each element: (n_variates=1, horizon, n_levels)
    model_q = np.stack([q[0].float().cpu().numpy() for q in quantiles])
    model_point = model_q[..., levels.index(0.5)] if 0.5 in levels else np.median(model_q, -1)
    naive = [seasonal_naive(p, horizon, season, levels) for p in eval_set.past]
    naive_point = np.stack([n[0] for n in naive])
    naive_q = np.stack([n[1] for n in naive])
    future = np.asarray(eval_set.future)
    result = {
        "model_wql": wql(future, model_q, levels),
        "model_mase": _mean_mase(future, model_point, eval_set.past, season),
        "seasonal_naive_wql": wql(future, naive_q, levels),
        "seasonal_naive_mase": _mean_mase(future, naive_point, eval_set.past, season),
        "season": season,
        "n_items": int(future.shape[0]),
        "prediction_length": horizon,
        "quantile_levels": levels,
    }
    logger.info(
        "evaluation: model WQL %.4f MASE %.4f; seasonal naive WQL %.4f MASE %.4f",
        result["model_wql"], result["model_mase"],
        result["seasonal_naive_wql"], result["seasonal_naive_mase"],
    )  # fmt: skip
    return result


def _mean_mase(future: np.ndarray, point: np.ndarray, past: list[np.ndarray], season: int) -> float:
    scores = np.array([mase(y, p, h, season) for y, p, h in zip(future, point, past, strict=True)])
    finite = scores[np.isfinite(scores)]
    return float(finite.mean()) if finite.size else float("nan")


def _as_pipeline(source: Any) -> Any:
    from chronos.chronos2 import Chronos2Model, Chronos2Pipeline

    if isinstance(source, Chronos2Pipeline):
        return source
    if isinstance(source, Chronos2Model):
        source.eval()
        return Chronos2Pipeline(model=source)
    if isinstance(source, str | Path):
        return Chronos2Pipeline.from_pretrained(str(source))
    raise TypeError(f"cannot evaluate a {type(source).__name__}; give a model folder or pipeline")
