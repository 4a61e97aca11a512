"""A small fake IMDSv2 server for the local "instance" and the trainer's tests.

What it serves (like EC2's instance metadata service, v2 only):

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` -> a token that
  lives that many seconds; a PUT carrying ``X-Forwarded-For`` (it came through a proxy) gets
  403 and no token (AWS Security Blog, "Add defense in depth against open firewalls, reverse
  proxies, and SSRF vulnerabilities with enhancements to the EC2 Instance Metadata Service")
- every ``GET /latest/...`` needs ``X-aws-ec2-metadata-token``; 401 without a valid one, and
  401 once its TTL has passed (EC2 User Guide, "How Instance Metadata Service Version 2
  works": after the duration "you must create a new session token")
- ``meta-data/instance-id``, ``instance-type``, ``placement/availability-zone``,
  ``instance-life-cycle`` (spot | on-demand)
- ``meta-data/spot/instance-action``: 404 until a notice is set, then
  ``{"action": "terminate", "time": "..."}``
- ``meta-data/events/recommendations/rebalance``: 404 until set
- ``meta-data/iam/info``, ``meta-data/iam/security-credentials/`` (the role name) and
  ``meta-data/iam/security-credentials/<role>`` (the role's temporary credentials, the
  JSON EC2 serves) when a role and a credentials provider are given: the provider is
  called again before the credentials expire, so SDKs that refresh (botocore's
  ``InstanceMetadataFetcher``) always get live ones

Notices are set in-process (:meth:`FakeIMDS.set_spot_notice`) or, for a
server in another process, with ``POST /_fake/spot-notice`` and
``POST /_fake/rebalance`` (``DELETE`` clears). It binds 127.0.0.1 only. The HTTP
handler only routes: :class:`FakeIMDS` answers each request as a :class:`Reply`.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common.timeutil import iso, parse_iso, utc_now

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
FORWARDED_HEADER = "X-Forwarded-For"
CREDENTIALS_PATH = "iam/security-credentials/"
# botocore refreshes instance credentials 10-15 min before they expire; renew earlier than that.
REFRESH_MARGIN_S = 20 * 60
CredentialsProvider = Callable[[], Mapping[str, Any]]


@dataclass(frozen=True, kw_only=True)
class RoleMetadata:
    """The instance profile's role, as ``iam/`` metadata serves it.

    Attributes:
        name: the role's name (``iam/security-credentials/`` lists it).
        credentials: returns the role's credentials in the IMDS shape (``AccessKeyId``,
            ``SecretAccessKey``, ``Token``, ``Expiration`` ...); called on first use and
            again when less than ``refresh_margin_s`` of them is left.
        instance_profile_arn, instance_profile_id: what ``iam/info`` reports.
        refresh_margin_s: renew the credentials when fewer seconds than this are left.
    """

    name: str
    credentials: CredentialsProvider
    instance_profile_arn: str = ""
    instance_profile_id: str = "AIPAEXAMPLELOCAL0001"
    refresh_margin_s: float = REFRESH_MARGIN_S


@dataclass(frozen=True)
class Reply:
    """One HTTP answer: status, body and content type."""

    code: int
    body: str = ""
    ctype: str = "text/plain"


NOT_FOUND = Reply(404, "not found")
OK = Reply(200, "ok")
_META_PREFIX = "/latest/meta-data/"
_FAKE_SPOT = "/_fake/spot-notice"
_FAKE_REBALANCE = "/_fake/rebalance"


def _json_reply(value: Mapping[str, Any] | None) -> Reply:
    return NOT_FOUND if value is None else Reply(200, json.dumps(value), "application/json")


class FakeIMDS:
    """The server and its switchable notices.

    Args:
        instance_id, instance_type, availability_zone, lifecycle, image_id: what it reports.
        role: the instance profile's role (``None``: no ``iam/`` metadata, as for an
            instance launched without a profile).
        port: 0 picks a free one.
        clock: monotonic seconds, for the tokens' TTL (tests drive it).
    """

    def __init__(
        self,
        *,
        instance_id: str,
        instance_type: str = "g5.xlarge",
        availability_zone: str = "us-east-1a",
        lifecycle: str = "spot",
        image_id: str = "ami-0123456789abcdef0",
        port: int = 0,
        role: RoleMetadata | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.values = {
            "instance-id": instance_id,
            "ami-id": image_id,
            "instance-type": instance_type,
            "placement/availability-zone": availability_zone,
            "instance-life-cycle": lifecycle,
        }
        self.spot_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.tokens: dict[str, float] = {}  # token -> when it expires (``clock`` seconds)
        self.clock = clock
        self.requests_without_token = 0
        self.role = role
        self.credentials_served = 0
        self._credentials: dict[str, Any] | None = None
        self._lock = threading.Lock()
        self._credentials_lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", port), _handler(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeIMDS:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="fake-imds", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def set_spot_notice(self, action: str = "terminate", in_seconds: int = 120) -> None:
        """Make ``spot/instance-action`` answer like a real two-minute notice."""
        with self._lock:
            self.spot_action = {"action": action, "time": iso(utc_now() + timedelta(seconds=in_seconds))}

    def set_rebalance(self) -> None:
        with self._lock:
            self.rebalance = {"noticeTime": iso(utc_now())}

    def clear(self) -> None:
        with self._lock:
            self.spot_action = None
            self.rebalance = None

    def credentials(self) -> dict[str, Any] | None:
        """The role's current credentials (renewed through the provider when close to expiry)."""
        if self.role is None:
            return None
        with self._credentials_lock:
            current = self._credentials
            if current is None or _seconds_left(current) < self.role.refresh_margin_s:
                current = dict(self.role.credentials())
                self._credentials = current
            self.credentials_served += 1
            return current

    def iam_info(self) -> dict[str, str] | None:
        """``meta-data/iam/info``: the instance profile."""
        if self.role is None:
            return None
        return {
            "Code": "Success",
            "LastUpdated": iso(utc_now()),
            "InstanceProfileArn": self.role.instance_profile_arn,
            "InstanceProfileId": self.role.instance_profile_id,
        }

    # ------------------------------------------------------------- requests

    def put(self, path: str, ttl: str | None, forwarded_for: str | None = None) -> Reply:
        """``PUT /latest/api/token``: a new session token for a TTL of 1 s to 6 h.

        A PUT that came through a proxy (``X-Forwarded-For``) gets no token.
        """
        if path != "/latest/api/token":
            return NOT_FOUND
        if forwarded_for is not None:
            return Reply(403, "Forbidden")
        if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            return Reply(400, "missing or invalid " + TTL_HEADER)
        token = secrets.token_urlsafe(24)
        with self._lock:
            self.tokens[token] = self.clock() + int(ttl)
        return Reply(200, token)

    def token_valid(self, token: str | None) -> bool:
        """Whether ``token`` was issued here and its TTL has not passed (expired ones are forgotten)."""
        with self._lock:
            expires = self.tokens.get(token or "")
            if expires is not None and self.clock() >= expires:
                del self.tokens[token or ""]
                expires = None
        return expires is not None

    def get(self, path: str, token: str | None) -> Reply:
        """``GET /latest/meta-data/<item>`` with a session token (401 without a live one)."""
        if not self.token_valid(token):
            self.requests_without_token += 1
            return Reply(401, "Unauthorized")
        if not path.startswith(_META_PREFIX):
            return NOT_FOUND
        item = path[len(_META_PREFIX) :]
        if item == "iam" or item.startswith("iam/"):
            return self._iam(item)
        with self._lock:
            notices = {
                "spot/instance-action": self.spot_action,
                "events/recommendations/rebalance": self.rebalance,
            }
            if item in notices:
                return _json_reply(notices[item])
            value = self.values.get(item)
        return Reply(200, value) if value is not None else NOT_FOUND

    def post(self, path: str) -> Reply:
        """``POST /_fake/spot-notice`` or ``/_fake/rebalance``: set that notice."""
        switch = {_FAKE_SPOT: self.set_spot_notice, _FAKE_REBALANCE: self.set_rebalance}.get(path)
        if switch is None:
            return NOT_FOUND
        switch()
        return OK

    def delete(self, path: str) -> Reply:
        """``DELETE`` of either switch clears both notices."""
        if path not in (_FAKE_SPOT, _FAKE_REBALANCE):
            return NOT_FOUND
        self.clear()
        return OK

    def _iam(self, item: str) -> Reply:
        role = self.role
        if role is None:
            return NOT_FOUND
        listing = Reply(200, "info\nsecurity-credentials/")
        answers: dict[str, Callable[[], Reply]] = {
            CREDENTIALS_PATH + role.name: self._credentials_reply,
            "iam": lambda: listing,
            "iam/": lambda: listing,
            "iam/info": lambda: _json_reply(self.iam_info()),
            CREDENTIALS_PATH: lambda: Reply(200, role.name),
            CREDENTIALS_PATH.rstrip("/"): lambda: Reply(200, role.name),
        }
        answer = answers.get(item)
        return answer() if answer else NOT_FOUND

    def _credentials_reply(self) -> Reply:
        try:
            creds = self.credentials()
        except Exception as exc:  # noqa: BLE001 - any provider failure is EC2's "cannot get the role's keys"
            body = {
                "Code": "AssumeRoleUnauthorizedAccess",
                "Message": str(exc),
                "LastUpdated": iso(utc_now()),
            }
            return Reply(200, json.dumps(body), "application/json")
        return _json_reply(creds)

    def __enter__(self) -> FakeIMDS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _seconds_left(credentials: Mapping[str, Any]) -> float:
    try:
        return (parse_iso(str(credentials["Expiration"])) - utc_now()).total_seconds()
    except (KeyError, ValueError):
        return 0.0


def _handler(imds: FakeIMDS) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

        def _send(self, reply: Reply) -> None:
            data = reply.body.encode()
            self.send_response(reply.code)
            self.send_header("Content-Type", reply.ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            self._send(imds.put(self.path, self.headers.get(TTL_HEADER), self.headers.get(FORWARDED_HEADER)))

        def do_GET(self) -> None:
            self._send(imds.get(self.path, self.headers.get(TOKEN_HEADER)))

        def do_POST(self) -> None:
            self._send(imds.post(self.path))

        def do_DELETE(self) -> None:
            self._send(imds.delete(self.path))

    return Handler
