"""BENCHMARKS.md from :class:`bench.core.Section` objects: the one place numbers become text.

Cells are formatted here, never by the sections:

- ``None`` and NaN: ``-``; infinities: ``inf``.
- numbers: 3-4 significant digits (``0.1235``, ``12.35``, ``123.5``), whole numbers of
  1,000 and more with no decimals (``12346``); booleans as ``yes`` / ``no``.
- ratios: a number in a column whose header says ``ratio`` or ends in ``(x)`` is written
  ``**1.23x**`` (:func:`times`); a section may also pass :func:`times`' string itself.
- shares: a number in a column whose header says ``share`` is a fraction, written as a
  percentage (``0.2345`` -> ``23.4%``).
- strings: as they are (markdown allowed; ``|`` is escaped).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.core import Cell, Section, Table


def number(value: float | int) -> str:
    """A measurement with 3-4 significant digits."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    if math.isnan(value):
        return "-"
    if math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if abs(value) >= 1000:
        return f"{value:.0f}"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:.1f}"
    return f"{value:.4g}" if abs(value) >= 1e-4 else f"{value:.3g}"


def times(value: float | None) -> str:
    """A ratio, bold, with its ``x``: ``**1.23x**`` (``-`` for none)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if math.isinf(value):
        return "**inf**"
    digits = 2 if abs(value) < 10 else 1 if abs(value) < 100 else 0
    return f"**{value:.{digits}f}x**"


def is_ratio_column(header: str) -> bool:
    """Whether the numbers of a column are ratios (written ``**1.23x**``)."""
    low = header.lower()
    return "ratio" in low or low.rstrip().endswith("(x)")


def is_share_column(header: str) -> bool:
    """Whether the numbers of a column are fractions of a whole (written as percentages)."""
    return "share" in header.lower()


def percent(value: float) -> str:
    """A fraction as a percentage with 3 significant digits (``0.2345`` -> ``23.4%``)."""
    if math.isnan(value):
        return "-"
    return "0%" if value == 0 else f"{100 * value:.3g}%"


def cell(value: Cell, *, ratio: bool = False, share: bool = False) -> str:
    """One table cell as markdown."""
    if value is None:
        return "-"
    if isinstance(value, str):
        return value.replace("|", "\\|").replace("\n", " ")
    if isinstance(value, bool):
        return number(value)
    if ratio:
        return times(float(value))
    if share:
        return percent(float(value))
    return number(value)


def table(t: Table) -> list[str]:
    """A table's markdown lines: its title in bold, the header, the rows."""
    kinds = [(is_ratio_column(c), is_share_column(c)) for c in t.columns]
    lines = [f"**{t.title}**", "", "| " + " | ".join(t.columns) + " |"]
    lines.append("| " + " | ".join("---" for _ in t.columns) + " |")
    for row in t.rows:
        cells = (cell(v, ratio=r, share=sh) for v, (r, sh) in zip(row, kinds, strict=True))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def section(s: Section) -> list[str]:
    """A section's markdown lines: heading, intro, why it was skipped, tables, notes."""
    lines = [f"## {s.title}", ""]
    if s.intro:
        lines += [s.intro.strip(), ""]
    if s.skipped:
        lines += [f"**Skipped here:** {s.skipped.strip()}", ""]
    for t in s.tables:
        lines += [*table(t), ""]
    if s.notes:
        lines += [f"- {note.strip()}" for note in s.notes]
        lines.append("")
    return lines


@dataclass(frozen=True, kw_only=True)
class Timing:
    """How one section's run went, for the summary table."""

    name: str
    title: str
    seconds: float
    skipped: str | None


def summary(timings: Sequence[Timing]) -> Table:
    """The wall time of each section, and why any was skipped."""
    t = Table(title="Sections and their wall time", columns=["section", "--only", "ran", "wall time (s)"])
    for x in timings:
        ran = "skipped: " + x.skipped if x.skipped else "yes"
        t.add(f"[{x.title}](#{anchor(x.title)})", f"`{x.name}`", ran, f"{x.seconds:.1f}")
    t.add("**total**", "", "", f"{sum(x.seconds for x in timings):.1f}")
    return t


def anchor(title: str) -> str:
    """GitHub's anchor for a heading."""
    kept = "".join(ch for ch in title.lower() if ch.isalnum() or ch in " -_")
    return kept.replace(" ", "-")


def document(
    *, title: str, preamble: Sequence[str], sections: Sequence[Section], timings: Sequence[Timing]
) -> str:
    """The whole BENCHMARKS.md.

    Args:
        title: the top heading.
        preamble: markdown lines under it (how the file was made, how to reproduce).
        sections: the sections, in order.
        timings: one per section, for the summary table.
    """
    lines = [f"# {title}", "", *preamble, "", *table(summary(timings)), ""]
    for s in sections:
        lines += section(s)
    return "\n".join(lines).rstrip() + "\n"
