"""Validation during training: zero-shot, the best weights kept and exported, early stopping, exact resume."""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import shutil
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from common.exitcodes import ExitCode
from trainer.callbacks import TrainHooks
from trainer.checkpoints import checkpoint_problem, find_latest_complete_checkpoint
from trainer.data import load_dataset
from trainer.finetune import train
from trainer.inputs_file import save_inputs, save_window
from trainer.train_config import TrainConfig
from trainer.validation import score


@pytest.fixture(scope="module")
def dataset(small_files, small_spec) -> Any:
    return load_dataset(small_files, small_spec, prediction_length=24, backtest_windows=1)


def _config(out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "prediction_length": 24, "context_length": 64, "num_steps": 40, "learning_rate": 1e-3,
        "batch_size": 16, "finetune_mode": "full", "checkpoint_interval": 20, "seed": 7,
        "eval_interval": 10, "early_stopping_patience": None, "precision": "auto", "log_interval": 1,
        "output_dir": out,
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


def _weights(folder: Path, name: str = "model.safetensors") -> dict[str, torch.Tensor]:
    return load_file(str(folder / name))


def _same_weights(a: Path, b: Path, name: str = "model.safetensors") -> bool:
    wa, wb = _weights(a, name), _weights(b, name)
    return wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)


def _score_of(model_dir: Path, window: Any) -> float:
    from chronos.chronos2 import Chronos2Pipeline

    model = Chronos2Pipeline.from_pretrained(str(model_dir)).model
    return score(model, window, context_length=64, batch_size=16)[0]


def test_score_leaves_rng_and_mode_alone_and_ignores_nan(dataset) -> None:
    from trainer.model import load_base_model

    model, _ = load_base_model("tiny", seed=3)
    model.train()
    torch_state, np_state, py_state = torch.get_rng_state(), np.random.get_state(), random.getstate()
    first = score(model, dataset.validation, context_length=64, batch_size=16)
    assert torch.equal(torch.get_rng_state(), torch_state)
    assert np.array_equal(np.random.get_state()[1], np_state[1]) and random.getstate() == py_state
    assert model.training
    assert score(model, dataset.validation, context_length=64, batch_size=16) == first
    assert all(np.isfinite(first)) and first[0] > 0
    future = dataset.validation.future.copy()
    future[0, :5] = np.nan  # a filled gap in the window: ignored, not NaN
    holed = dataclasses.replace(dataset.validation, future=future)
    wql, loss = score(model, holed, context_length=64, batch_size=16)
    assert np.isfinite(wql) and np.isfinite(loss) and wql != first[0]


def test_validation_keeps_and_exports_the_best(dataset, tmp_path: Path) -> None:
    events: list[dict[str, Any]] = []
    config = _config(tmp_path, eval_interval=15)
    result = train(
        "tiny", dataset.train_inputs, config, validation=dataset.validation,
        hooks=TrainHooks(on_validation=events.append),
    )  # fmt: skip
    block = result.validation
    steps = [h[0] for h in block["history"]]
    assert steps == [0, 15, 30, 40] == [e["step"] for e in events]
    wqls = [h[1] for h in block["history"]]
    assert block["zero_shot_wql"] == wqls[0] and block["zero_shot_loss"] == block["history"][0][2]
    assert block["best_wql"] == min(wqls) and block["best_step"] == steps[wqls.index(min(wqls))]
    assert events[-1]["best_step"] == block["best_step"] and not block["early_stopped"]
    # the exported model is the best one: it scores the best validation WQL
    assert _score_of(result.final_model_dir, dataset.validation) == pytest.approx(block["best_wql"], rel=1e-5)
    assert result.adapter_dir is None
    ckpts = config.checkpoints_dir
    state = json.loads((ckpts / "checkpoint-20" / "validation_state.json").read_text())
    assert [h[0] for h in state["history"]] == [0, 15]
    assert all(checkpoint_problem(ckpts / f"checkpoint-{s}") is None for s in (20, 40))
    shutil.rmtree(ckpts / "checkpoint-40" / "best-model")  # killed before the best weights landed
    assert "best-model" in checkpoint_problem(ckpts / "checkpoint-40")
    assert find_latest_complete_checkpoint(ckpts) == ckpts / "checkpoint-20"


