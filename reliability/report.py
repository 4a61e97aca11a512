"""RELIABILITY.md from the harness's records: the rows, the tests that prove them, the totals."""

from __future__ import annotations

import platform
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from reliability import record
from reliability.matrix import ROWS, SECTIONS, Row

RESULT_ORDER = ("failed", "passed", "skipped")


@dataclass
class Findings:
    """The records folded: per row its tests' outcomes, the totals, the notes."""

    tests: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: defaultdict(dict))
    totals: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    notes: dict[str, list[str]] = field(default_factory=lambda: defaultdict(list))
    unknown_rows: set[str] = field(default_factory=set)

    @classmethod
    def read(cls) -> Findings:
        found = cls()
        known = {r.id for r in ROWS}
        for doc in record.read():
            kind = doc.get("kind")
            if kind == "count":
                found.totals[doc["name"]] += int(doc["n"])
            elif kind == "test":
                if doc["row"] not in known:
                    found.unknown_rows.add(doc["row"])
                # the newest outcome of a test wins (a rerun replaces it)
                seen = found.tests[doc["row"]].get(doc["nodeid"])
                if seen is None or doc.get("at", 0) >= seen.get("at", 0):
                    found.tests[doc["row"]][doc["nodeid"]] = doc
            elif kind == "note" and doc.get("text") not in found.notes[doc["row"]]:
                found.notes[doc["row"]].append(doc["text"])
        return found

    def result(self, row: Row) -> str:
        """``passed`` only when every test of the row passed; ``not run`` when none ran."""
        outcomes = {t["outcome"] for t in self.tests.get(row.id, {}).values()}
        for outcome in RESULT_ORDER:
            if outcome in outcomes:
                return outcome
        return "not run"

    def problems(self) -> list[str]:
        """Why the report is not clean (``--check`` fails on any)."""
        out = [f"row {r.id}: {self.result(r)}" for r in ROWS if self.result(r) != "passed"]
        out += [f"a test claims row {i}, which no rows_*.py declares" for i in sorted(self.unknown_rows)]
        for name in (record.Total.ORPHANS_FOUND, record.Total.ARTIFACTS_LOST):
            if self.totals.get(name, 0):
                out.append(f"{name}: {self.totals[name]} (must be 0)")
        return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def render(found: Findings, *, now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    passed = sum(found.result(r) == "passed" for r in ROWS)
    out = [
        "# Reliability",
        "",
        "Written entirely by `python -m reliability` (`make reliability`) from what the harness "
        "observed: every row names the fault injected (or the property checked), the outcome its "
        "test asserts, the test and its last result; every total is counted by the harness "
        "where it happens (`reliability/record.py`). No number here is typed by hand.",
        "",
        f"- written: {now:%Y-%m-%d %H:%M} UTC, profile `{record.profile()}`",
        f"- machine: {platform.platform()}, Python {platform.python_version()}",
        "- reproduce: `make reliability` (the short profile, as CI runs it), "
        "`make reliability PROFILE=long`, `make fuzz`, `make soak`",
        "",
        "## Totals",
        "",
    ]
    totals = [["rows passing", f"{passed} of {len(ROWS)}"]]
    totals += [[t.value.replace("_", " "), str(found.totals.get(t.value, 0))] for t in record.Total]
    out += _table(["what", "count"], totals)
    for section in SECTIONS:
        rows = [r for r in ROWS if r.section == section]
        if not rows:
            continue
        out += ["", f"## {section}", ""]
        table = []
        for r in rows:
            tests = sorted(found.tests.get(r.id, {}))
            table.append(
                [
                    f"`{r.id}`",
                    r.phase or "",
                    r.fault,
                    r.expected,
                    "<br>".join(f"`{t}`" for t in tests) or "(none)",
                    found.result(r),
                ]
            )
        out += _table(
            ["row", "phase", "injected / checked", "expected outcome", "test", "last result"], table
        )
        notes = [(r.id, n) for r in rows for n in found.notes.get(r.id, [])]
        if notes:
            out += [""] + [f"- `{rid}`: {_cell(n)}" for rid, n in notes]
    problems = found.problems()
    if problems:
        out += ["", "## Not clean", ""] + [f"- {p}" for p in problems]
    return "\n".join(out) + "\n"
