"""Data parallel training on the GPUs of one instance: torchrun, the ranks, what they agree on.

With N > 1 GPUs (:func:`nproc_for`) the supervisor starts the training child as
``python -m torch.distributed.run --standalone --nproc_per_node=N -m trainer.train --config
<file>`` (:func:`child_command`; ``torch.distributed.run`` is the ``torchrun`` entry point)
and the Hugging Face Trainer runs DDP (NCCL on CUDA, gloo on CPU). With N <= 1 it starts
``python -m trainer.train`` itself, as always: no torchrun, nothing here changes.

What the ranks share and who writes:

- Data: every rank draws the same stream of batches from the same seeded numpy RNG (the
  Chronos-2 training dataset samples from numpy's global RNG) and keeps every N-th one
  (:func:`shard_batches`): rank r takes batches r, r+N, r+2N ... of the stream a single
  process would draw. One optimizer step over N ranks x G accumulation micro-batches is
  the contiguous block of N x G batches, the same block a single process with G x N
  accumulation uses, so the RNG state after a step is the same whatever the split, and a
  resume on another GPU count that keeps the micro-batch continues the same stream.
- RNG state: identical on every rank, so rank 0 alone saves it as ``rng_state.pth`` and
  every rank restores from that file (:class:`DataParallelTrainer`); a checkpoint looks the
  same whether 1 or 8 processes wrote it.
- Writes: rank 0 alone writes the progress file, the result, the run's files in each
  checkpoint, the best model and the final model (the Trainer's own ``should_save`` already
  keeps weights, optimizer and ``trainer_state.json`` to process 0). The driver, the parent
  process, stays the only one talking to S3.
- Decisions: a stop or checkpoint request reaches one rank (a signal) but must act on all, or
  the others would wait in the next gradient all-reduce forever: :meth:`World.agree` takes the
  logical OR of each rank's flags once per step (one all-reduce of two integers). Validation
  scores on rank 0 and :meth:`World.broadcast` hands the numbers to every rank, so the best
  step and early stopping are decided on identical values everywhere.

Signals: torchrun handles SIGTERM/SIGINT by sending the same signal to every worker's process
group and waiting ``--shutdown_timeout`` seconds before SIGKILL
(torch/distributed/elastic/multiprocessing/api.py ``SubprocessContext._close``); it has no
"forward and go on" for SIGUSR1, so a checkpoint request goes to rank 0's pid (the ``start``
event's) and :meth:`World.agree` spreads it. Workers run in their own sessions
(``start_new_session=True`` in torchrun's ``SubprocessHandler``), so a SIGKILL of torchrun
would orphan them: each asks the kernel for SIGKILL when its parent dies
(:func:`die_with_parent`, ``prctl(PR_SET_PDEATHSIG)``).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

NPROC_ENV = "TRAINER_NPROC"  # overrides the process count (tests: 2 ranks on CPU with gloo)
# How long torchrun waits, after forwarding SIGTERM, for the workers to checkpoint and exit
# before it SIGKILLs them: a spot notice leaves 120 s; a Chronos-2 checkpoint takes ~4 s.
SHUTDOWN_TIMEOUT_S = 90
RNG_STATE_NAME = "rng_state.pth"
_PR_SET_PDEATHSIG = 1  # linux/prctl.h


@dataclass(frozen=True, kw_only=True)
class World:
    """This process's place among the training processes (torchrun's environment).

    Attributes:
        rank: global rank (0 writes).
        world_size: processes in all.
        local_rank: the GPU index of this process.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> World:
        """The world torchrun describes in ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` (none: a single process).

        Raises:
            ValueError: a value that is not a rank of the world.
        """
        env = os.environ if env is None else env
        try:
            world = cls(
                rank=int(env.get("RANK", "0")),
                world_size=int(env.get("WORLD_SIZE", "1")),
                local_rank=int(env.get("LOCAL_RANK", "0")),
            )
        except ValueError as exc:
            raise ValueError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not integers: {exc}") from exc
        if world.world_size < 1 or not 0 <= world.rank < world.world_size:
            raise ValueError(f"rank {world.rank} is not in a world of {world.world_size}")
        return world

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        """More than one process."""
        return self.world_size > 1

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag true on any rank, on every rank (one all-reduce; a no-op for one process).

        Every rank must call it at the same point (once per step), or the others wait.
        """
        if not self.distributed:
            return tuple(bool(f) for f in flags)
        import torch
        import torch.distributed as dist

        values = torch.tensor([int(bool(f)) for f in flags], dtype=torch.int64)
        dist.all_reduce(values, op=dist.ReduceOp.MAX, group=_control_group())
        return tuple(bool(v) for v in values.tolist())

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank (picklable; a no-op for one process)."""
        if not self.distributed:
            return value
        import torch.distributed as dist

        box = [value if self.is_main else None]
        dist.broadcast_object_list(box, src=0, group=_control_group())
        return box[0]


