"""What every benchmark section returns, and the arithmetic they share.

A section (:class:`Section`) is one topic of ``BENCHMARKS.md``: an intro saying what was
measured and how, tables of side-by-side measurements (ratios, never bare absolute
times: these machines are noisy), and notes. A section module exposes
``run(settings: Settings) -> Section``; :mod:`bench.__main__` runs them in order and
writes the file. ``settings.quick`` asks for the smallest run that still exercises every
code path (``make bench QUICK=1``, under a minute for all sections together).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

Cell = str | int | float | None


@dataclass(frozen=True, kw_only=True)
class Settings:
    """How big a bench run is.

    Attributes:
        quick: the smallest run that exercises every path (CI, ``make bench QUICK=1``).
        rounds: interleaved rounds per side-by-side measurement.
        workdir: a scratch folder the section may fill (removed afterwards).
    """

    quick: bool
    rounds: int
    workdir: Path


@dataclass(kw_only=True)
class Table:
    """One markdown table: ``columns`` headers, ``rows`` of cells (numbers formatted by the writer)."""

    title: str
    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        """Append a row; it must have one cell per column.

        Raises:
            ValueError: the row's length differs from the columns'.
        """
        if len(cells) != len(self.columns):
            raise ValueError(f"table {self.title!r}: {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))


@dataclass(kw_only=True)
class Section:
    """One topic of BENCHMARKS.md.

    Attributes:
        name: short id (``data-sync``), used by ``--only``.
        title: the heading.
        intro: what was measured and how (markdown paragraph).
        tables: the measurements.
        notes: conclusions and caveats, one markdown bullet each.
        skipped: why the section could not run here (e.g. a tool is missing); then the
            tables may be empty and the writer says so.
    """

    name: str
    title: str
    intro: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    skipped: str | None = None


SectionRun = Callable[[Settings], Section]


def timed(fn: Callable[[], object]) -> float:
    """Seconds ``fn()`` took (perf_counter)."""
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def median(values: Sequence[float]) -> float:
    """The median; NaN for no values."""
    return float(statistics.median(values)) if values else float("nan")


def ratio(baseline: float, candidate: float) -> float:
    """``baseline / candidate`` (times: above 1, the candidate is faster); inf for a zero candidate."""
    if candidate == 0:
        return float("inf")
    return baseline / candidate


def interleave(alternatives: dict[str, Callable[[], object]], rounds: int) -> dict[str, list[float]]:
    """Time each alternative once per round, in turn (so drift hits all alike); seconds per name."""
    times: dict[str, list[float]] = {name: [] for name in alternatives}
    for _ in range(rounds):
        for name, fn in alternatives.items():
            times[name].append(timed(fn))
    return times


def rate(amount: float, seconds: float) -> float:
    """``amount`` per second; 0 for no time."""
    return amount / seconds if seconds > 0 else 0.0
