"""The training child's supervisor: ``python -m trainer.train`` as a child process, and its events.

:class:`TrainingChild` starts the child (protocol in :mod:`trainer.train`), tails its
progress file and relays its output into this log. A stop request becomes SIGTERM once
the child has installed its handlers (its ``start`` event): it checkpoints and exits
:attr:`~common.exitcodes.ExitCode.STOPPED`.

With ``nproc`` > 1 the child is torchrun and its ``nproc`` workers
(:func:`trainer.distributed.child_command`): SIGTERM goes to torchrun, which sends it on to
every worker; SIGUSR1 (checkpoint and go on), which torchrun would take as a death signal,
goes to rank 0 (the ``start`` event's pid), and the ranks agree on it at the next step.
torchrun exits 1 whenever a worker exits non-zero, so the child's code is then rank 0's, from
its result file (a worker killed outright leaves none: torchrun's code stands).

:class:`ProgressEvents` turns the events into heartbeat progress (loss and validation WQL),
the loss curve and checkpoint uploads.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from trainer.distributed import child_command
from trainer.watcher import Progress

log = logging.getLogger(__name__)


class TrainingChild:
    """``python -m trainer.train --config <file>`` as a child process (protocol in its docstring).

    The progress file is tailed every ``poll_s`` and each event handed to
    ``on_event``; the child's output is relayed line by line into this log.
    A stop request becomes SIGTERM (checkpoint, exit ``STOPPED``) once the child has
    installed its handlers (its ``start`` event; under torchrun the first event all ranks
    made together, see :attr:`_ready_on`); before that it is deferred.

    Args:
        config: the child's config document.
        config_path: where to write it.
        progress_path: the progress file named in ``config``.
        on_event: called for every progress event (dict), in order.
        env: extra environment variables of the child.
        nproc: training processes (> 1: under torchrun, one per GPU).
    """

    def __init__(
        self,
        *,
        config: dict[str, Any],
        config_path: Path,
        progress_path: Path,
        on_event: Callable[[dict[str, Any]], None],
        python: str = sys.executable,
        poll_s: float = 0.2,
        env: dict[str, str] | None = None,
        nproc: int = 1,
    ) -> None:
        self.env, self.nproc = env or {}, nproc
        self.rank0_pid: int | None = None
        self.config, self.config_path, self.progress_path = config, config_path, progress_path
        self.on_event, self.python, self.poll_s = on_event, python, poll_s
        self.proc: subprocess.Popen[str] | None = None
        self.started = threading.Event()
        self.stop_pending = False
        self._offset = 0
        self._lock = threading.Lock()

    def run(self) -> int:
        """Start the child, relay its progress until it exits; its exit code."""
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.progress_path.unlink(missing_ok=True)
        env = {**os.environ, "HF_HUB_DISABLE_PROGRESS_BARS": "1", "PYTHONUNBUFFERED": "1", **self.env}
        with self._lock:
            self.proc = subprocess.Popen(
                child_command(self.python, self.config_path, self.nproc),
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                stdin=subprocess.DEVNULL,
            )
        relay = threading.Thread(target=self._relay, name="train-output", daemon=True)
        relay.start()
        log.info("training child pid %d started", self.proc.pid)
        while self.proc.poll() is None:
            self._read_events()
            time.sleep(self.poll_s)
        self._read_events()
        relay.join(timeout=5)
        code = self._exit_code(int(self.proc.returncode))
        log.info("training child exited with %d", code)
        return code

    def _exit_code(self, code: int) -> int:
        """The child's code; under torchrun rank 0's own (its result file) when torchrun reports a failure."""
        if self.nproc <= 1 or code == 0:
            return code
        try:
            result = json.loads(Path(self.config["result_path"]).read_text())
        except (OSError, ValueError, KeyError, TypeError):
            return code
        rank0 = result.get("exit_code") if isinstance(result, dict) else None
        if isinstance(rank0, int) and not isinstance(rank0, bool):
            log.info("torchrun exited with %d; rank 0 exited with %d", code, rank0)
            return rank0
        return code

    def request_stop(self) -> None:
        """SIGTERM now, or as soon as the child reports ``start``."""
        with self._lock:
            self.stop_pending = True
            if self.started.is_set():
                self._signal(signal.SIGTERM)

    def request_checkpoint(self) -> None:
        """SIGUSR1: a checkpoint at the end of the current step; training goes on."""
        with self._lock:
            if self.started.is_set():
                self._signal(signal.SIGUSR1)

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        if sig == signal.SIGUSR1 and self.nproc > 1 and self.rank0_pid is not None:
            log.info("sending SIGUSR1 to rank 0 (pid %d) of the training child", self.rank0_pid)
            try:
                os.kill(self.rank0_pid, sig)
            except ProcessLookupError:
                log.info("rank 0 (pid %d) has exited", self.rank0_pid)
            return
        log.info("sending %s to the training child", signal.Signals(sig).name)
        self.proc.send_signal(sig)

    def _read_events(self) -> None:
        try:
            with self.progress_path.open("rb") as fh:
                fh.seek(self._offset)
                chunk = fh.read()
        except FileNotFoundError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._offset += len(complete)
        for line in complete.splitlines():
            try:
                event = json.loads(line)
            except ValueError:
                log.warning("unreadable progress line: %r", line[:200])
                continue
            kind = event.get("event")
            if kind == "start":
                self.rank0_pid = int(event["pid"]) if isinstance(event.get("pid"), int) else None
            if kind in self._ready_on and not self.started.is_set():
                with self._lock:
                    self.started.set()
                    if self.stop_pending:
                        self._signal(signal.SIGTERM)
            self.on_event(event)

    @property
    def _ready_on(self) -> frozenset[str]:
        """The events after which every process has its signal handlers.

        One process: its ``start``. Under torchrun rank 0's ``start`` says nothing of the other
        ranks (a SIGTERM sent on to a rank still importing would kill it outright), so the first
        event the ranks made together: the step-0 validation (a broadcast) or the first step
        (a gradient all-reduce).
        """
        if self.nproc <= 1:
            return frozenset({"start"})
        return frozenset({"validation", "step", "checkpoint", "end"})

    def _relay(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        child_log = logging.getLogger("trainer.train.child")
        for line in self.proc.stdout:
            child_log.info("%s", line.rstrip())


class ProgressEvents:
    """Turns the child's progress events into heartbeat progress, the loss curve and checkpoint uploads.

    Args:
        progress: what the heartbeat reports.
        loss_curve: ``[step, loss]`` pairs, appended to.
        on_checkpoint: called with ``(folder, step)`` when a checkpoint is complete.
    """

    def __init__(
        self, progress: Progress, loss_curve: list[Any], on_checkpoint: Callable[[Path, int], None]
    ) -> None:
        self.progress, self.loss_curve, self.on_checkpoint = progress, loss_curve, on_checkpoint
        self.start_step = 0
        self._first: tuple[float, int] | None = None

    @property
    def first_step_at(self) -> float | None:
        """When the child finished its first step (epoch seconds), ``None`` before it did."""
        return self._first[0] if self._first is not None else None

    def __call__(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "start":
            self.start_step = int(event.get("start_step") or 0)
            self.progress.update(step=self.start_step, total_steps=int(event.get("total") or 0))
        elif kind == "step":
            step, loss = int(event["step"]), float(event["loss"])
            total = int(event.get("total") or self.progress.total_steps)
            now = float(event.get("ts") or time.time())
            self._first = self._first or (now, step)
            done = step - self._first[1]
            eta = (total - step) * (now - self._first[0]) / done if done > 0 else None
            self.progress.update(step=step, total_steps=total, loss=loss, eta_s=eta)
            self.loss_curve.append([step, loss])
        elif kind == "validation":
            self._validation(event)
        elif kind == "checkpoint":
            self.on_checkpoint(Path(event["path"]), int(event["step"]))
        elif kind == "end":
            log.info("training child ended: %s at step %s", event.get("status"), event.get("step"))

    def _validation(self, event: dict[str, Any]) -> None:
        fields: dict[str, Any] = {
            "val_wql": _number(event.get("wql")),
            "val_loss": _number(event.get("loss")),
            "best_val_wql": _number(event.get("best_wql")),
        }
        best_step = event.get("best_step")
        fields["best_step"] = int(best_step) if best_step is not None else None
        zero_shot = event.get("zero_shot_wql")
        if zero_shot is None and int(event.get("step") or 0) == 0:
            zero_shot = event.get("wql")
        if zero_shot is not None:
            fields["zero_shot_val_wql"] = float(zero_shot)
        self.progress.update(**fields)


def _number(value: Any) -> float | None:
    return float(value) if value is not None else None
