"""Load long-format parquet training data into Chronos-2 inputs, with validation.

Input: parquet files with one row per item and timestamp (columns named by a
:class:`DataSpec`). An item may span several files (e.g. one file per month).
Validation raises :class:`DataValidationError` with a one-line message naming
the file, item and column concerned: missing columns, null ids/timestamps,
non-numeric targets, unsorted or duplicate timestamps within an item, gaps or
an irregular step for the frequency, and series too short to hold out a tail.

Output (:class:`Dataset`): Chronos-2 input dicts per item. ``train_inputs``
exclude the held-out tail of ``prediction_length`` steps and mark the known
covariates as known-future without values (Chronos-2 fills them from the
context while training); ``eval_set`` has the same context plus the known
covariates' values over the horizon and the actual future target.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

logger = logging.getLogger(__name__)

_NS = np.dtype("datetime64[ns]")


class DataValidationError(Exception):
    """The training data is unusable; ``str(error)`` is a one-line message for the user.

    Attributes:
        file: the offending file, when one is known.
        item: the offending item id, when one is known.
    """

    def __init__(self, message: str, *, file: Path | None = None, item: str | None = None):
        super().__init__(" ".join(message.split()))
        self.file = file
        self.item = item


@dataclass(frozen=True, kw_only=True)
class DataSpec:
    """Where the columns are and what shape the forecast task has.

    Attributes:
        prediction_length: forecast horizon; also the length of the held-out tail.
        context_length: longest context the model sees while training.
        frequency: pandas frequency alias (``"h"``, ``"D"``, ``"15min"``, ``"MS"``...),
            or ``None`` to infer it from the data.
        item_id_column, timestamp_column, target_column: column names.
        past_covariates: numeric or string columns known only in the past.
        known_covariates: columns whose future values are known (calendar, promotions).
        min_past: fewest past observations a training window needs
            (``None``: ``prediction_length``, as ``Chronos2Pipeline.fit``).
    """

    prediction_length: int
    context_length: int = 512
    frequency: str | None = "h"
    item_id_column: str = "item_id"
    timestamp_column: str = "timestamp"
    target_column: str = "target"
    past_covariates: tuple[str, ...] = ()
    known_covariates: tuple[str, ...] = ()
    min_past: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "past_covariates", tuple(self.past_covariates))
        object.__setattr__(self, "known_covariates", tuple(self.known_covariates))
        for name in ("prediction_length", "context_length"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"DataSpec.{name} must be >= 1, got {getattr(self, name)}")
        if self.min_past is not None and self.min_past < 1:
            raise ValueError(f"DataSpec.min_past must be >= 1, got {self.min_past}")
        names = [self.item_id_column, self.timestamp_column, self.target_column]
        names += [*self.past_covariates, *self.known_covariates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"DataSpec names a column twice: {', '.join(duplicates)}")
        if self.frequency is not None:
            _offset(self.frequency)

    @property
    def covariates(self) -> tuple[str, ...]:
        """Past-only then known-future covariate columns."""
        return self.past_covariates + self.known_covariates

    @property
    def columns(self) -> tuple[str, ...]:
        """Every column the data must have."""
        return (self.item_id_column, self.timestamp_column, self.target_column, *self.covariates)

    @property
    def effective_min_past(self) -> int:
        """``min_past`` with its default applied."""
        return self.min_past if self.min_past is not None else self.prediction_length

    @property
    def min_length(self) -> int:
        """Shortest series accepted: held-out tail + one training window (horizon + min past)."""
        return 2 * self.prediction_length + self.effective_min_past

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict (inverse of :meth:`from_dict`)."""
        return {
            "prediction_length": self.prediction_length,
            "context_length": self.context_length,
            "frequency": self.frequency,
            "item_id_column": self.item_id_column,
            "timestamp_column": self.timestamp_column,
            "target_column": self.target_column,
            "past_covariates": list(self.past_covariates),
            "known_covariates": list(self.known_covariates),
            "min_past": self.min_past,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DataSpec:
        """Build from a dict such as :meth:`to_dict` returns; unknown keys are an error."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown DataSpec keys: {', '.join(sorted(unknown))}")
        return cls(**data)


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
            "prediction_length": self.spec.prediction_length,
        }


@dataclass(frozen=True, kw_only=True)
class _FileData:
    path: Path
    items: np.ndarray
    timestamps: np.ndarray
    values: dict[str, np.ndarray]


def load_dataset(files: list[Path], spec: DataSpec) -> Dataset:
    """Read, validate and split the parquet files.

    Args:
        files: parquet files in long format (order does not matter).
        spec: column names and task shape.

    Returns:
        The validated :class:`Dataset`.

    Raises:
        DataValidationError: the data cannot be used; the message names file/item/column.
    """
    if not files:
        raise DataValidationError("no parquet files to load")
    paths = sorted(Path(f) for f in files)
    parts = [_read_file(path, spec) for path in paths]
    items = np.concatenate([p.items for p in parts])
    if items.size == 0:
        raise DataValidationError(f"the {len(paths)} data file(s) hold no rows")
    timestamps = np.concatenate([p.timestamps for p in parts])
    file_index = np.concatenate([np.full(p.items.size, n) for n, p in enumerate(parts)])
    unique_items, codes = np.unique(items, return_inverse=True)
    order = np.lexsort((timestamps, codes))
    codes, timestamps, file_index = codes[order], timestamps[order], file_index[order]
    values = {c: np.concatenate([p.values[c] for p in parts])[order] for c in parts[0].values}
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    bounds = list(zip(starts, np.r_[starts[1:], codes.size], strict=True))
    _check_cross_file_duplicates(codes, timestamps, file_index, unique_items, paths)
    frequency = spec.frequency or _infer_frequency(timestamps, bounds)
    _check_regular(frequency, timestamps, bounds, unique_items, file_index, paths)
    _check_lengths(spec, bounds, unique_items)
    dataset = _build(spec, frequency, paths, unique_items, bounds, values)
    logger.info("loaded %s", dataset.summary())
    return dataset


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
    _check_sorted_within_file(path, items, timestamps)
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
            return col.to_numpy().astype(_NS)
        if pa.types.is_date(kind):
            return col.cast(pa.timestamp("s")).to_numpy().astype(_NS)
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


def _check_sorted_within_file(path: Path, items: np.ndarray, timestamps: np.ndarray) -> None:
    if items.size < 2:
        return
    _, codes = np.unique(items, return_inverse=True)
    order = np.argsort(codes, kind="stable")
    same_item = codes[order][1:] == codes[order][:-1]
    ts = timestamps[order]
    bad = np.flatnonzero(same_item & (ts[1:] <= ts[:-1]))
    if bad.size == 0:
        return
    k = int(bad[0])
    item = str(items[order][k])
    if ts[k + 1] == ts[k]:
        raise DataValidationError(
            f"{path}: duplicate timestamp {_fmt(ts[k])} for item {item}", file=path, item=item
        )
    raise DataValidationError(
        f"{path}: timestamps of item {item} are not sorted ({_fmt(ts[k + 1])} comes after "
        f"{_fmt(ts[k])})",
        file=path, item=item,
    )  # fmt: skip


def _check_cross_file_duplicates(
    codes: np.ndarray,
    timestamps: np.ndarray,
    file_index: np.ndarray,
    unique_items: np.ndarray,
    paths: list[Path],
) -> None:
    dup = np.flatnonzero((codes[1:] == codes[:-1]) & (timestamps[1:] == timestamps[:-1]))
    if dup.size == 0:
        return
    k = int(dup[0])
    item = str(unique_items[codes[k]])
    first, second = paths[file_index[k]], paths[file_index[k + 1]]
    raise DataValidationError(
        f"duplicate timestamp {_fmt(timestamps[k])} for item {item} in {first} and {second}",
        file=second, item=item,
    )  # fmt: skip


def _infer_frequency(timestamps: np.ndarray, bounds: list[tuple[int, int]]) -> str:
    import pandas as pd

    start, end = max(bounds, key=lambda b: b[1] - b[0])
    if end - start >= 3:
        freq = pd.infer_freq(pd.DatetimeIndex(timestamps[start:end]))
        if freq:
            return str(freq)
    raise DataValidationError(
        "cannot infer the frequency from the timestamps; set the frequency in the run spec"
    )


def _check_regular(
    frequency: str,
    timestamps: np.ndarray,
    bounds: list[tuple[int, int]],
    unique_items: np.ndarray,
    file_index: np.ndarray,
    paths: list[Path],
) -> None:
    import pandas as pd

    offset = _offset(frequency)
    fixed = getattr(offset, "nanos", None) if isinstance(offset, pd.offsets.Tick) else None
    if isinstance(offset, pd.offsets.Day):  # a calendar day is 24 h on naive timestamps
        fixed = int(offset.n) * 86_400 * 10**9
    for code, (start, end) in enumerate(bounds):
        ts = timestamps[start:end]
        if fixed is not None:
            steps = np.diff(ts.astype(np.int64))
            bad = np.flatnonzero(steps != fixed)
            k = int(bad[0]) if bad.size else None
        else:
            expected = pd.date_range(ts[0], periods=ts.size, freq=offset).to_numpy().astype(_NS)
            mismatch = np.flatnonzero(expected != ts)
            k = int(mismatch[0]) - 1 if mismatch.size else None
        if k is None:
            continue
        item = str(unique_items[code])
        if k < 0:
            raise DataValidationError(
                f"item {item}: timestamp {_fmt(ts[0])} is not on the {frequency!r} grid "
                f"(in {paths[file_index[start]]})",
                file=paths[file_index[start]], item=item,
            )  # fmt: skip
        path = paths[file_index[start + k + 1]]
        raise DataValidationError(
            f"item {item}: gap or irregular step after {_fmt(ts[k])} (next is "
            f"{_fmt(ts[k + 1])}, expected frequency {frequency!r}) in {path}",
            file=path, item=item,
        )  # fmt: skip


def _check_lengths(spec: DataSpec, bounds: list[tuple[int, int]], unique_items: np.ndarray) -> None:
    lengths = np.array([end - start for start, end in bounds])
    short = np.flatnonzero(lengths < spec.min_length)
    if short.size == 0:
        return
    item = str(unique_items[short[0]])
    others = f" ({short.size - 1} other item(s) too)" if short.size > 1 else ""
    raise DataValidationError(
        f"item {item} has {lengths[short[0]]} observations, at least {spec.min_length} are needed "
        f"(held-out tail {spec.prediction_length} + training horizon {spec.prediction_length} "
        f"+ min_past {spec.effective_min_past}){others}",
        item=item,
    )


def _build(
    spec: DataSpec,
    frequency: str,
    paths: list[Path],
    unique_items: np.ndarray,
    bounds: list[tuple[int, int]],
    values: dict[str, np.ndarray],
) -> Dataset:
    horizon = spec.prediction_length
    train_inputs: list[dict[str, Any]] = []
    eval_inputs: list[dict[str, Any]] = []
    past_targets: list[np.ndarray] = []
    futures: list[np.ndarray] = []
    for start, end in bounds:
        cut = end - horizon
        target = values[spec.target_column]
        train = {"target": target[start:cut].copy()}
        evaluation = {"target": target[start:cut].copy()}
        if spec.covariates:
            past_cov = {c: values[c][start:cut].copy() for c in spec.covariates}
            train["past_covariates"] = past_cov
            evaluation["past_covariates"] = past_cov
        if spec.known_covariates:
            train["future_covariates"] = {c: None for c in spec.known_covariates}
            evaluation["future_covariates"] = {c: values[c][cut:end].copy() for c in spec.known_covariates}
        train_inputs.append(train)
        eval_inputs.append(evaluation)
        past_targets.append(train["target"])
        futures.append(target[cut:end].copy())
    item_ids = tuple(str(x) for x in unique_items)
    eval_set = EvalSet(
        item_ids=item_ids,
        inputs=eval_inputs,
        past=past_targets,
        future=np.stack(futures),
        prediction_length=horizon,
        frequency=frequency,
    )
    return Dataset(
        spec=spec,
        frequency=frequency,
        files=tuple(paths),
        item_ids=item_ids,
        n_rows=int(sum(end - start for start, end in bounds)),
        train_inputs=train_inputs,
        eval_set=eval_set,
    )


def _offset(frequency: str) -> Any:
    from pandas.tseries.frequencies import to_offset

    try:
        return to_offset(frequency)
    except ValueError as exc:
        raise ValueError(f"unknown frequency {frequency!r}: {exc}") from exc


def _fmt(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="s"))


def save_inputs(inputs: list[dict[str, Any]], path: Path) -> Path:
    """Write Chronos-2 input dicts (as built by :func:`load_dataset`) to one ``.npz`` file.

    No pickling: numeric and string arrays only; a known covariate without future
    values (``None``) is recorded in the metadata.

    Args:
        inputs: dicts with ``target`` and optional ``past_covariates``/``future_covariates``.
        path: destination (``.npz``).

    Returns:
        ``path``.
    """
    arrays: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {"n": len(inputs), "past": [], "future": [], "unavailable": []}
    if inputs:
        first = inputs[0]
        meta["past"] = list(first.get("past_covariates", {}))
        future = first.get("future_covariates", {})
        meta["future"] = [k for k, v in future.items() if v is not None]
        meta["unavailable"] = [k for k, v in future.items() if v is None]
    for n, entry in enumerate(inputs):
        arrays[f"t{n}"] = np.asarray(entry["target"])
        for j, name in enumerate(meta["past"]):
            arrays[f"p{n}_{j}"] = np.asarray(entry["past_covariates"][name])
        for j, name in enumerate(meta["future"]):
            arrays[f"f{n}_{j}"] = np.asarray(entry["future_covariates"][name])
    arrays["meta"] = np.asarray(json.dumps(meta))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("wb") as fh:
        np.savez(fh, **arrays)
    return path


def load_inputs(path: Path) -> list[dict[str, Any]]:
    """Read input dicts written by :func:`save_inputs`.

    Raises:
        DataValidationError: the file is missing or not such a file.
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            meta = json.loads(str(data["meta"]))
            inputs: list[dict[str, Any]] = []
            for n in range(int(meta["n"])):
                entry: dict[str, Any] = {"target": data[f"t{n}"]}
                if meta["past"]:
                    entry["past_covariates"] = {
                        name: data[f"p{n}_{j}"] for j, name in enumerate(meta["past"])
                    }
                future = {name: data[f"f{n}_{j}"] for j, name in enumerate(meta["future"])}
                future.update({name: None for name in meta["unavailable"]})
                if future:
                    entry["future_covariates"] = future
                inputs.append(entry)
    except (OSError, KeyError, ValueError) as exc:
        raise DataValidationError(f"{path}: not a saved inputs file ({exc})", file=Path(path)) from exc
    return inputs