def test_early_stopping_completes_the_run_with_the_best_model(dataset, tmp_path: Path) -> None:
    config = _config(
        tmp_path, learning_rate=0.5, eval_interval=5, early_stopping_patience=1, checkpoint_interval=100
    )
    result = train("tiny", dataset.train_inputs, config, validation=dataset.validation)
    block = result.validation
    assert result.early_stopped and not result.interrupted, block
    assert block["stopped_at_step"] == result.final_step == block["history"][-1][0] < 40
    assert block["history"][-1][1] >= block["best_wql"]  # the last validation did not improve
    assert result.final_model_dir is not None
    assert _score_of(result.final_model_dir, dataset.validation) == pytest.approx(block["best_wql"], rel=1e-5)
    # the stop left a checkpoint: resuming from it trains no further and exports the same model
    stop = config.checkpoints_dir / f"checkpoint-{result.final_step}"
    assert checkpoint_problem(stop) is None
    exported = _weights(result.final_model_dir)
    again = train("tiny", dataset.train_inputs, config, validation=dataset.validation, resume_from=stop)
    assert again.early_stopped and again.final_step == result.final_step and again.checkpoints == ()
    assert all(torch.equal(exported[k], v) for k, v in _weights(again.final_model_dir).items())


@pytest.mark.parametrize("mode", ["full", "lora"])
def test_resume_with_validation_is_exact(mode: str, dataset, tmp_path: Path) -> None:
    window = dataset.validation
    reference = train(
        "tiny", dataset.train_inputs, _config(tmp_path / "ref", finetune_mode=mode), validation=window
    )
    config = _config(tmp_path / "run", finetune_mode=mode)
    step_ends = itertools.count(1)
    first = train(
        "tiny", dataset.train_inputs, config, validation=window,
        hooks=TrainHooks(should_stop=lambda: next(step_ends) == 27),
    )  # fmt: skip
    assert first.interrupted and first.final_model_dir is None
    resumed = train(
        "tiny",
        dataset.train_inputs,
        config,
        validation=window,
        resume_from=config.checkpoints_dir / "checkpoint-27",
    )
    assert resumed.losses == reference.losses
    assert resumed.validation == reference.validation
    assert [h[0] for h in resumed.validation["history"]] == [0, 10, 20, 30, 40]
    assert _same_weights(reference.final_model_dir, resumed.final_model_dir)
    if mode == "lora":
        name = "adapter_model.safetensors"
        assert _same_weights(reference.adapter_dir, resumed.adapter_dir, name)
        assert (resumed.adapter_dir / "adapter_config.json").is_file()


def test_without_validation_the_last_weights_are_exported(dataset, tmp_path: Path) -> None:
    seen: list[int] = []
    config = _config(tmp_path, num_steps=20, log_interval=7, finetune_mode="lora")
    result = train(
        "tiny", dataset.train_inputs, config, hooks=TrainHooks(on_step=lambda s, *_: seen.append(s))
    )
    assert seen == [7, 14, 20] == [s for s, _ in result.losses]  # every log_interval and the last step
    assert result.validation["history"] == [] and result.validation["best_step"] is None
    assert not (tmp_path / "best-model").exists()
    assert (result.adapter_dir / "adapter_model.safetensors").is_file()
    assert not (config.checkpoints_dir / "checkpoint-20" / "validation_state.json").exists()


