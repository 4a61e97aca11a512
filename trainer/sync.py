"""Data in for the ``data_sync`` phase: the training data (manifest-verified), user configs, base model.

- :func:`sync_data` lists the data prefix, downloads the parquet files in parallel
  (:mod:`trainer.fast_sync`: s5cmd, boto3 for what it does not deliver) and verifies
  them against the listing (count, bytes, and the MD5 of single-part uploads, whose
  ETag is that MD5 with SSE-S3).
- :func:`load_training_data` validates them as the run spec describes them.
- :func:`clear_previous_sentinel` lets a relaunch resume an interrupted run.

The transfers themselves are :mod:`trainer.transfers`; checkpoints, :mod:`trainer.checkpoint_sync`.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from common.status import CompletionStatus
from trainer import fast_sync
from trainer.errors import TerminalError
from trainer.transfers import Artifact, RemoteObject, Transfers, md5_file, sha256_file

if TYPE_CHECKING:
    from common.runspec import RunSpec
    from trainer.data import Dataset

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Manifest:
    """What a prefix held when it was listed (``dataset_manifest`` of model_metadata.json)."""

    prefix: str
    files: tuple[RemoteObject, ...]

    @property
    def count(self) -> int:
        return len(self.files)

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)

    def to_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "count": self.count,
            "total_bytes": self.total_bytes,
            "files": [f.to_dict() for f in self.files],
        }


def sync_data(
    transfers: Transfers,
    prefix: str,
    dest: Path,
    *,
    component: str = "data_sync",
    engine: str = fast_sync.S5CMD,
) -> tuple[Manifest, list[Path], dict[str, Any]]:
    """List, download and verify the parquet files under ``prefix``.

    Args:
        engine: the download engine (:mod:`trainer.fast_sync`: s5cmd when its binary is
            there, boto3 for whatever it does not deliver; ``boto3`` alone).

    Returns:
        ``(manifest, local files, verification details)``; the details name the engine
        that delivered the files (``engine``, ``engine_files``, ``fallback_files``, and
        ``fallback_reason`` when boto3 took over).

    Raises:
        TerminalError: no parquet file there, or a download that does not match the listing.
    """
    listed = [o for o in transfers.list(prefix, component=component) if o.key.endswith(".parquet")]
    if not listed:
        raise TerminalError(
            f"no .parquet files under {transfers.url(prefix)}; stage the training data "
            "there (long format: one row per item and timestamp)",
            component=component,
            details={"prefix": prefix},
        )
    manifest = Manifest(prefix=prefix, files=tuple(listed))
    log.info("data_sync: %d files, %d bytes under %s", manifest.count, manifest.total_bytes, prefix)
    paths, outcome = fast_sync.download(
        transfers, manifest.files, dest, strip=prefix, component=component, engine=engine
    )
    log.info("data_sync: downloaded by %s", outcome.engine)
    return manifest, paths, {**verify_manifest(manifest, dest, component=component), **outcome.to_dict()}


def verify_manifest(manifest: Manifest, dest: Path, *, component: str = "data_sync") -> dict[str, Any]:
    """Check every listed object against its local copy.

    Raises:
        TerminalError: naming the first file whose size or MD5 differs, or that is missing.
    """
    md5_checked = 0
    for obj in manifest.files:
        path = dest / obj.key[len(manifest.prefix) :]
        if not path.is_file():
            raise TerminalError(
                f"{obj.key}: listed but not downloaded", component=component, details={"key": obj.key}
            )
        size = path.stat().st_size
        if size != obj.size:
            raise TerminalError(
                f"{obj.key}: downloaded {size} bytes, S3 lists {obj.size}",
                component=component,
                details={"key": obj.key},
            )
        etag = obj.etag.strip('"')
        if len(etag) == 32 and "-" not in etag:
            if md5_file(path) != etag:
                raise TerminalError(
                    f"{obj.key}: MD5 of the download differs from its ETag {etag}",
                    component=component,
                    details={"key": obj.key},
                )
            md5_checked += 1
    total = sum(1 for p in dest.rglob("*.parquet") if p.is_file())
    if total != manifest.count:
        raise TerminalError(
            f"{total} parquet files under {dest}, the manifest lists {manifest.count}", component=component
        )
    return {"files": manifest.count, "bytes": manifest.total_bytes, "md5_verified": md5_checked}


def download_user_configs(transfers: Transfers, prefix: str, dest: Path) -> list[Artifact]:
    """The run's ``user-configs/`` (run spec and user files), as artifact entries."""
    objects = transfers.list(prefix, component="data_sync")
    paths = transfers.download(objects, dest, strip=prefix, component="data_sync")
    pairs = zip(objects, paths, strict=True)
    return [{"key": o.key, "size": o.size, "sha256": sha256_file(p)} for o, p in pairs]


