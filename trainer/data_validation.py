"""Validation of long-format training data: every check and the error it raises.

:class:`DataValidationError` carries a one-line message naming the file, item and
column concerned. The checks work on the sorted arrays :mod:`trainer.data` builds:
unsorted or duplicate timestamps within a file or across files, gaps or an irregular
step for the frequency, and series too short to hold out a tail and train on.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

NS = np.dtype("datetime64[ns]")


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


def check_sorted_within_file(path: Path, items: np.ndarray, timestamps: np.ndarray) -> None:
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
            f"{path}: duplicate timestamp {fmt_time(ts[k])} for item {item}", file=path, item=item
        )
    raise DataValidationError(
        f"{path}: timestamps of item {item} are not sorted ({fmt_time(ts[k + 1])} comes after "
        f"{fmt_time(ts[k])})",
        file=path, item=item,
    )  # fmt: skip


def check_cross_file_duplicates(
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
        f"duplicate timestamp {fmt_time(timestamps[k])} for item {item} in {first} and {second}",
        file=second, item=item,
    )  # fmt: skip


def infer_frequency(timestamps: np.ndarray, bounds: list[tuple[int, int]]) -> str:
    import pandas as pd

    start, end = max(bounds, key=lambda b: b[1] - b[0])
    if end - start >= 3:
        freq = pd.infer_freq(pd.DatetimeIndex(timestamps[start:end]))
        if freq:
            return str(freq)
    raise DataValidationError(
        "cannot infer the frequency from the timestamps; set the frequency in the run spec"
    )


def check_regular(
    frequency: str,
    timestamps: np.ndarray,
    bounds: list[tuple[int, int]],
    unique_items: np.ndarray,
    file_index: np.ndarray,
    paths: list[Path],
) -> None:
    import pandas as pd

    offset = frequency_offset(frequency)
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
            expected = pd.date_range(ts[0], periods=ts.size, freq=offset).to_numpy().astype(NS)
            mismatch = np.flatnonzero(expected != ts)
            k = int(mismatch[0]) - 1 if mismatch.size else None
        if k is None:
            continue
        item = str(unique_items[code])
        if k < 0:
            raise DataValidationError(
                f"item {item}: timestamp {fmt_time(ts[0])} is not on the {frequency!r} grid "
                f"(in {paths[file_index[start]]})",
                file=paths[file_index[start]], item=item,
            )  # fmt: skip
        path = paths[file_index[start + k + 1]]
        raise DataValidationError(
            f"item {item}: gap or irregular step after {fmt_time(ts[k])} (next is "
            f"{fmt_time(ts[k + 1])}, expected frequency {frequency!r}) in {path}",
            file=path, item=item,
        )  # fmt: skip


def check_lengths(
    bounds: list[tuple[int, int]], unique_items: np.ndarray, *, prediction_length: int, min_past: int
) -> None:
    """Every series holds the held-out tail plus one training window (horizon + ``min_past``)."""
    min_length = 2 * prediction_length + min_past
    lengths = np.array([end - start for start, end in bounds])
    short = np.flatnonzero(lengths < min_length)
    if short.size == 0:
        return
    item = str(unique_items[short[0]])
    others = f" ({short.size - 1} other item(s) too)" if short.size > 1 else ""
    raise DataValidationError(
        f"item {item} has {lengths[short[0]]} observations, at least {min_length} are needed "
        f"(held-out tail {prediction_length} + training horizon {prediction_length} "
        f"+ min_past {min_past}){others}",
        item=item,
    )


def frequency_offset(frequency: str) -> Any:
    from pandas.tseries.frequencies import to_offset

    try:
        return to_offset(frequency)
    except ValueError as exc:
        raise ValueError(f"unknown frequency {frequency!r}: {exc}") from exc


def fmt_time(ts: np.datetime64) -> str:
    return str(np.datetime_as_string(ts, unit="s"))
