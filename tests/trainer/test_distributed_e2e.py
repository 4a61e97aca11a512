"""Data parallel training end to end on the CPU: torchrun, 2 gloo ranks, the tiny model.

The reference is one process with the same effective batch split the same way: batch 16 as 2
micro-batches of 8 accumulated (``micro_batch=8``), where the two ranks take 8 series each. The
ranks draw the single process's batch stream and keep every other batch
(:mod:`trainer.distributed`), so every optimizer step sees the same 16 series in both runs and
the losses agree to float32 rounding: DDP averages the two gradients in an all-reduce, the single
process adds two halves, a difference in the last bits of each gradient that Adam carries
through the steps. Measured: identical to the last printed digit over 16 steps;
:data:`RTOL` leaves room for other BLAS builds. The model has dropout off: with dropout the
ranks, which share one torch RNG state, draw other masks than the accumulating process (a real
difference of ~1e-3 in the loss, measured), which would hide a wrong batch split.
"""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
import pytest

from common.exitcodes import ExitCode
from trainer.checkpoints import find_latest_complete_checkpoint
from trainer.data import load_dataset
from trainer.finetune import train
from trainer.inputs_file import save_inputs, save_window
from trainer.supervisor import TrainingChild
from trainer.train_config import TrainConfig

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RTOL = 1e-5
STEPS, INTERVAL = 16, 8
CHILD_ENV = {
    "HF_HUB_OFFLINE": "1",
    "PYTHONPATH": str(REPO),
    "OMP_NUM_THREADS": "1",
    "GLOO_SOCKET_IFNAME": "lo",  # the ranks talk over the loopback only
}


