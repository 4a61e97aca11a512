"""Three models on the same test windows: fine-tuned, zero-shot (the base) and seasonal naive.

:func:`evaluate_models` predicts every test window (``Dataset.test_windows``, oldest
first) with each pipeline, scores them with :mod:`trainer.metrics` (GluonTS WQL and
MASE) next to seasonal naive, decides whether the fine-tuned model beats the base from
the training child's validation block (:func:`decide`), and builds four documents:

- ``record``: training.json's ``evaluation`` (schema ``training`` ``$defs/evaluation``).
- ``metrics``: the flat training.json metrics (:func:`_flat_metrics`).
- ``scores`` (:data:`common.layout.METRICS_KEY`): every model on every window and item, and overall::

    {"prediction_length", "frequency", "season", "season_source", "quantile_levels",
     "models": [...], "windows": [{"name", "items", "first_start", "last_start"}],
     "overall": {model: {"wql", "mase", "windows": [{"name", "wql", "mase"}], "skipped"}},
     "items": [{"item_id", "overall": {model: {"wql", "mase"}},
                "windows": {window: {model: {"wql", "mase"}}}}]}

- ``forecasts`` (:data:`common.layout.FORECASTS_KEY`): chart data of the last test window
  for up to :data:`MAX_ITEMS` items::

    {"prediction_length", "frequency", "quantile_levels": [0.1, 0.5, 0.9], "season", "window",
     "items": [{"item_id", "context_timestamps", "context_values", "horizon_timestamps",
                "actual", "median", "q10", "q90", "zero_shot_median", "zero_shot_q10",
                "zero_shot_q90", "seasonal_naive"}]}

  The context is the last ``3 * prediction_length`` points before the window; the
  timestamps come from each item's first forecast timestamp (``EvalSet.starts``).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from trainer import metrics as m

log = logging.getLogger(__name__)

FINE_TUNED, ZERO_SHOT, SEASONAL_NAIVE = "fine_tuned", "zero_shot", "seasonal_naive"
MODELS = (FINE_TUNED, ZERO_SHOT, SEASONAL_NAIVE)
MAX_ITEMS = 8
MAX_RECORD_ITEMS = 1000
FORECAST_LEVELS = (0.1, 0.5, 0.9)
WORSE = (
    "fine-tuned model does not beat the base model (zero-shot) on validation: WQL {best:.4g} vs {zero:.4g}"
)
_VALIDATION_KEYS = (
    *("zero_shot_wql", "zero_shot_loss", "best_wql", "best_step"),
    *("history", "early_stopped", "stopped_at_step"),
)


@dataclass(frozen=True, kw_only=True)
class Decision:
    """What the validation block says: ``beats_zero_shot`` (None: not measured), what to export, warnings."""

    beats_zero_shot: bool | None
    exported: str
    warnings: tuple[str, ...]


@dataclass(frozen=True, kw_only=True)
class Evaluation:
    """The evaluation's documents (see the module doc) and its decision."""

    record: dict[str, Any]
    metrics: dict[str, float | None]
    scores: dict[str, Any]
    forecasts: dict[str, Any]
    decision: Decision


def decide(validation: Mapping[str, Any] | None, *, keep_base_if_worse: bool) -> Decision:
    """Fine-tuned beats zero-shot when its best validation WQL is below the base's (step 0).

    Args:
        validation: the training child's validation block (None: no validation ran).
        keep_base_if_worse: export the base model when the fine-tuned one does not beat it.
    """
    best = _number((validation or {}).get("best_wql"))
    zero = _number((validation or {}).get("zero_shot_wql"))
    if best is None or zero is None:
        return Decision(beats_zero_shot=None, exported=FINE_TUNED, warnings=())
    if best < zero:
        return Decision(beats_zero_shot=True, exported=FINE_TUNED, warnings=())
    warnings = [WORSE.format(best=best, zero=zero)]
    if keep_base_if_worse:
        warnings.append("exported the base model instead (keep_base_if_worse = true)")
    return Decision(
        beats_zero_shot=False, exported="base" if keep_base_if_worse else FINE_TUNED, warnings=tuple(warnings)
    )


