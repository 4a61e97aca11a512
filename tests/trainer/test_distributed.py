"""Data parallel training's pieces: the world, the process count, torchrun's command line, the
shared batch stream, agreement across ranks, resumes on another GPU count (fast; the torchrun
runs themselves are in test_distributed_e2e.py)."""

from __future__ import annotations

import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from common.gpus import batch_split_problem
from trainer.callbacks import ControlCallback, TrainHooks, ValidationCallback
from trainer.checkpoints import CheckpointError, check_resumable, recorded_world_size, run_settings
from trainer.distributed import (
    NPROC_ENV,
    SHUTDOWN_TIMEOUT_S,
    World,
    child_command,
    nproc_for,
    shard_batches,
    usable_processes,
)
from trainer.fallbacks import initial_plan, next_plan
from trainer.precision import PrecisionPlan, save_plan
from trainer.supervisor import TrainingChild
from trainer.train_config import TrainConfig
from trainer.validation import ValidationState


def _config(out: Path, **overrides: Any) -> TrainConfig:
    values: dict[str, Any] = {
        "prediction_length": 24, "context_length": 64, "num_steps": 40, "learning_rate": 1e-3,
        "batch_size": 16, "finetune_mode": "full", "checkpoint_interval": 20, "seed": 7,
        "eval_interval": 20, "early_stopping_patience": None, "precision": "auto", "log_interval": 1,
        "output_dir": out,
    }  # fmt: skip
    values.update(overrides)
    return TrainConfig(**values)


# ---- the world and the process count ---------------------------------------------------


