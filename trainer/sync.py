"""S3 transfers of a run: data in (manifest-verified), checkpoints both ways, artifacts out.

Every transfer goes through one s3transfer ``TransferManager`` (boto3's transfer
manager: shared, thread safe, multipart above the threshold) driven from a small
worker pool, each file under the :class:`~trainer.errors.Retrier`.

- :func:`sync_data` lists the data prefix, downloads the parquet files in parallel
  and verifies them against the listing (count, bytes, and the MD5 of single-part
  uploads, whose ETag is that MD5 with SSE-S3).
- :func:`restore_checkpoint` downloads the newest *complete* checkpoint of the run:
  :class:`CheckpointUploader` writes ``trainer_state.json`` last, so a folder in
  S3 without it is torn and skipped (like a torn local folder).
- :class:`CheckpointUploader` uploads checkpoints in a background thread while
  training goes on, and prunes local ones already safe in S3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import queue
import shutil
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from boto3.s3.transfer import TransferConfig
from s3transfer.manager import TransferManager

from trainer.errors import Retrier, TerminalError, TrainerError

if TYPE_CHECKING:
    from common.runspec import RunSpec
    from trainer.data import Dataset

log = logging.getLogger(__name__)

Artifact = dict[str, Any]
TRAINER_STATE = "trainer_state.json"
CHECKPOINT_PREFIX = "checkpoint-"
DEFAULT_TRANSFER = TransferConfig(
    multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20, max_concurrency=8
)


@dataclass(frozen=True, kw_only=True)
class RemoteObject:
    """One object as listed."""

    key: str
    size: int
    etag: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "etag": self.etag}


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


class Transfers:
    """The S3 side of one run.

    Args:
        s3: boto3 S3 client (botocore retries off, see :data:`trainer.errors.CLIENT_CONFIG`).
        bucket: the training bucket.
        retrier: retries per call.
        workers: files in flight at once.
        config: boto3 ``TransferConfig``.
    """

    def __init__(
        self,
        s3: Any,
        bucket: str,
        retrier: Retrier,
        *,
        workers: int = 8,
        config: TransferConfig = DEFAULT_TRANSFER,
    ) -> None:
        self.s3, self.bucket, self.retrier, self.workers = s3, bucket, retrier, workers
        # s3transfer's manager itself (not boto3's S3Transfer, which wraps a ClientError in
        # S3UploadFailedError and so hides throttling and access-denied from the retrier)
        self.manager = TransferManager(s3, config)

    def close(self) -> None:
        """Stop the transfer manager's threads."""
        self.manager.shutdown()

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def list(self, prefix: str, *, component: str) -> list[RemoteObject]:
        """Every object under ``prefix``, sorted by key."""

        def page_all() -> list[RemoteObject]:
            out: list[RemoteObject] = []
            for page in self.s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix):
                out += [
                    RemoteObject(key=o["Key"], size=int(o["Size"]), etag=str(o.get("ETag", "")))
                    for o in page.get("Contents", [])
                ]
            return sorted(out, key=lambda o: o.key)

        return self.retrier.call(
            page_all, component=component, action="s3:ListBucket", resource=self.url(prefix)
        )

    def exists(self, key: str, *, component: str) -> bool:
        """Whether ``key`` exists (a listing: a HEAD of a missing key is 403 without ListBucket)."""
        return any(o.key == key for o in self.list(key, component=component))

    def get_bytes(self, key: str, *, component: str) -> bytes:
        return self.retrier.call(
            lambda: self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read(),
            component=component,
            action="s3:GetObject",
            resource=self.url(key),
        )

    def put_bytes(
        self,
        key: str,
        body: bytes,
        *,
        component: str,
        content_type: str = "application/json",
        retrier: Retrier | None = None,
    ) -> Artifact:
        """One small object; returns its artifact entry (key, size, sha256)."""
        (retrier or self.retrier).call(
            lambda: self.s3.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type),
            component=component,
            action="s3:PutObject",
            resource=self.url(key),
        )
        return {"key": key, "size": len(body), "sha256": hashlib.sha256(body).hexdigest()}

    def put_json(self, key: str, doc: Any, *, component: str, retrier: Retrier | None = None) -> Artifact:
        body = json.dumps(doc, indent=2, sort_keys=True).encode()
        return self.put_bytes(key, body, component=component, retrier=retrier)

    def download(
        self, objects: Iterable[RemoteObject], dest: Path, *, strip: str, component: str
    ) -> list[Path]:
        """Download ``objects`` in parallel to ``dest``/(key without ``strip``)."""

        def one(obj: RemoteObject) -> Path:
            path = dest / obj.key[len(strip) :]
            path.parent.mkdir(parents=True, exist_ok=True)
            self.retrier.call(
                lambda: self.manager.download(self.bucket, obj.key, str(path)).result(),
                component=component,
                action="s3:GetObject",
                resource=self.url(obj.key),
            )
            return path

        return self._parallel(one, list(objects))

    def upload(
        self, files: Iterable[tuple[Path, str]], *, component: str, retrier: Retrier | None = None
    ) -> list[Artifact]:
        """Upload ``(path, key)`` pairs in parallel; the artifact entries, in input order."""
        r = retrier or self.retrier

        def one(item: tuple[Path, str]) -> Artifact:
            path, key = item
            digest = sha256_file(path)
            r.call(
                lambda: self.manager.upload(str(path), self.bucket, key).result(),
                component=component,
                action="s3:PutObject",
                resource=self.url(key),
            )
            return {"key": key, "size": path.stat().st_size, "sha256": digest}

        return self._parallel(one, list(files))

    def upload_tree(
        self,
        root: Path,
        prefix: str,
        *,
        component: str,
        last: tuple[str, ...] = (),
        retrier: Retrier | None = None,
    ) -> list[Artifact]:
        """Upload every file under ``root`` to ``prefix``; names in ``last`` go after the rest."""
        files = sorted(p for p in root.rglob("*") if p.is_file())
        pairs = [(p, prefix + p.relative_to(root).as_posix()) for p in files]
        late = [pair for pair in pairs if pair[0].name in last]
        early = [pair for pair in pairs if pair[0].name not in last]
        return self.upload(early, component=component, retrier=retrier) + self.upload(
            late, component=component, retrier=retrier
        )

    def _parallel(self, fn: Callable[[Any], Any], items: list[Any]) -> list[Any]:
        if len(items) <= 1:
            return [fn(i) for i in items]
        with ThreadPoolExecutor(max_workers=min(self.workers, len(items)), thread_name_prefix="s3") as pool:
            futures = [pool.submit(fn, i) for i in items]
            return [f.result() for f in futures]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def _md5_file(path: Path) -> str:
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