def predict_window(
    pipeline: Any,
    window: Any,
    quantile_levels: Sequence[float] = m.DEFAULT_QUANTILE_LEVELS,
    *,
    batch_size: int = 256,
) -> np.ndarray:
    """Quantile forecasts of one window, ``(n_items, prediction_length, len(levels))`` float64."""
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    quantiles, _ = pipeline.predict_quantiles(
        window.inputs, prediction_length=int(window.prediction_length),
        quantile_levels=[float(q) for q in quantile_levels], batch_size=batch_size,
    )  # fmt: skip
    # each element: (n_variates=1, horizon, n_levels)
    return np.stack([q[0].float().cpu().numpy() for q in quantiles]).astype(np.float64)


def evaluate_models(
    pipelines: Mapping[str, Any],
    windows: Sequence[Any],
    *,
    mase_season: int | str | None = "auto",
    validation: Mapping[str, Any] | None = None,
    keep_base_if_worse: bool = False,
    quantile_levels: Sequence[float] = m.DEFAULT_QUANTILE_LEVELS,
    batch_size: int = 256,
) -> Evaluation:
    """Score fine-tuned, zero-shot and seasonal naive on the same test windows.

    Args:
        pipelines: ``{"fine_tuned": Chronos2Pipeline, "zero_shot": Chronos2Pipeline}``.
        windows: the test windows (:class:`trainer.data.EvalSet`), oldest first.
        mase_season: the spec's ``mase_season`` (``"auto"``: GluonTS's for the frequency).
        validation: the training child's validation block, if any.
        keep_base_if_worse: the spec's choice when fine-tuning does not beat the base.
        quantile_levels: the WQL levels (must hold 0.1, 0.5 and 0.9).
        batch_size: prediction batch size.

    Raises:
        ValueError: no window, or windows of different frequencies or horizons.
    """
    if not windows:
        raise ValueError("no test window to evaluate: the data has no backtest window")
    levels = tuple(float(q) for q in quantile_levels)
    first = windows[0]
    if any(w.frequency != first.frequency or w.prediction_length != first.prediction_length for w in windows):
        raise ValueError("the test windows disagree on frequency or prediction length")
    season, source = m.resolve_season(str(first.frequency), mase_season)
    predictions, scores = _predict_and_score(pipelines, windows, season, levels, batch_size)
    decision = decide(validation, keep_base_if_worse=keep_base_if_worse)
    overall = {name: m.combine(scores[name]) for name in MODELS}
    record = _record(windows, scores, overall, season=season, source=source, levels=levels)
    record.update(
        validation=_validation(validation), beats_zero_shot=decision.beats_zero_shot,
        exported=decision.exported, warnings=[*decision.warnings, *_skip_warnings(overall)],
    )  # fmt: skip
    last = {name: preds[-1] for name, preds in predictions.items()}
    log.info(
        "evaluation over %d windows: fine-tuned WQL %s, zero-shot WQL %s, seasonal naive WQL %s",
        len(windows), *(record["models"][k]["wql"] for k in MODELS),
    )  # fmt: skip
    return Evaluation(
        record=record,
        metrics=_flat_metrics(record, validation, items=len(windows[-1].item_ids), windows=len(windows)),
        scores=_scores_doc(windows, scores, overall, record),
        forecasts=forecasts_doc(windows[-1], last, levels, season, name=_name(windows[-1], len(windows) - 1)),
        decision=decision,
    )


def _predict_and_score(
    pipelines: Mapping[str, Any],
    windows: Sequence[Any],
    season: int,
    levels: Sequence[float],
    batch_size: int,
) -> tuple[dict[str, list[np.ndarray]], dict[str, list[m.ItemScores]]]:
    """Each model's forecasts and per-item scores, per window."""
    predictions: dict[str, list[np.ndarray]] = {name: [] for name in MODELS}
    scores: dict[str, list[m.ItemScores]] = {name: [] for name in MODELS}
    for window in windows:
        for name in MODELS:
            if name == SEASONAL_NAIVE:
                preds = m.naive_window(window, season, levels)
            else:
                preds = predict_window(pipelines[name], window, levels, batch_size=batch_size)
            predictions[name].append(preds)
            scores[name].append(
                m.score_items(
                    item_ids=window.item_ids,
                    future=window.future,
                    quantile_preds=preds,
                    quantile_levels=levels,
                    past=window.past,
                    season=season,
                )  # fmt: skip
            )
    return predictions, scores


