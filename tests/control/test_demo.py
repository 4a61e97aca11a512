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


def _evaluation(beats: bool | None, exported: str = "fine_tuned") -> dict:
    def scores(wql: float) -> dict:
        return {"wql": wql, "mase": 1.0, "windows": []}

    return {
        "windows": [{"name": f"test-{k}", "items": 4} for k in (1, 2, 3)],
        "season": 24,
        "season_source": "gluonts",
        "quantile_levels": [0.5],
        "models": {"fine_tuned": scores(0.03), "zero_shot": scores(0.045), "seasonal_naive": scores(0.07)},
        "validation": {"zero_shot_wql": 0.0487, "best_wql": 0.0412 if beats else 0.0533, "best_step": 200,
                       "history": [], "early_stopped": False},
        "beats_zero_shot": beats,
        "exported": exported,
        "warnings": [],
    }  # fmt: skip


def _evaluated(beats: bool | None, exported: str = "fine_tuned") -> ReportResult:
    return ReportResult(
        run_id="20261125-140502",
        index=INDEX,
        images=(),
        metrics={"model_wql": 0.03, "zero_shot_wql": 0.045, "baseline_wql": 0.07},
        evaluation=_evaluation(beats, exported),
    )


def test_the_verdict_states_the_three_models_and_where_the_results_are():
    lines = verdict(_evaluated(True)).judgement.splitlines()
    assert lines[0] == (
        "test WQL over 3 windows: fine-tuned 0.0300, zero-shot (base) 0.0450, seasonal naive 0.0700"
    )
    assert (
        lines[1]
        == "the fine-tuned model beats the base model (zero-shot) on validation: WQL 0.0412 vs 0.0487"
    )
    run = INDEX.parent.parent
    scores = run / "evaluation" / "metrics.json"
    assert lines[2] == f"model: {run / 'models'} (the fine-tuned model); every item and window: {scores}"


def test_the_verdict_says_when_fine_tuning_does_not_beat_the_base_model():
    kept = verdict(_evaluated(False, "base")).judgement
    assert (
        "the fine-tuned model does NOT beat the base model (zero-shot) on validation: WQL 0.0533 vs 0.0487"
        in kept
    )
    assert "models/ holds the base model (keep_base_if_worse)" in kept and "(the base model)" in kept
    anyway = verdict(_evaluated(False)).judgement
    assert "set keep_base_if_worse = true to export the base" in anyway and "NOT beat" in anyway
    assert "NOT beat" not in verdict(_evaluated(True)).judgement
    unmeasured = verdict(_evaluated(None)).judgement
    assert "validation did not compare the fine-tuned model with the base model" in unmeasured


def test_the_demo_spec_fine_tunes_the_shipped_tiny_pretrained_model_with_validation():
    import tomllib

    from common import runspec
    from control.demo import DEMO_STEPS, demo_spec

    spec = runspec.from_dict(tomllib.loads(demo_spec()), source="demo").resolved(local=True)
    m = spec.model
    assert m.base == runspec.TINY_PRETRAINED and m.num_steps == DEMO_STEPS
    assert m.learning_rate == runspec.SMALL_BASE_DEFAULTS[runspec.TINY_PRETRAINED][1]
    assert m.eval_interval < m.num_steps  # scored on validation during training, not only at the end
    short = runspec.from_dict(tomllib.loads(demo_spec(5)), source="demo").model
    assert short.num_steps == 5 and short.eval_interval == 5 and short.checkpoint_interval == 5
