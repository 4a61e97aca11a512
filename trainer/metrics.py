"""Forecast accuracy as GluonTS computes it: seasonality, WQL, MASE, seasonal naive.

Each definition follows the GluonTS source (awslabs/gluonts, the ``gluonts.ev`` metrics
that Chronos and fev report):

- seasonality: ``src/gluonts/time_feature/seasonality.py`` ``get_seasonality`` with its
  ``DEFAULT_SEASONALITIES`` table, the alias normalised by
  ``src/gluonts/time_feature/_base.py`` ``norm_freq_str`` (pandas >= 2.2: ``MS`` -> ``ME``,
  ``QS`` -> ``QE``). A multiple divides the base season when it divides it evenly
  (``30min`` -> 1440 / 30 = 48), else the season is 1.
- quantile loss: ``src/gluonts/ev/stats.py`` ``quantile_loss``:
  ``2 * |(y - yhat_q) * ((yhat_q >= y) - q)|``.
- WQL: ``src/gluonts/ev/metrics.py`` ``MeanWeightedSumQuantileLoss``: per level, the
  quantile loss summed over every item and step divided by ``sum |y|`` over the same
  (``WeightedSumQuantileLoss``); then the mean over levels.
- seasonal error: ``src/gluonts/ev/ts_stats.py`` ``seasonal_error``: the mean of
  ``|y[t] - y[t - m]|`` over the item's past; ``m`` falls back to 1 when it is longer than
  the past (``seasonality > time_length``).
- MASE: ``src/gluonts/ev/metrics.py`` ``MASE`` (forecast_type ``"0.5"``: the median):
  ``|y - median| / seasonal_error`` averaged over every observed step of every item
  (``Mean`` over all axes). With no missing target this is the mean of per-item MASE.

Missing targets (NaN) are masked as ``src/gluonts/model/evaluation.py``
``_get_data_batch`` does (``np.ma.masked_invalid`` on the label and on the past). Where
GluonTS would return inf (a flat past: seasonal error 0), the item is left out of MASE
and counted instead.

The seasonal-naive baseline (``src/gluonts/model/seasonal_naive/_predictor.py``) repeats
the last season and uses its forecast for every quantile level (one sample), so its WQL
is its weighted absolute error. Missing values in the past are filled first: from the
same phase of an earlier season, else the last finite value (GluonTS's
``LastValueImputation``); a past shorter than a season forecasts its mean; a past with
no finite value gives no forecast (NaN), and the item is left out and counted.
"""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_QUANTILE_LEVELS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
# src/gluonts/time_feature/seasonality.py DEFAULT_SEASONALITIES
DEFAULT_SEASONALITIES: dict[str, int] = {
    "S": 3600, "s": 3600, "T": 1440, "min": 1440, "H": 24, "h": 24,
    "D": 1, "W": 1, "M": 12, "ME": 12, "B": 5, "Q": 4, "QE": 4,
}  # fmt: skip
# aliases pandas 3 no longer parses, and what they mean now
_LEGACY_UNITS = {
    "H": "h", "T": "min", "S": "s", "L": "ms", "U": "us", "N": "ns",
    "M": "ME", "Q": "QE", "Y": "YE", "A": "YE", "BM": "BME", "BQ": "BQE", "BY": "BYE", "BA": "BYE",
    "AS": "YS", "BAS": "BYS",
}  # fmt: skip
_ALIAS = re.compile(r"^(\d*)([A-Za-z]+)(-.+)?$")


def to_offset(frequency: str) -> Any:
    """The pandas offset of an alias, legacy ones included (``H``, ``T``, ``M``, ``Q`` ...).

    Raises:
        ValueError: for an alias that is not a frequency.
    """
    from pandas.tseries.frequencies import to_offset as pandas_offset

    try:
        return pandas_offset(frequency)
    except ValueError:
        match = _ALIAS.match(frequency.strip())
        if match and match.group(2) in _LEGACY_UNITS:
            n, unit, suffix = match.groups()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                return pandas_offset(f"{n}{_LEGACY_UNITS[unit]}{suffix or ''}")
    raise ValueError(f"unknown frequency {frequency!r}: use a pandas alias such as h, D, W or 15min")


def norm_freq_str(freq_str: str) -> str:
    """GluonTS's base alias of an offset name: ``W-SUN`` -> ``W``, ``MS`` -> ``ME``, ``QS-JAN`` -> ``QE``."""
    base = freq_str.split("-")[0]
    if len(base) >= 2 and base.endswith("S"):
        base = base[:-1]
        if _pandas_at_least(2, 2):  # period ends were renamed in pandas 2.2 ("M" -> "ME")
            base += "E"
    return base


