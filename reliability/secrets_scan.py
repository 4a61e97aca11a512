"""Find credentials in what a run wrote: the secret values in play, and credential patterns.

A :class:`Scanner` holds the secret values that must never be written anywhere (secret access
keys, session tokens) and looks for each of them, in its plain, base64 and URL-encoded forms,
and for credential patterns (a labelled secret key or session token, an STS session token, a
private key, a SigV4 signature of a presigned URL or Authorization header), in:

- bytes (:meth:`Scanner.scan_bytes`), a file or a folder (archives are opened: ``.gz``,
  ``.tar``, ``.tar.gz``/``.tgz``, ``.zip``/``.whl``; symbolic links are not followed),
- every object of an S3 bucket under a prefix (:meth:`Scanner.scan_bucket`).

Access key ids are not secret (AWS's IAM User Guide, "Manage access keys": a key is the id
*and* the secret; CloudTrail records the id of every call), so they are looked for only where
the scanner is told to (``key_ids``: a run's artifacts have no reason to hold one).

A :class:`Finding` names where and what was found, never the value (a masked fingerprint).
"""

from __future__ import annotations

import base64
import gzip
import io
import re
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

MIN_SECRET_LENGTH = 16  # shorter values (moto's default "testing") would match ordinary words
MAX_MEMBER_BYTES = 256 * 1024 * 1024  # members of archives larger than this are skipped (and reported)
# Each pattern starts with a literal, so the regex engine skips ahead to it (a leading alternation or
# (?i) makes it try every position: 10x slower on a run's 20 MB). ``lower`` patterns run on the
# lower-cased data (labels in any case; a secret key's 40 characters stay 40 of the same class).
_SEP = rb"""["']?\s*[:=]\s*["']?"""
_LABELLED_KEY = _SEP + rb"[a-z0-9/+]{40}(?![a-z0-9/+=])"
_LABELLED_TOKEN = _SEP + rb"[a-z0-9/+=%]{40,}"
PATTERNS: tuple[tuple[str, bool, re.Pattern[bytes]], ...] = (
    # aws_secret_access_key, SecretAccessKey, secret_key, secretkey
    ("a labelled secret access key", True, re.compile(rb"secret_?(?:access_?)?key" + _LABELLED_KEY)),
    # aws_session_token, SessionToken; aws_security_token, X-Amz-Security-Token
    ("a labelled session token", True, re.compile(rb"session_?token" + _LABELLED_TOKEN)),
    ("a labelled session token", True, re.compile(rb"security[_-]token" + _LABELLED_TOKEN)),
    # STS session tokens: AWS's ("IQoJb3JpZ2lu" is base64 of their header) and moto's
    *(
        ("an STS session token", False, re.compile(prefix + rb"[A-Za-z0-9/+=]{40,}"))
        for prefix in (rb"IQoJb3JpZ2lu", rb"FwoGZXIvYXdz", rb"FQoGZXIvYXdz")
    ),
    (
        "a private key",
        False,
        re.compile(rb"-----BEGIN (?:RSA |EC |DSA |OPENSSH |ENCRYPTED )?PRIVATE KEY-----"),
    ),
    # a presigned URL's X-Amz-Signature=, an Authorization header's Signature=
    ("a SigV4 signature", True, re.compile(rb"signature=[0-9a-f]{64}(?![0-9a-f])")),
)
KEY_ID_PATTERN = re.compile(rb"(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Z0-9])")  # preceded by no [A-Z0-9]: checked


@dataclass(frozen=True)
class Secret:
    """A value that must never be written, and what it is (``"operator's secret key"``)."""

    label: str
    value: str


@dataclass(frozen=True)
class Finding:
    """One credential found: where (``s3://bucket/key``, a path, ``member!inside``), what, which line."""

    where: str
    what: str
    line: int

    def __str__(self) -> str:
        return f"{self.where}:{self.line}: {self.what}"


@dataclass
class ScanReport:
    """What a scan covered and found."""

    findings: list[Finding] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    skipped: list[str] = field(default_factory=list)

    def add(self, other: ScanReport) -> ScanReport:
        self.findings += other.findings
        self.files += other.files
        self.bytes += other.bytes
        self.skipped += other.skipped
        return self

    def summary(self) -> str:
        head = f"{self.files} files, {self.bytes} bytes scanned, {len(self.findings)} findings"
        return "\n".join([head, *(str(f) for f in self.findings[:50])])


def fingerprint(value: str) -> str:
    """A masked form of a secret for messages: its first 4 characters and its length."""
    return f"{value[:4]}...({len(value)} chars)"


