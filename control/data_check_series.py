"""The sample's series, judged as the trainer will judge them: timestamps, frequency, lengths.

:func:`series_findings` takes the item ids and timestamps :mod:`control.data_check`
read from the first row group of a few files and says what the run would die of
(timestamps that do not parse, a duplicate timestamp, data whose steps are not the
spec's frequency, too little data for one series) and what the trainer only drops or
repairs (gaps, short series: warnings). The frequency is compared on the spec's grid,
as the trainer reindexes: sub-daily steps in UTC, daily and longer ones in local time
(so tz-aware daily data crosses DST changes).
"""

from __future__ import annotations

import warnings as py_warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from common.runspec import RunSpec
from trainer.data_validation import frequency_offset

DAY_NS = 86_400 * 10**9
MAX_GRID_ITEMS = 2000  # sampled items whose grid is checked


@dataclass(frozen=True, kw_only=True)
class SampledSeries:
    """The spec's item id and timestamp columns of the first row group of one file."""

    key: str
    table: pa.Table = field(repr=False)
    complete: bool  # the row group is the whole file


@dataclass(kw_only=True)
class SeriesFindings:
    """What the sample shows: counts, the inferred frequency, warnings and errors (full messages)."""

    items: int = 0
    long_enough: int = 0
    inferred_frequency: str | None = None
    too_sparse: set[int] = field(default_factory=set)  # first rows of items the trainer will drop
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class _Rows:
    """Every sampled row, sorted by item then time."""

    names: np.ndarray  # item id per code
    codes: np.ndarray
    utc: np.ndarray  # int64 ns since the epoch
    wall: np.ndarray  # int64 ns of the local wall time (== utc for naive timestamps)
    files: np.ndarray  # the file of each row, an index into file_keys
    file_keys: tuple[str, ...]
    tz: Any
    missing: np.ndarray  # the target is null or NaN
    bounds: list[tuple[int, int]]
    cut: frozenset[int]  # codes of items the sample may have cut at a row group's end

    def key(self, row: int) -> str:
        """The S3 key of the file ``row`` came from."""
        return self.file_keys[int(self.files[row])]


def _timestamps(column: pa.ChunkedArray) -> pd.DatetimeIndex:
    """The column as nanosecond datetimes. Raises ValueError naming a value that is not a timestamp."""
    try:  # a date beyond 2262 fits a second-unit index but not the trainer's nanoseconds
        return _datetimes(column).as_unit("ns")
    except pd.errors.OutOfBoundsDatetime as exc:
        raise ValueError(f"out of the nanosecond range 1677-2262: {exc}") from None


def _datetimes(column: pa.ChunkedArray) -> pd.DatetimeIndex:
    kind = column.type
    if pa.types.is_dictionary(kind):
        column, kind = column.cast(kind.value_type), kind.value_type
    if pa.types.is_timestamp(kind):
        return pd.DatetimeIndex(column.to_pandas())
    if pa.types.is_date(kind):
        return pd.DatetimeIndex(column.cast(pa.timestamp("s")).to_pandas())
    text = pd.Index(column.to_pandas(), dtype=object)
    for utc in (False, True):
        try:
            return pd.DatetimeIndex(pd.to_datetime(text, format="ISO8601", utc=utc))
        except (ValueError, TypeError):
            continue
    parsed = pd.to_datetime(text, format="ISO8601", utc=True, errors="coerce")
    bad = text[np.asarray(parsed.isna())]
    raise ValueError(repr(bad[0]) if len(bad) else "mixed values")


