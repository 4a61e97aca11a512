"""Load long-format parquet training data into Chronos-2 inputs and backtest windows.

Input: parquet files with one row per item and timestamp, columns named by the run
spec's :class:`~common.runspec.DataSpec`. An item may span several files (e.g. one
file per month). Files are read one at a time into preallocated columns: item ids
and string covariates become integer codes (each file's pyarrow dictionary, unified
across files), timestamps UTC nanoseconds, numbers float32, so no Python object is
made per row. Reading checks columns, null ids/timestamps and numeric targets;
the checks across rows live in :mod:`trainer.data_validation` (order, duplicates,
frequency, the grid) and the split in :mod:`trainer.windows`.

What cannot be used at all raises :class:`~trainer.data_validation.DataValidationError`
(one line naming the file, item and column): an unreadable file, a missing column, a
wrong type, duplicate timestamps, a timestamp off the frequency grid, or fewer than
``spec.min_items`` usable items. Everything else is repaired and counted in
:attr:`Dataset.drops`: unsorted rows are sorted, gaps are filled with NaN on the
grid, items too short or with too many missing values are dropped.

Output (:class:`Dataset`): ``train_inputs`` (the training part of every kept item,
known covariates marked known-future without values: Chronos-2 fills them from the
context while training), the ``validation`` window and ``test_windows`` (K, oldest
first), each an :class:`~trainer.windows.EvalSet` with the known covariates' values
over its horizon.
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
    DataValidationError,
    check_duplicates,
    frequency_offset,
    infer_frequency,
    place_on_grid,
    sort_rows,
)
from trainer.windows import EvalSet, Series, min_length, on_grid, require_items, select_items, split

__all__ = ["Dataset", "EvalSet", "load_dataset"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """Validated data ready for training, validation and backtesting.

    Attributes:
        spec: the run spec's data section.
        prediction_length: horizon (every window's length).
        backtest_windows: number of test windows (K).
        frequency: the data's frequency alias; ``frequency_source`` says whether the
            spec gave it (``"spec"``) or it was inferred (``"inferred"``).
        files: the files read, sorted.
        item_ids: the kept items, sorted; every input list and window follows this order.
        n_rows: rows read from the files (every item, before gaps are filled).
        train_inputs: Chronos-2 training inputs (steps before the validation window).
        validation: the window just before the test windows.
        test_windows: K windows of ``prediction_length``, oldest first.
        drops: what was repaired or dropped (see :func:`trainer.windows.select_items`).
    """

    spec: DataSpec
    prediction_length: int
    backtest_windows: int
    frequency: str
    frequency_source: str
    files: tuple[Path, ...]
    item_ids: tuple[str, ...]
    n_rows: int
    train_inputs: list[dict[str, Any]] = field(repr=False)
    validation: EvalSet = field(repr=False)
    test_windows: tuple[EvalSet, ...] = field(repr=False)
    drops: dict[str, Any] = field(repr=False)

    def summary(self) -> dict[str, Any]:
        """Counts for logs and metadata (training.json's data_sync ``dataset``)."""
        return {
            "files": len(self.files),
            "items": len(self.item_ids),
            "rows": self.n_rows,
            "frequency": self.frequency,
            "frequency_source": self.frequency_source,
            "prediction_length": self.prediction_length,
            "backtest_windows": self.backtest_windows,
            "drops": self.drops,
        }


def load_dataset(
    files: list[Path],
    spec: DataSpec,
    *,
    prediction_length: int,
    backtest_windows: int,
    min_past: int | None = None,
) -> Dataset:
    """Read, validate, repair and split the parquet files.

    Args:
        files: parquet files in long format (order does not matter).
        spec: the run spec's data section (columns, frequency, NaN share, minimum items).
        prediction_length: forecast horizon; also the length of every window.
        backtest_windows: test windows (K) after the validation window.
        min_past: fewest past observations a training window needs
            (``None``: ``prediction_length``, as ``Chronos2Pipeline.fit``).

    Returns:
        The validated :class:`Dataset`.

    Raises:
        DataValidationError: the data cannot be used; the message names file/item/column.
        ValueError: a horizon, window count or ``min_past`` below 1, or an unknown frequency alias.
    """
    limits = {"prediction_length": prediction_length, "backtest_windows": backtest_windows}
    for name, value in (*limits.items(), ("min_past", min_past)):
        if value is not None and int(value) < 1:
            raise ValueError(f"{name} must be >= 1, got {value}")
    if spec.frequency is not None:
        frequency_offset(spec.frequency)
    if not files:
        raise DataValidationError("no parquet files to load")
    paths = sorted(Path(f) for f in files)
    rows = _read_files(paths, spec)
    order, unsorted = sort_rows(rows.codes, rows.timestamps, rows.file_index)
    rows.reorder(order)
    del order
    check_duplicates(rows.codes, rows.timestamps, rows.file_index, rows.names, paths)
    counts = np.bincount(rows.codes, minlength=rows.names.size)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    source = "spec" if spec.frequency else "inferred"
    frequency = spec.frequency or infer_frequency(rows.timestamps, starts, counts, rows.tz)
    grid = place_on_grid(frequency, rows.timestamps, counts, rows.tz, rows.where(paths))
    needed = min_length(prediction_length, backtest_windows, min_past or prediction_length)
    target = rows.columns[spec.target_column]
    nan_counts = np.bincount(rows.codes, weights=np.isnan(target), minlength=counts.size).astype(np.int64)
    keep, drops = select_items(
        rows.names, grid, nan_counts, needed=needed, max_nan_fraction=spec.max_nan_fraction
    )
    drops["unsorted_items"] = unsorted
    require_items(drops, min_items=spec.min_items, needed=needed, max_nan_fraction=spec.max_nan_fraction)
    if drops["items_kept"] < drops["items_in"] or unsorted or drops["gaps_filled"]["values"]:
        logger.warning("data repaired or dropped: %s", drops)
    codes, arrays = on_grid(rows.names, grid, keep, rows.columns, rows.labels)
    series = Series(
        item_ids=tuple(str(x) for x in rows.names[codes]),
        codes=codes,
        target=arrays[spec.target_column],
        covariates={c: arrays[c] for c in spec.covariates},
    )
    train, validation, tests = split(
        series, grid, known=spec.known_covariates,
        prediction_length=prediction_length, backtest_windows=backtest_windows,
    )  # fmt: skip
    dataset = Dataset(
        spec=spec, prediction_length=prediction_length, backtest_windows=backtest_windows,
        frequency=frequency, frequency_source=source, files=tuple(paths), item_ids=series.item_ids,
        n_rows=int(counts.sum()), train_inputs=train, validation=validation, test_windows=tests, drops=drops,
    )  # fmt: skip
    logger.info("loaded %s", dataset.summary())
    return dataset


@dataclass(kw_only=True)
class _Rows:
    """Every file's rows in one set of arrays (file order until :meth:`reorder`)."""

    names: np.ndarray  # item ids by code, sorted
    codes: np.ndarray  # int32
    timestamps: np.ndarray  # int64 ns, UTC
    file_index: np.ndarray  # int32
    columns: dict[str, np.ndarray]  # target and covariates: float32, or int32 codes into labels
    labels: dict[str, np.ndarray]  # string covariates' values by code
    tz: str | None

    def reorder(self, order: np.ndarray) -> None:
        """Put every array in ``order`` (one column at a time: one extra copy at most)."""
        self.codes = self.codes[order]
        self.timestamps = self.timestamps[order]
        self.file_index = self.file_index[order]
        for name in list(self.columns):
            self.columns[name] = self.columns[name][order]

    def where(self, paths: list[Path]) -> Any:
        """``row -> (item id, file)`` for error messages."""
        return lambda row: (str(self.names[self.codes[row]]), paths[self.file_index[row]])


class _Codes:
    """One integer code space for a string column across files (pyarrow dictionaries, unified)."""

    def __init__(self) -> None:
        self.values = pa.array([], pa.string())

    def encode(self, column: pa.ChunkedArray) -> np.ndarray:
        encoded = pc.dictionary_encode(column.combine_chunks())
        known = pc.index_in(encoded.dictionary, value_set=self.values)
        mapping = known.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int32)
        new = mapping < 0
        if new.any():
            mapping[new] = len(self.values) + np.arange(int(new.sum()), dtype=np.int32)
            self.values = pa.concat_arrays([self.values, encoded.dictionary.filter(pa.array(new))])
        return mapping[encoded.indices.to_numpy(zero_copy_only=False)]

    def sorted(self) -> tuple[np.ndarray, np.ndarray]:
        """The values sorted, and each code's rank among them."""
        order = pc.sort_indices(self.values).to_numpy()
        rank = np.empty(order.size, dtype=np.int32)
        rank[order] = np.arange(order.size, dtype=np.int32)
        return np.asarray(self.values.take(pa.array(order)).to_pylist(), dtype=str), rank

    def array(self) -> np.ndarray:
        return np.asarray(self.values.to_pylist(), dtype=str)


def _read_files(paths: list[Path], spec: DataSpec) -> _Rows:
    schemas = [_schema(path, spec) for path in paths]
    total = sum(rows for _, rows in schemas)
    if total == 0:
        raise DataValidationError(f"the {len(paths)} data file(s) hold no rows")
    first = schemas[0][0]
    reader = _Reader(spec, total, strings={c for c in spec.covariates if not _is_number(first.field(c).type)})
    for n, path in enumerate(paths):
        with pq.ParquetFile(path) as parquet:
            for group in range(parquet.num_row_groups):  # one row group in memory at a time
                try:
                    table = parquet.read_row_group(group, columns=list(spec.columns))
                    # arrow checks a string page's UTF-8 only when asked: a flipped byte in one
                    # would surface later as a UnicodeDecodeError with no file named
                    table.validate(full=True)
                except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:  # a damaged page
                    raise DataValidationError(f"{path}: not readable parquet ({exc})") from None
                reader.add(table, n, path)
    if reader.offset != total:
        raise DataValidationError(f"{paths[-1]}: the files changed while they were read; sync the data again")
    return reader.rows()


class _Reader:
    """Fills preallocated columns from one table (a file's row group) at a time."""

    def __init__(self, spec: DataSpec, total: int, *, strings: set[str]) -> None:
        self.spec, self.strings, self.offset = spec, strings, 0
        self.columns = {
            c: np.empty(total, dtype=np.int32 if c in strings else np.float32)
            for c in (spec.target_column, *spec.covariates)
        }
        self.codes, self.stamps = np.empty(total, dtype=np.int32), np.empty(total, dtype=np.int64)
        self.file_index = np.empty(total, dtype=np.int32)
        self.items, self.labels = _Codes(), {c: _Codes() for c in strings}
        self.zones: dict[str | None, Path] = {}

    def add(self, table: pa.Table, n: int, path: Path) -> None:
        spec = self.spec
        rows = slice(self.offset, self.offset + table.num_rows)
        if rows.stop > self.codes.size:
            raise DataValidationError(f"{path}: changed while it was read; sync the data again", file=path)
        self.codes[rows] = self.items.encode(_item_ids(table, spec.item_id_column, path))
        self.stamps[rows], zone = _timestamps(table, spec.timestamp_column, path, spec.item_id_column)
        self.zones.setdefault(zone, path)
        self.file_index[rows] = n
        self.columns[spec.target_column][rows] = _numbers(table, spec.target_column, path, booleans=False)
        for name in spec.covariates:
            if name in self.strings:
                column = pc.fill_null(table.column(name).cast(pa.string()), "")
                self.columns[name][rows] = self.labels[name].encode(column)
            else:
                self.columns[name][rows] = _numbers(table, name, path)
        self.offset = rows.stop

    def rows(self) -> _Rows:
        names, rank = self.items.sorted()
        return _Rows(
            names=names, codes=rank[self.codes], timestamps=self.stamps, file_index=self.file_index,
            columns=self.columns, labels={c: v.array() for c, v in self.labels.items()},
            tz=_one_zone(self.zones, self.spec.timestamp_column),
        )  # fmt: skip


def _schema(path: Path, spec: DataSpec) -> tuple[pa.Schema, int]:
    try:
        meta = pq.read_metadata(path)
        schema = meta.schema.to_arrow_schema()
        names = schema.names  # a damaged footer may hold names that are not UTF-8
    except (OSError, pa.ArrowException, UnicodeDecodeError) as exc:
        raise DataValidationError(f"{path}: not a readable parquet file ({exc})", file=path) from exc
    missing = [c for c in spec.columns if c not in names]
    if missing:
        raise DataValidationError(
            f"{path}: missing column(s) {', '.join(missing)} (has: {', '.join(schema.names)})",
            file=path,
        )
    return schema, int(meta.num_rows)


def _one_zone(zones: dict[str | None, Path], column: str) -> str | None:
    if len(zones) <= 1:
        return next(iter(zones), None)
    (a, path_a), (b, path_b) = list(zones.items())[:2]
    raise DataValidationError(
        f"column {column} has timezone {a or 'none'} in {path_a} and {b or 'none'} in {path_b}; "
        "store every file's timestamps in one timezone",
        file=path_b,
    )


def _is_number(kind: pa.DataType) -> bool:
    return pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind)


