"""The ``training`` phase: the training child under supervision, checkpoints uploaded as they land.

The driver writes the child's config (:func:`child_config`), starts it through
:class:`~trainer.supervisor.TrainingChild`, and uploads each checkpoint the child
reports in the background (the heartbeat reports the newest one safe in S3). When the
child exits, the uploads are flushed and its exit code decides the run
(:func:`outcome`): :attr:`~common.exitcodes.ExitCode.OK` trains on to evaluation; a stop
(:attr:`~common.exitcodes.ExitCode.STOPPED` or SIGTERM) after a stop request ends the run
``interrupted`` or ``killed``; anything else (``USAGE``: bad config, ``BAD_DATA``: bad
data, any other code) is a terminal error.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import signal
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from common import runspec
from common.exitcodes import ExitCode
from common.status import Phase
from common.timeutil import iso
from trainer.checkpoint_sync import CheckpointUploader
from trainer.context import RunContext
from trainer.distributed import nproc_for, usable_processes
from trainer.errors import TerminalError, TrainerError, record_for
from trainer.supervisor import ProgressEvents, TrainingChild
from trainer.train_config import TrainConfig

log = logging.getLogger(__name__)

CHECKPOINT_FLUSH_S = 90.0
COMPONENT = Phase.TRAINING.value
# How a child ends when it stopped on request: its own exit code, or SIGTERM itself
# (a negative return code from Popen, 128 + 15 from a shell).
STOP_EXITS = frozenset({int(ExitCode.STOPPED), -signal.SIGTERM, 128 + signal.SIGTERM})
CHILD_FAILURES = {
    ExitCode.USAGE: "invalid training config",
    ExitCode.STOPPED: "training stopped without a stop request",
    ExitCode.BAD_DATA: "invalid training data",
}


def phase(ctx: RunContext, details: dict[str, Any]) -> None:
    """Run the training child to its end; its facts go into ``details`` (training.json).

    Raises:
        Stopped: the child stopped because a stop was requested.
        TerminalError: the child failed.
    """
    uploader = CheckpointUploader(
        ctx.transfers,
        ctx.paths.checkpoints,
        on_uploaded=lambda step, _: ctx.progress.update(last_checkpoint_step=step),
    )
    events = ProgressEvents(ctx.progress, ctx.record.loss_curve, uploader.submit)
    nproc = processes(ctx.require_spec().model.batch_size, ctx.opts.device)
    config = child_config(
        ctx.require_spec(),
        workdir=ctx.opts.work,
        device=ctx.opts.device,
        base_model=ctx.data.base_model,
        inputs=ctx.data.inputs or Path(),
        validation=ctx.data.validation,
        base_revision=ctx.data.base_ref.get("revision"),
        step_delay_s=ctx.opts.step_delay_s,
        world_size=nproc,
    )
    child = TrainingChild(
        config=config,
        config_path=ctx.opts.work / "train-config.json",
        progress_path=Path(config["progress_path"]),
        on_event=events,
        env=child_env(ctx.opts.device),
        nproc=nproc,
    )
    Path(config["result_path"]).unlink(missing_ok=True)  # never read a previous attempt's result
    ctx.stops.listen(child.request_stop)
    try:
        code = child.run()
    finally:
        _flush_checkpoints(ctx, uploader, details)
    ctx.record.resumed_from_step = events.start_step or None
    if events.first_step_at is not None:
        ctx.attempt.first_step_at = iso(datetime.fromtimestamp(events.first_step_at, UTC))
    details.update(
        exit_code=code,
        start_step=events.start_step,
        final_step=ctx.progress.step,
        resumed_from_step=ctx.record.resumed_from_step,
    )
    stop = ctx.stops.request
    if stop is not None:
        details["stop"] = {"status": stop.status.value, "reason": stop.reason, "source": stop.source}
    result = _read_json(Path(config["result_path"]))
    details["validation"] = validation_of(result)
    if result.get("precision"):
        details["precision"] = result["precision"]
    details["distributed"] = {"world_size": nproc, **(result.get("distributed") or {})}
    outcome(ctx, code, result)


def _flush_checkpoints(ctx: RunContext, uploader: CheckpointUploader, details: dict[str, Any]) -> None:
    flushed = uploader.close(timeout=CHECKPOINT_FLUSH_S)
    details["checkpoints_uploaded"] = sorted(uploader.uploaded)
    ctx.progress.update(last_checkpoint_step=max(uploader.uploaded, default=None))
    if uploader.failures or not flushed:
        problem = (
            uploader.failures[0]
            if uploader.failures
            else TrainerError(
                f"checkpoint uploads did not finish within {CHECKPOINT_FLUSH_S:g} s", component=COMPONENT
            )
        )
        ctx.errors.add(record_for(problem, component=COMPONENT))


def _disk_full_advice(ctx: RunContext, error: str) -> str:
    """What to do when the child died of a full disk (ENOSPC), else ``""``."""
    if f"[Errno {errno.ENOSPC}]" not in error and os.strerror(errno.ENOSPC) not in error:
        return ""
    size = f" (now {ctx.spec.instance.root_volume_gb} GiB)" if ctx.spec is not None else ""
    return (
        f"; the instance's disk is full: raise instance.root_volume_gb{size} in the run spec and "
        f"launch again (`invoke launch --env={ctx.opts.env} --resume {ctx.opts.run_id}` reuses this "
        "run's spec, its disk size included); the checkpoints uploaded so far are kept"
    )


def outcome(ctx: RunContext, code: int, result: dict[str, Any]) -> None:
    """Map the child's exit code to the run: done, stopped, or a terminal error.

    Raises:
        Stopped: a stop exit after a stop request.
        TerminalError: any exit but ``OK`` otherwise, with the child's error.
    """
    if code in STOP_EXITS and ctx.stops.request is not None:
        ctx.stops.check()
    if code != ExitCode.OK:
        kind = CHILD_FAILURES.get(code, f"training process failed (exit {code})")
        error = str(result.get("error") or "see trainer.log")
        raise TerminalError(
            f"{kind}: {error}{_disk_full_advice(ctx, error)}",
            component=COMPONENT,
            details={"exit_code": code},
        )
    ctx.outputs.model_dir = Path(result["final_model_dir"])
    ctx.outputs.checkpoints_dir = local_checkpoints(ctx.opts.work)
    ctx.data.validation_result = validation_of(result)
    ctx.data.adapter_dir = Path(result["adapter_dir"]) if result.get("adapter_dir") else None
    ctx.record.loss_curve[:] = [[int(s), float(v)] for s, v in result.get("losses", [])]
    curve = ctx.record.loss_curve
    ctx.record.metrics.update(
        final_loss=curve[-1][1] if curve else None, steps_per_s=float(result.get("steps_per_s") or 0.0)
    )
    ctx.data.base_info = result.get("base_model") or {}


def validation_of(result: dict[str, Any]) -> dict[str, Any]:
    """The validation block of the child's result file (no window, or no result: the empty block).

    ``{"zero_shot_wql", "zero_shot_loss", "best_wql", "best_step", "history": [[step, wql,
    loss], ...], "early_stopped", "stopped_at_step"}``.
    """
    empty: dict[str, Any] = {
        "zero_shot_wql": None, "zero_shot_loss": None, "best_wql": None, "best_step": None,
        "history": [], "early_stopped": False, "stopped_at_step": None,
    }  # fmt: skip
    block = result.get("validation")
    if not isinstance(block, dict):
        return empty
    return {**empty, **{k: v for k, v in block.items() if k in empty}}


def processes(batch_size: int, device: str) -> int:
    """Training processes for this instance: one per GPU (:func:`trainer.distributed.nproc_for`),
    as many as split ``batch_size`` evenly; 1 on CPU unless ``TRAINER_NPROC`` says otherwise.

    Raises:
        TerminalError: ``TRAINER_NPROC`` is not a positive integer.
    """
    try:
        gpus = nproc_for(device)
    except ValueError as exc:
        raise TerminalError(str(exc), component=COMPONENT) from None
    nproc = usable_processes(batch_size, gpus)
    if nproc < gpus:
        log.warning(
            "model.batch_size %d does not split over %d GPUs: training on %d of them", batch_size, gpus, nproc
        )
    elif nproc > 1:
        log.info("data parallel training on %d processes (torchrun), %d series each per step",
                 nproc, batch_size // nproc)  # fmt: skip
    return nproc


def child_config(  # noqa: PLR0913 (the run's facts the child needs, each its own keyword)
    spec: runspec.RunSpec,
    *,
    workdir: Path,
    device: str,
    base_model: str,
    inputs: Path,
    validation: Path | None = None,
    base_revision: str | None = None,
    step_delay_s: float = 0.0,
    world_size: int = 1,
) -> dict[str, Any]:
    """The config of ``python -m trainer.train`` for this run (resume: the newest local checkpoint).

    ``validation`` is the validation window's file (``None``: no validation, the last
    weights are exported); ``base_revision`` the pinned base (a checkpoint of another is
    refused on resume); ``world_size`` the training processes (> 1: torchrun).
    """
    train = TrainConfig.from_spec(
        spec.model, output_dir=workdir / "train", device=device, step_delay_s=step_delay_s,
        world_size=world_size,
    )  # fmt: skip
    return {
        "base_model": base_model,
        "train": train.to_dict(),
        "inputs": str(inputs),
        "validation": str(validation) if validation is not None else None,
        "base_revision": base_revision,
        "resume_from": "auto",
        "progress_path": str(workdir / "progress.jsonl"),
        "result_path": str(workdir / "result.json"),
    }


def local_checkpoints(workdir: Path) -> Path:
    """Where the child keeps checkpoints: ``TrainConfig(output_dir=workdir/"train").checkpoints_dir``."""
    return workdir / "train" / "checkpoints"


def child_env(device: str) -> dict[str, str]:
    """On CPU one intra-op thread: the tiny model gains nothing from more, and on a busy
    2-core machine spinning OpenMP threads made training ~15x slower (measured: 2-5 vs
    32-41 steps/s). ``OMP_NUM_THREADS`` set by the user wins."""
    if device != "cpu" or "OMP_NUM_THREADS" in os.environ:
        return {}
    return {"OMP_NUM_THREADS": "1"}


def _read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
