"""Load long-format parquet training data into Chronos-2 inputs.

Input: parquet files with one row per item and timestamp, columns named by the run
spec's :class:`~common.runspec.DataSpec`. An item may span several files (e.g. one
file per month). Reading checks columns, null ids/timestamps and numeric targets;
the checks across rows live in :mod:`trainer.data_validation`, and every problem
raises its :class:`~trainer.data_validation.DataValidationError` (one line naming
the file, item and column concerned).

Output (:class:`Dataset`): Chronos-2 input dicts per item. ``train_inputs``
exclude the held-out tail of ``prediction_length`` steps and mark the known
covariates as known-future without values (Chronos-2 fills them from the
context while training); ``eval_set`` has the same context plus the known
covariates' values over the horizon and the actual future target.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from common.runspec import DataSpec
from trainer.data_validation import (
    NS,
    DataValidationError,
    check_cross_file_duplicates,
    check_lengths,
    check_regular,
    check_sorted_within_file,
    frequency_offset,
    infer_frequency,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class EvalSet:
    """The held-out tail of every item.

    Attributes:
        item_ids: item ids, in the order of every other field.
        inputs: Chronos-2 predict inputs (context and known covariates over the horizon).
        past: the target before the tail, per item.
        future: the actual tail, shape ``(n_items, prediction_length)``.
        prediction_length: horizon length.
        frequency: the data's frequency alias.
    """

    item_ids: tuple[str, ...]
    inputs: list[dict[str, Any]] = field(repr=False)
    past: list[np.ndarray] = field(repr=False)
    future: np.ndarray = field(repr=False)
    prediction_length: int
    frequency: str


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """Validated data ready for training and evaluation."""

    spec: DataSpec
    prediction_length: int
    frequency: str
    files: tuple[Path, ...]
    item_ids: tuple[str, ...]
    n_rows: int
    train_inputs: list[dict[str, Any]] = field(repr=False)
    eval_set: EvalSet = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and metadata."""
        return {
            "files": len(self.files),
            "items": len(self.item_ids),
            "rows": self.n_rows,
            "frequency": self.frequency,
            "prediction_length": self.prediction_length,
        }


@dataclass(frozen=True, kw_only=True)
class _FileData:
    path: Path
    items: np.ndarray
    timestamps: np.ndarray
    values: dict[str, np.ndarray]


def load_dataset(
    files: list[Path], spec: DataSpec, *, prediction_length: int, min_past: int | None = None
) -> Dataset:
    """Read, validate and split the parquet files.

    Args:
        files: parquet files in long format (order does not matter).
        spec: the run spec's data section (column names, frequency).
        prediction_length: forecast horizon; also the length of the held-out tail.
        min_past: fewest past observations a training window needs
            (``None``: ``prediction_length``, as ``Chronos2Pipeline.fit``).

    Returns:
        The validated :class:`Dataset`.

    Raises:
        DataValidationError: the data cannot be used; the message names file/item/column.
        ValueError: a horizon or ``min_past`` below 1, or an unknown frequency alias.
    """
    for name, value in (("prediction_length", prediction_length), ("min_past", min_past)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if spec.frequency is not None:
        frequency_offset(spec.frequency)
    if not files:
        raise DataValidationError("no parquet files to load")
    paths = sorted(Path(f) for f in files)
    rows = _Rows.of([_read_file(path, spec) for path in paths])
    check_cross_file_duplicates(rows.codes, rows.timestamps, rows.file_index, rows.unique_items, paths)
    frequency = spec.frequency or infer_frequency(rows.timestamps, rows.bounds)
    check_regular(frequency, rows.timestamps, rows.bounds, rows.unique_items, rows.file_index, paths)
    check_lengths(
        rows.bounds,
        rows.unique_items,
        prediction_length=prediction_length,
        min_past=min_past if min_past is not None else prediction_length,
    )
    dataset = _build(spec, prediction_length, frequency, paths, rows)
    logger.info("loaded %s", dataset.summary())
    return dataset


@dataclass(frozen=True, kw_only=True)
class _Rows:
    """Every file's rows, sorted by item then time; ``bounds``: each item's ``[start, end)``."""

    unique_items: np.ndarray
    codes: np.ndarray
    timestamps: np.ndarray
    file_index: np.ndarray
    values: dict[str, np.ndarray]
    bounds: list[tuple[int, int]]

    @classmethod
    def of(cls, parts: list[_FileData]) -> _Rows:
        items = np.concatenate([p.items for p in parts])
        if items.size == 0:
            raise DataValidationError(f"the {len(parts)} data file(s) hold no rows")
        timestamps = np.concatenate([p.timestamps for p in parts])
        file_index = np.concatenate([np.full(p.items.size, n) for n, p in enumerate(parts)])
        unique_items, codes = np.unique(items, return_inverse=True)
        order = np.lexsort((timestamps, codes))
        codes = codes[order]
        starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
        return cls(
            unique_items=unique_items,
            codes=codes,
            timestamps=timestamps[order],
            file_index=file_index[order],
            values={c: np.concatenate([p.values[c] for p in parts])[order] for c in parts[0].values},
            bounds=list(zip(starts, np.r_[starts[1:], codes.size], strict=True)),
        )


def _read_file(path: Path, spec: DataSpec) -> _FileData:
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as exc:
        raise DataValidationError(f"{path}: not a readable parquet file ({exc})", file=path) from exc
    missing = [c for c in spec.columns if c not in schema.names]
    if missing:
        raise DataValidationError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(schema.names)})",
            file=path,
        )
    table = pq.read_table(path, columns=list(spec.columns))
    if table.num_rows and table.column(spec.item_id_column).null_count:
        raise DataValidationError(f"{path}: null values in column {spec.item_id_column}", file=path)
    items = _item_ids(table.column(spec.item_id_column))
    timestamps = _timestamps(table, spec.timestamp_column, path, items)
    values = {spec.target_column: _numeric(table, spec.target_column, path)}
    for name in spec.covariates:
        values[name] = _covariate(table, name)
    check_sorted_within_file(path, items, timestamps)
    return _FileData(path=path, items=items, timestamps=timestamps, values=values)