def test_cuda_oom_retries_from_the_last_checkpoint_with_half_the_micro_batch(
    dataset, tmp_path: Path, monkeypatch
) -> None:
    from chronos.chronos2.trainer import Chronos2Trainer

    original = Chronos2Trainer.training_step
    raised: list[int] = []

    def training_step(self, *args: Any, **kwargs: Any) -> Any:
        if self.state.global_step == 13 and not raised:
            raised.append(self.state.global_step)
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Chronos2Trainer, "training_step", training_step)
    config = _config(tmp_path, num_steps=20, checkpoint_interval=10)
    result = train("tiny", dataset.train_inputs, config, validation=dataset.validation)
    assert raised == [13] and result.final_step == 20 and not result.interrupted
    (change,) = result.precision["changes"]
    assert change["at_step"] == 10 and "out of memory" in change["why"]
    assert (change["from"]["micro_batch"], change["to"]["micro_batch"], change["to"]["grad_accum"]) == (
        16,
        8,
        2,
    )
    plan = json.loads((config.checkpoints_dir / "checkpoint-20" / "precision.json").read_text())
    assert (plan["micro_batch"], plan["grad_accum"]) == (8, 2)
    assert [h[0] for h in result.validation["history"]] == [0, 10, 20]  # continuous across the retry


@pytest.mark.slow
def test_best_model_survives_sigkill_and_resume(dataset, tmp_path: Path) -> None:
    """The child killed after a checkpoint and resumed: same validations, the best model exported."""
    from tests.trainer.test_train import _events, _spawn, _wait_for
    from trainer.inputs_file import load_window

    window_file = save_window(dataset.validation, tmp_path / "validation.npz")
    window = load_window(window_file)
    settings = {"num_steps": 40, "checkpoint_interval": 10, "eval_interval": 5}
    reference = train("tiny", dataset.train_inputs, _config(tmp_path / "ref", **settings), validation=window)
    cfg = {
        "base_model": "tiny", "train": _config(tmp_path / "out", step_delay_s=0.05, **settings).to_dict(),
        "inputs": str(save_inputs(dataset.train_inputs, tmp_path / "inputs.npz")),
        "validation": str(window_file), "resume_from": "auto",
        "progress_path": str(tmp_path / "progress.jsonl"), "result_path": str(tmp_path / "result.json"),
    }  # fmt: skip
    cfg_path = tmp_path / "cfg.json"
    cfg_path.write_text(json.dumps(cfg))
    progress = tmp_path / "progress.jsonl"

    def past_checkpoint(events: list[dict]) -> bool:
        saved = [e["step"] for e in events if e["event"] == "checkpoint"]
        return bool(saved) and any(e["event"] == "step" and e["step"] > saved[0] + 2 for e in events)

    proc = _spawn(cfg_path)
    events = _wait_for(proc, progress, past_checkpoint)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert any(e["event"] == "validation" and e["step"] == 0 for e in events)
    assert max(e["step"] for e in events if e["event"] == "step") < 40
    proc = _spawn(cfg_path)
    assert proc.wait(timeout=240) == ExitCode.OK, proc.stderr.read().decode()
    result = json.loads((tmp_path / "result.json").read_text())
    assert result["status"] == "completed" and result["validation"] == reference.validation
    assert [h[0] for h in result["validation"]["history"]] == list(range(0, 41, 5))
    assert _same_weights(reference.final_model_dir, Path(result["final_model_dir"]))
    best = result["validation"]["best_wql"]
    assert _score_of(Path(result["final_model_dir"]), window) == pytest.approx(best, rel=1e-5)
    validations = [e for e in _events(progress) if e["event"] == "validation"]
    assert {e["step"] for e in validations} == set(range(0, 41, 5))
    starts = [e["start_step"] for e in _events(progress) if e["event"] == "start"]
    assert starts[0] == 0 and starts[1] >= 10  # the second child resumed from a checkpoint


def test_validation_state_best_patience_and_round_trip(tmp_path: Path) -> None:
    from trainer.validation import Score, ValidationState

    state = ValidationState()
    assert state.add(Score(step=0, wql=0.5, loss=2.0))
    assert not state.add(Score(step=10, wql=0.5, loss=1.9))  # a tie keeps the first
    assert not state.add(Score(step=20, wql=float("nan"), loss=float("nan")))  # undefined: not counted
    assert (state.best_step, state.since_best) == (0, 1)
    assert state.add(Score(step=30, wql=0.4, loss=1.8)) and state.since_best == 0
    state.save(tmp_path)
    again = ValidationState.load(tmp_path)
    assert again.summary() == state.summary() and again.since_best == 0
    assert again.summary()["history"][2] == [20, None, None]
    assert ValidationState.load(tmp_path / "absent") is None
