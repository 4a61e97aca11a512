"""Results sync and finalize: every artifact up, training.json, then ``_SUCCESS`` last.

:func:`finalize` is idempotent: it takes a file lock, and when the run's
``_SUCCESS`` already exists it does nothing (no upload at all). Otherwise it
uploads, in parallel and under the retry policy, the final model (``models/``),
any checkpoint the background uploader did not get to, the evaluation
(``evaluation/forecasts.json``), ``model_metadata.json`` and ``trainer.log``,
lists what landed (verification pass), writes training.json, and writes the
sentinel last. An upload that fails after every retry leaves ``_FAILED_UPLOAD``
(with the reason) instead of the sentinel.

Log lines, UTC: ``STATE: FINALIZE_START``, ``UPLOAD_SUCCESS``, ``UPLOAD_FAIL``,
``FINALIZE_SUCCESS``, ``FINALIZE_FAILED`` (``TERMINATING`` is cleanup's).
"""

from __future__ import annotations

import contextlib
import logging
import platform
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

from filelock import FileLock

from common.layout import RunPaths
from common.status import CompletionStatus, Market, RunStatus
from common.timeutil import Clock, iso, utc_now
from schemas import validate
from trainer.errors import ErrorLog, NoRetry, TrainerError, record_for
from trainer.sync import TRAINER_STATE, Artifact, Transfers

log = logging.getLogger(__name__)

COMPONENT = "finalize"
TRAINER_LOG_NAME = "trainer.log"
FORECASTS_KEY = "evaluation/forecasts.json"


