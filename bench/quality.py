"""Model quality: fine-tuned against zero-shot against seasonal naive, as ratios.

The demo's run, without the orchestration: the shipped synthetic dataset
(:func:`trainer.synthetic.generate_dataset` defaults), the demo's spec
(:func:`control.demo.demo_spec`: local mode's defaults, the tiny pretrained base, its
learning rate and context, the demo's steps and batch size), trained by
:func:`trainer.finetune.train` with the validation window and scored by
:func:`trainer.evaluate.evaluate_models` on the K test windows, exactly the calls the
trainer's phases make.
"""

from __future__ import annotations

import time
import tomllib
from pathlib import Path
from typing import Any

from bench.core import Section, Settings, Table, ratio
from common.runspec import RunSpec, from_dict

NAME = "quality"
QUICK_STEPS = 30
LABELS = {"fine_tuned": "fine-tuned", "zero_shot": "zero-shot (the base)", "seasonal_naive": "seasonal naive"}
PAIRS = (("fine_tuned", "zero_shot"), ("fine_tuned", "seasonal_naive"), ("zero_shot", "seasonal_naive"))


def demo_run_spec(steps: int | None = None) -> RunSpec:
    """The demo's run spec (``steps``: its number of steps instead), resolved for local mode."""
    from control.demo import DEMO_STEPS, demo_spec

    return from_dict(tomllib.loads(demo_spec(steps or DEMO_STEPS)), source="demo spec").resolved(local=True)


def run(settings: Settings) -> Section:
    """Train the demo's run on the synthetic data and score the three models."""
    from trainer.synthetic import generate_dataset

    spec = demo_run_spec(QUICK_STEPS if settings.quick else None)
    files = generate_dataset(settings.workdir / "data")
    scores, facts = train_and_score(spec, files, settings.workdir / "run")
    return build(spec, scores, facts)


def train_and_score(
    spec: RunSpec, files: list[Path], out: Path
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Fine-tune as the training phase does, then score as the evaluation phase does.

    Returns:
        ``{model: {"wql", "mase"}}`` over the test windows, and facts about the run
        (steps, seconds, steps/s, validation best step and WQLs, windows, items).
    """
    from chronos.chronos2 import Chronos2Pipeline

    from trainer import evaluate
    from trainer.base_model import resolve_base
    from trainer.data import load_dataset
    from trainer.finetune import train
    from trainer.model import base_pipeline
    from trainer.train_config import TrainConfig

    m = spec.model
    dataset = load_dataset(
        files, spec.data, prediction_length=m.prediction_length, backtest_windows=m.backtest_windows
    )
    ref = resolve_base(m.base)
    config = TrainConfig.from_spec(m, output_dir=out)
    began = time.perf_counter()
    result = train(ref.location, dataset.train_inputs, config, validation=dataset.validation)
    seconds = time.perf_counter() - began
    validation = result.to_dict()["validation"]
    pipelines = {
        evaluate.FINE_TUNED: Chronos2Pipeline.from_pretrained(str(result.final_model_dir)),
        evaluate.ZERO_SHOT: base_pipeline(ref, seed=m.seed),
    }
    ev = evaluate.evaluate_models(
        pipelines, list(dataset.test_windows), mase_season=m.mase_season, validation=validation,
        keep_base_if_worse=m.keep_base_if_worse,
    )  # fmt: skip
    models = ev.record["models"]
    scores = {name: {"wql": models[name]["wql"], "mase": models[name]["mase"]} for name in LABELS}
    facts = {
        "steps": result.final_step, "seconds": seconds, "steps_per_s": result.steps_per_s,
        "best_step": validation.get("best_step"), "best_wql": validation.get("best_wql"),
        "zero_shot_val_wql": validation.get("zero_shot_wql"), "windows": len(dataset.test_windows),
        "items": len(dataset.item_ids), "season": ev.record["season"],
    }  # fmt: skip
    return scores, facts


def _score_ratio(a: float | None, b: float | None) -> float | None:
    """``a / b`` of two scores (lower is better: below 1, ``a`` is better); None without both."""
    if a is None or b is None:
        return None
    return ratio(a, b)


def build(spec: RunSpec, scores: dict[str, dict[str, float]], facts: dict[str, Any]) -> Section:
    """The section from the scores (pure: the tests feed it numbers)."""
    m = spec.model
    models = Table(
        title=f"Test scores over {facts['windows']} backtest windows x {facts['items']} items "
        "(lower is better)",
        columns=["model", "WQL", f"MASE (season {facts['season']})"],
    )
    for name, label in LABELS.items():
        models.add(label, scores[name]["wql"], scores[name]["mase"])
    pairs = Table(
        title="Side by side (below 1: the first model is better)",
        columns=["models", "WQL ratio", "MASE ratio"],
    )
    for a, b in PAIRS:
        pairs.add(
            f"{LABELS[a]} / {LABELS[b]}",
            _score_ratio(scores[a]["wql"], scores[b]["wql"]),
            _score_ratio(scores[a]["mase"], scores[b]["mase"]),
        )
    val = Table(title="Validation window (before the test windows)", columns=["measure", "value"])
    val.add("zero-shot validation WQL (step 0)", facts["zero_shot_val_wql"])
    val.add("best validation WQL", facts["best_wql"])
    val.add("best step (the exported weights)", facts["best_step"])
    val.add("training steps/s (CPU, one thread)", facts["steps_per_s"])
    val.add("training wall time (s)", facts["seconds"])
    ft, zs = scores["fine_tuned"]["wql"], scores["zero_shot"]["wql"]
    verdict = (
        "fine-tuning beats the base model zero-shot on the test windows"
        if ft is not None and zs is not None and ft < zs
        else "fine-tuning does **not** beat the base model zero-shot on the test windows here"
    )
    return Section(
        name=NAME,
        title="Model quality",
        intro=(
            f"The demo's training without the orchestration: base `{m.base}`, {facts['steps']} steps "
            f"of batch {m.batch_size}, learning rate {m.learning_rate:g}, context {m.context_length}, "
            f"horizon {m.prediction_length}, validation every {m.eval_interval} steps (the best "
            "validation WQL is exported), on the shipped synthetic dataset; then the fine-tuned "
            "model, the same base zero-shot and seasonal naive forecast the same test windows "
            "(GluonTS's WQL and MASE)."
        ),
        tables=[models, pairs, val],
        notes=[verdict + "."],
    )
