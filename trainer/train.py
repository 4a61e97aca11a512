"""The training child: ``python -m trainer.train --config cfg.json`` runs one training.

Its supervisor (:mod:`trainer.watcher`) starts it, tails its progress file and signals
it; the training itself is :func:`trainer.finetune.train`.

``cfg.json``::

    {
      "base_model": "tiny" | "/abs/model/dir" | "amazon/chronos-2[@revision]",
      "train": {<TrainConfig fields>, "output_dir": "/abs/dir"},
      "inputs": "/abs/train_inputs.npz",            # written by trainer.inputs_file.save_inputs
        or "data": {"files": ["/abs/a.parquet", ...], "spec": {<the run spec's data section>},
                 "backtest_windows": 3},               # training inputs only: before the windows
      "validation": null | "/abs/validation.npz",   # trainer.inputs_file.save_window
      "base_revision": null | "<sha>",              # the pinned base; a resume of another is refused
      "resume_from": null | "auto" | "/abs/checkpoints/checkpoint-40",
      "progress_path": "/abs/progress.jsonl",
      "result_path": "/abs/result.json"
    }

``resume_from: "auto"`` resumes from the newest complete checkpoint under
``<output_dir>/checkpoints`` (none: start fresh).

Progress file: JSON lines, appended and flushed one event per line:

- ``{"event": "start", "ts", "pid", "total", "start_step", "resume_from", "world_size"}``
  (``pid``: the process that takes SIGUSR1, rank 0 under torchrun)
- ``{"event": "step", "step", "total", "loss", "ts"}`` every ``log_interval`` steps and
  at the last step (``loss``: the mean since the previous one)
- ``{"event": "validation", "step", "wql", "loss", "best_step", "best_wql", "zero_shot_wql", "ts"}``
  after each validation (step 0: the base model, zero-shot; a resumed child repeats the
  checkpoint's zero-shot WQL)
- ``{"event": "checkpoint", "step", "path", "ts"}`` once the checkpoint folder is complete
- ``{"event": "end", "status", "step", "exit_code", "ts"[, "error"]}``

``ts`` is Unix time in seconds. ``status`` is ``completed``, ``interrupted`` or
``failed``. The result file (written atomically at exit) holds
:meth:`TrainResult.to_dict` plus ``status`` and ``exit_code``; a run that stopped early
because validation stopped improving is ``completed`` (``validation.early_stopped``). A SIGKILLed child
writes no ``end`` event and no result: resume with ``"resume_from": "auto"``.

Signals: SIGTERM or SIGINT -> checkpoint at the end of the current step, then stop
(exit STOPPED); SIGUSR1 -> checkpoint at the end of the current step and go on.

Under torchrun (``train.world_size`` > 1, :mod:`trainer.distributed`) every rank runs this
module; rank 0 alone writes the progress file and the result, a signal to any rank acts on
all of them at the same step, and every rank exits with the same code.

Exit codes (:class:`common.exitcodes.ExitCode`): OK (0) completed all steps or stopped
early on validation (final model saved); STOPPED (8) stopped early on request after saving a checkpoint;
BAD_DATA (7) invalid training data (the message names file/item); USAGE (2) invalid
config, arguments, inputs file, base model or checkpoint; FAILED (1) any other
failure. On failure the result file holds ``{"status": "failed", "error", "exit_code"}``
(not for USAGE from an unreadable config: nothing says where to write then).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from common.exitcodes import ExitCode
from common.layout import checkpoint_step
from common.logfmt import configure
from trainer.checkpoints import find_latest_complete_checkpoint
from trainer.train_config import TrainConfig

logger = logging.getLogger(__name__)


class _ProgressWriter:
    """Append JSON lines to the progress file, one flushed line per event."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lock = threading.Lock()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)

    def write(self, event: str, **fields: Any) -> None:
        if self.path is None:
            return
        line = json.dumps({"event": event, **fields, "ts": time.time()})
        with self.lock, self.path.open("a") as fh:
            fh.write(line + "\n")
            fh.flush()