class TrainingLog:
    """training.json, built up while the run goes (thread-safe).

    Args:
        run_id, env: the run.
        errors: the run's error records.
        clock: UTC clock.
    """

    def __init__(self, *, run_id: str, env: str, errors: ErrorLog, clock: Clock = utc_now) -> None:
        self.run_id, self.env, self.errors, self.clock = run_id, env, errors, clock
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
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[dict[str, Any]]:
        """Record a phase around the block; the yielded dict is its ``details``.

        A :class:`Stopped`-like exception (``stop_status`` attribute) marks it
        ``interrupted``; any other exception ``failed``; both re-raised.
        """
        entry = {
            "name": name,
            "status": "running",
            "started_at": iso(self.clock()),
            "ended_at": None,
            "duration_s": None,
            "details": {},
        }
        start = time.monotonic()
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
            entry["duration_s"] = round(time.monotonic() - start, 3)

    def skip(self, name: str, reason: str) -> None:
        now = iso(self.clock())
        with self._lock:
            self.phases.append(
                {
                    "name": name,
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
        return validate("training", doc, source="training.json")


@dataclass(kw_only=True)
class Outputs:
    """Local files finalize uploads (any may be missing on an early stop)."""

    model_dir: Path | None = None
    checkpoints_dir: Path | None = None
    forecasts: Path | None = None
    model_metadata: dict[str, Any] | None = None
    trainer_log: Path | None = None
    user_configs: list[Artifact] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class FinalizeResult:
    """What finalize did: ``noop`` when ``_SUCCESS`` was already there."""

    noop: bool
    succeeded: bool
    error: str | None = None


def state_line(event: str, detail: str = "") -> None:
    """``STATE: <EVENT> <UTC time> <detail>`` in the trainer log."""
    log.info("STATE: %s %s%s", event, iso(utc_now()), f" {detail}" if detail else "")


def finalize(
    *,
    transfers: Transfers,
    paths: RunPaths,
    record: TrainingLog,
    outputs: Outputs,
    status: RunStatus,
    completion: CompletionStatus,
    exit_code: int,
    lock_path: Path,
) -> FinalizeResult:
    """Upload everything and write the sentinel last; a no-op once ``_SUCCESS`` exists.

    Args:
        transfers: the S3 side (with the run's retry policy).
        paths: the run's keys.
        record: training.json in the making (artifacts are added to it).
        outputs: local files to upload.
        status: the run status now (the sentinel's ``status``).
        completion: how the run ended.
        exit_code: the process exit code the run will end with.
        lock_path: local file lock (two finalizers on one machine run one after the other).
    """
    state_line("FINALIZE_START", f"run {paths.run_id} completion={completion.value}")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        try:
            if transfers.exists(paths.success, component=COMPONENT):
                log.info("%s exists: run already finalized, nothing to do", paths.success)
                state_line("FINALIZE_SUCCESS", "no-op (already finalized)")
                return FinalizeResult(noop=True, succeeded=True)
            with record.phase("results_sync") as details:
                details.update(_upload_results(transfers, paths, outputs, record))
            with record.phase("finalize") as details:
                details["sentinel"] = paths.success
            doc = record.document(status=status, completion=completion, exit_code=exit_code)
            transfers.put_json(paths.training_log, doc, component=COMPONENT)
            state_line("UPLOAD_SUCCESS", paths.training_log)
            sentinel = validate(
                "sentinel",
                {
                    "run_id": paths.run_id,
                    "finalized_at": iso(utc_now()),
                    "status": status.value,
                    "completion_status": completion.value,
                    "exit_code": exit_code,
                },
            )
            transfers.put_json(paths.success, sentinel, component=COMPONENT)
        except TrainerError as exc:
            return _failed(transfers, paths, record, exc, status, completion, exit_code)
    state_line("FINALIZE_SUCCESS", paths.success)
    return FinalizeResult(noop=False, succeeded=True)


def _upload_results(
    transfers: Transfers, paths: RunPaths, outputs: Outputs, record: TrainingLog
) -> dict[str, Any]:
    pairs: list[tuple[Path, str]] = []
    if outputs.model_dir is not None and outputs.model_dir.is_dir():
        pairs += [
            (p, paths.models + p.relative_to(outputs.model_dir).as_posix())
            for p in sorted(outputs.model_dir.rglob("*"))
            if p.is_file()
        ]
    if outputs.forecasts is not None and outputs.forecasts.is_file():
        pairs.append((outputs.forecasts, paths.prefix + FORECASTS_KEY))
    missing = _missing_checkpoints(transfers, paths, outputs.checkpoints_dir)
    artifacts = _upload(transfers, pairs)
    for folder in missing:
        artifacts += _upload_checkpoint(transfers, paths, folder)
    if outputs.model_metadata is not None:
        validate("model-metadata", outputs.model_metadata, source="model_metadata.json")
        artifacts.append(
            transfers.put_json(paths.model_metadata, outputs.model_metadata, component=COMPONENT)
        )
        state_line("UPLOAD_SUCCESS", paths.model_metadata)
    record.add_artifacts(outputs.user_configs + artifacts)
    verified = _verify(transfers, paths, artifacts)
    if outputs.trainer_log is not None and outputs.trainer_log.is_file():  # a log, not an artifact:
        _upload(transfers, [(outputs.trainer_log, paths.logs + TRAINER_LOG_NAME)])  # cleanup rewrites it
    return {
        "uploaded": len(artifacts),
        "bytes": sum(a["size"] for a in artifacts),
        "checkpoints_uploaded_now": [f.name for f in missing],
        "verified": verified,
    }


def _upload(transfers: Transfers, pairs: list[tuple[Path, str]]) -> list[Artifact]:
    if not pairs:
        return []
    artifacts = transfers.upload(pairs, component="results_sync")
    for artifact in artifacts:
        state_line("UPLOAD_SUCCESS", f"{artifact['key']} ({artifact['size']} bytes)")
    return artifacts


def _upload_checkpoint(transfers: Transfers, paths: RunPaths, folder: Path) -> list[Artifact]:
    artifacts = transfers.upload_tree(
        folder, f"{paths.checkpoints}{folder.name}/", component="results_sync", last=(TRAINER_STATE,)
    )
    state_line("UPLOAD_SUCCESS", f"{paths.checkpoints}{folder.name}/ ({len(artifacts)} files)")
    return artifacts


def _missing_checkpoints(transfers: Transfers, paths: RunPaths, local: Path | None) -> list[Path]:
    """Local complete checkpoints whose ``trainer_state.json`` is not in S3 yet."""
    if local is None or not local.is_dir():
        return []
    in_s3 = {o.key for o in transfers.list(paths.checkpoints, component="results_sync")}
    return [
        d
        for d in sorted(local.iterdir())
        if d.is_dir()
        and (d / TRAINER_STATE).is_file()
        and f"{paths.checkpoints}{d.name}/{TRAINER_STATE}" not in in_s3
    ]


def _verify(transfers: Transfers, paths: RunPaths, artifacts: list[Artifact]) -> int:
    """List the run's prefixes and compare sizes with what was uploaded."""
    listed = {
        o.key: o.size
        for prefix in (paths.prefix, paths.logs)
        for o in transfers.list(prefix, component="results_sync")
    }
    wrong = [a["key"] for a in artifacts if listed.get(a["key"]) != a["size"]]
    if wrong:
        raise TrainerError(
            f"verification after upload: {len(wrong)} object(s) missing or of the wrong "
            f"size, first {wrong[0]}",
            component="results_sync",
        )
    return len(artifacts)


def _failed(
    transfers: Transfers,
    paths: RunPaths,
    record: TrainingLog,
    exc: TrainerError,
    status: RunStatus,
    completion: CompletionStatus,
    exit_code: int,
) -> FinalizeResult:
    """Leave ``_FAILED_UPLOAD`` with the reason and a best-effort training.json."""
    state_line("UPLOAD_FAIL", exc.message)
    record.errors.add(record_for(exc, component=COMPONENT))
    once = transfers.retrier.with_policy(NoRetry())
    reason = {"run_id": paths.run_id, "at": iso(utc_now()), "component": exc.component, "reason": exc.message}
    for key, doc in (
        (paths.failed_upload, reason),
        (paths.training_log, _best_effort_doc(record, status, completion, exit_code)),
    ):
        try:
            transfers.put_json(key, doc, component=COMPONENT, retrier=once)
        except Exception as put_exc:
            log.error("could not write %s: %s", key, put_exc)
    state_line("FINALIZE_FAILED", exc.message)
    return FinalizeResult(noop=False, succeeded=False, error=exc.message)


def _best_effort_doc(
    record: TrainingLog, status: RunStatus, completion: CompletionStatus, exit_code: int
) -> dict[str, Any]:
    return record.document(status=status, completion=CompletionStatus.FAILED, exit_code=exit_code or 1)


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


def model_metadata(
    *,
    paths: RunPaths,
    spec: Any,
    record: TrainingLog,
    manifest: dict[str, Any],
    base_info: dict[str, Any],
    device: str,
) -> dict[str, Any]:
    """model_metadata.json: what produced the model (schema ``model-metadata``)."""
    m = spec.model
    doc = {
        "schema_version": 1,
        "run_id": paths.run_id,
        "env": paths.env,
        "created_at": iso(utc_now()),
        "started_at": record.started_at,
        "base_model": {
            "id": m.base,
            "revision": base_info.get("revision"),
            "parameters": int(base_info.get("param_count") or 0),
        },
        "dataset_manifest": manifest,
        "git_commit": record.git_commit,
        "versions": dict(record.software),
        "hyperparameters": {
            "prediction_length": m.prediction_length,
            "context_length": m.context_length,
            "num_steps": m.num_steps,
            "batch_size": m.batch_size,
            "learning_rate": m.learning_rate,
            "finetune_mode": m.finetune_mode.value,
            "checkpoint_interval": m.checkpoint_interval,
            "seed": m.seed,
            "device": device,
        },
        "metrics": dict(record.metrics),
        "phase_durations": record.durations(),
    }
    return validate("model-metadata", doc, source="model_metadata.json")
