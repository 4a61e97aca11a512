"""The training section's arithmetic: weight comparison, tables and notes (fake tensors and times)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from bench import training
from bench.core import Section, Settings
from bench.training import TRAINER, UPSTREAM
from bench.weights import WeightDiff, compare_files, compare_weights, weights_table


def _weights(**scale: float) -> dict[str, torch.Tensor]:
    base = {"a.weight": torch.arange(6, dtype=torch.float32).reshape(2, 3), "b.bias": torch.ones(4)}
    return {name: t * scale.get(name.split(".")[0], 1.0) for name, t in base.items()}


def test_the_same_weights_are_bit_identical_with_no_difference():
    diff = compare_weights(_weights(), _weights())
    assert diff == WeightDiff(max_abs_diff=0.0, identical=True)


def test_a_changed_value_is_not_identical_and_its_difference_is_reported():
    other = _weights()
    other["a.weight"][1, 2] += 0.25
    diff = compare_weights(_weights(), other)
    assert not diff.identical
    assert diff.max_abs_diff == pytest.approx(0.25)
    assert diff.mismatched == ()


def test_a_difference_below_float32_rounding_still_counts_as_not_identical():
    other = _weights()
    other["b.bias"][0] = torch.nextafter(torch.tensor(1.0), torch.tensor(2.0))
    diff = compare_weights(_weights(), other)
    assert not diff.identical and 0 < diff.max_abs_diff < 1e-6


def test_missing_or_reshaped_tensors_are_named_and_never_identical():
    other = _weights()
    del other["b.bias"]
    other["a.weight"] = other["a.weight"].reshape(3, 2)
    other["c.extra"] = torch.zeros(1)
    diff = compare_weights(_weights(), other)
    assert not diff.identical
    assert diff.mismatched == ("a.weight", "b.bias", "c.extra")
    assert diff.max_abs_diff == 0.0


def test_another_dtype_is_a_mismatch():
    other = {name: t.double() for name, t in _weights().items()}
    assert compare_weights(_weights(), other).mismatched == ("a.weight", "b.bias")


def test_saved_safetensors_files_are_compared_tensor_by_tensor(tmp_path: Path):
    save_file(_weights(), str(tmp_path / "x.safetensors"))
    save_file(_weights(a=2.0), str(tmp_path / "y.safetensors"))
    assert compare_files(tmp_path / "x.safetensors", tmp_path / "x.safetensors").identical
    assert compare_files(tmp_path / "x.safetensors", tmp_path / "y.safetensors").max_abs_diff == 5.0


def test_the_speed_table_gives_median_seconds_steps_per_second_and_speed_against_the_baseline():
    times = {UPSTREAM: [2.0, 9.0, 2.2], TRAINER: [1.0, 1.1, 8.0]}
    table = training.speed_table("t", 100, times, baseline=UPSTREAM)
    assert table.columns == ["alternative", "median s", "steps/s", "ratio"]
    assert table.rows[0] == [UPSTREAM, 2.2, pytest.approx(100 / 2.2), 1.0]
    assert table.rows[1] == [TRAINER, 1.1, pytest.approx(100 / 1.1), pytest.approx(2.0)]


def test_overhead_is_the_extra_median_time_as_a_fraction():
    assert training.overhead([2.0, 2.0, 9.0], [2.1, 2.1, 0.1]) == pytest.approx(0.05)
    assert training.round_ratios([2.0, 3.0], [1.0, 3.0]) == [2.0, 1.0]


def test_the_weights_table_counts_identical_rounds_and_keeps_the_largest_difference():
    diffs = [WeightDiff(max_abs_diff=0.0, identical=True), WeightDiff(max_abs_diff=3e-8, identical=False)]
    table = weights_table([("tiny", UPSTREAM, diffs)])
    assert table.rows == [["tiny", UPSTREAM, "1 of 2", 3e-8]]


def test_alternatives_run_interleaved_with_the_round_as_seed_and_pairs_compared(tmp_path: Path):
    calls: list[tuple[str, int]] = []

    def alternative(name: str, scale: float):
        def fn(seed: int) -> Path:
            calls.append((name, seed))
            path = tmp_path / f"{name}-{seed}.safetensors"
            save_file({"w": torch.full((2,), float(seed) * scale)}, str(path))
            return path

        return fn

    cleaned: list[int] = []
    times, diffs = training.interleaved(
        {"a": alternative("a", 1.0), "b": alternative("b", 2.0)},
        2,
        compare=[("a", "b")],
        after_round=lambda: cleaned.append(1),
    )
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("b", 1)]
    assert [len(v) for v in times.values()] == [2, 2] and len(cleaned) == 2
    assert [d.identical for d in diffs[("a", "b")]] == [True, False]


def test_an_alternative_with_a_round_limit_runs_in_the_first_rounds_only_and_pairs_only_where_both_ran(
    tmp_path: Path,
):
    calls: list[tuple[str, int]] = []

    def fn(name: str):
        def run(seed: int) -> Path:
            calls.append((name, seed))
            path = tmp_path / f"{name}-{seed}.safetensors"
            save_file({"w": torch.zeros(1)}, str(path))
            return path

        return run

    times, diffs = training.interleaved(
        {"a": fn("a"), "b": fn("b")}, 3, compare=[("a", "b")], limits={"b": 1}
    )
    assert calls == [("a", 0), ("b", 0), ("a", 1), ("a", 2)]
    assert [len(times["a"]), len(times["b"])] == [3, 1] and len(diffs[("a", "b")]) == 1


def test_the_notes_say_whether_the_targets_were_met():
    times = {TRAINER: [1.0, 1.0], UPSTREAM: [0.98, 1.02], "ck": [1.2, 1.2], "val": [1.1, 1.1]}
    same = [WeightDiff(max_abs_diff=0.0, identical=True)] * 2
    note = training._fit_notes("tiny", times, same, None)[0]
    assert "1.00x upstream fit's speed" in note and "met" in note and "2 of 2" in note
    slower = {**times, UPSTREAM: [0.9, 0.9]}
    assert "not met by the median" in training._fit_notes("tiny", slower, same, None)[0]
    p = training.Plan(steps=100, rounds=2, thread_steps=100, thread_rounds=1)
    tables, notes = training._overheads(p, times, "ck", "val")
    assert [t.rows[1][3] for t in tables] == [pytest.approx(1 / 1.2), pytest.approx(1 / 1.1)]
    assert "+20.0%" in notes[0] and "not met at this frequency" in notes[0]
    assert "22 ms per checkpoint" in notes[0] and "about 2.2% (met)" in notes[0]
    assert "+10.0%" in notes[1]


def test_quick_and_full_plans_fit_their_budgets():
    quick = training.plan(Settings(quick=True, rounds=5, workdir=Path(".")))
    full = training.plan(Settings(quick=False, rounds=5, workdir=Path(".")))
    assert (quick.steps, quick.rounds, quick.fit_default_threads) == (20, 1, False)
    assert (full.steps, full.rounds, full.side_rounds, full.thread_rounds) == (100, 5, 3, 2)
    assert full.steps % full.checkpoints == 0 and full.steps % full.validations == 0


@pytest.mark.slow
def test_the_quick_section_compares_the_trainer_with_upstream_fit(tmp_path: Path):
    section = training.run(Settings(quick=True, rounds=1, workdir=tmp_path))
    assert isinstance(section, Section) and section.skipped is None
    weights = next(t for t in section.tables if t.title.startswith("Final weights"))
    assert [row[2] for row in weights.rows] == ["1 of 1", "1 of 1"]
    assert len(section.tables) == 6
