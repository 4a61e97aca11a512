"""What the harness observed, appended as JSON lines, one file per process (xdist-safe).

Every process that observes something (a test, the S3 fault proxy's thread, a fuzz test)
appends to ``<results>/<pid>.jsonl``; ``python -m reliability`` reads them all. The folder is
``$RELIABILITY_RESULTS`` or ``.reliability/results`` under the project root. Records:

- ``{"kind": "count", "name": <Total>, "n": int}``: add ``n`` to a total;
- ``{"kind": "test", "row": id, "nodeid": str, "outcome": "passed"|"failed"|"skipped", "duration_s": float}``:
  written by the pytest plugin in ``tests/conftest.py`` for every test marked ``row``;
- ``{"kind": "note", "row": id, "text": str}``: what a row saw (shown in the report).
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from enum import StrEnum
from pathlib import Path
from typing import Any

RESULTS_VAR = "RELIABILITY_RESULTS"
PROFILE_VAR = "RELIABILITY_PROFILE"
ROOT = Path(__file__).resolve().parents[1]
_LOCK = threading.Lock()


class Total(StrEnum):
    """The totals RELIABILITY.md shows, each counted where it happens."""

    FAULTS_INJECTED = "faults_injected"  # every fault the harness caused (one SIGKILL, one 503 ...)
    RUNS = "runs"  # local runs the harness started (launches that reached RunInstances)
    ORPHANS_FOUND = "orphans_found"  # instances, volumes or locks verify found after a row
    ARTIFACTS_LOST = "artifacts_lost"  # artifacts uploaded before a fault and missing or changed after
    ARTIFACTS_CHECKED = "artifacts_checked"  # artifacts compared against their manifest after a fault
    FUZZ_EXAMPLES = "fuzz_examples"  # hypothesis examples run
    LOAD_RUNS = "load_runs"  # runs and launch attempts of the load tests


def profile() -> str:
    """``short`` (make test, CI) or ``long`` (make soak, make reliability PROFILE=long)."""
    value = os.environ.get(PROFILE_VAR, "short").strip().lower() or "short"
    if value not in ("short", "long"):
        raise ValueError(f"{PROFILE_VAR}={value!r}: use short or long")
    return value


def results_dir() -> Path:
    return Path(os.environ.get(RESULTS_VAR) or ROOT / ".reliability" / "results")


def _append(doc: dict[str, Any]) -> None:
    folder = results_dir()
    folder.mkdir(parents=True, exist_ok=True)
    line = json.dumps(doc, sort_keys=True) + "\n"
    with _LOCK, open(folder / f"{os.getpid()}.jsonl", "a", encoding="utf-8") as out:
        out.write(line)


def count(total: Total, n: int = 1) -> None:
    """Add ``n`` to ``total`` (zero is recorded too: a check that ran and found nothing)."""
    _append({"kind": "count", "name": Total(total).value, "n": int(n)})


def note(row: str, text: str) -> None:
    """Something a row observed, for the report's notes."""
    _append({"kind": "note", "row": row, "text": text})


def test_outcome(row: str, nodeid: str, outcome: str, duration_s: float) -> None:
    doc = {"kind": "test", "row": row, "nodeid": nodeid, "outcome": outcome, "duration_s": duration_s}
    _append({**doc, "at": time.time()})  # a rerun's outcome replaces an earlier one (report.py)


def clear() -> None:
    """Forget every record (``make reliability`` and ``.ci/run`` start from nothing)."""
    folder = results_dir()
    for path in folder.glob("*.jsonl") if folder.is_dir() else ():
        path.unlink()


def read() -> Iterator[dict[str, Any]]:
    folder = results_dir()
    for path in sorted(folder.glob("*.jsonl")) if folder.is_dir() else ():
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                yield json.loads(line)