@pytest.fixture(scope="module")
def world(small_files, small_spec, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A dropout-free tiny model, the inputs and validation window on disk, and the one-process run."""
    import torch
    from chronos.chronos2 import Chronos2Pipeline
    from chronos.chronos2.model import Chronos2Model

    from trainer.model import tiny_config

    root = tmp_path_factory.mktemp("ddp")
    config = tiny_config()
    config.dropout_rate = 0.0
    torch.manual_seed(0)
    Chronos2Pipeline(model=Chronos2Model(config)).save_pretrained(root / "base")
    data = load_dataset(small_files, small_spec, prediction_length=24, backtest_windows=1)
    reference = train(
        str(root / "base"), data.train_inputs, _config(root / "reference", world_size=1, micro_batch=8),
        validation=data.validation,
    )  # fmt: skip
    return {
        "base": str(root / "base"),
        "inputs": save_inputs(data.train_inputs, root / "inputs.npz"),
        "validation": save_window(data.validation, root / "validation.npz"),
        "reference": reference,
    }


def _config(out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "prediction_length": 24, "context_length": 64, "num_steps": STEPS, "learning_rate": 1e-3,
        "batch_size": 16, "finetune_mode": "full", "checkpoint_interval": INTERVAL, "seed": 7,
        "eval_interval": 4, "early_stopping_patience": None, "precision": "auto", "log_interval": 1,
        "output_dir": out,
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


class _Child:
    """The training child as the driver runs it (:class:`TrainingChild`), in a thread."""

    def __init__(self, world: dict[str, Any], work: Path, nproc: int, **train: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.work = work
        config = {
            "base_model": world["base"],
            "train": _config(work / "train", world_size=nproc, **train).to_dict(),
            "inputs": str(world["inputs"]),
            "validation": str(world["validation"]),
            "resume_from": "auto",
            "progress_path": str(work / "progress.jsonl"),
            "result_path": str(work / "result.json"),
        }
        (work / "result.json").unlink(missing_ok=True)
        self.child = TrainingChild(
            config=config, config_path=work / "train-config.json", progress_path=work / "progress.jsonl",
            on_event=self.events.append, env=CHILD_ENV, nproc=nproc, poll_s=0.05,
        )  # fmt: skip
        self.code: int | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        self.code = self.child.run()

    def wait_for(self, done: Callable[[list[dict[str, Any]]], bool], timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while not done(self.events):
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise AssertionError(
                    f"the child ended or stalled (exit {self.code}); events: {self.events[-3:]}"
                )
            time.sleep(0.05)

    def finish(self, timeout: float = 240) -> int:
        self.thread.join(timeout)
        if self.code is None:
            raise AssertionError("the training child did not exit")
        return self.code

    def result(self) -> dict[str, Any]:
        return json.loads((self.work / "result.json").read_text())


def _of(events: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [e for e in events if e["event"] == kind]


def _assert_losses_match(result: dict[str, Any], reference: Any) -> None:
    got = [(int(s), float(v)) for s, v in result["losses"]]
    assert [s for s, _ in got] == [s for s, _ in reference.losses]
    for (step, loss), (_, want) in zip(got, reference.losses, strict=True):
        assert loss == pytest.approx(want, rel=RTOL), step


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def test_two_ranks_train_as_one_process_with_the_same_effective_batch_and_only_rank_0_writes(
    world: dict[str, Any], tmp_path: Path
) -> None:
    reference = world["reference"]
    run = _Child(world, tmp_path, nproc=2)
    assert run.finish() == ExitCode.OK
    result = run.result()
    assert result["status"] == "completed" and result["final_step"] == STEPS
    _assert_losses_match(result, reference)
    # validation decided the same: rank 0 scored, every rank took its numbers
    assert result["validation"]["best_step"] == reference.validation["best_step"]
    for (step, wql, _), (ref_step, ref_wql, _) in zip(
        result["validation"]["history"], reference.validation["history"], strict=True
    ):
        assert step == ref_step and wql == pytest.approx(ref_wql, rel=RTOL)
    assert result["distributed"] == {
        "world_size": 2,
        "per_device_batch": 8,
        "grad_accum": 1,
        "effective_batch": 16,
    }
    settings = json.loads(
        (tmp_path / "train" / "checkpoints" / f"checkpoint-{STEPS}" / "run_settings.json").read_text()
    )
    assert (settings["world_size"], settings["effective_batch"]) == (2, 16)
    # one writer: each event once, the same files as the one-process run (no rank-1 file anywhere)
    events = run.events
    assert len(_of(events, "start")) == 1 and _of(events, "start")[0]["world_size"] == 2
    assert [e["step"] for e in _of(events, "step")] == list(range(1, STEPS + 1))
    assert [e["step"] for e in _of(events, "checkpoint")] == [INTERVAL, STEPS]
    assert [e["step"] for e in _of(events, "validation")] == [0, 4, 8, 12, 16]
    assert len(_of(events, "end")) == 1
    assert _files(tmp_path / "train") == _files(reference.final_model_dir.parent)


def _workers(torchrun_pid: int) -> list[psutil.Process]:
    return psutil.Process(torchrun_pid).children(recursive=True)


def test_sigkill_of_torchrun_takes_its_ranks_and_the_run_resumes_on_two_then_one_process(
    world: dict[str, Any], tmp_path: Path
) -> None:
    reference = world["reference"]
    # 1. two ranks; an on-demand checkpoint (SIGUSR1 reaches rank 0 only), then SIGKILL of torchrun
    first = _Child(world, tmp_path, nproc=2, step_delay_s=0.1)
    first.wait_for(lambda ev: any(e["step"] >= 2 for e in _of(ev, "step")))
    first.child.request_checkpoint()
    first.wait_for(lambda ev: bool(_of(ev, "checkpoint")))
    on_demand = _of(first.events, "checkpoint")[0]["step"]
    assert 2 <= on_demand < INTERVAL  # not an interval checkpoint: the request made it on both ranks
    first.wait_for(lambda ev: any(e["step"] > on_demand for e in _of(ev, "step")))
    torchrun = first.child.proc
    assert torchrun is not None
    workers = _workers(torchrun.pid)
    assert len(workers) == 2
    os.kill(torchrun.pid, signal.SIGKILL)
    assert first.finish() == -signal.SIGKILL
    gone, alive = psutil.wait_procs(workers, timeout=20)
    assert alive == [], "a rank outlived torchrun"
    assert (
        find_latest_complete_checkpoint(tmp_path / "train" / "checkpoints").name == f"checkpoint-{on_demand}"
    )

    # 2. two ranks resume from it; a stop request (SIGTERM to torchrun, which sends it on) stops both
    second = _Child(world, tmp_path, nproc=2, step_delay_s=0.1)
    second.wait_for(lambda ev: any(e["step"] > on_demand + 1 for e in _of(ev, "step")))
    second.child.request_stop()
    assert second.finish() == ExitCode.STOPPED  # torchrun says 1; rank 0's result says stopped
    stopped = second.result()
    assert stopped["status"] == "interrupted" and stopped["resumed_from"].endswith(f"checkpoint-{on_demand}")
    assert _of(second.events, "start")[0]["start_step"] == on_demand
    at = stopped["final_step"]
    assert on_demand < at < STEPS and _of(second.events, "checkpoint")[-1]["step"] == at

    # 3. one process finishes it: the checkpoint of 2 ranks x 8 continues as 2 micro-batches of 8
    third = _Child(world, tmp_path, nproc=1)
    assert third.finish() == ExitCode.OK
    result = third.result()
    assert result["final_step"] == STEPS and result["resumed_from"].endswith(f"checkpoint-{at}")
    assert result["distributed"] == {
        "world_size": 1,
        "per_device_batch": 8,
        "grad_accum": 2,
        "effective_batch": 16,
    }
    _assert_losses_match(result, reference)
    assert result["validation"]["best_step"] == reference.validation["best_step"]


def test_early_stopping_is_decided_alike_on_both_ranks(world: dict[str, Any], tmp_path: Path) -> None:
    """A learning rate too high for the window: validation gets worse and training stops early.
    Both ranks must stop at the same step (one that trained on would wait for the other in its
    next all-reduce until torchrun's timeout): torchrun exits 0 only when both ended."""
    from trainer.inputs_file import load_inputs, load_window

    stopping = {"learning_rate": 0.05, "eval_interval": 2, "early_stopping_patience": 1, "num_steps": 40}
    reference = train(
        world["base"], load_inputs(world["inputs"]), _config(tmp_path / "one", micro_batch=8, **stopping),
        validation=load_window(world["validation"]),
    )  # fmt: skip
    assert reference.early_stopped
    (tmp_path / "ranks").mkdir()
    run = _Child(world, tmp_path / "ranks", nproc=2, **stopping)
    assert run.finish() == ExitCode.OK
    validation = run.result()["validation"]
    assert (
        validation["early_stopped"]
        and validation["stopped_at_step"] == reference.validation["stopped_at_step"]
    )
    assert validation["best_step"] == reference.validation["best_step"]
    assert run.result()["final_model_dir"] is not None and len(_of(run.events, "end")) == 1