def get_seasonality(frequency: str, seasonalities: dict[str, int] = DEFAULT_SEASONALITIES) -> int:
    """GluonTS ``get_seasonality``: ``h`` 24, ``2h`` 12, ``30min`` 48, ``D`` 1, ``W`` 1, ``MS`` 12, ``B`` 5.

    Raises:
        ValueError: for an alias that is not a frequency.
    """
    offset = to_offset(frequency)
    base = seasonalities.get(norm_freq_str(offset.name), 1)
    season, remainder = divmod(base, int(offset.n))
    if not remainder:
        return season
    logger.warning("multiple %d does not divide base seasonality %d: using seasonality 1", offset.n, base)
    return 1


season_for_frequency = get_seasonality


def resolve_season(frequency: str, mase_season: int | str | None = "auto") -> tuple[int, str]:
    """``(season, source)``: the spec's ``mase_season`` when an int, else GluonTS's for ``frequency``."""
    if isinstance(mase_season, int) and not isinstance(mase_season, bool):
        if mase_season < 1:
            raise ValueError(f"mase_season must be 'auto' or a positive integer, got {mase_season}")
        return mase_season, "spec"
    return get_seasonality(frequency), "gluonts"


def pinball(y_true: np.ndarray, y_pred: np.ndarray, level: float) -> np.ndarray:
    """Elementwise pinball (quantile) loss of ``y_pred`` at ``level`` (half GluonTS's quantile loss)."""
    diff = np.asarray(y_true, dtype=np.float64) - np.asarray(y_pred, dtype=np.float64)
    return np.maximum(level * diff, (level - 1.0) * diff)


def quantile_loss(y_true: np.ndarray, y_pred: np.ndarray, level: float) -> np.ndarray:
    """GluonTS ``stats.quantile_loss``: ``2 * |(y - yhat) * ((yhat >= y) - q)|``, elementwise."""
    y = np.asarray(y_true, dtype=np.float64)
    yhat = np.asarray(y_pred, dtype=np.float64)
    return 2.0 * np.abs((y - yhat) * ((yhat >= y) - level))


def wql(y_true: np.ndarray, quantile_preds: np.ndarray, quantile_levels: Sequence[float]) -> float:
    """Mean weighted sum quantile loss over every element of ``y_true`` (GluonTS definition).

    Args:
        y_true: actual values, any shape ``S``; NaN values are masked.
        quantile_preds: forecasts of shape ``S + (len(quantile_levels),)``.
        quantile_levels: the levels in the last axis of ``quantile_preds``.

    Returns:
        ``mean_q sum(quantile_loss_q) / sum(|y_true|)`` over the observed values.

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
    losses = [quantile_loss(y[mask], preds[..., k][mask], q).sum() for k, q in enumerate(levels)]
    return float(np.mean(losses) / denominator)


def seasonal_error(y_past: np.ndarray, season: int) -> float:
    """Mean ``|y[t] - y[t - m]|`` over the past, pairs with a NaN left out; NaN when none is left.

    ``m`` is ``season``, or 1 when ``season`` is longer than the past (GluonTS).
    """
    past = np.asarray(y_past, dtype=np.float64).ravel()
    m = 1 if season > past.size else season
    diffs = np.abs(past[m:] - past[: past.size - m])
    diffs = diffs[np.isfinite(diffs)]
    return float(diffs.mean()) if diffs.size else float("nan")


def mase(y_true: np.ndarray, point_pred: np.ndarray, y_past: np.ndarray, season: int) -> float:
    """MASE of one item on one window: mean over observed steps of ``|y - yhat|`` / seasonal error.

    Returns:
        NaN when the seasonal error is zero or undefined, no step is observed, or the
        forecast is missing.
    """
    y = np.asarray(y_true, dtype=np.float64)
    yhat = np.asarray(point_pred, dtype=np.float64)
    if y.shape != yhat.shape:
        raise ValueError(f"point_pred has shape {yhat.shape}, expected {y.shape}")
    scale = seasonal_error(y_past, season)
    errors = np.abs(y - yhat)[~np.isnan(y)]
    if not np.isfinite(scale) or scale == 0 or errors.size == 0 or not np.isfinite(errors).all():
        return float("nan")
    return float(errors.mean() / scale)


def seasonal_naive(
    past: np.ndarray,
    horizon: int,
    season: int,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
) -> tuple[np.ndarray, np.ndarray]:
    """Repeat the last season, missing values filled (see the module doc).

    Returns:
        ``(point, quantiles)``: shapes ``(horizon,)`` and ``(horizon, len(levels))``; every
        quantile equals the point forecast; all NaN when the past has no finite value.
    """
    values = np.asarray(past, dtype=np.float64).ravel()
    finite = np.isfinite(values)
    if not finite.any():
        point = np.full(horizon, np.nan)
    elif values.size < season:
        point = np.full(horizon, values[finite].mean())
    else:
        point = _last_season(values, season)[np.arange(horizon) % season]
    return point, np.repeat(point[:, None], len(quantile_levels), axis=1)


def naive_window(
    window: Any, season: int, quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS
) -> np.ndarray:
    """Seasonal-naive quantile forecasts of a window's items, ``(n_items, horizon, len(levels))``."""
    horizon = int(window.prediction_length)
    return np.stack([seasonal_naive(p, horizon, season, quantile_levels)[1] for p in window.past])


