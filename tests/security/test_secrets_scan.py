"""The secrets scanner finds a planted secret wherever a run could write it, and nothing in clean data."""

from __future__ import annotations

import base64
import gzip
import io
import json
import secrets
import tarfile
import zipfile
from pathlib import Path
from urllib.parse import quote

import pytest

from reliability.secrets_scan import Scanner, Secret, fingerprint

pytestmark = pytest.mark.row("no-secrets-in-run-outputs")

ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"


def _secret_key() -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(40))


SECRET = _secret_key()
TOKEN = "FQoGZXIvYXdzEBYaD" + base64.b64encode(secrets.token_bytes(120)).decode()


@pytest.fixture
def scanner() -> Scanner:
    return Scanner([Secret("operator's secret key", SECRET), Secret("role session token", TOKEN)])


def _tar_gz(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as archive:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _zip(name: str, data: bytes) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.writestr(name, data)
    return out.getvalue()


LOG = b"2026-11-25T14:05:02Z trainer INFO: data_sync: 12 files\n"


@pytest.mark.parametrize(
    "wrap",
    [
        pytest.param(lambda s: LOG + s.encode() + b"\n", id="plain"),
        pytest.param(lambda s: json.dumps({"env": {"X": s}}).encode(), id="json"),
        pytest.param(lambda s: gzip.compress(LOG + s.encode()), id="gzip"),
        pytest.param(lambda s: _tar_gz("opt/chronos/work/trainer.log", LOG + s.encode()), id="tar.gz"),
        pytest.param(lambda s: _zip("pkg/config.py", b"KEY = '" + s.encode() + b"'\n"), id="zip"),
        pytest.param(lambda s: base64.b64encode(b"#!/bin/bash\nexport K=" + s.encode() + b"\n"), id="base64"),
        pytest.param(lambda s: ("https://x/?a=" + quote(s, safe="")).encode(), id="url-encoded"),
    ],
)
@pytest.mark.parametrize("value", [SECRET, TOKEN], ids=["secret-key", "session-token"])
def test_a_planted_secret_is_found_however_it_is_written(scanner: Scanner, wrap, value: str) -> None:
    report = scanner.scan_blob(wrap(value), "s3://bucket/dev/logs/run/training.json")
    assert report.findings, "the planted secret was not found"
    assert all(value not in str(f) for f in report.findings), "a finding must not echo the secret"
    assert any(fingerprint(value) in f.what for f in report.findings)


@pytest.mark.parametrize(
    "text",
    [
        f"aws_secret_access_key = {_secret_key()}",
        f'"SecretAccessKey": "{_secret_key()}"',
        "AWS_SESSION_TOKEN=" + base64.b64encode(secrets.token_bytes(60)).decode(),
        "IQoJb3JpZ2luX2VjE" + base64.b64encode(secrets.token_bytes(60)).decode(),
        "GET /b/k?X-Amz-Security-Token=" + quote(base64.b64encode(secrets.token_bytes(60)).decode(), safe=""),
        "-----BEGIN RSA PRIVATE KEY-----\nMIIE...",
        "GET /b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Signature=" + secrets.token_hex(32),
        "Authorization: AWS4-HMAC-SHA256 Credential=x/y, SignedHeaders=host, Signature="
        + secrets.token_hex(32),
    ],
    ids=[
        "ini-key",
        "json-key",
        "env-token",
        "sts-token",
        "url-token",
        "private-key",
        "presigned-url",
        "auth-header",
    ],
)
def test_credential_patterns_are_found_without_knowing_the_value(text: str) -> None:
    report = Scanner([]).scan_blob(LOG + text.encode() + b"\n", "console.log")
    assert [f.line for f in report.findings] == [2], report.summary()


def test_access_key_ids_are_looked_for_only_where_asked() -> None:
    text = LOG + b"instance role credentials ASIAEXAMPLE0KEYID012 (until 2026-11-25T15:05:02Z)\n"
    assert Scanner([]).scan_blob(text, "console.log").findings == []
    strict = Scanner([], key_ids=[Secret("operator's key id", "AKIAEXAMPLE0OPERATOR")])
    (found,) = strict.scan_blob(text, "s3://b/dev/logs/r/training.json").findings
    assert found.what == "an access key id" and found.line == 2


def test_clean_run_records_give_no_finding(scanner: Scanner, tmp_path: Path) -> None:
    training = {
        "run_id": "20261125-140502",
        "phases": [{"name": "data_sync", "details": {"etag": "9b2cf535f27731c974343645a3985328"}}],
        "checksum": "sha256:" + secrets.token_hex(32),
        "ids": [secrets.token_urlsafe(30) for _ in range(20)],
    }
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "training.json").write_text(json.dumps(training))
    (tmp_path / "code.tar.gz").write_bytes(_tar_gz("trainer/run.py", b"import os\n" * 1000))
    report = scanner.scan_path(tmp_path, name="runs/dev/20261125-140502")
    assert report.files == 3 and report.findings == [], report.summary()


def test_a_folder_scan_names_the_file_and_line_and_skips_links(scanner: Scanner, tmp_path: Path) -> None:
    (tmp_path / "var" / "log").mkdir(parents=True)
    (tmp_path / "var" / "log" / "boot.log").write_bytes(LOG * 3 + SECRET.encode())
    outside = tmp_path.parent / f"{tmp_path.name}-outside.txt"
    outside.write_text(SECRET)
    (tmp_path / "link").symlink_to(outside)
    (found,) = scanner.scan_path(tmp_path, name="i-0abc").findings
    assert found.where == "i-0abc/var/log/boot.log" and found.line == 4


def test_short_values_are_not_looked_for_and_are_reported() -> None:
    scanner = Scanner([Secret("moto's default key", "testing")])
    assert scanner.ignored == ["moto's default key"]
    assert scanner.scan_blob(b"pytest testing", "x").findings == []


def test_a_bucket_scan_reads_every_object(scanner: Scanner, s3, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="dev/logs/r/training.json", Body=b"{}")
    s3.put_object(Bucket=bucket, Key="dev/2026/11/25-140502/user-configs/run-spec.json", Body=TOKEN.encode())
    s3.put_object(Bucket=bucket, Key="cached-datasets/x", Body=SECRET.encode())
    report = scanner.scan_bucket(s3, bucket, "dev/")
    assert report.files == 2
    assert [f.where for f in report.findings] == [
        f"s3://{bucket}/dev/2026/11/25-140502/user-configs/run-spec.json"
    ] * len(report.findings)
