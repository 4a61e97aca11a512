"""No test asserts on the wall clock: an elapsed time measured by the test depends on the machine's load.

A latency a test cares about comes from the run's own timestamps (log lines, S3's LastModified,
training.json), a cost from counted calls; polling loops may use the clock, assertions may not.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
CLOCKS = {("time", "time"), ("time", "monotonic"), ("time", "perf_counter"), ("time", "process_time")}


def _is_clock(node: ast.AST) -> bool:
    """``time.time()``, ``time.monotonic()``, ``time.perf_counter()`` ..."""
    return (
        isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and isinstance(node.func.value, ast.Name)
        and (node.func.value.id, node.func.attr) in CLOCKS
    )


def wall_clock_assertions(source: str) -> list[int]:
    """Line numbers of the asserts that compare a wall-clock reading, or an elapsed time taken from
    one in the same function (``took = time.monotonic() - started``, ``assert end - start < 5``)."""
    found = []
    scopes = [n for n in ast.walk(ast.parse(source)) if isinstance(n, ast.FunctionDef | ast.Module)]
    for scope in scopes:
        body = [n for stmt in scope.body for n in ast.walk(stmt)]
        readings: set[str] = set()  # names bound to a clock reading (or to one plus a timeout)
        elapsed: set[str] = set()  # names bound to a difference of readings
        for n in (n for n in body if isinstance(n, ast.Assign)):
            names = {t.id for t in n.targets if isinstance(t, ast.Name)}
            if _timed(n.value, readings):
                is_sub = isinstance(n.value, ast.BinOp) and isinstance(n.value.op, ast.Sub)
                (elapsed if is_sub else readings).update(names)
        for n in (n for n in body if isinstance(n, ast.Assert)):
            parts = list(ast.walk(n.test))
            if any(
                _is_clock(p)
                or (isinstance(p, ast.Name) and p.id in elapsed)
                or (isinstance(p, ast.BinOp) and isinstance(p.op, ast.Sub) and _timed(p, readings))
                for p in parts
            ):
                found.append(n.lineno)
    return sorted(set(found))


def _timed(node: ast.AST, readings: set[str]) -> bool:
    """Whether ``node`` reads a clock, directly or through a name bound to a reading."""
    return any(_is_clock(p) or (isinstance(p, ast.Name) and p.id in readings) for p in ast.walk(node))


def test_the_detector_finds_a_timed_assertion_and_spares_a_polling_loop():
    timed = (
        "def t():\n    began = time.monotonic()\n    took = time.monotonic() - began\n    assert took < 3\n"
    )
    direct = "import time\nassert 29 * 60 < deadline - time.time() <= 30 * 60\n"
    polling = (
        "import time\nend = time.monotonic() + 60\nwhile time.monotonic() < end:\n    pass\nassert done\n"
    )
    assert wall_clock_assertions(timed) == [4] and wall_clock_assertions(direct) == [2]
    assert wall_clock_assertions(polling) == []
    split = "def t():\n    a = time.perf_counter()\n    b = time.perf_counter()\n    assert b - a < 1\n"
    assert wall_clock_assertions(split) == [4]


@pytest.mark.row("records-no-wall-clock")
def test_no_test_asserts_an_elapsed_wall_clock_time():
    found = {
        f"{path.relative_to(TESTS.parent)}:{line}"
        for path in sorted(TESTS.rglob("*.py"))
        for line in wall_clock_assertions(path.read_text(encoding="utf-8"))
    }
    assert not found, f"assertions on the wall clock (use the run's own timestamps): {sorted(found)}"