def _last_season(values: np.ndarray, season: int) -> np.ndarray:
    """The last season; a NaN takes the same phase of an earlier season, else the last finite value."""
    start = values.size - season
    last = values[start:].copy()
    for k in np.flatnonzero(~np.isfinite(last)):
        earlier = values[start + k - season :: -season] if start + k >= season else values[:0]
        earlier = earlier[np.isfinite(earlier)]
        if earlier.size:
            last[k] = earlier[0]
        else:
            before = values[: start + k][np.isfinite(values[: start + k])]
            last[k] = before[-1] if before.size else values[np.isfinite(values)][0]
    return last


@dataclass(frozen=True, kw_only=True)
class ItemScores:
    """The sums GluonTS aggregates, per item of one model (over one window or several).

    Every array has shape ``(n_items,)``. An item without a forecast contributes zeros
    and ``forecast = False``; one whose seasonal error is zero or undefined contributes
    nothing to MASE (``observed = 0``).

    Attributes:
        item_ids: the items, in the order of the arrays.
        quantile_loss: the quantile loss summed over observed steps, averaged over levels.
        abs_target: ``sum |y|`` over observed steps.
        scaled_error: ``sum |y - median| / seasonal error`` over observed steps.
        observed: steps counted in ``scaled_error``.
        forecast: whether the model forecast the item.
    """

    item_ids: tuple[str, ...]
    quantile_loss: np.ndarray
    abs_target: np.ndarray
    scaled_error: np.ndarray
    observed: np.ndarray
    forecast: np.ndarray

    def wql(self) -> float | None:
        """WQL over every forecast item; None when undefined (no item, or ``sum |y|`` is zero)."""
        return _ratio(self.quantile_loss[self.forecast].sum(), self.abs_target[self.forecast].sum())

    def mase(self) -> float | None:
        """MASE over every observed step of every item with a defined scale; None when there is none."""
        return _ratio(self.scaled_error.sum(), self.observed.sum())

    def item_wql(self) -> list[float | None]:
        pairs = zip(self.quantile_loss, self.abs_target, self.forecast, strict=True)
        return [_ratio(q, a) if f else None for q, a, f in pairs]

    def item_mase(self) -> list[float | None]:
        return [_ratio(s, n) for s, n in zip(self.scaled_error, self.observed, strict=True)]

    def skipped(self) -> dict[str, int]:
        """``{"no_forecast", "no_mase"}``: items left out of WQL and of MASE."""
        return {"no_forecast": int((~self.forecast).sum()), "no_mase": int((self.observed == 0).sum())}


