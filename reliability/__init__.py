"""The reliability harness: faults injected into local runs, fuzzed input, load, security properties.

Every test that proves a row of RELIABILITY.md carries ``@pytest.mark.row("<row id>")``;
the rows themselves are declared in ``reliability/rows_*.py`` (collected by
:mod:`reliability.matrix`). What the harness observes while it runs (faults injected,
runs started, orphans found, artifacts lost, fuzz examples, load runs) is counted through
:mod:`reliability.record`, and ``python -m reliability`` writes RELIABILITY.md from those
records and the tests' outcomes: no number in it is typed by hand.
"""
