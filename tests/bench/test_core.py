"""The arithmetic every benchmark shares: ratios, medians, interleaved rounds, table rows."""

from __future__ import annotations

import math

import pytest

from bench.core import Table, interleave, median, rate, ratio, timed


def test_ratio_is_baseline_over_candidate_and_a_zero_candidate_is_infinitely_faster():
    assert ratio(3.0, 1.5) == 2.0
    assert ratio(1.0, 4.0) == 0.25
    assert ratio(1.0, 0.0) == math.inf


def test_median_of_odd_and_even_counts_and_nan_for_none():
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0, 2.0, 3.0]) == 2.5
    assert math.isnan(median([]))


def test_rate_is_amount_per_second_and_zero_without_time():
    assert rate(100, 4.0) == 25.0
    assert rate(100, 0.0) == 0.0


def test_interleave_runs_each_alternative_once_per_round_in_turn():
    calls: list[str] = []
    times = interleave({"a": lambda: calls.append("a"), "b": lambda: calls.append("b")}, rounds=3)
    assert calls == ["a", "b", "a", "b", "a", "b"]
    assert set(times) == {"a", "b"} and all(len(v) == 3 for v in times.values())
    assert all(t >= 0 for v in times.values() for t in v)


def test_timed_measures_the_call():
    assert timed(lambda: None) >= 0


def test_a_table_row_needs_one_cell_per_column():
    t = Table(title="t", columns=["a", "b"])
    t.add(1, "x")
    assert t.rows == [[1, "x"]]
    with pytest.raises(ValueError, match="3 cells for 2 columns"):
        t.add(1, 2, 3)
    assert t.rows == [[1, "x"]]
