"""Training: checkpoints, on-demand checkpoint and stop, LoRA, exact resume after SIGKILL."""

from __future__ import annotations

import itertools
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from common.exitcodes import ExitCode
from trainer.callbacks import TrainHooks
from trainer.checkpoints import CheckpointError, checkpoint_problem, find_latest_complete_checkpoint
from trainer.data import load_dataset
from trainer.finetune import train
from trainer.inputs_file import save_inputs
from trainer.train_config import TrainConfig

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def inputs(small_files, small_spec) -> list[dict[str, Any]]:
    return load_dataset(small_files, small_spec, prediction_length=24, backtest_windows=1).train_inputs


def _config(out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "prediction_length": 24,
        "context_length": 64,
        "num_steps": 40,
        "learning_rate": 1e-3,
        "batch_size": 16,
        "finetune_mode": "full",
        "checkpoint_interval": 20,
        "seed": 7,
        "eval_interval": 20,
        "early_stopping_patience": None,
        "precision": "auto",
        "log_interval": 1,
        "output_dir": out,
    }
    values.update(overrides)
    return TrainConfig(**values)


def _weights(model_dir: Path) -> dict[str, torch.Tensor]:
    return load_file(str(model_dir / "model.safetensors"))


def _assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = _weights(a), _weights(b)
    assert wa.keys() == wb.keys()
    for name in wa:
        assert torch.equal(wa[name], wb[name]), name


def _tear(checkpoint: Path, step: int) -> Path:
    """A newer checkpoint folder killed mid-save: weights, no trainer_state.json."""
    torn = checkpoint.parent / f"checkpoint-{step}"
    torn.mkdir()
    for weights in checkpoint.glob("*.safetensors"):
        (torn / weights.name).write_bytes(weights.read_bytes())
    return torn


def test_training_saves_checkpoints_and_a_loadable_model(inputs, tmp_path: Path) -> None:
    from chronos.chronos2 import Chronos2Pipeline

    seen: list[tuple[int, int, float]] = []
    saved: list[tuple[Path, int]] = []
    hooks = TrainHooks(
        on_step=lambda *a: seen.append(a), on_checkpoint_saved=lambda p, s: saved.append((p, s))
    )
    result = train("tiny", inputs, _config(tmp_path), hooks=hooks)
    assert result.final_step == 40 and not result.interrupted
    assert [s for s, _, _ in seen] == list(range(1, 41)) and {t for _, t, _ in seen} == {40}
    assert [(s, loss) for s, _, loss in seen] == list(result.losses)
    ckpts = tmp_path / "checkpoints"
    assert saved == [(ckpts / "checkpoint-20", 20), (ckpts / "checkpoint-40", 40)]
    assert list(result.checkpoints) == [p for p, _ in saved]
    assert all(checkpoint_problem(p) is None for p, _ in saved)
    assert find_latest_complete_checkpoint(ckpts) == ckpts / "checkpoint-40"
    assert result.final_model_dir == tmp_path / "model"
    info = json.loads((tmp_path / "model" / "training_info.json").read_text())
    assert info["base_model"]["base"] == "tiny" and info["final_step"] == 40
    pipeline = Chronos2Pipeline.from_pretrained(str(result.final_model_dir))
    forecast = pipeline.predict([{"target": inputs[0]["target"]}], prediction_length=24)
    assert forecast[0].shape[-1] == 24 and torch.isfinite(forecast[0]).all()
    assert result.steps_per_s > 0 and result.trainable_params == 54144


def test_checkpoint_on_demand_and_stop(inputs, tmp_path: Path) -> None:
    step_ends = itertools.count(1)  # should_stop is polled once at the end of every step
    saved: list[int] = []
    at_step = 0

    def should_stop() -> bool:
        nonlocal at_step
        at_step = next(step_ends)
        return at_step == 12

    hooks = TrainHooks(
        should_checkpoint_now=lambda: at_step == 7,
        should_stop=should_stop,
        on_checkpoint_saved=lambda _p, s: saved.append(s),
    )
    result = train("tiny", inputs, _config(tmp_path, checkpoint_interval=1000), hooks=hooks)
    assert saved == [7, 12]
    assert result.interrupted and result.final_step == 12 and result.final_model_dir is None
    assert not (tmp_path / "model").exists()
    assert find_latest_complete_checkpoint(tmp_path / "checkpoints").name == "checkpoint-12"


