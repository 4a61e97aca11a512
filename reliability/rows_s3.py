"""RELIABILITY.md rows of the s3 group (see :mod:`reliability.matrix`).

The faults come from the loopback S3 fault proxy (:mod:`reliability.s3faults`) in front of the
harness's gate, for the instance role's requests.
"""

from __future__ import annotations

from reliability.matrix import Row

FM = "Fault matrix"
TRANSIENT = "500 InternalError, 503 SlowDown, 503 ServiceUnavailable and a connection reset, once each"
ABSORBED = (
    "the trainer retries each (visible in training.json's retriable errors); the run succeeds, no orphan"
)


def _transient(phase: str, calls: str, extra: str = "") -> Row:
    return Row(
        id=f"s3-transient@{phase}",
        section=FM,
        phase=phase,
        fault=f"{TRANSIENT}{extra} on {calls}",
        expected=ABSORBED + ", every artifact intact",
    )


ROWS: tuple[Row, ...] = (
    _transient("data_sync", "the training-data listing and downloads, and a state write"),
    _transient("training", "the checkpoint uploads, and a state write or heartbeat"),
    _transient("results_sync", "the model uploads and the upload check's listing"),
    Row(
        id="s3-timeout@results_sync",
        section=FM,
        phase="results_sync",
        fault=(
            "the forecasts.json PutObject answer held past the 60 s read timeout (in the run of "
            "s3-exhausted@results_sync, while the model upload backs off beside it)"
        ),
        expected=(
            "the trainer times out, retries and the object lands whole (sha256 of the instance's "
            "file); the run's other upload failing does not stop it"
        ),
    ),
    _transient("finalize", "the training.json and _SUCCESS writes"),
    _transient("cleanup", "the cleanup_status.json write and the lock's DeleteObject"),
    Row(
        id="s3-exhausted@results_sync",
        section=FM,
        phase="results_sync",
        fault="503 SlowDown on every PutObject of models/model.safetensors (past the 6 retries)",
        expected=(
            "the run fails with _FAILED_UPLOAD and a message naming s3:PutObject and the key; "
            "the checkpoints uploaded before are intact, no orphan, the lock released"
        ),
    ),
    Row(
        id="s3-denied@data_sync",
        section=FM,
        phase="data_sync",
        fault="403 AccessDenied on every request under cached-datasets/training-data/",
        expected=(
            "the run fails at once (no retry) with one line naming the prefix and the IAM action "
            "to grant; training.json and the logs uploaded, no orphan, the lock released"
        ),
    ),
)
