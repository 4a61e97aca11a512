"""A resume refuses a checkpoint trained with another base, mode, context, horizon or learning rate."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import pytest

from trainer.checkpoints import CheckpointError, check_resumable
from trainer.data import load_dataset
from trainer.finetune import train
from trainer.train_config import TrainConfig


@pytest.fixture(scope="module")
def trained(small_files, small_spec, tmp_path_factory) -> tuple[TrainConfig, Path]:
    """One full checkpoint of 4 steps (base tiny: revision None in base_model.json)."""
    inputs = load_dataset(small_files, small_spec, prediction_length=24, backtest_windows=1).train_inputs
    config = TrainConfig(
        prediction_length=24, context_length=64, num_steps=4, learning_rate=1e-3, batch_size=8,
        finetune_mode="full", checkpoint_interval=4, seed=1, eval_interval=4, early_stopping_patience=None,
        precision="auto", log_interval=1, output_dir=tmp_path_factory.mktemp("refusal"),
    )  # fmt: skip
    train("tiny", inputs, config)
    return config, config.checkpoints_dir / "checkpoint-4"


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"finetune_mode": "lora"}, "finetune_mode=full, this run has lora"),
        ({"context_length": 128}, "context_length=64, this run has 128"),
        ({"prediction_length": 12}, "prediction_length=24, this run has 12"),
        ({"learning_rate": 3e-4}, "learning_rate=0.001, this run has 0.0003"),
        ({"num_steps": 8}, "num_steps=4, this run has 8"),
        ({"batch_size": 16}, "batch_size=8, this run has 16"),
    ],
)
def test_a_changed_setting_is_refused_naming_both_values(
    trained, change: dict[str, Any], message: str
) -> None:
    config, checkpoint = trained
    check_resumable(checkpoint, config)  # the same settings resume
    with pytest.raises(CheckpointError) as raised:
        check_resumable(checkpoint, dataclasses.replace(config, **change))
    text = str(raised.value)
    assert text.startswith(f"cannot resume from {checkpoint}: it was trained with {message}")
    assert "start a new run" in text and "\n" not in text


def test_another_base_revision_is_refused(trained, tmp_path: Path) -> None:
    config, checkpoint = trained
    base = json.loads((checkpoint / "base_model.json").read_text())
    assert base["base"] == "tiny" and "revision" in base
    with pytest.raises(CheckpointError, match=f"base model revision={base['revision']}, this run has abc123"):
        check_resumable(checkpoint, config, base_revision="abc123")
    pinned = tmp_path / "checkpoint-4"
    _copy(checkpoint, pinned)
    (pinned / "base_model.json").write_text(json.dumps({**base, "revision": "abc123"}))
    check_resumable(pinned, config, base_revision="abc123")
    with pytest.raises(CheckpointError, match="revision=abc123, this run has def456 .*start a new run"):
        check_resumable(pinned, config, base_revision="def456")


def test_a_smaller_micro_batch_of_the_same_batch_resumes(trained, tmp_path: Path) -> None:
    config, checkpoint = trained
    oomed = tmp_path / "checkpoint-4"
    _copy(checkpoint, oomed)
    plan = json.loads((oomed / "precision.json").read_text())
    (oomed / "precision.json").write_text(json.dumps({**plan, "micro_batch": 4, "grad_accum": 2}))
    state = json.loads((oomed / "trainer_state.json").read_text())
    (oomed / "trainer_state.json").write_text(json.dumps({**state, "train_batch_size": 4}))
    check_resumable(oomed, config)  # 4 x 2 is the run's batch of 8


def _copy(source: Path, target: Path) -> None:
    import shutil

    shutil.copytree(source, target)