def test_lora_stop_and_resume_is_exact(inputs, tmp_path: Path) -> None:
    reference = train("tiny", inputs, _config(tmp_path / "ref", finetune_mode="lora"))
    assert reference.trainable_params < reference.base_model.param_count
    assert (tmp_path / "ref" / "checkpoints" / "checkpoint-20" / "adapter_model.safetensors").is_file()
    config = _config(tmp_path / "run", finetune_mode="lora")
    step_ends = itertools.count(1)
    first = train("tiny", inputs, config, hooks=TrainHooks(should_stop=lambda: next(step_ends) == 27))
    assert first.interrupted and first.final_step == 27
    resumed = train("tiny", inputs, config, resume_from=config.checkpoints_dir / "checkpoint-27")
    assert resumed.final_step == 40 and not resumed.interrupted
    assert resumed.losses == reference.losses
    _assert_same_weights(reference.final_model_dir, resumed.final_model_dir)
    # the final model has the adapter merged: it loads without peft or the base
    assert not (resumed.final_model_dir / "adapter_config.json").exists()
    from chronos.chronos2 import Chronos2Pipeline

    assert Chronos2Pipeline.from_pretrained(str(resumed.final_model_dir)).model is not None
    base = json.loads((config.checkpoints_dir / "checkpoint-27" / "base_model.json").read_text())
    assert base["base"] == "tiny" and base["seed"] == 7


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_from_the_last_checkpoint_only_saves_the_model(mode: str, inputs, tmp_path: Path) -> None:
    config = _config(tmp_path, num_steps=20, finetune_mode=mode)
    first = train("tiny", inputs, config)
    saved = _weights(first.final_model_dir)
    shutil.rmtree(first.final_model_dir)  # killed after the last checkpoint, before the model
    again = train("tiny", inputs, config, resume_from=config.checkpoints_dir / "checkpoint-20")
    assert again.final_step == 20 and not again.interrupted and again.checkpoints == ()
    assert again.losses == first.losses
    resaved = _weights(again.final_model_dir)
    assert all(torch.equal(saved[k], resaved[k]) for k in saved)


def test_find_latest_skips_torn_folders(inputs, tmp_path: Path, caplog) -> None:
    train("tiny", inputs, _config(tmp_path, num_steps=20, checkpoint_interval=10))
    ckpts = tmp_path / "checkpoints"
    _tear(ckpts / "checkpoint-20", 30)
    (ckpts / "checkpoint-40").mkdir()
    (ckpts / "checkpoint-40" / "trainer_state.json").write_text("{not json")
    (ckpts / "notes").mkdir()
    with caplog.at_level(logging.WARNING, logger="trainer.checkpoints"):
        assert find_latest_complete_checkpoint(ckpts) == ckpts / "checkpoint-20"
    assert "checkpoint-30" in caplog.text and "checkpoint-40" in caplog.text
    assert find_latest_complete_checkpoint(tmp_path / "absent") is None
    with pytest.raises(CheckpointError, match="trainer_state.json"):
        train("tiny", inputs, _config(tmp_path, num_steps=20), resume_from=ckpts / "checkpoint-30")
    with pytest.raises(CheckpointError, match="num_steps=20, this run has 25"):
        train("tiny", inputs, _config(tmp_path, num_steps=25), resume_from=ckpts / "checkpoint-20")


def test_config_validation(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="finetune_mode"):
        _config(tmp_path, finetune_mode="qlora")
    with pytest.raises(ValueError, match="num_steps"):
        _config(tmp_path, num_steps=0)
    config = _config(tmp_path)
    assert TrainConfig.from_dict(config.to_dict()) == config


