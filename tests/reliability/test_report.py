"""RELIABILITY.md's arithmetic: rows join their tests' outcomes, totals add up, --check is strict."""

from __future__ import annotations

import pytest

from reliability import __main__ as cli
from reliability import record, report
from reliability.matrix import Row

ROWS = (
    Row(
        id="sigkill@training", section="Fault matrix", phase="training", fault="SIGKILL", expected="recovered"
    ),
    Row(id="scan", section="Security", fault="secrets scan", expected="none found"),
)


@pytest.fixture
def results(tmp_path, monkeypatch):
    monkeypatch.setenv(record.RESULTS_VAR, str(tmp_path / "results"))
    monkeypatch.setattr(report, "ROWS", ROWS)
    return tmp_path


def test_a_row_passes_only_when_every_test_of_it_passed_and_unrun_rows_are_named(results):
    record.test_outcome("sigkill@training", "t.py::a", "passed", 1.0)
    record.test_outcome("sigkill@training", "t.py::b", "failed", 1.0)
    found = report.Findings.read()
    assert found.result(ROWS[0]) == "failed"
    assert found.result(ROWS[1]) == "not run"
    assert found.problems() == ["row sigkill@training: failed", "row scan: not run"]
    record.test_outcome("sigkill@training", "t.py::b", "passed", 1.0)  # a rerun replaces the outcome
    record.test_outcome("scan", "t.py::c", "passed", 1.0)
    assert report.Findings.read().problems() == []


def test_totals_are_summed_over_processes_and_orphans_or_lost_artifacts_fail_the_check(results, capsys):
    record.count(record.Total.FAULTS_INJECTED, 3)
    record.count(record.Total.FAULTS_INJECTED, 4)
    record.count(record.Total.ORPHANS_FOUND, 0)
    record.test_outcome("sigkill@training", "t.py::a", "passed", 1.0)
    record.test_outcome("scan", "t.py::c", "passed", 1.0)
    record.test_outcome("gone", "t.py::d", "passed", 1.0)
    found = report.Findings.read()
    assert found.totals["faults_injected"] == 7
    text = report.render(found)
    assert "| faults injected | 7 |" in text and "| rows passing | 2 of 2 |" in text
    assert found.problems() == ["a test claims row gone, which no rows_*.py declares"]
    record.count(record.Total.ARTIFACTS_LOST, 1)
    out = results / "R.md"
    assert cli.main(["--out", str(out), "--check"]) == 1
    assert "artifacts_lost: 1 (must be 0)" in capsys.readouterr().err
    assert "## Not clean" in out.read_text()
    assert cli.main(["--clear"]) == 0 and not list(record.read())