_CONTROL_GROUP: list[Any] = []  # the gloo group of the control messages, made once per process


def _control_group() -> Any:
    """The process group of the flags and scores: gloo, on the CPU.

    Under NCCL (CUDA) a flag tensor on the GPU and its ``.tolist()`` would stall the host on the
    GPU's stream once per step; a gloo group beside it (``new_group(backend="gloo")``, created
    by every rank at its first :meth:`World.agree`, the same step everywhere) keeps the flags on
    the CPU. On CPU training the default (gloo) group is it. ``None``: the default group.
    """
    import torch.distributed as dist

    if not _CONTROL_GROUP:
        _CONTROL_GROUP.append(dist.new_group(backend="gloo") if dist.get_backend() != "gloo" else None)
    return _CONTROL_GROUP[0]


def visible_gpus(env: Mapping[str, str] | None = None) -> int:
    """GPUs this process may use: ``torch.cuda.device_count()`` (honours ``CUDA_VISIBLE_DEVICES``).

    ``device_count`` asks NVML and creates no CUDA context, so the driver may call it before
    it starts the training processes.
    """
    env = os.environ if env is None else env
    if env.get("CUDA_VISIBLE_DEVICES", None) == "":
        return 0
    import torch

    return int(torch.cuda.device_count())


def nproc_for(device: str, env: Mapping[str, str] | None = None, *, gpus: int | None = None) -> int:
    """How many training processes to start: one per visible GPU on CUDA, else 1.

    ``TRAINER_NPROC`` overrides (on CPU: that many gloo ranks, for tests; on CUDA at most
    the GPU count).

    Raises:
        ValueError: ``TRAINER_NPROC`` is not a positive integer.
    """
    env = os.environ if env is None else env
    override = env.get(NPROC_ENV)
    wanted: int | None = None
    if override:
        try:
            wanted = int(override)
        except ValueError:
            wanted = 0
        if wanted < 1:
            raise ValueError(f"{NPROC_ENV}={override!r} is not a positive number of processes")
    if device != "cuda":
        return wanted or 1
    count = visible_gpus(env) if gpus is None else gpus
    return max(1, min(wanted, count) if wanted else count)


def usable_processes(batch_size: int, gpus: int) -> int:
    """The most processes, at most ``gpus``, that split ``batch_size`` evenly (GPUs beyond it idle).

    A batch that does not split over every GPU (a resume on another instance type, or a spec
    that reached the instance unchecked, :func:`common.gpus.batch_split_problem`) trains on as
    many GPUs as split it, rather than failing the run after the instance is paid for.
    """
    return max(n for n in range(1, max(gpus, 1) + 1) if batch_size % n == 0)


def child_command(python: str, config_path: Path, nproc: int) -> list[str]:
    """The training child's command line: ``trainer.train`` itself, or under torchrun for N > 1."""
    train = ["-m", "trainer.train", "--config", str(config_path)]
    if nproc <= 1:
        return [python, *train]
    return [
        python, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "--max_restarts=0", f"--shutdown_timeout={SHUTDOWN_TIMEOUT_S}", *train,
    ]  # fmt: skip


# What a collective raises when another rank died under it (gloo: RuntimeError from
# gloo/transport/tcp/pair.cc; NCCL: torch.distributed.DistBackendError, a RuntimeError).
_PEER_GONE = ("Connection closed by peer", "remote worker", "Connection reset by peer", "NCCL")