def load_training_data(files: list[Path], spec: RunSpec) -> Dataset:
    """Validate and load the parquet files (``trainer.data``) as the run spec describes them.

    The horizon and the number of backtest windows come from the spec's model section;
    unusable items are dropped and counted (``Dataset.drops``), not fatal.

    Raises:
        TerminalError: the data module's message, naming the file and item.
    """
    from trainer.data import load_dataset
    from trainer.data_validation import DataValidationError

    try:
        return load_dataset(
            files,
            spec.data,
            prediction_length=spec.model.prediction_length,
            backtest_windows=spec.model.backtest_windows,
        )
    except DataValidationError as exc:
        details = {k: str(v) for k, v in (("file", exc.file), ("item", exc.item)) if v is not None}
        raise TerminalError(f"invalid training data: {exc}", component="data_sync", details=details) from None


class AlreadyFinished(Exception):
    """A relaunched attempt found the run's normal sentinel: the results are whole, nothing to redo.

    The previous attempt went away after its finalize wrote ``_SUCCESS`` (only its cleanup was
    left) but before the recovery handler could see the sentinel. The driver ends this attempt
    as a normal completion: finalize is a no-op (the sentinel exists), cleanup releases the lock.
    """


def clear_previous_sentinel(
    transfers: Transfers, success_key: str, failed_key: str, *, recovered: bool = False
) -> str | None:
    """A relaunch resumes an interrupted run: remove its sentinel so finalize is not a no-op.

    Args:
        recovered: this attempt was relaunched by the recovery handler (not a user's resume).

    Returns:
        The previous attempt's completion status, or ``None`` when there was none.

    Raises:
        AlreadyFinished: a recovered attempt found a normal sentinel (the run is done).
        TerminalError: a resume of a run that already finished normally (its outputs are kept).
    """
    if not transfers.exists(success_key, component="data_sync"):
        return None
    prior = json.loads(transfers.get_bytes(success_key, component="data_sync")).get("completion_status")
    if prior == CompletionStatus.NORMAL:
        if recovered:
            raise AlreadyFinished(f"the previous attempt finished the run normally ({success_key})")
        raise TerminalError(
            f"this run already finished normally ({success_key}); launch a new run instead",
            component="data_sync",
        )
    log.info("resuming after a %s attempt: removing its sentinel", prior)
    for key in (success_key, failed_key):
        transfers.retrier.call(
            lambda k=key: transfers.s3.delete_object(Bucket=transfers.bucket, Key=k),
            component="data_sync",
            action="s3:DeleteObject",
            resource=transfers.url(key),
        )
    return str(prior)


def fetch_base_model(transfers: Transfers, base: str, dest: Path) -> str:
    """The base model as ``trainer.model`` takes it: an ``s3://bucket/prefix`` is downloaded first."""
    if not base.startswith("s3://"):
        return base
    bucket, _, prefix = base[5:].partition("/")
    prefix = prefix.rstrip("/") + "/"
    other = Transfers(transfers.s3, bucket, transfers.retrier)
    objects = other.list(prefix, component="data_sync")
    if not objects:
        raise TerminalError(f"base model {base}: no objects there", component="data_sync")
    other.download(objects, dest, strip=prefix, component="data_sync")
    other.close()
    return str(dest)
