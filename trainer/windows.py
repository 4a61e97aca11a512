"""Rolling-origin windows: which items are usable, their series on the grid, and the split.

For an item of ``n`` steps on the frequency grid, horizon ``H`` and ``K`` backtest
windows: test window ``k`` (``k = 1..K``, oldest first) is steps
``[n-(K-k+1)H, n-(K-k)H)``, validation is ``[n-(K+1)H, n-KH)`` and the training
inputs are ``[0, n-(K+1)H)``. Every forecast window's context is everything
before its start, so no value of a test window reaches the training inputs or the
validation window.

An item is dropped (and counted in :func:`select_items`' report) when it is shorter
than ``(K + 1) * H + H + min_past`` steps or when more than ``max_nan_fraction`` of
its steps are missing (NaN in the data, or a gap filled with NaN on the grid).
The per-item arrays are views into the loaded columns when an item has no gap; an
item with gaps gets its own arrays, NaN (numbers) or ``""`` (strings) in the gaps.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from trainer.data_validation import DataValidationError, Grid

MAX_EXAMPLES = 5
TOO_SHORT, TOO_MANY_NAN = "too_short", "too_many_nan"


@dataclass(frozen=True, kw_only=True)
class EvalSet:
    """One forecast window over every kept item.

    Attributes:
        name: ``"validation"`` or ``"test-1"`` .. ``"test-K"`` (``test-1`` the oldest).
        item_ids: item ids, in the order of every other field.
        inputs: Chronos-2 predict inputs: the context target, the covariates over the
            context (``past_covariates``) and the known covariates' values over the
            horizon (``future_covariates``).
        past: each item's context target (float32, may hold NaN).
        future: the actual target over the window, ``(n_items, prediction_length)``
            float32 (NaN where a gap was filled).
        starts: each item's first forecast timestamp, ``"%Y-%m-%dT%H:%M:%SZ"`` (UTC).
        prediction_length: horizon length.
        frequency: the data's frequency alias.
    """

    name: str
    item_ids: tuple[str, ...]
    inputs: list[dict[str, Any]] = field(repr=False)
    past: list[np.ndarray] = field(repr=False)
    future: np.ndarray = field(repr=False)
    starts: tuple[str, ...] = field(repr=False)
    prediction_length: int
    frequency: str


@dataclass(frozen=True, kw_only=True)
class Series:
    """The kept items on the frequency grid, one array per item and column."""

    item_ids: tuple[str, ...]
    codes: np.ndarray  # the items' codes in the grid
    target: list[np.ndarray]
    covariates: dict[str, list[np.ndarray]]


def min_length(prediction_length: int, backtest_windows: int, min_past: int) -> int:
    """Fewest grid steps an item needs: K test windows, validation, one training window."""
    return (backtest_windows + 1) * prediction_length + prediction_length + min_past


def select_items(
    names: np.ndarray, grid: Grid, nan_counts: np.ndarray, *, needed: int, max_nan_fraction: float
) -> tuple[np.ndarray, dict[str, Any]]:
    """Which items are usable, and the report of those that are not (``Dataset.drops``).

    Args:
        names: item ids by code.
        grid: where every row lies on the frequency grid.
        nan_counts: NaN targets in the data, per item.
        needed: the minimum length (:func:`min_length`).
        max_nan_fraction: the largest share of missing steps an item may have.

    Returns:
        ``(keep, drops)``: a boolean mask by item code and the drop report.
    """
    lengths, gaps = grid.lengths, grid.lengths - grid.counts
    share = (gaps + nan_counts) / lengths
    short = lengths < needed
    sparse = ~short & (share > max_nan_fraction)
    keep = ~short & ~sparse
    drops = {
        "items_in": int(names.size),
        "items_kept": int(keep.sum()),
        "dropped": {
            TOO_SHORT: _reason(names, short, lambda i: f"({lengths[i]} of {needed} steps)"),
            TOO_MANY_NAN: _reason(names, sparse, lambda i: f"({share[i]:.0%} missing)"),
        },
        "gaps_filled": {"items": int(((gaps > 0) & keep).sum()), "values": int(gaps[keep].sum())},
        "unsorted_items": 0,
    }
    return keep, drops


def _reason(names: np.ndarray, mask: np.ndarray, detail: Any) -> dict[str, Any]:
    which = np.flatnonzero(mask)
    return {"count": int(which.size), "examples": [f"{names[i]} {detail(i)}" for i in which[:MAX_EXAMPLES]]}


def require_items(drops: dict[str, Any], *, min_items: int, needed: int, max_nan_fraction: float) -> None:
    """Fail when fewer than ``min_items`` items are usable, saying how many were dropped and why.

    Raises:
        DataValidationError: too few items remain.
    """
    kept, total = drops["items_kept"], drops["items_in"]
    if kept >= max(min_items, 1):
        return
    short, sparse = drops["dropped"][TOO_SHORT], drops["dropped"][TOO_MANY_NAN]
    why = [
        f"{short['count']} too short (fewer than {needed} steps, the backtest windows, validation "
        f"and one training window; e.g. {', '.join(short['examples']) or '-'})",
        f"{sparse['count']} with more than {max_nan_fraction:.0%} of their steps missing "
        f"(e.g. {', '.join(sparse['examples']) or '-'})",
    ]
    raise DataValidationError(
        f"only {kept} of {total} item(s) are usable, data.min_items is {min_items}: dropped "
        f"{'; '.join(why)}; provide longer or more complete series, or lower prediction_length "
        "or backtest_windows, or raise data.max_nan_fraction"
    )


def on_grid(
    names: np.ndarray, grid: Grid, keep: np.ndarray, columns: dict[str, np.ndarray], labels: dict[str, Any]
) -> tuple[np.ndarray, dict[str, list[np.ndarray]]]:
    """Each kept item's arrays on the grid (views when it has no gap).

    Args:
        names: item ids by code.
        grid: the rows' grid positions (rows sorted by item then time).
        keep: kept items by code.
        columns: the sorted rows' columns: float32, or int32 codes into ``labels[name]``.
        labels: each string column's values by code.

    Returns:
        ``(kept codes, {column: [array per kept item]})``.
    """
    codes = np.flatnonzero(keep)
    out: dict[str, list[np.ndarray]] = {}
    for name, values in columns.items():
        strings = labels.get(name)
        out[name] = [_item_on_grid(grid, int(c), values, strings) for c in codes]
    return codes, out


def _item_on_grid(grid: Grid, code: int, values: np.ndarray, strings: np.ndarray | None) -> np.ndarray:
    start, count, length = int(grid.starts[code]), int(grid.counts[code]), int(grid.lengths[code])
    rows = values[start : start + count]
    if strings is not None:
        filled = np.full(length, "", dtype=strings.dtype)
        filled[grid.positions[start : start + count]] = strings[rows]
        return filled
    if count == length:
        return rows
    filled = np.full(length, np.nan, dtype=values.dtype)
    filled[grid.positions[start : start + count]] = rows
    return filled


def split(
    series: Series,
    grid: Grid,
    *,
    known: tuple[str, ...],
    prediction_length: int,
    backtest_windows: int,
) -> tuple[list[dict[str, Any]], EvalSet, tuple[EvalSet, ...]]:
    """Training inputs, the validation window and the K test windows (oldest first)."""
    horizon, k = prediction_length, backtest_windows
    train: list[dict[str, Any]] = []
    for i, target in enumerate(series.target):
        cut = target.size - (k + 1) * horizon
        entry: dict[str, Any] = {"target": target[:cut]}
        if series.covariates:
            entry["past_covariates"] = {c: v[i][:cut] for c, v in series.covariates.items()}
        if known:
            entry["future_covariates"] = {c: None for c in known}
        train.append(entry)
    validation = _window(series, grid, "validation", k + 1, known=known, horizon=horizon)
    tests = tuple(
        _window(series, grid, f"test-{j}", k - j + 1, known=known, horizon=horizon) for j in range(1, k + 1)
    )
    return train, validation, tests


def _window(
    series: Series, grid: Grid, name: str, back: int, *, known: tuple[str, ...], horizon: int
) -> EvalSet:
    """The window starting ``back`` horizons before each item's end."""
    inputs: list[dict[str, Any]] = []
    futures: list[np.ndarray] = []
    starts = np.empty(len(series.target), dtype=np.int64)
    for i, target in enumerate(series.target):
        start = target.size - back * horizon
        starts[i] = start
        entry: dict[str, Any] = {"target": target[:start]}
        if series.covariates:
            entry["past_covariates"] = {c: v[i][:start] for c, v in series.covariates.items()}
        if known:
            entry["future_covariates"] = {c: series.covariates[c][i][start : start + horizon] for c in known}
        inputs.append(entry)
        futures.append(target[start : start + horizon])
    return EvalSet(
        name=name,
        item_ids=series.item_ids,
        inputs=inputs,
        past=[entry["target"] for entry in inputs],
        future=np.stack(futures).astype(np.float32, copy=False),
        starts=grid.utc_strings(series.codes, starts),
        prediction_length=horizon,
        frequency=grid.frequency,
    )