def peer_failure(exc: BaseException, world: World) -> str | None:
    """The one-line error of a rank whose collective failed because another rank died (``None``: not that).

    The first error is the other rank's (in trainer.log: every rank's output is relayed there);
    a CUDA out-of-memory on one GPU ends every rank this way (it is not retried under torchrun).
    """
    if not world.distributed:
        return None
    text = " ".join(str(exc).split())
    dist_error = type(exc).__name__ in ("DistError", "DistBackendError", "DistNetworkError")
    if not dist_error and not any(marker in text for marker in _PEER_GONE):
        return None
    return (
        f"another of the {world.world_size} training processes failed first (its error is in trainer.log; "
        f"a CUDA out of memory there: lower model.batch_size); rank {world.rank} then saw "
        f"{type(exc).__name__}: {text[:200]}"
    )


def die_with_parent() -> None:
    """Ask Linux to SIGKILL this process when its parent (torchrun) dies; elsewhere nothing."""
    if not sys.platform.startswith("linux"):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            logger.warning("prctl(PR_SET_PDEATHSIG) failed: errno %d", ctypes.get_errno())
    except (OSError, AttributeError) as exc:
        logger.warning("cannot tie this rank to torchrun's life: %s", exc)


def setup_worker(world: World, device: str) -> None:
    """A torchrun worker's first act: die with torchrun, and take its own GPU."""
    if not world.distributed:
        return
    die_with_parent()
    if device == "cuda":
        import torch

        torch.cuda.set_device(world.local_rank)  # "cuda" below means this rank's GPU
    logger.info("rank %d of %d (local rank %d)", world.rank, world.world_size, world.local_rank)


def shard_batches(dataset: Any, world: World) -> Iterator[Any]:
    """Every ``world_size``-th batch of ``dataset``, starting at ``rank``.

    Each rank generates the whole group of ``world_size`` batches and keeps its own, so all
    ranks' RNG states are equal after every batch they yield.
    """
    group: list[Any] = []
    for batch in dataset:
        group.append(batch)
        if len(group) == world.world_size:
            yield group[world.rank]
            group = []


def rank_shard(dataset: Any, world: World) -> Any:
    """:func:`shard_batches` of ``dataset`` as a ``torch.utils.data.IterableDataset``
    (``batch_size``: the wrapped one's, which ``Chronos2Trainer`` compares)."""
    from torch.utils.data import IterableDataset

    class RankShard(IterableDataset):  # type: ignore[type-arg]
        batch_size = int(dataset.batch_size)

        def __iter__(self) -> Iterator[Any]:
            return shard_batches(dataset, world)

    return RankShard()


def rng_state_file(checkpoint: Path) -> Path | None:
    """The RNG state to restore from ``checkpoint``: ``rng_state.pth``, else a DDP run's rank 0 file."""
    for name in (RNG_STATE_NAME, "rng_state_0.pth"):
        if (Path(checkpoint) / name).is_file():
            return Path(checkpoint) / name
    return None


def trainer_class(world: World) -> Any:
    """``Chronos2Trainer`` whose RNG state is rank 0's, saved once and restored on every rank."""
    from chronos.chronos2.trainer import Chronos2Trainer

    class DataParallelTrainer(Chronos2Trainer):  # type: ignore[misc]
        def _save_rng_state(self, output_dir: str) -> None:
            if world.is_main:
                save_rng_state(Path(output_dir))

        def _load_rng_state(self, checkpoint: str | None) -> None:
            if checkpoint is not None:
                load_rng_state(Path(checkpoint))

    return DataParallelTrainer


def save_rng_state(folder: Path) -> Path:
    """python, numpy, torch CPU (and this GPU's) RNG states as ``folder/rng_state.pth``."""
    import random

    import numpy as np
    import torch

    states: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "cpu": torch.random.get_rng_state(),
    }
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.random.get_rng_state()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / RNG_STATE_NAME
    torch.save(states, path)
    return path


def load_rng_state(checkpoint: Path) -> None:
    """Restore the RNG states :func:`save_rng_state` (or a single-process Trainer) wrote."""
    import random

    import numpy as np
    import torch
    from transformers.trainer_pt_utils import safe_globals

    path = rng_state_file(checkpoint)
    if path is None:
        logger.warning("%s holds no RNG state: the resumed data stream starts afresh", checkpoint)
        return
    with safe_globals():
        states = torch.load(path, weights_only=True)
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    cuda = states.get("cuda")
    if cuda is not None and torch.cuda.is_available():
        if isinstance(cuda, list | tuple):  # a DDP checkpoint of the stock Trainer: every device's
            cuda = cuda[torch.cuda.current_device() % len(cuda)]
        torch.cuda.random.set_rng_state(cuda)
