"""What a run records about itself: training.json in the making, and the ``STATE:`` log lines.

:class:`TrainingLog` collects the phases (one entry per :class:`~common.status.Phase`,
with its details and duration), metrics, loss curve, artifacts, instance and software
while the run goes, and :meth:`TrainingLog.document` turns it into the schema-valid
training.json that finalize uploads. :func:`state_line` writes the milestone lines
(``STATE: FINALIZE_START ...``) that a reader greps ``trainer.log`` for.
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
import threading
import time
from collections.abc import Callable, Iterator
from importlib import metadata
from typing import Any

from common import ledger
from common.status import CompletionStatus, Market, Phase, RunStatus
from common.timeutil import Clock, iso, utc_now
from schemas import validate
from trainer.errors import ErrorLog
from trainer.transfers import Artifact

log = logging.getLogger(__name__)

Monotonic = Callable[[], float]


def state_line(event: str, detail: str = "", *, clock: Clock = utc_now) -> None:
    """``STATE: <EVENT> <UTC time> <detail>`` in the trainer log."""
    log.info("STATE: %s %s%s", event, iso(clock()), f" {detail}" if detail else "")


class TrainingLog:
    """training.json, built up while the run goes (thread-safe).

    Args:
        run_id, env: the run.
        errors: the run's error records.
        clock: UTC clock (timestamps).
        monotonic: the clock phase durations are measured with.
    """

    def __init__(
        self,
        *,
        run_id: str,
        env: str,
        errors: ErrorLog,
        clock: Clock = utc_now,
        monotonic: Monotonic = time.monotonic,
    ) -> None:
        self.run_id, self.env, self.errors = run_id, env, errors
        self.clock, self.monotonic = clock, monotonic
        self.started_at = iso(clock())
        self.phases: list[dict[str, Any]] = []
        self.metrics: dict[str, float | None] = {}
        self.loss_curve: list[list[float]] = []
        self.artifacts: list[Artifact] = []
        self.instance: dict[str, Any] = {
            "instance_id": None,
            "instance_type": None,
            "market": Market.ON_DEMAND.value,
            "availability_zone": None,
        }
        self.software: dict[str, Any] = {
            "python": "",
            "torch": None,
            "cuda": None,
            "chronos": None,
            "transformers": None,
        }
        self.git_commit: str | None = None
        self.resumed_from_step: int | None = None
        # recovery and cost: the state file's attempts and refused placements, each
        # interruption's latencies (filled by the driver), and what the ledger prices with
        self.attempts: list[dict[str, Any]] = []
        self.refused: list[dict[str, Any]] = []
        self.interruptions: list[dict[str, Any]] = []
        self.volume_gb: float | None = None  # the spec's root_volume_gb; None: no ledger
        self.max_cost: float | None = None
        # fine-tuned vs zero-shot vs seasonal naive (trainer.evaluate), once the evaluation ran
        self.evaluation: dict[str, Any] | None = None
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def phase(self, name: Phase | str) -> Iterator[dict[str, Any]]:
        """Record a phase around the block; the yielded dict is its ``details``.

        A :class:`~trainer.stopping.Stopped`-like exception (``stop_status`` attribute)
        marks it ``interrupted``; any other exception ``failed``; both re-raised.
        """
        entry = {
            "name": Phase(name).value,
            "status": "running",
            "started_at": iso(self.clock()),
            "ended_at": None,
            "duration_s": None,
            "details": {},
        }
        start = self.monotonic()
        with self._lock:
            self.phases.append(entry)
        try:
            yield entry["details"]
        except BaseException as exc:
            entry["status"] = "interrupted" if hasattr(exc, "stop_status") else "failed"
            raise
        else:
            entry["status"] = "succeeded"
        finally:
            entry["ended_at"] = iso(self.clock())
            entry["duration_s"] = round(max(0.0, self.monotonic() - start), 3)

    def fail_phase(self, name: Phase | str, error: str) -> None:
        """Mark the newest phase ``name`` ``failed`` with ``error`` (a step after its block failed)."""
        with self._lock:
            entry = next((e for e in reversed(self.phases) if e["name"] == Phase(name).value), None)
            if entry is not None:
                entry["status"] = "failed"
                entry["details"]["error"] = error

    def skip(self, name: Phase | str, reason: str) -> None:
        now = iso(self.clock())
        with self._lock:
            self.phases.append(
                {
                    "name": Phase(name).value,
                    "status": "skipped",
                    "started_at": now,
                    "ended_at": now,
                    "duration_s": 0.0,
                    "details": {"reason": reason},
                }
            )

    def durations(self) -> dict[str, float]:
        with self._lock:
            return {p["name"]: p["duration_s"] for p in self.phases if p["duration_s"] is not None}

    def add_artifacts(self, artifacts: list[Artifact]) -> None:
        with self._lock:
            known = {a["key"] for a in self.artifacts}
            self.artifacts += [a for a in artifacts if a["key"] not in known]

    def document(
        self, *, status: RunStatus, completion: CompletionStatus | None, exit_code: int | None
    ) -> dict[str, Any]:
        """The schema-valid training.json."""
        with self._lock:
            doc = {
                "schema_version": 1,
                "run_id": self.run_id,
                "env": self.env,
                "status": status.value,
                "completion_status": completion.value if completion else None,
                "exit_code": exit_code,
                "phases": [dict(p, details=dict(p["details"])) for p in self.phases],
                "errors": self.errors.records(),
                "metrics": dict(self.metrics),
                "loss_curve": [[int(s), float(v)] for s, v in self.loss_curve],
                "artifacts": list(self.artifacts),
                "instance": dict(self.instance),
                "software": dict(self.software),
                "git_commit": self.git_commit,
                "started_at": self.started_at,
                "ended_at": iso(self.clock()),
                "resumed_from_step": self.resumed_from_step,
            }
            doc.update(self._recovery_and_cost(doc["phases"]))
            if self.evaluation is not None:
                doc["evaluation"] = dict(self.evaluation)
        return validate("training", doc, source="training.json")

    def _recovery_and_cost(self, phases: list[dict[str, Any]]) -> dict[str, Any]:
        """``attempts``, ``refused``, ``interruptions`` and the ``ledger`` (each only when known)."""
        out: dict[str, Any] = {}
        for name in ("attempts", "refused", "interruptions"):
            if getattr(self, name):
                out[name] = [dict(item) for item in getattr(self, name)]
        if self.attempts and self.volume_gb is not None:
            priced = ledger.ledger(
                self.attempts,
                phases=phases,
                interruptions=self.interruptions,
                volume_gb=self.volume_gb,
                now=self.clock(),
            )
            out["ledger"] = priced.to_dict(max_cost=self.max_cost)
        return out


def software_versions() -> dict[str, str | None]:
    """Python and library versions (CUDA only when torch is already loaded)."""

    def version(dist: str) -> str | None:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return None

    torch = sys.modules.get("torch")
    cuda = getattr(getattr(torch, "version", None), "cuda", None) if torch is not None else None
    return {
        "python": platform.python_version(),
        "torch": version("torch"),
        "cuda": cuda,
        "chronos": version("chronos-forecasting"),
        "transformers": version("transformers"),
        "peft": version("peft"),
    }