def _record(
    windows: Sequence[Any],
    scores: Mapping[str, list[m.ItemScores]],
    overall: Mapping[str, m.ItemScores],
    *,
    season: int,
    source: str,
    levels: Sequence[float],
) -> dict[str, Any]:
    models = {name: _model_scores(windows, scores[name], overall[name]) for name in MODELS}
    items = _item_rows(overall)
    return {
        "windows": [_window_info(w, k) for k, w in enumerate(windows)],
        "season": int(season),
        "season_source": source,
        "quantile_levels": list(levels),
        "models": models,
        "items": items[:MAX_RECORD_ITEMS],
        "items_truncated": len(items) > MAX_RECORD_ITEMS,
    }


def _model_scores(
    windows: Sequence[Any], per_window: list[m.ItemScores], total: m.ItemScores
) -> dict[str, Any]:
    return {
        "wql": total.wql(),
        "mase": total.mase(),
        "windows": [
            {"name": _name(w, k), "wql": s.wql(), "mase": s.mase()}
            for k, (w, s) in enumerate(zip(windows, per_window, strict=True))
        ],
    }


def _item_rows(overall: Mapping[str, m.ItemScores]) -> list[dict[str, Any]]:
    """Per item over all windows (every model saw the same windows, so the items are in one order)."""
    columns = {name: (overall[name].item_wql(), overall[name].item_mase()) for name in MODELS}
    return [
        {"item_id": item, **{name: {"wql": w[k], "mase": ms[k]} for name, (w, ms) in columns.items()}}
        for k, item in enumerate(overall[FINE_TUNED].item_ids)
    ]


def _window_info(window: Any, index: int) -> dict[str, Any]:
    info: dict[str, Any] = {"name": _name(window, index), "items": len(window.item_ids)}
    starts = [s for s in getattr(window, "starts", ()) or () if s]
    if starts:
        info.update(first_start=min(starts), last_start=max(starts))
    return info


def _name(window: Any, index: int) -> str:
    return str(getattr(window, "name", None) or f"test-{index + 1}")


def _validation(block: Mapping[str, Any] | None) -> dict[str, Any]:
    """training.json's validation block: the child's, only the schema's keys, non-finite numbers null."""
    block = dict(block or {})
    out: dict[str, Any] = {k: block.get(k) for k in _VALIDATION_KEYS if k in block}
    for key in ("zero_shot_wql", "zero_shot_loss", "best_wql"):
        if key in out:
            out[key] = _number(out[key])
    for key in ("best_step", "stopped_at_step"):
        out[key] = int(block[key]) if block.get(key) is not None else None
    out.setdefault("zero_shot_wql", None)
    out.setdefault("best_wql", None)
    out["history"] = [[int(s), _number(w), _number(loss)] for s, w, loss in block.get("history") or []]
    out["early_stopped"] = bool(block.get("early_stopped", False))
    return out


def _flat_metrics(
    record: Mapping[str, Any], validation: Mapping[str, Any] | None, *, items: int, windows: int
) -> dict[str, float | None]:
    models = record["models"]
    return {
        "model_wql": models[FINE_TUNED]["wql"],
        "model_mase": models[FINE_TUNED]["mase"],
        "baseline_wql": models[SEASONAL_NAIVE]["wql"],
        "baseline_mase": models[SEASONAL_NAIVE]["mase"],
        "zero_shot_wql": models[ZERO_SHOT]["wql"],
        "zero_shot_mase": models[ZERO_SHOT]["mase"],
        "val_wql": _number((validation or {}).get("best_wql")),
        "zero_shot_val_wql": _number((validation or {}).get("zero_shot_wql")),
        "season": float(record["season"]),
        "eval_items": float(items),
        "backtest_windows": float(windows),
    }


