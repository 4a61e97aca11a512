"""A loopback gate in front of the local AWS: hold the one request that starts a phase.

:class:`Gate` is an HTTP/1.1 forwarding proxy on 127.0.0.1 (its own port, a thread per
connection) between every local-mode caller (the laptop's control plane, the instances,
the recovery pump) and moto. Requests go through byte for byte, headers included (SigV4
signs the ``Host`` header; moto checks the signature under IAM enforcement, so nothing is
rewritten). A :class:`Hold` matches one request (method, S3 key or prefix, query, a regex
on the body, who signed it) and holds it, either before it reaches moto (``after=False``:
the call has not happened) or after moto answered (``after=True``: the write is done, the
caller has not heard back). The harness injects its fault while the caller is held, then
releases it. A hold matches once. :meth:`Gate.log` is every request seen, in order.

The gate also reads STS ``AssumeRole`` answers on the way back and remembers which role session
each access key belongs to (:meth:`Gate.session_of`): an instance's credentials are a session
named after its instance id, so a hold can skip the requests of instances a fault already hit
(:func:`excluding_sessions`) while they finish their shutdown grace.

Other proxies (the S3 fault proxy) chain behind it: ``Gate(upstream=<their url>)``.
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

HOLD_LIMIT_S = 600.0  # a hold nobody releases lets go after this (a test that forgot it still ends)
_ACCESS_KEY = re.compile(r"Credential=([A-Z0-9]+)/")
_ASSUMED_KEY = re.compile(rb"<AccessKeyId>([A-Z0-9]+)</AccessKeyId>")
_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade"}


@dataclass(frozen=True)
class Request:
    """One request as the gate saw it."""

    method: str
    path: str  # without the query
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-case names
    body: bytes
    at: float  # time.monotonic() when it arrived

    @property
    def bucket(self) -> str:
        return unquote(self.path.lstrip("/").split("/", 1)[0])

    @property
    def key(self) -> str:
        """The S3 object key (path-style addressing: ``/<bucket>/<key>``), ``""`` for bucket calls."""
        parts = self.path.lstrip("/").split("/", 1)
        return unquote(parts[1]) if len(parts) > 1 else ""

    @property
    def prefix(self) -> str:
        """A listing's ``prefix`` parameter (``""``: none)."""
        return (self.query.get("prefix") or [""])[0]

    @property
    def access_key(self) -> str | None:
        """The SigV4 access key id that signed it (``None``: unsigned)."""
        found = _ACCESS_KEY.search(self.headers.get("authorization", ""))
        return found.group(1) if found else None

    @property
    def action(self) -> str | None:
        """A query-protocol action (EC2, STS, IAM: ``Action=RunInstances`` in the form body)."""
        if self.method == "POST" and b"Action=" in self.body[:200]:
            return (parse_qs(self.body.decode("utf-8", "replace")).get("Action") or [None])[0]
        return (self.query.get("Action") or [None])[0]


@dataclass
class Hold:
    """Hold the first request ``match`` accepts until :meth:`release` (or :data:`HOLD_LIMIT_S`).

    Args:
        name: for messages.
        match: the predicate on a :class:`Request`.
        after: forward first and hold the answer (the call took effect), else hold before.
    """

    name: str
    match: Callable[[Request], bool]
    after: bool = False
    hit: threading.Event = field(default_factory=threading.Event)
    released: threading.Event = field(default_factory=threading.Event)
    request: Request | None = None
    dropped: bool = False

    def wait(self, timeout: float) -> Request:
        """The held request, once one arrived.

        Raises:
            TimeoutError: none within ``timeout`` seconds.
        """
        if not self.hit.wait(timeout):
            raise TimeoutError(f"no request matched hold {self.name!r} within {timeout:.0f} s")
        return self.request  # type: ignore[return-value]

    def release(self) -> None:
        """Let the held request go on (a no-op once released or dropped)."""
        self.released.set()

    def drop(self) -> None:
        """Never forward a request held before moto saw it: its connection is closed unanswered
        (the caller died holding it, so the call never happened). After moto answered, the
        answer is not sent."""
        if not self.released.is_set():
            self.dropped = True
        self.released.set()


