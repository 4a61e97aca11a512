"""``make test``'s scheduling: under its xdist flags the files start in tests/conftest.py's order.

xdist's ``--dist loadfile`` re-sorts the files by their count of tests unless told not to
(``--no-loadscope-reorder``), which put the long one-test files of the fault matrix last, each
then running alone on one core at the end of CI. One worker makes the order observable: it is
handed the files one after the other, in the order the scheduler keeps.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LONG = "tests/bench/test_quick.py"  # in conftest.LONGEST_FIRST: 6 fast tests (and 1 slow)
MANY = "tests/bench/test_report.py"  # not in it, and more tests (13): what xdist would put first


def _make_dist_flags() -> list[str]:
    found = re.search(r"^DIST := (.+)$", (ROOT / "Makefile").read_text(), re.M)
    return found.group(1).split() if found else []


def test_a_long_file_with_few_tests_starts_before_a_short_file_with_many_under_make_tests_flags(tmp_path):
    flags = _make_dist_flags()
    assert "--dist" in flags, flags
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "1", *flags, "-p", "no:cacheprovider", "-m", "not slow",
         "-v", MANY, LONG],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
        env={**os.environ, "RELIABILITY_RESULTS": str(tmp_path)},  # not the suite's records
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = re.findall(r"PASSED (tests/\S+?\.py)::", done.stdout)
    assert ran and set(ran) == {LONG, MANY}, done.stdout[-3000:]
    assert ran == [LONG] * ran.count(LONG) + [MANY] * ran.count(MANY), ran  # every LONG test first