# -- data in ---------------------------------------------------------------------------------------


def sync_data(
    transfers: Transfers, prefix: str, dest: Path, *, component: str = "data_sync"
) -> tuple[Manifest, list[Path], dict[str, Any]]:
    """List, download and verify the parquet files under ``prefix``.

    Returns:
        ``(manifest, local files, verification details)``.

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
    paths = transfers.download(manifest.files, dest, strip=prefix, component=component)
    return manifest, paths, verify_manifest(manifest, dest, component=component)


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
            if _md5_file(path) != etag:
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


# -- checkpoints -----------------------------------------------------------------------------------


def checkpoint_step_of(name: str) -> int | None:
    suffix = name[len(CHECKPOINT_PREFIX) :] if name.startswith(CHECKPOINT_PREFIX) else ""
    return int(suffix) if suffix.isdigit() else None


def remote_checkpoints(
    transfers: Transfers, prefix: str, *, component: str = "data_sync"
) -> dict[int, list[RemoteObject]]:
    """Complete checkpoints under ``prefix`` (those holding ``trainer_state.json``), by step."""
    folders: dict[int, list[RemoteObject]] = {}
    for obj in transfers.list(prefix, component=component):
        step = checkpoint_step_of(obj.key[len(prefix) :].split("/", 1)[0])
        if step is not None:
            folders.setdefault(step, []).append(obj)
    complete = {
        s: objs for s, objs in folders.items() if any(o.key.endswith("/" + TRAINER_STATE) for o in objs)
    }
    for step in sorted(set(folders) - set(complete)):
        log.warning("skipping torn checkpoint-%d in S3 (no %s)", step, TRAINER_STATE)
    return complete


def restore_checkpoint(
    transfers: Transfers,
    prefix: str,
    local_dir: Path,
    problem: Callable[[Path], str | None],
    *,
    component: str = "data_sync",
) -> int | None:
    """Download the newest complete checkpoint of ``prefix`` into ``local_dir``.

    Args:
        problem: why a local folder is not resumable (``trainer.train.checkpoint_problem``).

    Returns:
        The step restored, or ``None`` when S3 holds no usable checkpoint.
    """
    for step, objects in sorted(
        remote_checkpoints(transfers, prefix, component=component).items(), reverse=True
    ):
        target = local_dir / f"{CHECKPOINT_PREFIX}{step}"
        if target.is_dir() and problem(target) is None:
            log.info("checkpoint-%d already here", step)
            return step
        shutil.rmtree(target, ignore_errors=True)
        transfers.download(objects, local_dir, strip=prefix, component=component)
        why = problem(target)
        if why is None:
            log.info("restored checkpoint-%d from %s", step, transfers.url(prefix))
            return step
        log.warning("checkpoint-%d from S3 is not resumable (%s); trying an older one", step, why)
        shutil.rmtree(target, ignore_errors=True)
    return None


class CheckpointUploader:
    """Uploads checkpoint folders in the background, ``trainer_state.json`` last.

    Args:
        transfers: the S3 side.
        prefix: the run's ``checkpoints/`` prefix.
        on_uploaded: called with ``(step, artifacts)`` after each upload.
        prune: delete local checkpoints older than one just uploaded.
    """

    def __init__(
        self,
        transfers: Transfers,
        prefix: str,
        *,
        on_uploaded: Callable[[int, list[Artifact]], None] | None = None,
        prune: bool = True,
    ) -> None:
        self.transfers, self.prefix, self.on_uploaded, self.prune = transfers, prefix, on_uploaded, prune
        self.uploaded: dict[int, list[Artifact]] = {}
        self.failures: list[TrainerError] = []
        self._queue: queue.Queue[tuple[Path, int] | None] = queue.Queue()
        self._thread = threading.Thread(target=self._loop, name="checkpoint-upload", daemon=True)
        self._thread.start()

    def submit(self, path: Path, step: int) -> None:
        """Queue ``path`` (a complete ``checkpoint-<step>`` folder)."""
        self._queue.put((Path(path), step))

    def close(self, timeout: float | None = None) -> bool:
        """Finish queued uploads; ``False`` if they did not end within ``timeout``."""
        self._queue.put(None)
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _loop(self) -> None:
        while (item := self._queue.get()) is not None:
            path, step = item
            try:
                artifacts = self.transfers.upload_tree(
                    path, f"{self.prefix}{path.name}/", component="training", last=(TRAINER_STATE,)
                )
            except TrainerError as exc:
                log.error("checkpoint-%d upload failed: %s", step, exc)
                self.failures.append(exc)
                continue
            except Exception as exc:  # keep the thread alive for later checkpoints
                log.exception("checkpoint-%d upload failed", step)
                self.failures.append(TrainerError(str(exc), component="training"))
                continue
            self.uploaded[step] = artifacts
            log.info("checkpoint-%d uploaded (%d files)", step, len(artifacts))
            if self.on_uploaded is not None:
                self.on_uploaded(step, artifacts)
            if self.prune:
                self._prune(path.parent, step)

    def _prune(self, folder: Path, newest: int) -> None:
        for old in folder.glob(f"{CHECKPOINT_PREFIX}*"):
            step = checkpoint_step_of(old.name)
            if step is not None and step < newest and step in self.uploaded:
                shutil.rmtree(old, ignore_errors=True)


# -- the rest of data_sync -------------------------------------------------------------------------


def download_user_configs(transfers: Transfers, prefix: str, dest: Path) -> list[Artifact]:
    """The run's ``user-configs/`` (run spec and user files), as artifact entries."""
    objects = transfers.list(prefix, component="data_sync")
    paths = transfers.download(objects, dest, strip=prefix, component="data_sync")
    pairs = zip(objects, paths, strict=True)
    return [{"key": o.key, "size": o.size, "sha256": sha256_file(p)} for o, p in pairs]


def load_training_data(files: list[Path], spec: RunSpec) -> Dataset:
    """Validate and load the parquet files (``trainer.data``) as the run spec describes them.

    Raises:
        TerminalError: the data module's message, naming the file and item.
    """
    from trainer.data import load_dataset
    from trainer.data_validation import DataValidationError

    try:
        return load_dataset(files, spec.data, prediction_length=spec.model.prediction_length)
    except DataValidationError as exc:
        details = {k: str(v) for k, v in (("file", exc.file), ("item", exc.item)) if v is not None}
        raise TerminalError(f"invalid training data: {exc}", component="data_sync", details=details) from None


def clear_previous_sentinel(transfers: Transfers, success_key: str, failed_key: str) -> str | None:
    """A relaunch resumes an interrupted run: remove its sentinel so finalize is not a no-op.

    Returns:
        The previous attempt's completion status, or ``None`` when there was none.

    Raises:
        TerminalError: the run already finished normally (its outputs are kept).
    """
    if not transfers.exists(success_key, component="data_sync"):
        return None
    prior = json.loads(transfers.get_bytes(success_key, component="data_sync")).get("completion_status")
    if prior == "normal":
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
