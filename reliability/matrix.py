"""The rows of RELIABILITY.md: every fault at every phase it applies to, and every property.

Each ``reliability/rows_<group>.py`` declares ``ROWS``, a tuple of :class:`Row`; a test proves
a row by carrying ``@pytest.mark.row("<id>")`` (parametrized tests: ``pytest.param(...,
marks=pytest.mark.row(...))``). :data:`ROWS` is every group's rows, ids unique.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

# The sections of RELIABILITY.md, in order; a group's rows go to its section.
SECTIONS = ("Fault matrix", "Records", "Bad input", "Load", "Security")
# The phases a fault can be injected at: training.json's phases and the laptop's launch.
PHASES = ("launch", "preflight", "data_sync", "training", "evaluation", "results_sync", "finalize", "cleanup")
GROUPS = ("process", "state", "s3", "records", "input", "load", "security")


@dataclass(frozen=True, kw_only=True)
class Row:
    """One row: what is injected (or checked), where, and the outcome its test asserts."""

    id: str  # unique, stable: "<fault>@<phase>" in the fault matrix, a short slug elsewhere
    section: str  # one of SECTIONS
    fault: str  # what is injected or checked, in words
    expected: str  # the outcome the test asserts, in words
    phase: str | None = None  # one of PHASES for the fault matrix

    def __post_init__(self) -> None:
        if self.section not in SECTIONS:
            raise ValueError(f"row {self.id}: section {self.section!r} is not one of {SECTIONS}")
        if self.phase is not None and self.phase not in PHASES:
            raise ValueError(f"row {self.id}: phase {self.phase!r} is not one of {PHASES}")


def _collect() -> tuple[Row, ...]:
    rows: list[Row] = []
    for group in GROUPS:
        rows += importlib.import_module(f"reliability.rows_{group}").ROWS
    ids = [r.id for r in rows]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise ValueError(f"row ids declared twice: {dupes}")
    return tuple(rows)


ROWS: tuple[Row, ...] = _collect()
BY_ID = {r.id: r for r in ROWS}
