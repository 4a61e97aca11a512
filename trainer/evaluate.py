"""Evaluation glue: metrics of the final model and the forecasts document for the report.

Metrics come from :func:`trainer.metrics.evaluate` (WQL and MASE of the model and
of the seasonal-naive baseline on the held-out tail). The forecasts document
(:data:`common.layout.FORECASTS_KEY` under the run prefix, written by the evaluation
phase) holds, for up to 8 held-out items, what the report plots::

    {"prediction_length", "frequency", "quantile_levels": [0.1, 0.5, 0.9],
     "items": [{"item_id", "context_timestamps", "context_values", "horizon_timestamps",
                "actual", "median", "q10", "q90", "seasonal_naive"}]}

The context is the last ``3 * prediction_length`` points before the horizon.
The held-out data keeps no timestamps, so they are rebuilt from each item's last
timestamp in the parquet files and the frequency (the data is regular: the data
module rejects gaps).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

MAX_ITEMS = 8
FORECAST_LEVELS = (0.1, 0.5, 0.9)


def load_pipeline(model_dir: Path, device: str) -> Any:
    """The saved model as a ``Chronos2Pipeline`` on ``device``."""
    from chronos.chronos2 import Chronos2Pipeline

    return Chronos2Pipeline.from_pretrained(str(model_dir), device_map=device)


def evaluate_model(pipeline: Any, dataset: Any) -> dict[str, float | None]:
    """training.json metrics: ``model_wql, baseline_wql, model_mase, baseline_mase``."""
    from trainer.metrics import evaluate

    scores = evaluate(pipeline, dataset.eval_set)
    names = {
        "model_wql": "model_wql",
        "baseline_wql": "seasonal_naive_wql",
        "model_mase": "model_mase",
        "baseline_mase": "seasonal_naive_mase",
    }
    out: dict[str, float | None] = {k: _number(scores.get(v)) for k, v in names.items()}
    out["eval_items"] = float(scores.get("n_items", 0))
    out["season"] = float(scores.get("season", 0))
    return out


def _number(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def pick_items(n: int, k: int = MAX_ITEMS) -> list[int]:
    """Up to ``k`` indices spread evenly over ``n`` items."""
    if n <= k:
        return list(range(n))
    return sorted({round(i * (n - 1) / (k - 1)) for i in range(k)})


def forecasts(
    pipeline: Any, dataset: Any, files: Sequence[Path], *, item_column: str, timestamp_column: str
) -> dict[str, Any]:
    """The forecasts document (:data:`~common.layout.FORECASTS_KEY`) for up to :data:`MAX_ITEMS` items."""
    from trainer.metrics import season_for_frequency, seasonal_naive

    ev = dataset.eval_set
    horizon, freq = int(ev.prediction_length), str(ev.frequency)
    chosen = pick_items(len(ev.item_ids))
    quantiles, _ = pipeline.predict_quantiles(
        [ev.inputs[i] for i in chosen], prediction_length=horizon, quantile_levels=list(FORECAST_LEVELS)
    )
    last = last_timestamps(files, item_column=item_column, timestamp_column=timestamp_column)
    season = season_for_frequency(freq)
    items = []
    for q, i in zip(quantiles, chosen, strict=True):
        item_id = ev.item_ids[i]
        q = np.asarray(q[0].float().cpu().numpy() if hasattr(q, "cpu") else q[0], dtype=float)
        past = np.asarray(ev.past[i], dtype=float)
        n_ctx = min(3 * horizon, past.size)
        stamps = _stamps(last.get(item_id), freq, n_ctx + horizon)
        naive, _ = seasonal_naive(past, horizon, season)
        items.append(
            {
                "item_id": item_id,
                "context_timestamps": stamps[:n_ctx] if stamps else None,
                "context_values": _floats(past[past.size - n_ctx :]),
                "horizon_timestamps": stamps[n_ctx:] if stamps else None,
                "actual": _floats(np.asarray(ev.future[i], dtype=float)),
                "median": _floats(q[:, 1]),
                "q10": _floats(q[:, 0]),
                "q90": _floats(q[:, 2]),
                "seasonal_naive": _floats(naive),
            }
        )
    return {
        "prediction_length": horizon,
        "frequency": freq,
        "quantile_levels": list(FORECAST_LEVELS),
        "season": season,
        "items": items,
    }


def last_timestamps(files: Sequence[Path], *, item_column: str, timestamp_column: str) -> dict[str, Any]:
    """Each item's newest timestamp in the parquet files (pandas ``Timestamp``)."""
    import pandas as pd
    import pyarrow.parquet as pq

    frames = [pq.read_table(f, columns=[item_column, timestamp_column]).to_pandas() for f in files]
    df = pd.concat(frames, ignore_index=True)
    df[timestamp_column] = pd.to_datetime(df[timestamp_column], utc=True)
    newest = df.groupby(df[item_column].astype(str))[timestamp_column].max()
    return newest.to_dict()


def _stamps(last: Any, freq: str, n: int) -> list[str] | None:
    import pandas as pd

    if last is None:
        return None
    index = pd.date_range(end=last, periods=n, freq=freq)
    return [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in index.tz_convert("UTC")]


def _floats(values: np.ndarray) -> list[float | None]:
    return [float(v) if math.isfinite(float(v)) else None for v in np.asarray(values).ravel()]
