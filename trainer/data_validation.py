"""Validation of long-format training data: order, duplicates, frequency and the grid.

:class:`DataValidationError` carries a one-line message naming the file, item and
column concerned. The checks work on the arrays :mod:`trainer.data` builds (item
codes, UTC nanosecond timestamps, file indices):

- :func:`sort_rows`: rows by item then time; items whose rows were out of time order
  within a file are counted (they are sorted, not refused).
- :func:`check_duplicates`: two rows of an item at one timestamp (in one file or two).
- :func:`infer_frequency`: the most common frequency over the longest items.
- :func:`place_on_grid`: every row's step on the frequency grid, so gaps can be filled.
  Day and calendar frequencies are placed in the data's own timezone (daily data at
  local midnight is regular across DST changes); sub-daily ones in UTC. A timestamp
  off the grid is an error.
"""

from __future__ import annotations

import re
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

NS = np.dtype("datetime64[ns]")
_DAY = 86_400 * 10**9
_SAMPLE = 64  # items the frequency is inferred from (the longest)


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


def sort_rows(codes: np.ndarray, timestamps: np.ndarray, file_index: np.ndarray) -> tuple[np.ndarray, int]:
    """The row order by item then time, and how many items had rows out of order within a file.

    Rows of an item in several files are joined in time order whatever the file order.
    """
    order = np.argsort(codes, kind="stable")
    ts, sorted_codes = timestamps[order], codes[order]
    back = np.flatnonzero((sorted_codes[1:] == sorted_codes[:-1]) & (ts[1:] < ts[:-1]))
    if back.size == 0:
        return order, 0
    files = file_index[order]
    unsorted = np.unique(sorted_codes[back[files[back] == files[back + 1]]]).size
    counts = np.bincount(sorted_codes)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    for code in np.unique(sorted_codes[back]):
        start, end = starts[code], starts[code] + counts[code]
        order[start:end] = order[start:end][np.argsort(ts[start:end], kind="stable")]
    return order, int(unsorted)


def check_duplicates(
    codes: np.ndarray, timestamps: np.ndarray, file_index: np.ndarray, names: np.ndarray, paths: list[Path]
) -> None:
    """Two rows of one item at one timestamp (arrays sorted by item then time).

    Raises:
        DataValidationError: naming the item, the timestamp and the file(s).
    """
    dup = np.flatnonzero((codes[1:] == codes[:-1]) & (timestamps[1:] == timestamps[:-1]))
    if dup.size == 0:
        return
    k = int(dup[0])
    item, when = str(names[codes[k]]), fmt_time(timestamps[k])
    first, second = paths[file_index[k]], paths[file_index[k + 1]]
    if first == second:
        message = f"{first}: duplicate timestamp {when} for item {item}"
    else:
        message = f"duplicate timestamp {when} for item {item} in {first} and {second}"
    raise DataValidationError(message + "; keep one row per item and timestamp", file=second, item=item)


def infer_frequency(timestamps: np.ndarray, starts: np.ndarray, counts: np.ndarray, tz: str | None) -> str:
    """The most common frequency among the longest items (``pandas.infer_freq``).

    An item with gaps does not infer as a whole: then stretches of it vote, and when
    none infers either, the most common step between timestamps decides.

    Raises:
        DataValidationError: no frequency can be inferred.
    """
    sample = np.argsort(counts, kind="stable")[::-1][:_SAMPLE]
    items = [timestamps[starts[code] : starts[code] + counts[code]] for code in sample]
    votes = Counter(a for a in (_infer(ts, tz) for ts in items) if a)
    if not votes:  # gaps: stretches of the items infer
        votes = Counter(a for ts in items for a in (_infer(part, tz) for part in _stretches(ts)) if a)
    alias = votes.most_common(1)[0][0] if votes else _from_steps(timestamps, starts, counts, sample)
    if alias is None:
        raise DataValidationError(
            "cannot infer the frequency from the timestamps (too few regular steps); set "
            'data.frequency in the run spec (e.g. "h", "D", "W")'
        )
    return _short_alias(alias)


