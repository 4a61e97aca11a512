"""The S3 side of a run: one ``TransferManager`` for every upload and download.

Every transfer goes through one s3transfer ``TransferManager`` (boto3's transfer
manager: shared, thread safe, multipart above the threshold) driven from a small
worker pool, each file under the :class:`~trainer.errors.Retrier`. Each upload
returns its artifact entry (key, size, sha256) for ``training.json``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from boto3.s3.transfer import TransferConfig
from s3transfer.manager import TransferManager

from common.timeutil import iso
from trainer.errors import Retrier

Artifact = dict[str, Any]
DEFAULT_TRANSFER = TransferConfig(
    multipart_threshold=64 * 2**20, multipart_chunksize=64 * 2**20, max_concurrency=8
)


@dataclass(frozen=True, kw_only=True)
class RemoteObject:
    """One object as listed."""

    key: str
    size: int
    etag: str
    last_modified: str | None = None  # when S3 stored it (UTC, seconds)

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "size": self.size, "etag": self.etag}


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
                    RemoteObject(
                        key=o["Key"],
                        size=int(o["Size"]),
                        etag=str(o.get("ETag", "")),
                        last_modified=iso(o["LastModified"]) if o.get("LastModified") else None,
                    )
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
    """Hex SHA-256 of a file's bytes."""
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()


def md5_file(path: Path) -> str:
    """Hex MD5 of a file's bytes (what S3 reports as the ETag of a single-part upload)."""
    h = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(2**20), b""):
            h.update(chunk)
    return h.hexdigest()