# ---- the child process --------------------------------------------------------------


def _child_config(tmp: Path, inputs_file: Path, **train_overrides: Any) -> Path:
    train_cfg = _config(tmp / "out", **train_overrides).to_dict()
    cfg = {
        "base_model": "tiny",
        "train": train_cfg,
        "inputs": str(inputs_file),
        "resume_from": "auto",
        "progress_path": str(tmp / "progress.jsonl"),
        "result_path": str(tmp / "result.json"),
    }
    path = tmp / "cfg.json"
    path.write_text(json.dumps(cfg))
    return path


def _spawn(cfg: Path) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(REPO)}
    return subprocess.Popen(
        [sys.executable, "-m", "trainer.train", "--config", str(cfg)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip


def _events(progress: Path) -> list[dict[str, Any]]:
    if not progress.exists():
        return []
    return [json.loads(line) for line in progress.read_text().splitlines() if line.endswith("}")]


def _wait_for(proc: subprocess.Popen, progress: Path, done, timeout: float = 120) -> list[dict]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        events = _events(progress)
        if done(events):
            return events
        if proc.poll() is not None:
            raise AssertionError(f"child exited {proc.returncode}: {proc.stderr.read().decode()}")
        time.sleep(0.02)
    proc.kill()
    raise AssertionError("timed out waiting for the child")


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["full", "lora"])
def test_sigkill_then_resume_matches_uninterrupted_run(mode: str, inputs, tmp_path: Path) -> None:
    """Exact resume: same per-step losses and bit-identical final weights."""
    num_steps = 40
    settings = {"num_steps": num_steps, "checkpoint_interval": 10, "finetune_mode": mode}
    reference = train("tiny", inputs, _config(tmp_path / "ref", **settings))
    inputs_file = save_inputs(inputs, tmp_path / "inputs.npz")
    cfg = _child_config(tmp_path, inputs_file, step_delay_s=0.05, **settings)
    progress = tmp_path / "progress.jsonl"

    proc = _spawn(cfg)

    def past_checkpoint(events: list[dict]) -> bool:
        saved = [e["step"] for e in events if e["event"] == "checkpoint"]
        return bool(saved) and any(e["event"] == "step" and e["step"] > saved[0] for e in events)

    events = _wait_for(proc, progress, past_checkpoint)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    killed_at = max(e["step"] for e in events if e["event"] == "step")
    assert killed_at < num_steps
    checkpoints = tmp_path / "out" / "checkpoints"
    latest = find_latest_complete_checkpoint(checkpoints)
    assert latest is not None
    _tear(latest, checkpoint_step_of(latest) + 5)  # a newer torn folder must be skipped

    proc = _spawn(cfg)
    assert proc.wait(timeout=180) == ExitCode.OK, proc.stderr.read().decode()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and result["final_step"] == num_steps
    assert result["resumed_from"] == str(latest)
    assert [tuple(x) for x in result["losses"]] == list(reference.losses)
    # the steps the killed child logged before the checkpoint match too
    first_run = [(e["step"], e["loss"]) for e in events if e["event"] == "step"]
    assert first_run == list(reference.losses[: len(first_run)])
    _assert_same_weights(reference.final_model_dir, Path(result["final_model_dir"]))
    starts = [e for e in _events(progress) if e["event"] == "start"]
    assert [s["start_step"] for s in starts] == [0, checkpoint_step_of(latest)]


def checkpoint_step_of(path: Path) -> int:
    return int(path.name.split("-")[1])


@pytest.mark.slow
def test_child_signals_checkpoint_and_stop(inputs, tmp_path: Path) -> None:
    inputs_file = save_inputs(inputs, tmp_path / "inputs.npz")
    cfg = _child_config(tmp_path, inputs_file, num_steps=400, checkpoint_interval=1000, step_delay_s=0.02)
    progress = tmp_path / "progress.jsonl"
    proc = _spawn(cfg)
    _wait_for(proc, progress, lambda ev: any(e["event"] == "step" for e in ev))
    proc.send_signal(signal.SIGUSR1)
    events = _wait_for(proc, progress, lambda ev: any(e["event"] == "checkpoint" for e in ev))
    on_demand = next(e for e in events if e["event"] == "checkpoint")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == ExitCode.STOPPED
    events = _events(progress)
    saved = [e["step"] for e in events if e["event"] == "checkpoint"]
    end = events[-1]
    assert end["event"] == "end" and end["status"] == "interrupted" and end["exit_code"] == ExitCode.STOPPED
    assert saved == [on_demand["step"], end["step"]] and end["step"] < 400
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["interrupted"] and result["final_model_dir"] is None
    assert checkpoint_problem(Path(result["checkpoints"][-1])) is None


def test_entry_point_reports_invalid_data_and_config(tmp_path: Path) -> None:
    from trainer.train import main

    handler = signal.getsignal(signal.SIGTERM)
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    cfg = json.loads(_child_config(tmp_path, tmp_path / "unused.npz").read_text())
    del cfg["inputs"]
    cfg["data"] = {"files": [str(bad)], "spec": {}, "backtest_windows": 1}
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["--config", str(tmp_path / "cfg.json")]) == ExitCode.BAD_DATA
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "failed" and str(bad) in result["error"]
    assert _events(tmp_path / "progress.jsonl")[-1]["exit_code"] == ExitCode.BAD_DATA
    cfg["train"]["num_steps"] = 0
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    assert main(["--config", str(tmp_path / "cfg.json")]) == ExitCode.USAGE
    assert signal.getsignal(signal.SIGTERM) == handler  # restored


