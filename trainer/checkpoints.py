"""Local checkpoint folders: which are complete, the newest to resume from, and whether it fits.

A checkpoint is ``checkpoints/checkpoint-<step>/`` (names from :mod:`common.layout`)
holding weights or a LoRA adapter, optimizer, scheduler and RNG states, the run's own
files (``base_model.json``: what a LoRA adapter applies to; ``run_settings.json``: the
settings a resume must keep; ``validation_state.json`` and ``best-model/``: the
validation history and the best weights so far; ``precision.json``: the precision
plan), then ``trainer_state.json`` written last (its presence marks the folder
complete). Torch-free: the trainer's driver checks checkpoints without importing the
training stack.
"""

from __future__ import annotations

import json
import logging
import zipfile
from pathlib import Path
from typing import Any

from common.gpus import batch_split_problem
from common.layout import CHECKPOINT_PREFIX, TRAINER_STATE_NAME, checkpoint_step
from trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)

BASE_MODEL_INFO_NAME = "base_model.json"
RUN_SETTINGS_NAME = "run_settings.json"
VALIDATION_STATE_NAME = "validation_state.json"
BEST_MODEL_DIRNAME = "best-model"
BEST_INFO_NAME = "best.json"  # inside a best-model folder: {"step", "wql"}
WEIGHT_FILES = ("model.safetensors", "adapter_model.safetensors", "pytorch_model.bin")
STATE_FILES = ("optimizer.pt", "scheduler.pt", "rng_state.pth")
RESUME_HINT = "start a new run, or resume with the settings the checkpoint was trained with"


class CheckpointError(Exception):
    """A checkpoint cannot be resumed from; the message says which and why."""


KEPT_SETTINGS = (
    "finetune_mode", "context_length", "prediction_length", "learning_rate", "num_steps", "batch_size",
)  # fmt: skip


def run_settings(
    config: TrainConfig, *, micro_batch: int | None = None, grad_accum: int | None = None
) -> dict[str, Any]:
    """Recorded as ``run_settings.json`` in every checkpoint: what a resume must keep
    (:data:`KEPT_SETTINGS`; ``batch_size`` is the effective batch) and how the batch was
    split: ``world_size`` processes x ``per_device_batch`` series x ``grad_accum``
    micro-batches = ``effective_batch`` (when the split is given)."""
    settings: dict[str, Any] = {key: getattr(config, key) for key in KEPT_SETTINGS}
    settings["world_size"] = config.world_size
    if micro_batch is not None and grad_accum is not None:
        settings.update(
            per_device_batch=micro_batch,
            grad_accum=grad_accum,
            effective_batch=micro_batch * grad_accum * config.world_size,
        )
    return settings


def recorded_world_size(path: Path) -> int:
    """The number of training processes that wrote checkpoint ``path`` (1 before it was recorded)."""
    settings = _read_json(Path(path) / RUN_SETTINGS_NAME)
    value = settings.get("world_size") if isinstance(settings, dict) else None
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 1 else 1


def best_model_problem(folder: Path, step: int) -> str | None:
    """Why ``folder`` is not the best model of ``step`` (``None``: it is)."""
    info = _read_json(folder / BEST_INFO_NAME)
    if not isinstance(info, dict) or info.get("step") != step:
        return f"{BEST_MODEL_DIRNAME}/ does not hold the best model of step {step}"
    if not any((folder / w).is_file() for w in WEIGHT_FILES):
        return f"{BEST_MODEL_DIRNAME}/ has no weights"
    return None


def checkpoint_problem(path: Path) -> str | None:
    """Why ``path`` is not a complete checkpoint, or ``None`` when it is.

    Complete: ``trainer_state.json`` (written last) loads and names the folder's step,
    weights, optimizer, scheduler and RNG state files are present, and the best model
    a ``validation_state.json`` names is in ``best-model/``.
    """
    path = Path(path)
    step = checkpoint_step(path.name)
    if step is None:
        return f"{path.name} is not named {CHECKPOINT_PREFIX}<step>"
    state_file = path / TRAINER_STATE_NAME
    if not state_file.is_file():
        return f"{TRAINER_STATE_NAME} is missing"
    try:
        state = json.loads(state_file.read_text())
    except (OSError, ValueError) as exc:
        return f"{TRAINER_STATE_NAME} does not load ({exc})"
    if not isinstance(state, dict) or state.get("global_step") != step:
        return f"{TRAINER_STATE_NAME} does not record global_step {step}"
    if not any((path / w).is_file() for w in WEIGHT_FILES):
        return "no model or adapter weights"
    missing = [f for f in STATE_FILES if not (path / f).is_file()]
    if missing:
        return f"missing {', '.join(missing)}"
    torn = [
        f"{f} is truncated ({why})" for f in (*WEIGHT_FILES, *STATE_FILES) if (why := truncated(path / f))
    ]
    if torn:
        return "; ".join(torn)
    return _validation_problem(path)


_ZIP_MAGIC = b"PK\x03\x04"  # torch.save's archive (optimizer, scheduler, RNG state, .bin weights)
_SAFETENSORS_HEADER_MAX = 100 * 1024 * 1024  # the format's own limit on its JSON header