def _rows(sample: list[SampledSeries], spec: RunSpec, bucket: str, out: SeriesFindings) -> _Rows | None:
    item_col, ts_col = spec.data.item_id_column, spec.data.timestamp_column
    parts, tz = [], None
    for s in sample:
        try:
            stamps = _timestamps(s.table.column(ts_col))
        except ValueError as exc:
            out.errors.append(
                f"s3://{bucket}/{s.key}: column {ts_col!r} holds a value that is not a timestamp ({exc}); "
                "write ISO 8601 strings or a timestamp column (set data.timestamp_column in the run spec)"
            )
            continue
        for column in (item_col, ts_col):
            if s.table.column(column).null_count:
                out.errors.append(
                    f"s3://{bucket}/{s.key}: column {column!r} has {s.table.column(column).null_count} null "
                    "value(s) in the sample; every row needs an item id and a timestamp"
                )
        ids = s.table.column(item_col).cast(pa.string())
        target = s.table.column(spec.data.target_column)
        missing = (
            pc.is_null(target, nan_is_null=True).to_numpy(zero_copy_only=False)
            if pa.types.is_floating(target.type) or pa.types.is_integer(target.type)
            else np.asarray(target.is_null().to_numpy(zero_copy_only=False))
        )
        keep = np.asarray(~stamps.isna()) & pc.is_valid(ids).to_numpy(zero_copy_only=False)
        tz = tz or stamps.tz
        naive = stamps.tz_convert("UTC").tz_localize(None) if stamps.tz is not None else stamps
        wall = stamps.tz_localize(None) if stamps.tz is not None else stamps
        last = ids[len(ids) - 1].as_py() if not s.complete and len(ids) else None
        kept = ids.filter(pa.array(keep))
        parts.append(
            (kept, naive.as_unit("ns").asi8[keep], wall.as_unit("ns").asi8[keep], s.key, last, missing[keep])
        )
    if not parts or not sum(len(p[0]) for p in parts):
        return None
    # integer codes from an arrow dictionary: no sort of the id strings
    encoded = pc.dictionary_encode(pa.chunked_array([c for p in parts for c in p[0].chunks], pa.string()))
    encoded = encoded.combine_chunks()
    names = np.asarray(encoded.dictionary.to_pylist(), dtype=object)
    codes = encoded.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    utc, wall = np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts])
    files = np.repeat(np.arange(len(parts)), [len(p[0]) for p in parts])
    missing = np.concatenate([p[5] for p in parts])
    order = np.lexsort((utc, codes))
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    index = {name: n for n, name in enumerate(names.tolist())}
    # every code occurs (the dictionary holds only kept ids), so code n is bounds[n]
    cut = {index[p[4]] for p in parts if p[4] in index}
    return _Rows(
        names=names, codes=codes, utc=utc[order], wall=wall[order], files=files[order],
        file_keys=tuple(p[3] for p in parts), tz=tz, missing=missing[order],
        bounds=list(zip(starts.tolist(), np.r_[starts[1:], codes.size].tolist(), strict=True)),
        cut=frozenset(cut),
    )  # fmt: skip


def _duplicates(rows: _Rows, ts_col: str, bucket: str) -> str | None:
    dup = np.flatnonzero((rows.codes[1:] == rows.codes[:-1]) & (rows.utc[1:] == rows.utc[:-1]))
    if dup.size == 0:
        return None
    i = int(dup[0]) + 1
    n = np.unique(rows.codes[dup]).size
    more = f" ({n - 1} other item(s) too)" if n > 1 else ""
    when = pd.Timestamp(int(rows.utc[i]), unit="ns").isoformat()
    return (
        f"s3://{bucket}/{rows.key(i)}: column {ts_col!r}: item {rows.names[rows.codes[i]]!r} has the "
        f"timestamp {when} (UTC) twice{more}; keep one row per item and timestamp"
    )


def _alias(step_ns: int) -> str:
    if step_ns % DAY_NS == 0:
        days = step_ns // DAY_NS
        return "W" if days == 7 else f"{days}D" if days > 1 else "D"
    return str(pd.tseries.frequencies.to_offset(pd.Timedelta(step_ns, unit="ns")).freqstr)


