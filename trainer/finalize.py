"""Results sync and finalize: every artifact up, training.json, then the sentinel last.

:func:`finalize` is idempotent: it takes a file lock, and when the run's
``_SUCCESS`` already exists it does nothing (no upload at all), unless that sentinel is
an earlier attempt's of a run it did not finish (:func:`_late`). Otherwise it
uploads, in parallel and under the retry policy, the final model (``models/``),
any checkpoint the background uploader did not get to, the evaluation
(``evaluation/forecasts.json`` and ``metrics.json``), ``model_metadata.json`` and ``trainer.log``,
lists what landed (verification pass), writes training.json, and writes the
sentinel last. An upload that fails after every retry leaves ``_FAILED_UPLOAD``
instead of ``_SUCCESS``.

Both sentinels have one shape (schema ``sentinel``, built by :func:`sentinel`)::

    {"run_id", "finalized_at", "status": "success" | "failed_upload",
     "completion_status", "exit_code", "reason", "attempt"}

``status`` is the finalization outcome; ``reason`` says why the run ended
(:attr:`Ending.reason`) or, in ``_FAILED_UPLOAD``, why finalize failed.

Log lines, UTC: ``STATE: FINALIZE_START``, ``UPLOAD_SUCCESS``, ``UPLOAD_FAIL``,
``FINALIZE_SUCCESS``, ``FINALIZE_FAILED`` (``TERMINATING`` is cleanup's).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from filelock import FileLock

from common.exitcodes import ExitCode
from common.layout import TRAINER_STATE_NAME, RunPaths
from common.status import CompletionStatus, Phase, RunStatus, SentinelStatus
from common.timeutil import Clock, iso, utc_now
from schemas import validate
from trainer.errors import WHILE_FAILING, TrainerError, record_for
from trainer.record import TrainingLog, state_line
from trainer.transfers import Artifact, Transfers

log = logging.getLogger(__name__)

COMPONENT = "finalize"
REASON_MAX = 500  # the schema's maxLength of ``reason``
COMPLETED = "completed"  # the reason of a run that completed normally


@dataclass(frozen=True, kw_only=True)
class Ending:
    """How and why the run ended, as training.json and the sentinel record it.

    Attributes:
        status: the run status now (training.json's ``status``).
        completion: how the run ended.
        exit_code: the process exit code the run ends with (:class:`~common.exitcodes.ExitCode`).
        reason: why: ``completed``, the stop request's reason, or the error.
        attempt: the attempt finalizing (the state's ``attempt``), written into the sentinel.
    """

    status: RunStatus
    completion: CompletionStatus
    exit_code: int
    reason: str
    attempt: int | None = None


@dataclass(kw_only=True)
class Outputs:
    """Local files finalize uploads (any may be missing on an early stop)."""

    model_dir: Path | None = None
    checkpoints_dir: Path | None = None
    forecasts: Path | None = None
    evaluation_metrics: Path | None = None
    model_metadata: dict[str, Any] | None = None
    trainer_log: Path | None = None
    trainer_log_key: str | None = None  # this attempt's (RunPaths.trainer_log_of); None: the first's
    user_configs: list[Artifact] = field(default_factory=list)


@dataclass(frozen=True, kw_only=True)
class FinalizeResult:
    """What finalize did: ``noop`` when ``_SUCCESS`` was already there."""

    noop: bool
    succeeded: bool
    error: str | None = None


def sentinel(
    run_id: str,
    *,
    status: SentinelStatus,
    completion: CompletionStatus,
    exit_code: int,
    reason: str,
    at: str,
    attempt: int | None = None,
) -> dict[str, Any]:
    """The schema-valid ``_SUCCESS`` / ``_FAILED_UPLOAD`` document (``reason`` cut to 500 chars)."""
    doc: dict[str, Any] = {
        "run_id": run_id,
        "finalized_at": at,
        "status": status.value,
        "completion_status": completion.value,
        "exit_code": int(exit_code),
        "reason": (reason or "unknown")[:REASON_MAX],
    }
    if attempt is not None:
        doc["attempt"] = int(attempt)
    return validate("sentinel", doc, source=f"sentinel of run {run_id}")


def finalize(
    *,
    transfers: Transfers,
    paths: RunPaths,
    record: TrainingLog,
    outputs: Outputs,
    ending: Ending,
    lock_path: Path,
    clock: Clock = utc_now,
) -> FinalizeResult:
    """Upload everything and write the sentinel last; a no-op once ``_SUCCESS`` exists.

    Args:
        transfers: the S3 side (with the run's retry policy).
        paths: the run's keys.
        record: training.json in the making (artifacts are added to it).
        outputs: local files to upload.
        ending: how and why the run ended.
        lock_path: local file lock (two finalizers on one machine run one after the other).
        clock: UTC clock (``finalized_at`` and the ``STATE:`` lines).
    """
    uploads = _Uploads(transfers, paths, clock)
    state_line("FINALIZE_START", f"run {paths.run_id} completion={ending.completion.value}", clock=clock)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(lock_path)):
        try:
            if transfers.exists(paths.success, component=COMPONENT) and not _late(uploads, ending):
                log.info("%s exists: run already finalized, nothing to do", paths.success)
                state_line("FINALIZE_SUCCESS", "no-op (already finalized)", clock=clock)
                return FinalizeResult(noop=True, succeeded=True)
            with record.phase(Phase.RESULTS_SYNC) as details:
                details.update(uploads.results(outputs, record))
            with record.phase(Phase.FINALIZE) as details:
                # training.json goes up before the sentinel (the sentinel is last): this phase says
                # what follows it; a sentinel that then fails is recorded by _failed.
                details.update(sentinel=paths.success, sentinel_written="after this document")
            doc = record.document(
                status=ending.status, completion=ending.completion, exit_code=ending.exit_code
            )
            transfers.put_json(paths.training_log, doc, component=COMPONENT)
            state_line("UPLOAD_SUCCESS", paths.training_log, clock=clock)
            done = sentinel(
                paths.run_id,
                status=SentinelStatus.SUCCESS,
                completion=ending.completion,
                exit_code=ending.exit_code,
                reason=ending.reason,
                at=iso(clock()),
                attempt=ending.attempt,
            )
            transfers.put_json(paths.success, done, component=COMPONENT)
            _drop_failed_upload(transfers, paths)
        except TrainerError as exc:
            return _failed(uploads, record, exc, ending)
    state_line("FINALIZE_SUCCESS", paths.success, clock=clock)
    return FinalizeResult(noop=False, succeeded=True)


class _Uploads:
    """The results uploads of one finalize (each logged as ``STATE: UPLOAD_SUCCESS``)."""

    def __init__(self, transfers: Transfers, paths: RunPaths, clock: Clock) -> None:
        self.transfers, self.paths, self.clock = transfers, paths, clock

    def results(self, outputs: Outputs, record: TrainingLog) -> dict[str, Any]:
        """Model, forecasts, missing checkpoints, model_metadata.json, then trainer.log; the details."""
        transfers, paths = self.transfers, self.paths
        pairs: list[tuple[Path, str]] = []
        if outputs.model_dir is not None and outputs.model_dir.is_dir():
            pairs += [
                (p, paths.models + p.relative_to(outputs.model_dir).as_posix())
                for p in sorted(outputs.model_dir.rglob("*"))
                if p.is_file()
            ]
        for local, key in (
            (outputs.forecasts, paths.forecasts),
            (outputs.evaluation_metrics, paths.evaluation_metrics),
        ):
            if local is not None and local.is_file():
                pairs.append((local, key))
        missing = self._missing_checkpoints(outputs.checkpoints_dir)
        artifacts = self._upload(pairs)
        for folder in missing:
            artifacts += self._upload_checkpoint(folder)
        if outputs.model_metadata is not None:
            validate("model-metadata", outputs.model_metadata, source="model_metadata.json")
            artifacts.append(
                transfers.put_json(paths.model_metadata, outputs.model_metadata, component=COMPONENT)
            )
            state_line("UPLOAD_SUCCESS", paths.model_metadata, clock=self.clock)
        record.add_artifacts(outputs.user_configs + artifacts)
        verified = self._verify(artifacts)
        if outputs.trainer_log is not None and outputs.trainer_log.is_file():  # a log, not an artifact:
            key = outputs.trainer_log_key or paths.trainer_log  # cleanup rewrites it
            self._upload([(outputs.trainer_log, key)])
        return {
            "uploaded": len(artifacts),
            "bytes": sum(a["size"] for a in artifacts),
            "checkpoints_uploaded_now": [f.name for f in missing],
            "verified": verified,
        }

    def _upload(self, pairs: list[tuple[Path, str]]) -> list[Artifact]:
        if not pairs:
            return []
        artifacts = self.transfers.upload(pairs, component=Phase.RESULTS_SYNC.value)
        for artifact in artifacts:
            state_line("UPLOAD_SUCCESS", f"{artifact['key']} ({artifact['size']} bytes)", clock=self.clock)
        return artifacts

    def _upload_checkpoint(self, folder: Path) -> list[Artifact]:
        prefix = f"{self.paths.checkpoints}{folder.name}/"
        artifacts = self.transfers.upload_tree(
            folder, prefix, component=Phase.RESULTS_SYNC.value, last=(TRAINER_STATE_NAME,)
        )
        state_line("UPLOAD_SUCCESS", f"{prefix} ({len(artifacts)} files)", clock=self.clock)
        return artifacts

    def _missing_checkpoints(self, local: Path | None) -> list[Path]:
        """Local complete checkpoints whose ``trainer_state.json`` is not in S3 yet."""
        if local is None or not local.is_dir():
            return []
        prefix = self.paths.checkpoints
        in_s3 = {o.key for o in self.transfers.list(prefix, component=Phase.RESULTS_SYNC.value)}
        return [
            d
            for d in sorted(local.iterdir())
            if d.is_dir()
            and (d / TRAINER_STATE_NAME).is_file()
            and f"{prefix}{d.name}/{TRAINER_STATE_NAME}" not in in_s3
        ]

    def _verify(self, artifacts: list[Artifact]) -> int:
        """List the run's prefixes and compare sizes with what was uploaded."""
        listed = {
            o.key: o.size
            for prefix in (self.paths.prefix, self.paths.logs)
            for o in self.transfers.list(prefix, component=Phase.RESULTS_SYNC.value)
        }
        wrong = [a["key"] for a in artifacts if listed.get(a["key"]) != a["size"]]
        if wrong:
            raise TrainerError(
                f"verification after upload: {len(wrong)} object(s) missing or of the wrong "
                f"size, first {wrong[0]}",
                component=Phase.RESULTS_SYNC.value,
            )
        return len(artifacts)


def _drop_failed_upload(transfers: Transfers, paths: RunPaths) -> None:
    """Delete an earlier attempt's ``_FAILED_UPLOAD`` once ``_SUCCESS`` says the results are whole
    (a resume after a failed upload): two sentinels would contradict each other."""
    key = paths.failed_upload
    if not transfers.exists(key, component=COMPONENT):
        return
    transfers.retrier.call(
        lambda: transfers.s3.delete_object(Bucket=transfers.bucket, Key=key),
        component=COMPONENT,
        action="s3:DeleteObject",
        resource=transfers.url(key),
    )
    log.info("removed %s of an earlier attempt: the results are whole now", key)


def _failed_reason(message: str, paths: RunPaths) -> str:
    """``finalize failed: <why>; <what to do>``, the why shortened so that the advice fits the
    sentinel's 500 characters (S3 errors are long)."""
    advice = (
        f"; once fixed, `invoke launch --env={paths.env} --resume {paths.run_id}` uploads the results "
        "from the final checkpoint"
    )
    room = REASON_MAX - len("finalize failed: ") - len(advice)
    why = message if len(message) <= room else message[: room - 1] + "…"
    return f"finalize failed: {why}{advice}"


def _late(uploads: _Uploads, ending: Ending) -> bool:
    """The ``_SUCCESS`` there is an earlier attempt's of a run it did not finish: finalize over it.

    That attempt's instance was terminated from outside and wrote its ``interrupted`` sentinel
    during its shutdown grace, after this attempt's data_sync had cleared the previous one
    (``trainer.sync.clear_previous_sentinel``). Without this, this attempt's finalize would be a
    no-op and its results would never go up. A sentinel without an attempt, or one that is not
    readable, is taken as final (finalize stays a no-op, as before the field existed).
    """
    if ending.attempt is None:
        return False
    transfers, paths = uploads.transfers, uploads.paths
    try:
        doc = json.loads(transfers.get_bytes(paths.success, component=COMPONENT))
    except Exception as exc:  # noqa: BLE001 - an unreadable sentinel is left alone
        log.warning("%s not readable (%s): taken as final", paths.success, exc)
        return False
    written_by = doc.get("attempt") if isinstance(doc, dict) else None
    if (
        isinstance(written_by, int)
        and written_by < ending.attempt
        and doc.get("completion_status") != CompletionStatus.NORMAL.value
    ):
        log.warning(
            "%s is attempt %d's late %s sentinel: attempt %d finalizes the run over it",
            paths.success,
            written_by,
            doc.get("completion_status"),
            ending.attempt,
        )
        return True
    return False


def _failed(uploads: _Uploads, record: TrainingLog, exc: TrainerError, ending: Ending) -> FinalizeResult:
    """Leave ``_FAILED_UPLOAD`` with the reason and a best-effort training.json (run ``failed``)."""
    transfers, paths, clock = uploads.transfers, uploads.paths, uploads.clock
    state_line("UPLOAD_FAIL", exc.message, clock=clock)
    record.errors.add(record_for(exc, component=COMPONENT, clock=clock))
    record.fail_phase(Phase.FINALIZE, exc.message)  # it may have closed before the sentinel failed
    quick = transfers.retrier.with_policy(WHILE_FAILING)  # one transient error must not lose them
    exit_code = ending.exit_code or ExitCode.FAILED
    failed_upload = sentinel(
        paths.run_id,
        status=SentinelStatus.FAILED_UPLOAD,
        completion=CompletionStatus.FAILED,
        exit_code=exit_code,
        reason=_failed_reason(exc.message, paths),
        at=iso(clock()),
        attempt=ending.attempt,
    )
    best_effort = record.document(
        status=ending.status, completion=CompletionStatus.FAILED, exit_code=exit_code
    )
    for key, doc in ((paths.failed_upload, failed_upload), (paths.training_log, best_effort)):
        try:
            transfers.put_json(key, doc, component=COMPONENT, retrier=quick)
        except Exception as put_exc:  # noqa: BLE001 - best effort while failing: log it, write the other
            log.error("could not write %s: %s", key, put_exc)
    state_line("FINALIZE_FAILED", exc.message, clock=clock)
    return FinalizeResult(noop=False, succeeded=False, error=exc.message)