def _scores_doc(
    windows: Sequence[Any],
    scores: Mapping[str, list[m.ItemScores]],
    overall: Mapping[str, m.ItemScores],
    record: Mapping[str, Any],
) -> dict[str, Any]:
    first = windows[0]
    items: dict[str, dict[str, Any]] = {
        row["item_id"]: {"item_id": row["item_id"], "overall": {n: row[n] for n in MODELS}, "windows": {}}
        for row in _item_rows(overall)
    }
    for k, window in enumerate(windows):
        name = _name(window, k)
        for model in MODELS:
            s = scores[model][k]
            for item, w, ms in zip(s.item_ids, s.item_wql(), s.item_mase(), strict=True):
                items[item]["windows"].setdefault(name, {})[model] = {"wql": w, "mase": ms}
    return {
        "prediction_length": int(first.prediction_length),
        "frequency": str(first.frequency),
        "season": record["season"],
        "season_source": record["season_source"],
        "quantile_levels": record["quantile_levels"],
        "models": list(MODELS),
        "windows": record["windows"],
        "overall": {n: dict(record["models"][n], skipped=overall[n].skipped()) for n in MODELS},
        "items": list(items.values()),
    }


def _skip_warnings(overall: Mapping[str, m.ItemScores]) -> list[str]:
    out = []
    for name in MODELS:
        label, skipped = name.replace("_", " "), overall[name].skipped()
        if skipped["no_forecast"]:
            out.append(f"{label}: {skipped['no_forecast']} items without a finite past value are left out")
        if skipped["no_mase"] > skipped["no_forecast"]:
            flat = skipped["no_mase"] - skipped["no_forecast"]
            out.append(
                f"{label}: MASE leaves out {flat} items whose past gives no seasonal error (flat or missing)"
            )
    return out


def forecasts_doc(
    window: Any, predictions: Mapping[str, np.ndarray], levels: Sequence[float], season: int, *, name: str
) -> dict[str, Any]:
    """The forecasts document of one window (see the module doc) from its ``predict_window`` outputs."""
    horizon, freq = int(window.prediction_length), str(window.frequency)
    index = [list(levels).index(q) for q in FORECAST_LEVELS]
    starts = list(getattr(window, "starts", ()) or ())
    items = []
    for i in pick_items(len(window.item_ids)):
        past = np.asarray(window.past[i], dtype=float)
        n_ctx = min(3 * horizon, past.size)
        context, future = _stamps(starts[i] if i < len(starts) else None, freq, n_ctx, horizon)
        tuned, zero = predictions[FINE_TUNED][i][:, index], predictions[ZERO_SHOT][i][:, index]
        items.append(
            {
                "item_id": window.item_ids[i],
                "context_timestamps": context,
                "context_values": _floats(past[past.size - n_ctx :]),
                "horizon_timestamps": future,
                "actual": _floats(np.asarray(window.future[i], dtype=float)),
                "median": _floats(tuned[:, 1]),
                "q10": _floats(tuned[:, 0]),
                "q90": _floats(tuned[:, 2]),
                "zero_shot_median": _floats(zero[:, 1]),
                "zero_shot_q10": _floats(zero[:, 0]),
                "zero_shot_q90": _floats(zero[:, 2]),
                "seasonal_naive": _floats(predictions[SEASONAL_NAIVE][i][:, index[1]]),
            }
        )
    return {
        "prediction_length": horizon,
        "frequency": freq,
        "quantile_levels": list(FORECAST_LEVELS),
        "season": int(season),
        "window": name,
        "items": items,
    }


def pick_items(n: int, k: int = MAX_ITEMS) -> list[int]:
    """Up to ``k`` indices spread evenly over ``n`` items."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def _stamps(
    start: str | None, freq: str, n_context: int, horizon: int
) -> tuple[list[str] | None, list[str] | None]:
    """The context's and the horizon's timestamps around a window's first forecast timestamp."""
    import pandas as pd

    if not start:
        return None, None
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
    offset = m.to_offset(freq)
    index = pd.date_range(end=first, periods=n_context + 1, freq=offset)[:-1].append(
        pd.date_range(start=first, periods=horizon, freq=offset)
    )
    stamps = [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in index]
    return stamps[:n_context], stamps[n_context:]


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values).ravel()]
