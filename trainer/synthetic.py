"""Deterministic synthetic long-format training data (local mode and tests).

Each item is ``level * (1 + daily + weekly + trend + promo lift + noise)``: a daily
sine of random phase and amplitude, a small weekly sine, a linear trend, i.i.d.
noise (``NOISE``), a known-future ``promo`` flag (0/1 runs of half a day to two
days, about weekly, lifting the target by ``PROMO_LIFT`` while on) and a past-only
``temperature`` covariate that follows the daily cycle. The same arguments always
give the same values. Files are split by month and by groups of items:
``YYYY/MM/part-000.parquet``; an item spans several months.

``TINY_TRAINING`` holds settings measured to make the tiny random-init model beat
the seasonal-naive baseline on the default dataset in well under a minute on two
CPU cores (WQL ~0.04 vs 0.07 on the held-out last 24 hours).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

PAST_COVARIATE = "temperature"
KNOWN_COVARIATE = "promo"
DEFAULT_START = "2024-01-01T00:00:00"
_STEPS_PER_DAY = {"h": 24, "D": 1}
NOISE = 0.05
PROMO_LIFT = 0.1
# TrainConfig values (and the loader's horizon) for the tiny model on the default dataset (see module doc)
TINY_TRAINING: dict[str, float | int] = {
    "prediction_length": 24,
    "context_length": 128,
    "num_steps": 600,
    "batch_size": 32,
    "learning_rate": 1e-2,
}


def generate_dataset(
    out_dir: Path,
    *,
    n_items: int = 24,
    length: int = 24 * 42,
    freq: str = "h",
    seed: int = 0,
    with_covariates: bool = True,
    items_per_file: int = 12,
    start: str = DEFAULT_START,
) -> list[Path]:
    """Write the synthetic dataset as parquet files under ``out_dir``.

    Args:
        out_dir: folder to write into (created if missing).
        n_items: number of series.
        length: observations per series.
        freq: ``"h"`` (hourly) or ``"D"`` (daily).
        seed: seed of the generator; same arguments give the same values.
        with_covariates: add ``temperature`` (past-only) and ``promo`` (known future).
        items_per_file: items per part file within a month.
        start: first timestamp (ISO 8601).

    Returns:
        The written files, sorted.

    Raises:
        ValueError: for an unsupported ``freq`` or non-positive sizes.
    """
    if freq not in _STEPS_PER_DAY:
        raise ValueError(f"synthetic data supports freq in {sorted(_STEPS_PER_DAY)}, got {freq!r}")
    if n_items <= 0 or length <= 0 or items_per_file <= 0:
        raise ValueError("n_items, length and items_per_file must be positive")
    table = generate_table(
        n_items=n_items, length=length, freq=freq, seed=seed,
        with_covariates=with_covariates, start=start,
    )  # fmt: skip
    return _write_by_month(table, Path(out_dir), items_per_file=items_per_file)


def generate_table(
    *,
    n_items: int,
    length: int,
    freq: str = "h",
    seed: int = 0,
    with_covariates: bool = True,
    start: str = DEFAULT_START,
) -> pa.Table:
    """Return the synthetic data as one long-format table sorted by item and time."""
    rng = np.random.default_rng(seed)
    per_day = _STEPS_PER_DAY[freq]
    step = np.timedelta64(1, "h") if freq == "h" else np.timedelta64(1, "D")
    timestamps = np.datetime64(start, "s") + np.arange(length) * step
    t = np.arange(length, dtype=np.float64)
    day_phase = 2 * np.pi * (t % per_day) / per_day if per_day > 1 else np.zeros(length)
    week_wave = np.sin(2 * np.pi * t / (7 * per_day))
    temperature_wave = 15 + 8 * np.sin(day_phase - 1.0)
    columns: dict[str, list[np.ndarray]] = {"target": []}
    if with_covariates:
        columns[PAST_COVARIATE] = []
        columns[KNOWN_COVARIATE] = []
    for _ in range(n_items):
        level = rng.uniform(20.0, 100.0)
        daily = rng.uniform(0.15, 0.35) * np.sin(day_phase + rng.uniform(0, 2 * np.pi))
        weekly = rng.uniform(0.02, 0.05) * week_wave
        trend = rng.uniform(-0.05, 0.1) * t / length
        noise = rng.normal(0.0, NOISE, length)
        shape = 1.0 + daily + weekly + trend + noise
        if with_covariates:
            promo = _promo_flags(rng, length, per_day)
            shape = shape + PROMO_LIFT * promo
            temperature = temperature_wave + rng.normal(0, 1.0, length)
            columns[PAST_COVARIATE].append(temperature.astype(np.float32))
            columns[KNOWN_COVARIATE].append(promo.astype(np.float32))
        columns["target"].append((level * shape).astype(np.float32))
    names = pa.array([f"item_{i:03d}" for i in range(n_items)])
    codes = pa.array(np.repeat(np.arange(n_items, dtype=np.int32), length))
    table = {
        "item_id": pa.DictionaryArray.from_arrays(codes, names).cast(pa.string()),
        "timestamp": pa.array(np.tile(timestamps, n_items)),
    }
    return pa.table(table | {k: np.concatenate(v) for k, v in columns.items()})


def _promo_flags(rng: np.random.Generator, length: int, per_day: int) -> np.ndarray:
    """Promotions: runs of ~half a day to two days, roughly one start per week."""
    flags = np.zeros(length)
    k = int(rng.integers(0, 7 * per_day))
    while k < length:
        run = int(rng.integers(max(1, per_day // 2), 2 * per_day + 1))
        flags[k : k + run] = 1.0
        k += run + int(rng.integers(3 * per_day, 9 * per_day))
    return flags


def _write_by_month(table: pa.Table, out_dir: Path, *, items_per_file: int) -> list[Path]:
    """One file per month and group of items (rows keep their order within a file)."""
    months = table.column("timestamp").to_numpy().astype("datetime64[M]")
    month_codes, month_index = np.unique(months, return_inverse=True)
    first_seen = pc.dictionary_encode(table.column("item_id")).combine_chunks()
    groups = first_seen.indices.to_numpy() // items_per_file
    key = month_index.astype(np.int64) * (int(groups.max(initial=0)) + 1) + groups
    order = np.argsort(key, kind="stable")
    key, table = key[order], table.take(pa.array(order))
    bounds = np.flatnonzero(np.r_[True, key[1:] != key[:-1], True])
    written: list[Path] = []
    for start, end in zip(bounds[:-1], bounds[1:], strict=True):
        year, mon = str(month_codes[month_index[order[start]]]).split("-")
        path = out_dir / year / mon / f"part-{int(groups[order[start]]):03d}.parquet"
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(table.slice(start, end - start), path)
        written.append(path)
    logger.info("wrote %d synthetic parquet files under %s", len(written), out_dir)
    return sorted(written)