def test_the_world_is_what_torchrun_says_and_one_process_without_it() -> None:
    assert World.from_env({}) == World(rank=0, world_size=1, local_rank=0)
    world = World.from_env({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert (world.rank, world.world_size, world.distributed, world.is_main) == (1, 2, True, False)
    with pytest.raises(ValueError, match="rank 2 is not in a world of 2"):
        World.from_env({"RANK": "2", "WORLD_SIZE": "2"})
    with pytest.raises(ValueError, match="not integers"):
        World.from_env({"RANK": "zero"})
    # one process: agreeing and broadcasting are the identity, no process group needed
    assert World().agree(True, False) == (True, False)
    assert World().broadcast((0.5, 1.0)) == (0.5, 1.0)


def test_one_process_per_gpu_on_cuda_and_one_on_cpu_unless_told() -> None:
    assert nproc_for("cpu", {}) == 1
    assert nproc_for("cpu", {NPROC_ENV: "2"}) == 2  # the tests' gloo ranks
    assert nproc_for("cuda", {}, gpus=4) == 4
    assert nproc_for("cuda", {}, gpus=1) == 1
    assert nproc_for("cuda", {NPROC_ENV: "2"}, gpus=4) == 2
    assert nproc_for("cuda", {NPROC_ENV: "8"}, gpus=4) == 4  # never more than the GPUs
    assert nproc_for("cuda", {"CUDA_VISIBLE_DEVICES": ""}) == 1
    with pytest.raises(ValueError, match="TRAINER_NPROC='two' is not a positive number"):
        nproc_for("cpu", {NPROC_ENV: "two"})


def test_a_batch_that_does_not_split_trains_on_the_gpus_it_splits_over() -> None:
    assert usable_processes(64, 4) == 4
    assert usable_processes(30, 4) == 3
    assert usable_processes(7, 4) == 1
    assert usable_processes(32, 1) == 1


def test_the_child_runs_under_torchrun_only_with_more_than_one_process(tmp_path: Path) -> None:
    cfg = tmp_path / "train-config.json"
    assert child_command("py", cfg, 1) == ["py", "-m", "trainer.train", "--config", str(cfg)]
    assert child_command("py", cfg, 4) == [
        "py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "--max_restarts=0",
        f"--shutdown_timeout={SHUTDOWN_TIMEOUT_S}", "-m", "trainer.train", "--config", str(cfg),
    ]  # fmt: skip
    assert SHUTDOWN_TIMEOUT_S < 120  # a spot notice's two minutes, the checkpoint inside them


# ---- the batch stream ----------------------------------------------------------------------


class _Stream:
    """A training dataset's shape: an endless stream drawing from numpy's global RNG."""

    batch_size = 4

    def __iter__(self):
        while True:
            yield int(np.random.randint(1_000_000))


def _take(iterator, n: int) -> list[int]:
    return [next(iterator) for _ in range(n)]


def test_the_ranks_split_one_stream_and_keep_equal_rng_states() -> None:
    np.random.seed(3)
    single = _take(iter(_Stream()), 12)
    shards, states = [], []
    for rank in range(3):
        np.random.seed(3)
        it = shard_batches(_Stream(), World(rank=rank, world_size=3))
        shards.append(_take(it, 4))
        states.append(np.random.get_state()[1].copy())
    # rank r takes batches r, r+3, r+6 ... of the single process's stream
    assert [shards[r][j] for j in range(4) for r in range(3)] == single
    # after each yield every rank has drawn the whole group: the same RNG state on all
    assert all(np.array_equal(states[0], s) for s in states[1:])


# ---- agreement across ranks ----------------------------------------------------------------


class _Peers:
    """A world whose other rank asked for a stop (as an all-reduce would report it)."""

    is_main = False
    distributed = True

    def __init__(self, stop: bool = False, checkpoint: bool = False, scores: Any = None) -> None:
        self.remote, self.scores, self.asked = (stop, checkpoint), scores, []

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        self.asked.append(flags)
        return tuple(a or b for a, b in zip(flags, self.remote, strict=True))

    def broadcast(self, value: Any) -> Any:
        return self.scores


class _Control:
    should_save = should_training_stop = should_log = False


class _State:
    global_step = 5


def test_a_stop_another_rank_saw_stops_this_rank_at_the_same_step() -> None:
    peers = _Peers(stop=True)
    callback = ControlCallback(
        total=10, hooks=TrainHooks(should_stop=lambda: False), step_delay_s=0, world=peers
    )
    control = callback.on_step_end(None, _State(), _Control())
    assert control.should_save and control.should_training_stop
    assert peers.asked == [(False, False)]  # asked every step, whatever this rank saw


def test_a_checkpoint_request_of_rank_0_saves_on_every_rank() -> None:
    peers = _Peers(checkpoint=True)
    callback = ControlCallback(total=10, hooks=TrainHooks(), step_delay_s=0, world=peers)
    control = callback.on_step_end(None, _State(), _Control())
    assert control.should_save and not control.should_training_stop


def test_another_rank_takes_rank_0s_validation_and_writes_no_best_model(tmp_path: Path) -> None:
    from trainer.best_model import BestModel

    state = ValidationState()
    best = BestModel(tmp_path)
    callback = ValidationCallback(
        model=None, window=None, best=best, state=state, config=_config(tmp_path, world_size=2),
        world=_Peers(scores=(0.25, 1.5)),
    )  # fmt: skip
    callback.validate(0)
    callback.validate(20)
    assert state.best_step == 0 and state.best_wql == 0.25 and state.since_best == 1
    assert not best.folder.exists() and list(tmp_path.iterdir()) == []


def _agree_in_a_process_group(rank: int, world_size: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), GLOO_SOCKET_IFNAME="lo")
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    world = World(rank=rank, world_size=world_size, local_rank=rank)
    stop, checkpoint = world.agree(rank == 1, False)
    scores = world.broadcast((0.1 * (rank + 1), rank) if rank == 0 else None)
    dist.destroy_process_group()
    Path(out, f"rank{rank}.json").write_text(json.dumps([stop, checkpoint, list(scores)]))


@pytest.mark.slow
def test_gloo_ranks_agree_on_any_ranks_flag_and_take_rank_0s_numbers(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_agree_in_a_process_group, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    answers = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert answers == [[True, False, [0.1, 0]]] * 2


# ---- the split of the batch, and resumes on another GPU count --------------------------------


def test_the_effective_batch_must_split_over_the_processes(tmp_path: Path) -> None:
    config = _config(tmp_path, batch_size=16, world_size=2, micro_batch=4)
    assert config.per_rank_batch == 8
    with pytest.raises(ValueError, match="model.batch_size 30 does not split over the 4 GPUs.*28 or 32"):
        _config(tmp_path, batch_size=30, world_size=4)
    with pytest.raises(ValueError, match="micro_batch 3 must divide the 8 series"):
        _config(tmp_path, batch_size=16, world_size=2, micro_batch=3)
    assert batch_split_problem(16, 1) is None and batch_split_problem(16, 4) is None


def _checkpoint(folder: Path, config: TrainConfig, plan: PrecisionPlan) -> Path:
    """A complete checkpoint folder's files (contents that only the completeness check reads)."""
    folder.mkdir(parents=True)
    step = int(folder.name.split("-")[1])
    (folder / "trainer_state.json").write_text(
        json.dumps({"global_step": step, "max_steps": config.num_steps})
    )
    for name in ("model.safetensors", "optimizer.pt", "scheduler.pt", "rng_state.pth"):
        (folder / name).write_bytes(b"state")
    split = run_settings(config, micro_batch=plan.micro_batch, grad_accum=plan.grad_accum)
    (folder / "run_settings.json").write_text(json.dumps(split))
    save_plan(plan, folder)
    return folder


def _plan(micro: int, accum: int) -> PrecisionPlan:
    return PrecisionPlan(mode="fp32", reason="cpu: fp32", micro_batch=micro, grad_accum=accum)


def test_run_settings_record_the_split_and_the_effective_batch(tmp_path: Path) -> None:
    settings = run_settings(_config(tmp_path, world_size=2), micro_batch=4, grad_accum=2)
    assert {k: settings[k] for k in ("world_size", "per_device_batch", "grad_accum", "effective_batch")} == {
        "world_size": 2, "per_device_batch": 4, "grad_accum": 2, "effective_batch": 16,
    }  # fmt: skip
    assert settings["batch_size"] == 16


def test_a_two_gpu_checkpoint_resumes_on_one_keeping_its_micro_batch(tmp_path: Path) -> None:
    two = _config(tmp_path, world_size=2)
    ckpt = _checkpoint(tmp_path / "checkpoints" / "checkpoint-10", two, _plan(8, 1))
    assert recorded_world_size(ckpt) == 2
    one = _config(tmp_path)
    check_resumable(ckpt, one)  # the effective batch of 16 is kept: it continues
    plan = initial_plan(one, ckpt)
    assert (plan.micro_batch, plan.grad_accum) == (8, 2)  # the same stream of 8-series batches
    four = _config(tmp_path, world_size=4)
    check_resumable(ckpt, four)
    assert (initial_plan(four, ckpt).micro_batch, initial_plan(four, ckpt).grad_accum) == (4, 1)


def test_a_resume_that_would_change_the_effective_batch_is_refused_in_one_line(tmp_path: Path) -> None:
    two = _config(tmp_path, world_size=2)
    ckpt = _checkpoint(tmp_path / "checkpoint-10", two, _plan(8, 1))
    settings = json.loads((ckpt / "run_settings.json").read_text())
    (ckpt / "run_settings.json").write_text(json.dumps({**settings, "effective_batch": 32}))
    with pytest.raises(CheckpointError) as refused:
        check_resumable(ckpt, _config(tmp_path, world_size=4))
    message = str(refused.value)
    assert "\n" not in message
    assert (
        "its 2 processes trained with an effective batch of 32" in message
        and "4 would train with 16" in message
    )
    with pytest.raises(CheckpointError, match="batch_size=16, this run has 32"):
        check_resumable(ckpt, _config(tmp_path, batch_size=32, world_size=4))


def test_data_parallel_an_out_of_memory_is_not_retried_and_a_nan_is() -> None:
    import torch

    from trainer.precision import NonFiniteLoss

    plan = PrecisionPlan(mode="fp16", reason="x", micro_batch=8, grad_accum=1)
    oom = torch.cuda.OutOfMemoryError("CUDA out of memory")
    assert next_plan(oom, plan)[0] is not None
    assert next_plan(oom, plan, distributed=True) == (None, "")
    nan = NonFiniteLoss(3, float("nan"), mode="fp16")
    retry = next_plan(nan, plan, distributed=True)[0]
    assert retry is not None and retry.mode == "fp32"


# ---- the supervisor ------------------------------------------------------------------------


def test_under_torchrun_the_childs_exit_code_is_rank_0s(tmp_path: Path) -> None:
    result = tmp_path / "result.json"
    child = TrainingChild(
        config={"result_path": str(result)}, config_path=tmp_path / "c.json",
        progress_path=tmp_path / "p.jsonl", on_event=lambda e: None, nproc=2,
    )  # fmt: skip
    assert child._exit_code(1) == 1  # no result: torchrun's code stands (a worker killed outright)
    result.write_text(json.dumps({"status": "interrupted", "exit_code": 8}))
    assert child._exit_code(1) == 8  # torchrun says 1 for any failed worker; rank 0 stopped on request
    assert child._exit_code(0) == 0
    single = TrainingChild(
        config={"result_path": str(result)}, config_path=tmp_path / "c.json",
        progress_path=tmp_path / "p.jsonl", on_event=lambda e: None, python=sys.executable,
    )  # fmt: skip
    assert single._exit_code(1) == 1


# ---- the driver's side ------------------------------------------------------------------------


def test_the_driver_starts_one_process_per_gpu_as_far_as_the_batch_splits(monkeypatch) -> None:
    from trainer import training
    from trainer.errors import TerminalError

    monkeypatch.delenv(NPROC_ENV, raising=False)
    assert training.processes(32, "cpu") == 1
    monkeypatch.setattr(training, "nproc_for", lambda device: 4)
    assert training.processes(32, "cuda") == 4
    assert training.processes(30, "cuda") == 3  # a resumed batch of 30 on 4 GPUs: 3 of them train
    monkeypatch.undo()
    monkeypatch.setenv(NPROC_ENV, "0")
    with pytest.raises(TerminalError, match="TRAINER_NPROC='0' is not a positive number"):
        training.processes(32, "cpu")


def test_training_json_records_the_split_of_the_batch() -> None:
    from schemas import SchemaValidationError, validate

    doc = json.loads((Path(__file__).resolve().parents[2] / "schemas" / "training.schema.json").read_text())
    example = doc["examples"][0]
    [training] = [p for p in example["phases"] if p["name"] == "training"]
    training["details"]["distributed"] = {
        "world_size": 4,
        "per_device_batch": 8,
        "grad_accum": 1,
        "effective_batch": 32,
    }
    validate("training", example)
    training["details"]["distributed"] = {"world_size": 0}
    with pytest.raises(SchemaValidationError, match="world_size"):
        validate("training", example)


def test_under_torchrun_signals_wait_for_an_event_all_ranks_made(tmp_path: Path) -> None:
    progress = tmp_path / "progress.jsonl"

    def child(nproc: int) -> TrainingChild:
        return TrainingChild(
            config={}, config_path=tmp_path / "c.json", progress_path=progress, on_event=lambda e: None,
            nproc=nproc,
        )  # fmt: skip

    progress.write_text(json.dumps({"event": "start", "pid": 4242, "total": 10, "start_step": 0}) + "\n")
    single, ranks = child(1), child(2)
    single._read_events()
    ranks._read_events()
    assert single.started.is_set()
    # rank 0 has its handlers; rank 1 may still be importing: a SIGTERM now would kill it outright
    assert not ranks.started.is_set() and ranks.rank0_pid == 4242
    with progress.open("a") as fh:
        fh.write(json.dumps({"event": "validation", "step": 0, "wql": 0.5}) + "\n")
    ranks._read_events()
    assert ranks.started.is_set()


def test_a_rank_whose_peer_died_says_so_and_where_the_first_error_is() -> None:
    from trainer.distributed import peer_failure

    gone = RuntimeError(
        "[/__w/pytorch/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:553] Connection closed by peer "
        "[127.0.0.1]:24979. This is typically caused by a remote worker crashing."
    )
    message = peer_failure(gone, World(rank=0, world_size=2))
    assert message is not None and "\n" not in message
    assert message.startswith("another of the 2 training processes failed first (its error is in trainer.log")
    assert "lower model.batch_size" in message and "Connection closed by peer" in message
    assert peer_failure(gone, World()) is None  # one process: its own error, as before
    assert peer_failure(ValueError("bad value"), World(rank=0, world_size=2)) is None