def _item_ids(table: pa.Table, column: str, path: Path) -> pa.ChunkedArray:
    col = table.column(column)
    if col.null_count:
        raise DataValidationError(f"{path}: null values in column {column}", file=path)
    if pa.types.is_string(col.type):
        return col
    try:
        return col.cast(pa.string())
    except pa.ArrowException as exc:
        raise DataValidationError(
            f"{path}: column {column} has type {col.type}, expected item ids (strings or integers)", file=path
        ) from exc


def _timestamps(table: pa.Table, column: str, path: Path, id_column: str) -> tuple[np.ndarray, str | None]:
    """UTC nanoseconds and the column's timezone (``None``: naive)."""
    col = table.column(column)
    if col.null_count:
        first = int(np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))[0])
        item = str(table.column(id_column)[first].as_py())
        raise DataValidationError(
            f"{path}: null timestamp in column {column} for item {item}", file=path, item=item
        )
    kind = col.type
    try:
        if pa.types.is_timestamp(kind):
            ns = col.cast(pa.timestamp("ns", tz=kind.tz))
            return ns.cast(pa.int64()).to_numpy(), kind.tz
        if pa.types.is_date(kind):
            return col.cast(pa.timestamp("s")).cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy(), None
        if pa.types.is_string(kind) or pa.types.is_large_string(kind):
            return _parsed(col), None
    except (ValueError, pa.ArrowException) as exc:
        raise DataValidationError(
            f"{path}: column {column} does not hold timestamps ({exc})", file=path
        ) from exc
    raise DataValidationError(f"{path}: column {column} has type {kind}, expected a timestamp", file=path)


def _parsed(col: pa.ChunkedArray) -> np.ndarray:
    """ISO 8601 strings as ns (arrow's parser; numpy's for what it does not read)."""
    try:
        return col.cast(pa.timestamp("ns")).cast(pa.int64()).to_numpy()
    except pa.ArrowException:
        return np.asarray(col.to_pylist(), dtype="datetime64[ns]").astype(np.int64)


def _numbers(table: pa.Table, column: str, path: Path, *, booleans: bool = True) -> np.ndarray:
    """A numeric (or boolean) column as float32, nulls as NaN."""
    col = table.column(column)
    if not _is_number(col.type) or (pa.types.is_boolean(col.type) and not booleans):
        raise DataValidationError(f"{path}: column {column} has type {col.type}, expected numbers", file=path)
    return col.cast(pa.float32()).to_numpy()