def _base64_forms(value: bytes) -> set[bytes]:
    """The part of ``value``'s base64 that is the same wherever it starts in the encoded text."""
    forms = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + value)
        end = (offset + len(value)) * 8 // 6
        start = -(-offset * 8 // 6)
        form = encoded[start:end]
        if len(form) >= MIN_SECRET_LENGTH:
            forms.add(form)
    return forms


class Scanner:
    """Looks for ``secrets`` (and ``key_ids`` when given) and credential patterns.

    Args:
        secrets: values never to be written; those shorter than :data:`MIN_SECRET_LENGTH`
            are left out (see :attr:`ignored`).
        key_ids: access key ids to look for too (and, when any is given, every ``AKIA``/``ASIA``
            id): for artifacts, which have no reason to hold one.
    """

    def __init__(self, secrets: Iterable[Secret], *, key_ids: Iterable[Secret] = ()) -> None:
        key_ids = list(key_ids)
        self.needles: list[tuple[bytes, str]] = []
        self.ignored: list[str] = []
        self.look_for_key_ids = bool(key_ids)
        for secret in [*secrets, *key_ids]:
            if len(secret.value) < MIN_SECRET_LENGTH:
                self.ignored.append(secret.label)
                continue
            raw = secret.value.encode()
            what = f"{secret.label} {fingerprint(secret.value)}"
            forms = {raw: what, quote(secret.value, safe="").encode(): what + " (URL-encoded)"}
            forms.update({b: what + " (base64)" for b in _base64_forms(raw)})
            self.needles += list(forms.items())

    # -- bytes --------------------------------------------------------------------------------------
    def scan_bytes(self, data: bytes, where: str) -> list[Finding]:
        """Every secret and credential pattern in ``data`` (``where`` names it in the findings)."""
        found: list[Finding] = []
        for needle, what in self.needles:
            start = data.find(needle)
            while start >= 0:
                found.append(Finding(where, what, data.count(b"\n", 0, start) + 1))
                start = data.find(needle, start + len(needle))
        lowered = data.lower()
        for what, lower, pattern in PATTERNS:
            for match in pattern.finditer(lowered if lower else data):
                found.append(Finding(where, what, data.count(b"\n", 0, match.start()) + 1))
        if self.look_for_key_ids:
            for match in KEY_ID_PATTERN.finditer(data):
                before = data[match.start() - 1 : match.start()]
                if not (before.isdigit() or before.isupper()):
                    found.append(Finding(where, "an access key id", data.count(b"\n", 0, match.start()) + 1))
        return _dedupe(found)

    def scan_blob(self, data: bytes, where: str) -> ScanReport:
        """``data`` and, when it is an archive, every member (recursively)."""
        report = ScanReport(findings=self.scan_bytes(data, where), files=1, bytes=len(data))
        for member, inner in _members(data, where, report.skipped):
            report.add(self.scan_blob(inner, member))
        return report

    # -- files --------------------------------------------------------------------------------------
    def scan_path(self, path: Path, *, name: str | None = None) -> ScanReport:
        """A file, or every regular file under a folder (symbolic links are not followed)."""
        report = ScanReport()
        for file in _files(Path(path)):
            where = f"{name}/{file.relative_to(path)}" if name and file != path else name or str(file)
            try:
                data = file.read_bytes()
            except OSError as exc:  # vanished (a run still writing): say so rather than pass silently
                report.skipped.append(f"{file}: {exc}")
                continue
            report.add(self.scan_blob(data, where))
        return report

    # -- S3 -----------------------------------------------------------------------------------------
    def scan_bucket(self, s3: Any, bucket: str, prefix: str = "") -> ScanReport:
        """Every object of ``bucket`` under ``prefix`` (read with ``s3``, a boto3 client)."""
        report = ScanReport()
        for key in object_keys(s3, bucket, prefix):
            data = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            report.add(self.scan_blob(data, f"s3://{bucket}/{key}"))
        return report


def object_keys(s3: Any, bucket: str, prefix: str = "") -> list[str]:
    """Every key of ``bucket`` under ``prefix``."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    return [o["Key"] for page in pages for o in page.get("Contents", [])]


def _dedupe(findings: list[Finding]) -> list[Finding]:
    return list(dict.fromkeys(findings))


def _files(path: Path) -> Iterator[Path]:
    if path.is_symlink():
        return
    if path.is_file():
        yield path
        return
    if path.is_dir():
        for child in sorted(path.iterdir()):
            yield from _files(child)


def _members(data: bytes, where: str, skipped: list[str]) -> Iterator[tuple[str, bytes]]:
    """The members of ``data`` when it is a gzip, tar or zip archive (nothing otherwise)."""
    if data[:2] == b"\x1f\x8b":
        try:
            inner = gzip.decompress(data)
        except (OSError, EOFError) as exc:
            skipped.append(f"{where}: unreadable gzip ({exc})")
            return
        yield from _tar_members(inner, where, skipped) or [(f"{where}!gunzip", inner)]
        return
    if data[:4] == b"PK\x03\x04":
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for info in archive.infolist():
                    if info.is_dir():
                        continue
                    if info.file_size > MAX_MEMBER_BYTES:
                        skipped.append(f"{where}!{info.filename}: {info.file_size} bytes")
                        continue
                    yield f"{where}!{info.filename}", archive.read(info)
        except zipfile.BadZipFile as exc:
            skipped.append(f"{where}: unreadable zip ({exc})")
        return
    yield from _tar_members(data, where, skipped) or []


def _tar_members(data: bytes, where: str, skipped: list[str]) -> list[tuple[str, bytes]] | None:
    """The regular files of a tar archive, ``None`` when ``data`` is not one."""
    if len(data) < 512 or data[257:262] != b"ustar":
        return None
    members: list[tuple[str, bytes]] = []
    try:
        with tarfile.open(fileobj=io.BytesIO(data), mode="r:") as archive:
            for info in archive:
                if not info.isfile():
                    continue
                if info.size > MAX_MEMBER_BYTES:
                    skipped.append(f"{where}!{info.name}: {info.size} bytes")
                    continue
                handle = archive.extractfile(info)
                if handle is not None:
                    members.append((f"{where}!{info.name}", handle.read()))
    except tarfile.TarError as exc:
        skipped.append(f"{where}: unreadable tar ({exc})")
    return members