def score_items(
    *,
    item_ids: Sequence[str],
    future: np.ndarray,
    quantile_preds: np.ndarray,
    quantile_levels: Sequence[float],
    past: Sequence[np.ndarray],
    season: int,
) -> ItemScores:
    """Per-item sums of one model on one window.

    Args:
        item_ids: the window's items.
        future: actual values, ``(n_items, horizon)``; NaN is masked.
        quantile_preds: ``(n_items, horizon, len(levels))``; an item with a NaN has no forecast.
        quantile_levels: the levels; must hold 0.5 (MASE scores the median).
        past: each item's context target (the seasonal error's input).
        season: seasonal period of the seasonal error.
    """
    y = np.asarray(future, dtype=np.float64)
    preds = np.asarray(quantile_preds, dtype=np.float64)
    levels = [float(q) for q in quantile_levels]
    if preds.shape != (*y.shape, len(levels)) or y.ndim != 2:
        raise ValueError(f"quantile_preds has shape {preds.shape}, expected {(*y.shape, len(levels))}")
    if 0.5 not in levels:
        raise ValueError("quantile_levels must include 0.5: MASE scores the median")
    mask = ~np.isnan(y)
    forecast = np.isfinite(preds).all(axis=(1, 2))
    y0 = np.where(mask, y, 0.0)
    losses = np.stack([quantile_loss(y0, preds[..., k], q) for k, q in enumerate(levels)]).mean(axis=0)
    ql = np.where(mask & forecast[:, None], losses, 0.0).sum(axis=1)
    abs_target = np.where(forecast, np.abs(y0).sum(axis=1), 0.0)
    scales = np.array([seasonal_error(p, season) for p in past], dtype=np.float64)
    usable = forecast & np.isfinite(scales) & (scales > 0)
    errors = np.abs(y0 - preds[..., levels.index(0.5)]) / np.where(usable, scales, 1.0)[:, None]
    scaled = np.where(mask & usable[:, None], errors, 0.0).sum(axis=1)
    observed = np.where(usable, mask.sum(axis=1), 0)
    return ItemScores(
        item_ids=tuple(str(i) for i in item_ids), quantile_loss=ql, abs_target=abs_target,
        scaled_error=scaled, observed=observed, forecast=forecast,
    )  # fmt: skip


def combine(scores: Iterable[ItemScores]) -> ItemScores:
    """The sums of several windows per item id (an item forecast in any window counts as forecast)."""
    order: dict[str, int] = {}
    parts = list(scores)
    for s in parts:
        for item in s.item_ids:
            order.setdefault(item, len(order))
    n = len(order)
    totals = {name: np.zeros(n) for name in ("quantile_loss", "abs_target", "scaled_error", "observed")}
    forecast = np.zeros(n, dtype=bool)
    for s in parts:
        index = np.array([order[i] for i in s.item_ids], dtype=int)
        for name, total in totals.items():
            np.add.at(total, index, getattr(s, name))
        forecast[index] |= s.forecast
    return ItemScores(item_ids=tuple(order), forecast=forecast, **totals)


def _ratio(numerator: float, denominator: float) -> float | None:
    if not denominator or not np.isfinite(numerator) or not np.isfinite(denominator):
        return None
    return float(numerator / denominator)


def _pandas_at_least(major: int, minor: int) -> bool:
    import pandas as pd

    parts = re.findall(r"\d+", pd.__version__)[:2]
    return tuple(int(p) for p in parts) >= (major, minor)


def evaluate(
    model: Any,
    window: Any,
    quantile_levels: Sequence[float] = DEFAULT_QUANTILE_LEVELS,
    season: int | None = None,
    *,
    batch_size: int = 256,
) -> dict[str, Any]:
    """One model and seasonal naive on one window (``trainer.evaluate`` scores all three models).

    Args:
        model: a model folder, a ``Chronos2Pipeline`` or a ``Chronos2Model``.
        window: a :class:`trainer.data.EvalSet`.
        quantile_levels: the WQL levels (must hold 0.5).
        season: seasonal period; None: GluonTS's for the window's frequency.
        batch_size: prediction batch size.

    Returns:
        ``{"model_wql", "model_mase", "seasonal_naive_wql", "seasonal_naive_mase", "season",
        "n_items", "prediction_length", "quantile_levels"}`` (None where undefined).
    """
    from trainer.evaluate import predict_window

    levels = [float(q) for q in quantile_levels]
    season = season if season is not None else get_seasonality(str(window.frequency))
    result: dict[str, Any] = {}
    for name, preds in (
        ("model", predict_window(_as_pipeline(model), window, levels, batch_size=batch_size)),
        ("seasonal_naive", naive_window(window, season, levels)),
    ):
        scores = score_items(
            item_ids=window.item_ids, future=window.future, quantile_preds=preds,
            quantile_levels=levels, past=window.past, season=season,
        )  # fmt: skip
        result.update({f"{name}_wql": scores.wql(), f"{name}_mase": scores.mase()})
    n_items, horizon = np.asarray(window.future).shape
    return dict(result, season=season, n_items=n_items, prediction_length=horizon, quantile_levels=levels)


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