class Gate:
    """The forwarding proxy; :meth:`hold` arms a :class:`Hold`. Start with :meth:`start`."""

    def __init__(self, upstream: str) -> None:
        split = urlsplit(upstream)
        self.upstream_host, self.upstream_port = split.hostname or "127.0.0.1", int(split.port or 80)
        self._holds: list[Hold] = []
        self._lock = threading.Lock()
        self._log: list[Request] = []
        self._sessions: dict[str, str] = {}  # access key id -> RoleSessionName
        self._sessions_lock = threading.Lock()  # its own: holds' predicates read it under _lock
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the gate is not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> Gate:
        gate = self

        class Handler(_Forward):
            owner = gate

        self._server = _Quiet(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="harness-gate", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            holds, self._holds = list(self._holds), []
        for h in holds:
            h.release()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def hold(self, name: str, match: Callable[[Request], bool], *, after: bool = False) -> Hold:
        """Arm a hold (it matches one request, the first after this call)."""
        h = Hold(name=name, match=match, after=after)
        with self._lock:
            self._holds.append(h)
        return h

    def disarm(self, hold: Hold) -> None:
        with self._lock:
            if hold in self._holds:
                self._holds.remove(hold)
        hold.release()

    def log(self) -> list[Request]:
        """Every request seen so far, in arrival order."""
        with self._lock:
            return list(self._log)

    def session_of(self, access_key: str | None) -> str | None:
        """The role session (``RoleSessionName``) whose AssumeRole answer, seen here, issued
        ``access_key``; ``None``: not issued through the gate (or unsigned)."""
        with self._sessions_lock:
            return self._sessions.get(access_key or "")

    def _answered(self, req: Request, status: int, body: bytes) -> None:
        if status != 200 or req.action != "AssumeRole":
            return
        session = (parse_qs(req.body.decode("utf-8", "replace")).get("RoleSessionName") or [None])[0]
        found = _ASSUMED_KEY.search(body)
        if session and found:
            with self._sessions_lock:
                self._sessions[found.group(1).decode()] = session

    def _arrived(self, req: Request) -> Hold | None:
        with self._lock:
            self._log.append(req)
            for h in self._holds:
                if h.match(req):
                    self._holds.remove(h)
                    h.request = req
                    return h
        return None


def excluding_sessions(
    gate: Gate, match: Callable[[Request], bool], sessions: set[str]
) -> Callable[[Request], bool]:
    """``match``, but never a request signed with credentials of one of ``sessions`` (a key the
    gate did not see issued matches as before). ``sessions`` is read at each request, so the
    caller may add to it after arming."""
    return lambda r: match(r) and gate.session_of(r.access_key) not in sessions


class _Quiet(ThreadingHTTPServer):
    def handle_error(self, request: object, client_address: object) -> None:
        return  # a caller killed mid-request (the fault itself) resets its connection: not news


class _Forward(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    owner: Gate

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class's name
        return

    def _body(self) -> bytes:
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            out = bytearray()
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return bytes(out)
                out += self.rfile.read(size)
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        split = urlsplit(self.path)
        body = self._body()
        headers = [(k, v) for k, v in self.headers.items() if k.lower() not in _HOP]
        if body and not any(k.lower() == "content-length" for k, _ in headers):
            headers.append(("Content-Length", str(len(body))))
        req = Request(
            method=self.command,
            path=split.path,
            query=parse_qs(split.query, keep_blank_values=True),
            headers={k.lower(): v for k, v in headers},
            body=body,
            at=time.monotonic(),
        )
        hold = self.owner._arrived(req)
        if hold is not None and not hold.after:
            hold.hit.set()
            hold.released.wait(HOLD_LIMIT_S)
        if hold is not None and hold.dropped:
            self.close_connection = True
            return
        status, reason, out_headers, out_body = self._upstream(headers, body)
        self.owner._answered(req, status, out_body)
        if hold is not None and hold.after:
            hold.hit.set()
            hold.released.wait(HOLD_LIMIT_S)
            if hold.dropped:
                self.close_connection = True
                return
        with contextlib.suppress(OSError):
            self.send_response_only(status, reason)
            for k, v in out_headers:
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD" and out_body:
                self.wfile.write(out_body)
            self.wfile.flush()

    def _upstream(self, headers: list[tuple[str, str]], body: bytes) -> tuple[int, str, list, bytes]:
        conn = http.client.HTTPConnection(self.owner.upstream_host, self.owner.upstream_port, timeout=300)
        try:
            conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
            for k, v in headers:
                conn.putheader(k, v)
            conn.endheaders(body or None)
            resp = conn.getresponse()
            data = resp.read()
            out = [(k, v) for k, v in resp.getheaders() if k.lower() not in _HOP]
            if self.command != "HEAD" and not any(k.lower() == "content-length" for k, _ in out):
                out.append(("Content-Length", str(len(data))))
            return resp.status, resp.reason, out, data
        except OSError as exc:  # the local AWS went away: answer as a gateway would
            msg = f"gate: upstream unreachable: {exc}".encode()
            return 502, "Bad Gateway", [("Content-Length", str(len(msg)))], msg
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle
