"""BENCHMARKS.md as the bench writes it: number formats, tables, sections, and the sections' arithmetic."""

from __future__ import annotations

import math

from bench import gpu, loading, quality, report
from bench.core import Section, Settings, Table


def test_numbers_keep_three_or_four_significant_digits():
    assert report.number(0.123456) == "0.1235"
    assert report.number(12.3456) == "12.35"
    assert report.number(123.456) == "123.5"
    assert report.number(12345.6) == "12346"
    assert report.number(0.0000123456) == "1.23e-05"
    assert report.number(0.0) == "0"
    assert report.number(7) == "7"
    assert report.number(True) == "yes"
    assert report.number(math.nan) == "-"
    assert report.number(math.inf) == "inf"


def test_ratios_are_bold_with_their_x():
    assert report.times(1.2345) == "**1.23x**"
    assert report.times(0.4) == "**0.40x**"
    assert report.times(12.345) == "**12.3x**"
    assert report.times(123.4) == "**123x**"
    assert report.times(None) == "-"
    assert report.times(math.inf) == "**inf**"


def test_columns_named_ratio_or_x_hold_ratios():
    assert report.is_ratio_column("ratio")
    assert report.is_ratio_column("WQL ratio")
    assert report.is_ratio_column("vs training alone (x)")
    assert not report.is_ratio_column("seconds")


def test_shares_are_percentages():
    t = Table(title="Split", columns=["part", "seconds", "share of the run"])
    t.add("boot", 37.02, 0.3592)
    t.add("preflight", 0.024, 0.0002329)
    t.add("finalize", 0, 0)
    assert report.table(t)[4:] == [
        "| boot | 37.02 | 35.9% |",
        "| preflight | 0.024 | 0.0233% |",
        "| finalize | 0 | 0% |",
    ]


def test_a_table_renders_its_title_header_and_formatted_cells():
    t = Table(title="Downloads", columns=["tool", "MB/s", "ratio"])
    t.add("s5cmd", 123.456, 2.0)
    t.add("a|b", None, None)
    assert report.table(t) == [
        "**Downloads**",
        "",
        "| tool | MB/s | ratio |",
        "| --- | --- | --- |",
        "| s5cmd | 123.5 | **2.00x** |",
        "| a\\|b | - | - |",
    ]


def test_a_section_renders_heading_intro_tables_and_notes():
    t = Table(title="T", columns=["a"])
    t.add(1.5)
    s = Section(name="x", title="Some section", intro="What was measured.", tables=[t], notes=["a note"])
    assert report.section(s) == [
        "## Some section", "", "What was measured.", "",
        "**T**", "", "| a |", "| --- |", "| 1.5 |", "",
        "- a note", "",
    ]  # fmt: skip


def test_a_skipped_section_says_why():
    s = Section(name="gpu", title="GPU", intro="", skipped="no GPU on this machine", notes=["run it there"])
    text = "\n".join(report.section(s))
    assert (
        "## GPU" in text and "**Skipped here:** no GPU on this machine" in text and "- run it there" in text
    )


def test_the_document_has_the_title_preamble_a_summary_with_wall_times_and_every_section():
    sections = [
        Section(name="a", title="Data sync", intro="i"),
        Section(name="b", title="GPU", intro="", skipped="no GPU"),
    ]
    timings = [
        report.Timing(name="a", title="Data sync", seconds=2.0, skipped=None),
        report.Timing(name="b", title="GPU", seconds=0.5, skipped="no GPU"),
    ]
    doc = report.document(title="Benchmarks", preamble=["made here"], sections=sections, timings=timings)
    assert doc.startswith("# Benchmarks\n\nmade here\n")
    assert "| [Data sync](#data-sync) | `a` | yes | 2.0 |" in doc
    assert "| [GPU](#gpu) | `b` | skipped: no GPU | 0.5 |" in doc
    assert "| **total** |  |  | 2.5 |" in doc
    assert doc.index("## Data sync") < doc.index("## GPU") and doc.endswith("\n")


def test_without_a_gpu_the_gpu_section_is_skipped_and_says_how_to_fill_it(monkeypatch, tmp_path):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    s = gpu.run(Settings(quick=True, rounds=1, workdir=tmp_path))
    assert s.name == "gpu" and s.skipped == gpu.NO_GPU and not s.tables
    assert any("make bench" in n for n in s.notes)


def test_gpu_rows_are_medians_and_the_ratio_is_trainer_over_upstream_speed():
    runs = {
        ("tiny", "bf16", gpu.TRAINER): [{"steps_per_s": 10.0, "peak_bytes": 2**20, "params": 54.0}] * 2,
        ("tiny", "bf16", gpu.UPSTREAM): [
            {"steps_per_s": 4.0, "peak_bytes": 3 * 2**20, "params": 54.0},
            {"steps_per_s": 6.0, "peak_bytes": 2 * 2**20, "params": 54.0},
        ],
    }
    s = gpu.build({"gpu": "H100", "cuda": "12.4"}, runs, ["x: failed"], steps={"tiny": 200}, warmup=10)
    pre, speed = s.tables
    assert pre.rows == [["gpu", "H100"], ["cuda", "12.4"]]
    assert speed.rows == [["tiny", 54, "bf16", 10.0, 5.0, 2.0, 1.0, 3.0]]
    assert s.skipped is None and "failed: x: failed" in s.notes


def test_the_chronos2_size_shape_has_21_quantiles():
    assert len(gpu.CHRONOS2_QUANTILES) == 21 and gpu.CHRONOS2_QUANTILES[10] == 0.5


def test_loading_rows_are_medians_per_row_and_upstream_compared_with_the_trainer():
    mib = 2**20
    trainer = [
        {"seconds": s, "peak": 600 * mib, "baseline": 100 * mib, "rows": 1000} for s in (1.0, 2.0, 3.0)
    ]
    upstream = [{"seconds": 4.0, "peak": 3 * 1024 * mib, "baseline": 200 * mib, "rows": 1000}]
    s = loading.build(
        items=10, length=100, files=2, generated=1.0,
        runs={loading.TRAINER: trainer, loading.UPSTREAM: upstream}, errors={},
    )  # fmt: skip
    loads, side = s.tables
    assert loads.rows[0] == [loading.TRAINER, 2.0, 500.0, 600.0, 500.0, 500 * mib / 1000, "yes"]
    assert loads.rows[1][-1] == "**no**"
    assert side.rows[0][1:] == [4.0, 2.0, 2.0]
    assert side.rows[1][3] == 3 * 1024 / 600


def test_quality_ratios_are_the_first_models_score_over_the_second():
    spec = quality.demo_run_spec(30)
    assert spec.model.base == "tiny-pretrained" and spec.model.num_steps == 30
    scores = {
        "fine_tuned": {"wql": 0.02, "mase": 0.5},
        "zero_shot": {"wql": 0.04, "mase": 1.0},
        "seasonal_naive": {"wql": 0.08, "mase": None},
    }
    facts = {"steps": 30, "seconds": 1.0, "steps_per_s": 30.0, "best_step": 30, "best_wql": 0.03,
             "zero_shot_val_wql": 0.05, "windows": 2, "items": 24, "season": 24}  # fmt: skip
    s = quality.build(spec, scores, facts)
    pairs = s.tables[1]
    assert pairs.rows[0][1:] == [0.5, 0.5]
    assert pairs.rows[1][1:] == [0.25, None]
    assert pairs.rows[2][1:] == [0.5, None]
    assert "beats the base model" in s.notes[0]