def truncated(path: Path) -> str | None:
    """Why the file at ``path`` is shorter than its own format says (``None``: whole, absent or
    not a format known here). Torch-free and cheap: only headers and the zip's end are read.

    - safetensors: an 8-byte little-endian header length, the JSON header, then the tensors'
      bytes up to the largest ``data_offsets`` end;
    - torch's zip archive: the end-of-central-directory record, at the file's end, is gone.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(9)
            size = path.stat().st_size
            if path.suffix == ".safetensors" and len(head) == 9 and head[8:9] == b"{":
                return _safetensors_short(f, int.from_bytes(head[:8], "little"), size)
    except FileNotFoundError:
        return None
    except OSError as exc:
        return f"unreadable: {exc}"
    if head.startswith(_ZIP_MAGIC) and not zipfile.is_zipfile(path):
        return f"a zip archive of {size} bytes without its central directory"
    return None


def _safetensors_short(f: Any, header_len: int, size: int) -> str | None:
    if header_len > _SAFETENSORS_HEADER_MAX:
        return None  # not a safetensors header after all
    if size < 8 + header_len:
        return f"{size} bytes, its header alone is {8 + header_len}"
    f.seek(8)
    try:
        header = json.loads(f.read(header_len))
    except ValueError:
        return "its header does not load"
    ends = [
        int(t["data_offsets"][1])
        for name, t in (header.items() if isinstance(header, dict) else ())
        if name != "__metadata__" and isinstance(t, dict) and isinstance(t.get("data_offsets"), list)
    ]
    want = 8 + header_len + max(ends, default=0)
    return f"{size} bytes of {want}" if size < want else None


def _validation_problem(path: Path) -> str | None:
    state_file = path / VALIDATION_STATE_NAME
    if not state_file.exists():
        return None
    state = _read_json(state_file)
    if not isinstance(state, dict):
        return f"{VALIDATION_STATE_NAME} does not load"
    best_step = state.get("best_step")
    if best_step is None:
        return None
    if not isinstance(best_step, int) or isinstance(best_step, bool) or best_step < 0:
        return f"{VALIDATION_STATE_NAME}: best_step {str(best_step)[:40]!r} is not a step"
    return best_model_problem(path / BEST_MODEL_DIRNAME, best_step)


def find_latest_complete_checkpoint(directory: Path) -> Path | None:
    """Newest complete ``checkpoint-<step>`` folder in ``directory``.

    Torn folders (interrupted while saving) are skipped with a warning.

    Args:
        directory: the checkpoints folder (``TrainConfig.checkpoints_dir``).

    Returns:
        The folder, or ``None`` when there is none (or ``directory`` does not exist).
    """
    directory = Path(directory)
    if not directory.is_dir():
        return None
    steps = {p: checkpoint_step(p.name) for p in directory.iterdir() if p.is_dir()}
    candidates = {p: s for p, s in steps.items() if s is not None}
    for path in sorted(candidates, key=candidates.__getitem__, reverse=True):
        problem = checkpoint_problem(path)
        if problem is None:
            return path
        logger.warning("skipping incomplete checkpoint %s: %s", path, problem)
    return None


def check_resumable(path: Path, config: TrainConfig, *, base_revision: str | None = None) -> None:
    """Raise unless ``path`` is complete and was made with this run's base and settings.

    Compared: the base model revision (``base_model.json``; only when ``base_revision``
    is given), finetune mode, context length, prediction length, learning rate, steps
    and batch size (``run_settings.json``, ``trainer_state.json``). A changed precision
    plan (micro-batch x accumulation) is fine as long as the batch size is the same, and
    so is another number of data-parallel processes (GPUs) that keeps the effective batch
    and splits it evenly.

    Raises:
        CheckpointError: naming the checkpoint, the field, both values and what to do.
    """
    path = Path(path)
    problem = checkpoint_problem(path)
    if problem is not None:
        raise CheckpointError(f"cannot resume from {path}: {problem}")
    state = json.loads((path / TRAINER_STATE_NAME).read_text())
    if "max_steps" in state:
        _same(path, "num_steps", state["max_steps"], config.num_steps)
    settings = _read_json(path / RUN_SETTINGS_NAME)
    if isinstance(settings, dict):
        for key in KEPT_SETTINGS:
            if key in settings:
                _same(path, key, settings[key], getattr(config, key))
        _check_world(path, settings, config)
    elif "train_batch_size" in state:  # a checkpoint from before run_settings.json
        _same(path, "batch_size", state["train_batch_size"], config.batch_size)
    if base_revision is not None:
        base = _read_json(path / BASE_MODEL_INFO_NAME)
        if isinstance(base, dict) and "revision" in base:
            _same(path, "base model revision", base["revision"], base_revision)
    is_adapter = (path / "adapter_model.safetensors").is_file()
    if is_adapter != (config.finetune_mode == "lora"):
        kind = "a LoRA adapter" if is_adapter else "full weights"
        raise CheckpointError(
            f"cannot resume from {path}: it holds {kind}, this run is finetune_mode={config.finetune_mode!r} "
            f"({RESUME_HINT})"
        )


def _check_world(path: Path, settings: dict[str, Any], config: TrainConfig) -> None:
    """Another number of processes may resume when it keeps the effective batch and splits it."""
    recorded = recorded_world_size(path)
    if recorded == config.world_size:
        return
    effective = settings.get("effective_batch", settings.get("batch_size"))
    if effective != config.batch_size:
        raise CheckpointError(
            f"cannot resume from {path}: its {recorded} processes trained with an effective batch of "
            f"{effective}, this run's {config.world_size} would train with {config.batch_size} "
            f"({RESUME_HINT})"
        )
    problem = batch_split_problem(config.batch_size, config.world_size)
    if problem is not None:
        raise CheckpointError(f"cannot resume from {path} on {config.world_size} processes: {problem}")
    logger.info(
        "resuming %s, written by %d processes, on %d: the effective batch of %d and the schedule are kept",
        path, recorded, config.world_size, config.batch_size,
    )  # fmt: skip


def _same(path: Path, field: str, recorded: Any, wanted: Any) -> None:
    if recorded != wanted:
        raise CheckpointError(
            f"cannot resume from {path}: it was trained with {field}={recorded}, this run has {wanted} "
            f"({RESUME_HINT})"
        )


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None