def _stretches(ts: np.ndarray, size: int = 16, most: int = 8) -> list[np.ndarray]:
    """Up to ``most`` stretches of ``size`` points, spread over the series."""
    if ts.size < 2 * size:
        return []
    firsts = np.linspace(0, ts.size - size, num=min(most, ts.size // size)).astype(int)
    return [ts[k : k + size] for k in firsts]


def _infer(ts: np.ndarray, tz: str | None) -> str | None:
    import pandas as pd

    if ts.size < 3:
        return None
    index = pd.DatetimeIndex(ts.view(NS))
    found = _infer_freq(index)
    if found is None and tz is not None:
        found = _infer_freq(index.tz_localize("UTC").tz_convert(tz))
    return found


def _infer_freq(index: Any) -> str | None:
    import pandas as pd

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            found = pd.infer_freq(index)
        except (TypeError, ValueError):
            return None
    return None if found is None else str(getattr(found, "freqstr", found))


def _from_steps(timestamps: np.ndarray, starts: np.ndarray, counts: np.ndarray, sample: np.ndarray) -> Any:
    """The alias of the most common step, read from three points in a row that take it."""
    import pandas as pd

    diffs = [np.diff(timestamps[starts[c] : starts[c] + counts[c]]) for c in sample]
    steps = np.concatenate(diffs) if diffs else np.empty(0, np.int64)
    steps = steps[steps > 0]
    if steps.size == 0:
        return None
    values, freq = np.unique(steps, return_counts=True)
    step = int(values[np.argmax(freq)])
    for code, diff in zip(sample, diffs, strict=True):
        run = np.flatnonzero((diff[1:] == step) & (diff[:-1] == step))
        if run.size:
            first = starts[code] + int(run[0])
            found = _infer_freq(pd.DatetimeIndex(timestamps[first : first + 3].view(NS)))
            if found:
                return found
    if step % _DAY == 0:
        return f"{step // _DAY}D"
    return str(pd.tseries.frequencies.to_offset(pd.Timedelta(step)).freqstr)


def _short_alias(alias: str) -> str:
    """``"W-SUN"`` -> ``"W"``, ``"1D"`` -> ``"D"``: the plain alias when it means the same."""
    offset = frequency_offset(alias)
    for short in (alias.split("-")[0], re.sub(r"^1(?=\D)", "", alias)):
        try:
            if short and frequency_offset(short) == offset:
                return short
        except ValueError:
            continue
    return alias


@dataclass(frozen=True, kw_only=True)
class Grid:
    """Where every row (sorted by item then time) lies on the frequency grid.

    Attributes:
        frequency: the frequency alias.
        tz: the timestamps' timezone (``None``: naive).
        local: the grid is in the data's local wall time (else in UTC).
        step: the fixed step in that time, ns (``None``: the calendar grid ``points``).
        points: the calendar grid (wall times, ns), when ``step`` is ``None``.
        starts, counts: each item's first row and number of rows.
        first: each item's first wall time (ns), or its index into ``points``.
        positions: each row's step within its item.
        lengths: each item's length on the grid (first to last row).
    """

    frequency: str
    tz: str | None
    local: bool
    step: int | None
    points: np.ndarray | None
    starts: np.ndarray
    counts: np.ndarray
    first: np.ndarray
    positions: np.ndarray
    lengths: np.ndarray

    def utc_strings(self, codes: np.ndarray, index: np.ndarray) -> tuple[str, ...]:
        """The UTC time of step ``index[i]`` of item ``codes[i]``, as ``%Y-%m-%dT%H:%M:%SZ``."""
        import pandas as pd

        if self.step is not None:
            wall = self.first[codes] + index * self.step
        else:
            wall = self.points[self.first[codes] + index]
        times = pd.DatetimeIndex(np.asarray(wall, dtype=np.int64).view(NS))
        if self.local and self.tz is not None:
            times = times.tz_localize(
                self.tz, ambiguous=np.zeros(len(times), dtype=bool), nonexistent="shift_forward"
            ).tz_convert("UTC")
        return tuple(f"{t}Z" for t in times.strftime("%Y-%m-%dT%H:%M:%S"))


def place_on_grid(
    frequency: str, timestamps: np.ndarray, counts: np.ndarray, tz: str | None, where: Any
) -> Grid:
    """Every row's step on the ``frequency`` grid (rows sorted by item then time).

    Args:
        frequency: a pandas alias.
        timestamps: UTC ns, sorted by item then time.
        counts: rows per item code.
        tz: the data's timezone, ``None`` for naive timestamps.
        where: ``where(row) -> (item, file)`` for the error message.

    Raises:
        DataValidationError: a timestamp not on the grid, naming the item and file.
    """
    offset = frequency_offset(frequency)
    sub_daily = _is_tick(offset) and offset.nanos < _DAY
    modes = [False] if tz is None else ([False, True] if sub_daily else [True, False])
    starts = np.r_[0, np.cumsum(counts)[:-1]].astype(np.int64)
    error: DataValidationError | None = None
    for local in modes:
        wall = _local_wall(timestamps, tz) if local else timestamps
        try:
            return _place(frequency, offset, wall, starts, counts, tz=tz, local=local, where=where)
        except DataValidationError as exc:
            error = error or exc
    raise error  # type: ignore[misc]  # modes is never empty


def _place(
    frequency: str, offset: Any, wall: np.ndarray, starts: np.ndarray, counts: np.ndarray, **kw: Any
) -> Grid:
    step = _fixed_step(offset)
    points = None
    if step is not None:
        first = wall[starts]
        positions = wall - np.repeat(first, counts)
        bad = np.flatnonzero(positions % step)
        if bad.size == 0 and getattr(offset, "weekday", None) is not None:
            weekday = (first // _DAY + 3) % 7  # 1970-01-01 was a Thursday (3)
            bad = starts[weekday != offset.weekday]
        positions //= step
    else:
        points = _calendar_points(offset, wall)
        index = np.searchsorted(points, wall)
        bad = np.flatnonzero(points[np.minimum(index, points.size - 1)] != wall)
        first = index[starts]
        positions = index - np.repeat(first, counts)
    if bad.size:
        item, path = kw["where"](int(bad[0]))
        raise DataValidationError(
            f"item {item}: timestamp {fmt_time(wall[bad[0]])} is not on the {frequency!r} grid (in "
            f"{path}); set data.frequency to the data's frequency or remove the off-grid rows",
            file=path, item=item,
        )  # fmt: skip
    lengths = positions[starts + counts - 1] + 1
    return Grid(
        frequency=frequency, tz=kw["tz"], local=kw["local"], step=step, points=points,
        starts=starts, counts=counts, first=first, positions=positions, lengths=lengths,
    )  # fmt: skip


def _is_tick(offset: Any) -> bool:
    import pandas as pd

    return isinstance(offset, pd.offsets.Tick) and not isinstance(offset, pd.offsets.Day)


def _fixed_step(offset: Any) -> int | None:
    """The step in wall time when it is fixed (ticks, days, weeks), else ``None``."""
    import pandas as pd

    if _is_tick(offset):
        return int(offset.nanos)
    if isinstance(offset, pd.offsets.Day):
        return int(offset.n) * _DAY
    if isinstance(offset, pd.offsets.Week):
        return int(offset.n) * 7 * _DAY
    return None


def _calendar_points(offset: Any, wall: np.ndarray) -> np.ndarray:
    import pandas as pd

    first, last = pd.Timestamp(int(wall.min())), pd.Timestamp(int(wall.max()))
    points = pd.date_range(first, last, freq=offset).asi8
    return points if points.size else np.array([first.value], dtype=np.int64)


def _local_wall(timestamps: np.ndarray, tz: str | None) -> np.ndarray:
    """UTC ns -> the wall time in ``tz`` (ns, naive)."""
    import pandas as pd

    index = pd.DatetimeIndex(timestamps.view(NS)).tz_localize("UTC").tz_convert(tz)
    return np.asarray(index.tz_localize(None).asi8)


def frequency_offset(frequency: str) -> Any:
    """The pandas offset of a frequency alias.

    Raises:
        ValueError: an unknown alias.
    """
    from pandas.tseries.frequencies import to_offset

    try:
        return to_offset(frequency)
    except ValueError as exc:
        raise ValueError(f"unknown frequency {frequency!r}: {exc}") from exc


def fmt_time(ts: Any) -> str:
    """A ns timestamp (int or datetime64) as ISO 8601 to the second."""
    return str(np.datetime_as_string(np.asarray(ts).astype(np.int64).view(NS), unit="s"))
