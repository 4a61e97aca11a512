"""Zero-shot vs fine-tuned with the shipped tiny pretrained Chronos-2 on data it has not seen.

The data is "shifted" from the pretraining corpus: a 17-hour cycle (no such period was in
it) on a high level. Fine-tuning for a few dozen steps must beat the base model on the
validation window, and both models are reported side by side on the same test windows.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from common.runspec import DataSpec
from trainer import evaluate
from trainer.base_model import resolve_base
from trainer.data import load_dataset
from trainer.finetune import train
from trainer.model import base_pipeline
from trainer.train_config import TrainConfig

H, K, PERIOD = 24, 2, 17


def shifted_files(root: Path, n_items: int = 8, length: int = 24 * 12) -> list[Path]:
    rng = np.random.default_rng(5)
    t = np.arange(length)
    frames = []
    for i in range(n_items):
        level = 500.0 + 50 * i
        cycle = 0.4 * level * np.sin(2 * np.pi * (t + 3 * i) / PERIOD)
        frames.append(
            pd.DataFrame(
                {
                    "item_id": f"s{i}",
                    "timestamp": pd.date_range("2024-03-01", periods=length, freq="h"),
                    "target": level + cycle + rng.normal(0, 0.02 * level, length),
                }
            )
        )
    root.mkdir(parents=True, exist_ok=True)
    path = root / "shifted.parquet"
    pd.concat(frames).to_parquet(path, index=False)
    return [path]


def test_fine_tuning_the_pretrained_tiny_model_on_shifted_data_beats_its_zero_shot(tmp_path: Path) -> None:
    dataset = load_dataset(
        shifted_files(tmp_path / "data"), DataSpec.from_dict({}), prediction_length=H, backtest_windows=K
    )
    ref = resolve_base("tiny-pretrained")
    config = TrainConfig(
        prediction_length=H, context_length=128, num_steps=80, learning_rate=1e-3,
        output_dir=tmp_path / "out", batch_size=16, finetune_mode="full", checkpoint_interval=80,
        seed=0, eval_interval=20,
        early_stopping_patience=None, precision="auto", log_interval=10,
    )  # fmt: skip
    result = train(ref.location, dataset.train_inputs, config, validation=dataset.validation)
    validation = result.to_dict()["validation"]
    # the base is scored at step 0, before any step; fine-tuning then beats it on validation
    assert [row[0] for row in validation["history"]] == [0, 20, 40, 60, 80]
    assert validation["zero_shot_wql"] == validation["history"][0][1]
    assert validation["best_step"] > 0 and validation["best_wql"] < 0.9 * validation["zero_shot_wql"], (
        validation
    )

    from chronos.chronos2 import Chronos2Pipeline

    pipelines = {
        evaluate.FINE_TUNED: Chronos2Pipeline.from_pretrained(str(result.final_model_dir)),
        evaluate.ZERO_SHOT: base_pipeline(ref),
    }
    ev = evaluate.evaluate_models(pipelines, list(dataset.test_windows), validation=validation)
    models = ev.record["models"]
    # both are reported on the same K test windows, next to seasonal naive
    for name in (evaluate.FINE_TUNED, evaluate.ZERO_SHOT, "seasonal_naive"):
        assert [w["name"] for w in models[name]["windows"]] == ["test-1", "test-2"]
        assert np.isfinite(models[name]["wql"]), name
    assert models[evaluate.FINE_TUNED]["wql"] != models[evaluate.ZERO_SHOT]["wql"]
    assert ev.record["beats_zero_shot"] is True and ev.record["exported"] == evaluate.FINE_TUNED
    assert ev.metrics["zero_shot_wql"] == models[evaluate.ZERO_SHOT]["wql"]