@pytest.mark.slow
def test_tiny_model_beats_seasonal_naive_on_synthetic_data(tmp_path: Path) -> None:
    from common.runspec import DataSpec
    from trainer.metrics import evaluate
    from trainer.synthetic import KNOWN_COVARIATE, PAST_COVARIATE, TINY_TRAINING, generate_dataset

    files = generate_dataset(tmp_path / "data")
    spec = DataSpec.from_dict({"past_covariates": [PAST_COVARIATE], "known_covariates": [KNOWN_COVARIATE]})
    dataset = load_dataset(
        files, spec, prediction_length=int(TINY_TRAINING["prediction_length"]), backtest_windows=1
    )
    config = TrainConfig(
        **TINY_TRAINING, output_dir=tmp_path / "out", checkpoint_interval=10_000, finetune_mode="full",
        seed=0, eval_interval=10_000, early_stopping_patience=None, precision="auto", log_interval=1,
    )  # fmt: skip
    result = train("tiny", dataset.train_inputs, config)
    scores = evaluate(result.final_model_dir, dataset.test_windows[-1])
    assert scores["model_wql"] < 0.8 * scores["seasonal_naive_wql"], scores
    assert scores["model_mase"] < scores["seasonal_naive_mase"], scores


def test_the_training_loop_runs_with_the_heap_frozen_and_unfreezes_it_after(inputs, tmp_path: Path) -> None:
    """The heap before the loop is out of the collector's scans while training
    (trainer.finetune.frozen_heap)."""
    import gc

    from transformers import TrainerCallback

    frozen_at: list[int] = []

    class Probe(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            frozen_at.append(gc.get_freeze_count())

    assert gc.get_freeze_count() == 0
    train("tiny", inputs, _config(tmp_path, num_steps=3), hooks=TrainHooks(callbacks=[Probe()]))
    assert len(frozen_at) == 3 and min(frozen_at) > 100_000, frozen_at  # torch and transformers at least
    assert gc.get_freeze_count() == 0


def test_the_heap_is_unfrozen_when_training_raises() -> None:
    import gc

    from trainer.finetune import frozen_heap

    with pytest.raises(RuntimeError), frozen_heap():
        assert gc.get_freeze_count() > 0
        raise RuntimeError("the loop failed")
    assert gc.get_freeze_count() == 0
