"""A loopback S3 fault proxy: moto behind it, faults injected per rule, counted.

:class:`FaultProxy` listens on 127.0.0.1 (a thread, its own port) and forwards every request,
byte for byte and with the client's own ``Host`` header (so SigV4 signatures still verify), to
the upstream endpoint (moto). Point a client's endpoint at :attr:`FaultProxy.url` and add
:class:`Rule` s; a request that matches a rule gets the rule's fault instead of (or, with
``after=True``, after) moto's answer:

- ``internal_error``: HTTP 500 ``InternalError``; ``slow_down``: 503 ``SlowDown``;
  ``throttling``: 503 ``ServiceUnavailable`` "Reduce your request rate" (S3's two throttling
  answers; S3 has no ``Throttling`` code). All three are the S3 error XML body, as AWS sends it.
- ``access_denied``: 403 ``AccessDenied`` (the "access denied on one prefix" rows).
- ``reset``: the TCP connection closed with RST, no response.
- ``read_timeout``: the response held ``hold_s`` (past the client's read timeout), then the
  connection dropped.

A rule matches on the S3 operation (``GetObject``, ``PutObject``, ``ListObjectsV2`` ...: the
REST call, read from method, path and query), the key prefix (a listing matches on its
``prefix``), the caller (the SigV4 access key id; ``Caller`` helpers for assumed-role keys and
for a role, learned from the STS ``AssumeRole`` answers that pass through), any test of the
request with its body (``when``) and fires on every
match, the first ``count`` matches after ``skip``, or at ``rate`` from a seeded RNG. S3's own
error documentation: "Requests that receive an InternalError response might not have
processed. For example, if a PUT request returns InternalError, a subsequent GET might
retrieve the old value or the updated value" (Amazon S3 error best practices), hence ``after``.

Every injected fault is counted (``record.count(Total.FAULTS_INJECTED)``) and kept in
:attr:`FaultProxy.injected`; every request seen, in :attr:`FaultProxy.seen`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import random
import re
import socket
import struct
import threading
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from reliability import record
from reliability.s3faults_ops import Request, error_body, parse_request


class Kind(StrEnum):
    INTERNAL_ERROR = "internal_error"
    SLOW_DOWN = "slow_down"
    THROTTLING = "throttling"
    ACCESS_DENIED = "access_denied"
    RESET = "reset"
    READ_TIMEOUT = "read_timeout"


# (HTTP status, S3 error code, message) as S3's error code list gives them
ERRORS: dict[Kind, tuple[int, str, str]] = {
    Kind.INTERNAL_ERROR: (500, "InternalError", "We encountered an internal error. Please try again."),
    Kind.SLOW_DOWN: (503, "SlowDown", "Please reduce your request rate."),
    Kind.THROTTLING: (503, "ServiceUnavailable", "Reduce your request rate."),
    Kind.ACCESS_DENIED: (403, "AccessDenied", "Access Denied"),
}
_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}
_STS_KEY = re.compile(r"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>")
_STS_ARN = re.compile(r"<AssumedRoleUser>.*?<Arn>([^<]+)</Arn>", re.S)
CallerMatch = Callable[[str, "str | None"], bool]  # (access key id, role ARN or None) -> match


class Caller:
    """Caller predicates for :attr:`Rule.caller` (AWS: ``ASIA`` keys are STS temporary keys,
    ``AKIA`` long-term IAM-user keys; IAM User Guide, "Understanding unique ID prefixes")."""

    @staticmethod
    def assumed_role() -> CallerMatch:
        return lambda key, _arn: key.startswith("ASIA")

    @staticmethod
    def iam_user() -> CallerMatch:
        return lambda key, _arn: key.startswith("AKIA")

    @staticmethod
    def role(name: str) -> CallerMatch:
        """Keys of sessions of role ``name`` (seen in an AssumeRole answer, or :meth:`FaultProxy.learn`)."""
        return lambda _key, arn: bool(arn) and f":assumed-role/{name}/" in str(arn)

    @staticmethod
    def keys(*ids: str) -> CallerMatch:
        wanted = frozenset(ids)
        return lambda key, _arn: key in wanted


@dataclass(kw_only=True)
class Rule:
    """When to inject which fault (every field set must match)."""

    kind: Kind | str
    operations: Iterable[str] | str | None = None  # S3 operation names; None: any
    key_prefix: str | None = None
    key: str | None = None  # exactly this key (a listing: exactly this prefix)
    bucket: str | None = None
    caller: CallerMatch | None = None
    when: Callable[[Request], bool] | None = None  # any other test of the request (e.g. its body)
    count: int | None = None  # at most this many injections; None: unlimited
    skip: int = 0  # let the first ``skip`` matching requests through
    rate: float | None = None  # inject with this probability (seeded); None: always
    seed: int = 0
    after: bool = False  # let moto act first, then answer with the fault (a lost response)
    hold_s: float = 65.0  # read_timeout: how long to hold (botocore's default read timeout is 60 s)
    service: str = "s3"
    matched: int = field(default=0, init=False)
    fired: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.kind = Kind(self.kind)
        if isinstance(self.operations, str):
            self.operations = (self.operations,)
        self.operations = frozenset(self.operations) if self.operations is not None else None
        if self.rate is not None and not 0.0 <= self.rate <= 1.0:
            raise ValueError(f"rate {self.rate} is not within 0..1")
        self._rng = random.Random(self.seed)

    def matches(self, req: Request, arn: str | None) -> bool:
        if req.service != self.service or (self.operations and req.operation not in self.operations):
            return False
        if self.bucket is not None and req.bucket != self.bucket:
            return False
        if self.key_prefix is not None and not req.key.startswith(self.key_prefix):
            return False
        if self.key is not None and req.key != self.key:
            return False
        if self.caller is not None and not self.caller(req.caller, arn):
            return False
        return self.when is None or bool(self.when(req))

    def decide(self) -> bool:
        """Called on a match (under the proxy's lock): whether this one is injected."""
        self.matched += 1
        if self.matched <= self.skip or (self.count is not None and self.fired >= self.count):
            return False
        if self.rate is not None and self._rng.random() >= self.rate:
            return False
        self.fired += 1
        return True


@dataclass
class Injection:
    kind: Kind
    request: Request
    rule: int  # index in the proxy's rules
    status: str = ""  # what :attr:`FaultProxy.probe` said when it was injected (the run's state)


class FaultProxy:
    """The proxy (see the module docstring). Use as a context manager, or start()/stop().

    Args:
        upstream: moto's endpoint, ``http://127.0.0.1:PORT``.
        port: the proxy's port (0: a free one).
    """

    def __init__(self, upstream: str, *, port: int = 0) -> None:
        parts = urlsplit(upstream)
        self.upstream = (parts.hostname or "127.0.0.1", int(parts.port or 80))
        self.rules: list[Rule] = []
        self.injected: list[Injection] = []
        self.seen: list[Request] = []
        self.roles: dict[str, str] = {}  # access key id -> assumed-role ARN (from AssumeRole answers)
        self.probe: Callable[[], str] | None = None  # called at each injection (e.g. the state file's status)
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", port), type("Handler", (_Handler,), {"proxy": self}))
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="s3-fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *_: object) -> None:
        self.stop()

    def add(self, rule: Rule) -> Rule:
        with self.lock:
            self.rules.append(rule)
        return rule

    def clear(self) -> None:
        """Remove every rule (what was injected and seen is kept)."""
        with self.lock:
            self.rules = []

    def learn(self, access_key_id: str, role_arn: str) -> None:
        with self.lock:
            self.roles[access_key_id] = role_arn

    def injections(self, kind: Kind | str | None = None, operation: str | None = None) -> list[Injection]:
        with self.lock:
            return [
                i
                for i in self.injected
                if (kind is None or i.kind == Kind(kind))
                and (operation is None or i.request.operation == operation)
            ]

    def requests(
        self, operation: str | None = None, key_prefix: str = "", caller: str | None = None
    ) -> list[Request]:
        """The requests seen (of ``operation``, under ``key_prefix``, signed by ``caller``), in order."""
        with self.lock:
            return [
                r
                for r in self.seen
                if (operation is None or r.operation == operation)
                and r.key.startswith(key_prefix)
                and (caller is None or r.caller == caller)
            ]

    def _decide(self, req: Request) -> Rule | None:
        with self.lock:
            self.seen.append(dataclasses.replace(req, body=b""))
            arn = self.roles.get(req.caller)
            for index, rule in enumerate(self.rules):
                if rule.matches(req, arn) and rule.decide():
                    injection = Injection(Kind(rule.kind), dataclasses.replace(req, body=b""), index)
                    self.injected.append(injection)
                    break
            else:
                return None
        record.count(record.Total.FAULTS_INJECTED)
        if self.probe is not None:
            try:
                injection.status = self.probe()
            except Exception as exc:  # noqa: BLE001 - a probe that fails says so, the fault still lands
                injection.status = f"unknown: {exc}"
        return rule


class _Handler(BaseHTTPRequestHandler):
    """One client connection (HTTP/1.1 keep-alive), with its own upstream connection."""

    protocol_version = "HTTP/1.1"
    proxy: FaultProxy  # set on the subclass each proxy makes
    upstream: http.client.HTTPConnection | None = None

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's signature
        return

    def _body(self) -> bytes:
        if "chunked" not in (self.headers.get("Transfer-Encoding") or "").lower():
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""
        out = b""
        while size := int(self.rfile.readline().split(b";")[0].strip() or b"0", 16):
            out += self.rfile.read(size)
            self.rfile.readline()
        while self.rfile.readline() not in (b"\r\n", b"\n", b""):  # trailers
            pass
        return out

    def _forward(self, body: bytes) -> tuple[int, str, list[tuple[str, str]], bytes]:
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP]
        if body or self.command in ("PUT", "POST"):
            headers = [(k, v) for k, v in headers if k.lower() != "content-length"]
            headers.append(("Content-Length", str(len(body))))
        for attempt in (1, 2):  # a kept-alive upstream connection moto closed: one fresh try
            if self.upstream is None:
                self.upstream = http.client.HTTPConnection(*self.proxy.upstream, timeout=300)
            try:
                self.upstream.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                for k, v in headers:
                    self.upstream.putheader(k, v)
                self.upstream.endheaders(body or None)
                resp = self.upstream.getresponse()
                return resp.status, resp.reason, resp.getheaders(), resp.read()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                self.upstream.close()
                self.upstream = None
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable: the second attempt returns or raises")

    def _send(self, status: int, reason: str, headers: list[tuple[str, str]], data: bytes) -> None:
        head = self.command == "HEAD"  # a HEAD answer keeps moto's Content-Length and has no body
        self.send_response_only(status, reason)
        for k, v in headers:
            if k.lower() not in _HOP and (head or k.lower() != "content-length"):
                self.send_header(k, v)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if not head:
            self.wfile.write(data)
        self.wfile.flush()

    def _drop(self, *, reset: bool) -> None:
        self.close_connection = True
        with contextlib.suppress(OSError):
            if reset:  # linger 0: close() sends RST instead of FIN
                self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.connection.close()

    def _inject(self, rule: Rule, req: Request) -> None:
        if rule.kind is Kind.RESET:
            self._drop(reset=True)
        elif rule.kind is Kind.READ_TIMEOUT:
            self.proxy.stopping.wait(rule.hold_s)
            self._drop(reset=False)
        else:
            status, code, message = ERRORS[Kind(rule.kind)]
            rid = uuid.uuid4().hex[:16].upper()
            body = error_body(code, message, resource=f"/{req.bucket}/{req.key}", request_id=rid)
            headers = [("Content-Type", "application/xml"), ("x-amz-request-id", rid), ("Server", "AmazonS3")]
            self._send(status, http.client.responses.get(status, ""), headers, body)

    def _handle(self) -> None:
        body = self._body()
        req = parse_request(self.command, self.path, self.headers, body)
        rule = self.proxy._decide(req)
        if rule is not None and not rule.after:
            return self._inject(rule, req)
        status, reason, headers, data = self._forward(body)
        if req.service == "sts" and req.operation == "AssumeRole" and status == 200:
            text = data.decode("utf-8", "replace")
            key, arn = _STS_KEY.search(text), _STS_ARN.search(text)
            if key and arn:
                self.proxy.learn(key.group(1), arn.group(1))
        if rule is not None:
            return self._inject(rule, req)
        return self._send(status, reason, headers, data)

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _handle  # noqa: N815

    def finish(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            super().finish()
        if self.upstream is not None:
            self.upstream.close()


@contextlib.contextmanager
def in_front_of(world: Any) -> Iterator[tuple[Any, FaultProxy]]:
    """A fault proxy in front of a harness world (every caller -> proxy -> the world's gate -> moto).

    In front, not behind: a reset or a dropped connection reaches the caller as it is (a proxy
    behind the gate would have it answered by the gate as a 502). Yields ``(world, proxy)``,
    the world's backend (operator, pump, instances) re-opened on the proxy's endpoint.
    """
    from control.local_backend import LocalBackend
    from control.localdir import read_json, write_json

    with FaultProxy(world.gate.url) as proxy:
        record_ = read_json(world.local_dir.aws_file) or {}
        write_json(world.local_dir.aws_file, {**record_, "endpoint_url": proxy.url})
        try:
            yield dataclasses.replace(world, backend=LocalBackend.open(world.local_dir, env=world.env)), proxy
        finally:
            write_json(world.local_dir.aws_file, record_)