def _infer(rows: _Rows) -> str | None:
    """pandas' frequency of the longest sampled item; when it has gaps, the most common step."""
    start, end = max(rows.bounds, key=lambda b: b[1] - b[0])
    if end - start >= 3:
        index = pd.DatetimeIndex(rows.utc[start:end].astype("datetime64[ns]"))
        if rows.tz is not None:
            index = index.tz_localize("UTC").tz_convert(rows.tz)
        with py_warnings.catch_warnings():
            py_warnings.simplefilter("ignore")
            found = pd.infer_freq(index)
        if found is not None:
            return str(getattr(found, "freqstr", found))
    steps = np.concatenate([np.diff(rows.wall[a:b]) for a, b in rows.bounds])
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    values, counts = np.unique(steps, return_counts=True)
    return _alias(int(values[np.argmax(counts)]))


def _on_grid(offset: Any, ts: np.ndarray) -> tuple[int, int]:
    """(timestamps off the grid, grid steps from the first to the last) of one item's times (ns)."""
    if isinstance(offset, pd.offsets.Tick | pd.offsets.Day):
        step = int(offset.nanos) if isinstance(offset, pd.offsets.Tick) else int(offset.n) * DAY_NS
        rel = ts - ts[0]
        return int(np.count_nonzero(rel % step)), int(rel[-1] // step) + 1
    wall = pd.DatetimeIndex(ts.astype("datetime64[ns]"))
    grid = pd.date_range(wall[0], wall[-1], freq=offset)
    off = int((~wall.isin(grid)).sum()) + (0 if offset.is_on_offset(wall[0]) else 1)
    return off, max(len(grid), 1)


def _grid(offset: Any, rows: _Rows, items: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Each item's :func:`_on_grid`, with the grid laid as the trainer lays it.

    Sub-daily steps in UTC, longer ones in local wall time; for tz-aware data the
    other one when it fits better (daily data stamped at UTC midnight).
    """
    sub_daily = isinstance(offset, pd.offsets.Tick) and offset.nanos < DAY_NS
    modes = [rows.utc, rows.wall] if sub_daily else [rows.wall, rows.utc]
    best: list[tuple[int, int]] | None = None
    for times in modes[: 2 if rows.tz is not None else 1]:
        stats = [_on_grid(offset, times[a:b]) for a, b in items]
        if best is None or sum(o for o, _ in stats) < sum(o for o, _ in best):
            best = stats
    return best or []


def _spec_offset(spec: RunSpec, out: SeriesFindings) -> tuple[Any, bool]:
    """(the offset the lengths are counted in or ``None``, whether it is the spec's to check)."""
    frequency = spec.data.frequency
    if frequency is None:
        if out.inferred_frequency is None:
            out.warnings.append(
                "cannot infer the frequency from the sample (too few timestamps per item); "
                "set data.frequency in the run spec if the run cannot either"
            )
            return None, False
        return frequency_offset(out.inferred_frequency), False
    try:
        return frequency_offset(frequency), True
    except ValueError:
        out.errors.append(
            f"data.frequency {frequency!r} is not a pandas frequency alias; "
            'use one such as h, D, W, MS or 15min, or "auto" (set data.frequency in the run spec)'
        )
        return None, False


def _check_grid(offset: Any, rows: _Rows, spec: RunSpec, bucket: str, out: SeriesFindings) -> Any:
    """The spec's frequency on the sample; the offset the lengths are counted in (``None``: rows)."""
    data = spec.data
    named = repr(data.frequency) if data.frequency else f"inferred {out.inferred_frequency!r}"
    checked = [(a, b) for a, b in rows.bounds if b - a >= 2][:MAX_GRID_ITEMS]
    stats = _grid(offset, rows, checked)
    off_at = [a for (a, _), (off, _) in zip(checked, stats, strict=True) if off]
    # the trainer's NaN share: steps missing from the grid and targets that are null or NaN
    sparse = [
        (a, 1 - (b - a - int(rows.missing[a:b].sum())) / grid)
        for (a, b), (off, grid) in zip(checked, stats, strict=True)
        if not off and 1 - (b - a - int(rows.missing[a:b].sum())) / grid > data.max_nan_fraction
    ]
    out.too_sparse.update(a for a, _ in sparse)
    if not off_at and not sparse:
        return offset
    what = []
    if off_at:
        what.append(f"{len(off_at)} of {len(checked)} sampled items have timestamps off the {named} grid")
    if sparse:
        typical = float(np.median([share for _, share in sparse]))
        what.append(
            f"{len(sparse)} of {len(checked)} sampled items would miss (or hold NaN in) more than "
            f"{data.max_nan_fraction:.0%} of their steps on it (typically {typical:.0%})"
        )
    inferred = out.inferred_frequency
    first = min(off_at + [a for a, _ in sparse])
    at = f"s3://{bucket}/{rows.key(first)}: column {data.timestamp_column!r}: "
    if 2 * (len(off_at) + len(sparse)) > len(checked) and not (
        inferred is not None and frequency_offset(inferred) == offset
    ):
        looks = f"look like frequency {inferred!r}" if inferred else "do not follow it"
        out.errors.append(
            f"{at}the timestamps {looks}, not data.frequency {data.frequency!r}: {', '.join(what)}; "
            f'set data.frequency = "{inferred or "auto"}" (or "auto") in the run spec'
        )
        out.too_sparse.clear()  # on a wrong grid every item looks sparse: the frequency is the error
        return None
    if off_at:
        out.errors.append(
            f"s3://{bucket}/{rows.key(off_at[0])}: column {data.timestamp_column!r}: item "
            f"{rows.names[rows.codes[off_at[0]]]!r}: {what[0]}, and the trainer refuses a timestamp off the "
            "grid; remove those rows or set data.frequency to the data's frequency in the run spec"
        )
        return offset
    out.warnings.append(f"{what[0]}: the trainer drops such items")
    return offset


def series_findings(
    sample: list[SampledSeries], spec: RunSpec, *, bucket: str, where: str, min_length: int, exhaustive: bool
) -> SeriesFindings:
    """Judge the sampled series. ``exhaustive``: the sample holds every row of the data."""
    out = SeriesFindings()
    rows = _rows(sample, spec, bucket, out)
    if rows is None:
        return out
    duplicate = _duplicates(rows, spec.data.timestamp_column, bucket)
    if duplicate:
        out.errors.append(duplicate)
    out.inferred_frequency = _infer(rows)
    offset, from_spec = _spec_offset(spec, out)
    if offset is not None:  # "auto": the trainer infers the frequency, then refuses off-grid rows too
        offset = _check_grid(offset, rows, spec, bucket, out)
    kept = [(a, b) for code, (a, b) in enumerate(rows.bounds) if code not in rows.cut]
    if offset is not None and kept:
        lengths = [grid for _, grid in _grid(offset, rows, kept)]
    else:
        lengths = [b - a for a, b in kept]
    out.items = len(lengths)
    # an item too sparse for the trainer (missing or NaN steps) is dropped however long it is
    drop = out.too_sparse
    out.long_enough = sum(n >= min_length and a not in drop for n, (a, _) in zip(lengths, kept, strict=True))
    if not lengths:
        return out
    h, k = spec.model.prediction_length, spec.model.backtest_windows
    need = (
        f"{min_length} steps a run needs ((model.backtest_windows {k} + 1) x model.prediction_length {h} "
        f"+ {h} to train on + {h} of context)"
    )
    if exhaustive and out.long_enough < spec.data.min_items:
        out.errors.append(
            f"{where}: {out.long_enough} of the {len(lengths)} items have the {need}, data.min_items "
            f"is {spec.data.min_items} (the longest has {max(lengths)}); add data or lower "
            "model.prediction_length or model.backtest_windows"
        )
    elif 2 * (len(lengths) - out.long_enough) > len(lengths):
        out.warnings.append(
            f"{len(lengths) - out.long_enough} of the {len(lengths)} sampled items are shorter than the "
            f"{need} in the sampled files: the trainer drops such series (items spanning several files "
            "may be longer)"
        )
    return out
