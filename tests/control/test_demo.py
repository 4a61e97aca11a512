"""The demo's verdict: the judgement it ends with and where its results are."""

from __future__ import annotations

from pathlib import Path

from control.demo import verdict
from control.report import ReportResult

INDEX = Path("runs/dev/20261125-140502/report/index.html")


def _report(**metrics: object) -> ReportResult:
    return ReportResult(run_id="20261125-140502", index=INDEX, images=(), metrics=metrics)


def test_the_verdict_compares_the_model_with_seasonal_naive():
    beats = verdict(_report(model_wql=0.03, baseline_wql=0.07))
    assert beats.judgement == "the fine-tuned model beats the seasonal-naive baseline: WQL 0.0300 vs 0.0700"
    worse = verdict(_report(model_wql=0.09, baseline_wql=0.07))
    assert worse.judgement is not None and "does not beat" in worse.judgement


def test_without_both_scores_there_is_no_judgement_but_still_where_the_results_are():
    v = verdict(_report(model_wql=0.03))
    assert v.judgement is None
    assert v.open_report == f"open {INDEX} in a browser"
    assert "invoke local.down" in v.afterwards and "invoke runs --local" in v.afterwards