def _item_ids(column: pa.ChunkedArray) -> np.ndarray:
    """Item ids as a numpy string array (dictionary-encoded: no Python object per row)."""
    encoded = pc.dictionary_encode(column.cast(pa.string())).combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=str)
    if names.size == 0:
        return names
    return names[encoded.indices.to_numpy(zero_copy_only=False)]


def _timestamps(table: pa.Table, column: str, path: Path, items: np.ndarray) -> np.ndarray:
    col = table.column(column)
    if col.null_count:
        first = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
        raise DataValidationError(
            f"{path}: null timestamp in column {column} for item {items[first]}",
            file=path, item=str(items[first]),
        )  # fmt: skip
    kind = col.type
    try:
        if pa.types.is_timestamp(kind):
            if kind.tz is not None:
                col = pc.cast(col, pa.timestamp(kind.unit, tz="UTC")).cast(pa.timestamp(kind.unit))
            return col.to_numpy().astype(NS)
        if pa.types.is_date(kind):
            return col.cast(pa.timestamp("s")).to_numpy().astype(NS)
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return np.asarray(col.to_pylist(), dtype="datetime64[ns]")
    except (ValueError, pa.ArrowException) as exc:
        raise DataValidationError(
            f"{path}: column {column} does not hold timestamps ({exc})", file=path
        ) from exc
    raise DataValidationError(f"{path}: column {column} has type {kind}, expected a timestamp", file=path)


def _numeric(table: pa.Table, column: str, path: Path) -> np.ndarray:
    col = table.column(column)
    if not (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)):
        raise DataValidationError(f"{path}: column {column} has type {col.type}, expected numbers", file=path)
    return col.cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)


def _covariate(table: pa.Table, column: str) -> np.ndarray:
    col = table.column(column)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return col.cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
    if pa.types.is_boolean(col.type):
        return col.cast(pa.float32()).to_numpy(zero_copy_only=False).astype(np.float32)
    return np.asarray(pc.fill_null(col.cast(pa.string()), "").to_pylist(), dtype=str)


def _build(spec: DataSpec, horizon: int, frequency: str, paths: list[Path], rows: _Rows) -> Dataset:
    train_inputs: list[dict[str, Any]] = []
    eval_inputs: list[dict[str, Any]] = []
    futures: list[np.ndarray] = []
    target = rows.values[spec.target_column]
    for start, end in rows.bounds:
        cut = end - horizon
        train: dict[str, Any] = {"target": target[start:cut].copy()}
        evaluation: dict[str, Any] = {"target": target[start:cut].copy()}
        if spec.covariates:
            past_cov = {c: rows.values[c][start:cut].copy() for c in spec.covariates}
            train["past_covariates"] = past_cov
            evaluation["past_covariates"] = past_cov
        if spec.known_covariates:
            train["future_covariates"] = {c: None for c in spec.known_covariates}
            evaluation["future_covariates"] = {
                c: rows.values[c][cut:end].copy() for c in spec.known_covariates
            }
        train_inputs.append(train)
        eval_inputs.append(evaluation)
        futures.append(target[cut:end].copy())
    item_ids = tuple(str(x) for x in rows.unique_items)
    eval_set = EvalSet(
        item_ids=item_ids,
        inputs=eval_inputs,
        past=[entry["target"] for entry in train_inputs],
        future=np.stack(futures),
        prediction_length=horizon,
        frequency=frequency,
    )
    return Dataset(
        spec=spec,
        prediction_length=horizon,
        frequency=frequency,
        files=tuple(paths),
        item_ids=item_ids,
        n_rows=int(sum(end - start for start, end in rows.bounds)),
        train_inputs=train_inputs,
        eval_set=eval_set,
    )