class _Flags:
    """Set from signal handlers, polled by the training loop."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.checkpoint = threading.Event()

    def take_checkpoint(self) -> bool:
        if self.checkpoint.is_set():
            self.checkpoint.clear()
            return True
        return False


def main(argv: Sequence[str] | None = None) -> int:
    """Run one training as a child process (see the module docstring). Returns the exit code.

    Signal handlers are installed for the call and restored afterwards.
    """
    doc = __doc__ or ""
    parser = argparse.ArgumentParser(prog="python -m trainer.train", description=doc.split("\n")[0])
    parser.add_argument("--config", required=True, type=Path, help="training config JSON")
    args = parser.parse_args(argv)
    if not logging.getLogger().handlers:  # as basicConfig: a configured root (tests) is left alone
        configure(logging.INFO, sys.stderr)
    try:
        cfg = json.loads(args.config.read_text())
        config = TrainConfig.from_dict(cfg["train"])
        base_model = str(cfg["base_model"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.error("invalid config %s: %s", args.config, exc)
        return ExitCode.USAGE
    flags = _Flags()
    handlers = {
        signal.SIGTERM: lambda *_: flags.stop.set(),
        signal.SIGINT: lambda *_: flags.stop.set(),
        signal.SIGUSR1: lambda *_: flags.checkpoint.set(),
    }
    previous = {sig: signal.signal(sig, handler) for sig, handler in handlers.items()}
    try:
        return _run_child(cfg, config, base_model, flags)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_child(cfg: dict[str, Any], config: TrainConfig, base_model: str, flags: _Flags) -> ExitCode:
    from common.errors import ConfigError
    from trainer.callbacks import TrainHooks
    from trainer.checkpoints import CheckpointError
    from trainer.data_validation import DataValidationError
    from trainer.distributed import World, peer_failure, setup_worker
    from trainer.finetune import train
    from trainer.model import ModelLoadError

    world = World.from_env()
    setup_worker(world, config.device)
    main = world.is_main  # rank 0 alone writes the progress file and the result
    progress = _ProgressWriter(Path(cfg["progress_path"]) if cfg.get("progress_path") and main else None)
    result_path = Path(cfg["result_path"]) if cfg.get("result_path") and main else None
    step = 0
    try:
        inputs = _load_child_inputs(cfg, config)
        validation = _load_validation(cfg.get("validation"))
        resume_from = _resolve_resume(cfg.get("resume_from"), config)
        step = (checkpoint_step(resume_from.name) or 0) if resume_from else 0
        progress.write(
            "start", pid=os.getpid(), total=config.num_steps, start_step=step,
            resume_from=str(resume_from) if resume_from else None, world_size=world.world_size,
        )  # fmt: skip
        hooks = TrainHooks(
            on_step=lambda s, total, loss: progress.write("step", step=s, total=total, loss=loss),
            on_validation=lambda fields: progress.write("validation", **fields),
            should_checkpoint_now=flags.take_checkpoint,
            should_stop=flags.stop.is_set,
            on_checkpoint_saved=lambda p, s: progress.write("checkpoint", step=s, path=str(p)),
        )
        result = train(
            base_model, inputs, config, resume_from=resume_from, hooks=hooks, validation=validation,
            base_revision=cfg.get("base_revision") or None,
        )  # fmt: skip
    except DataValidationError as exc:
        return _fail(progress, result_path, step, ExitCode.BAD_DATA, str(exc))
    except (ValueError, ConfigError, CheckpointError, ModelLoadError) as exc:
        return _fail(progress, result_path, step, ExitCode.USAGE, str(exc))
    except Exception as exc:  # noqa: BLE001 - the supervisor needs a status whatever went wrong
        logger.exception("training failed")
        error = peer_failure(exc, world) or f"{type(exc).__name__}: {exc}"
        return _fail(progress, result_path, step, ExitCode.FAILED, error)
    status = "interrupted" if result.interrupted else "completed"
    code = ExitCode.STOPPED if result.interrupted else ExitCode.OK
    if result_path is not None:
        _write_json(result_path, {"status": status, "exit_code": int(code), **result.to_dict()})
    progress.write("end", status=status, step=result.final_step, exit_code=int(code))
    return code


def _load_child_inputs(cfg: dict[str, Any], config: TrainConfig) -> list[dict[str, Any]]:
    from common.runspec import DataSpec
    from trainer.data import load_dataset
    from trainer.inputs_file import load_inputs

    if "inputs" in cfg:
        return load_inputs(Path(cfg["inputs"]))
    if "data" in cfg:
        spec = DataSpec.from_dict(cfg["data"]["spec"], source="data.spec")
        files = [Path(f) for f in cfg["data"]["files"]]
        dataset = load_dataset(
            files, spec, prediction_length=config.prediction_length, min_past=config.min_past,
            backtest_windows=int(cfg["data"]["backtest_windows"]),
        )  # fmt: skip
        return dataset.train_inputs
    raise ValueError("config needs 'inputs' (an .npz from save_inputs) or 'data' (files + spec)")


def _load_validation(value: Any) -> Any:
    """The validation window saved by ``trainer.inputs_file.save_window``; ``None``: no validation."""
    if value in (None, ""):
        return None
    from trainer.inputs_file import load_window

    return load_window(Path(value))


def _resolve_resume(value: Any, config: TrainConfig) -> Path | None:
    if value in (None, ""):
        return None
    if value == "auto":
        return find_latest_complete_checkpoint(config.checkpoints_dir)
    return Path(value)


def _fail(
    progress: _ProgressWriter, result_path: Path | None, step: int, code: ExitCode, error: str
) -> ExitCode:
    logger.error("training failed: %s", error)
    if result_path is not None:
        _write_json(result_path, {"status": "failed", "error": error, "exit_code": int(code)})
    progress.write("end", status="failed", step=step, exit_code=int(code), error=error)
    return code


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    tmp.replace(path)


if __name__ == "__main__":
    sys.exit(main())
