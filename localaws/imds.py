"""A small fake IMDSv2 server for the local "instance" and the trainer's tests.

What it serves (like EC2's instance metadata service, v2 only):

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` -> a token
- every ``GET /latest/...`` needs ``X-aws-ec2-metadata-token``; 401 without a valid one
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
``POST /_fake/rebalance`` (``DELETE`` clears). It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import secrets
import threading
from collections.abc import Callable, Mapping
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from common.timeutil import iso, parse_iso, utc_now

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
CREDENTIALS_PATH = "iam/security-credentials/"
# botocore refreshes instance credentials 10-15 min before they expire; renew earlier than that.
REFRESH_MARGIN_S = 20 * 60
CredentialsProvider = Callable[[], Mapping[str, Any]]


class FakeIMDS:
    """The server and its switchable notices.

    Args:
        instance_id, instance_type, availability_zone, lifecycle, image_id: what it reports.
        role_name: the instance profile's role (``None``: no ``iam/`` metadata, as
            for an instance launched without a profile).
        credentials: returns the role's credentials in the IMDS shape (``AccessKeyId``,
            ``SecretAccessKey``, ``Token``, ``Expiration`` ...); called on first use and
            again when less than ``refresh_margin_s`` of them is left.
        instance_profile_arn, instance_profile_id: what ``iam/info`` reports.
        port: 0 picks a free one.
    """

    def __init__(
        self,
        *,
        instance_id: str,
        instance_type: str = "g5.xlarge",
        availability_zone: str = "us-east-1a",
        lifecycle: str = "spot",
        port: int = 0,
        role_name: str | None = None,
        credentials: CredentialsProvider | None = None,
        instance_profile_arn: str = "",
        instance_profile_id: str = "AIPAEXAMPLELOCAL0001",
        refresh_margin_s: float = REFRESH_MARGIN_S,
        image_id: str = "ami-0123456789abcdef0",
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
        self.tokens: set[str] = set()
        self.requests_without_token = 0
        self.role_name = role_name
        self.credentials_provider = credentials
        self.instance_profile_arn = instance_profile_arn
        self.instance_profile_id = instance_profile_id
        self.refresh_margin_s = refresh_margin_s
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
        if self.credentials_provider is None or self.role_name is None:
            return None
        with self._credentials_lock:
            current = self._credentials
            if current is None or _seconds_left(current) < self.refresh_margin_s:
                current = dict(self.credentials_provider())
                self._credentials = current
            self.credentials_served += 1
            return current

    def iam_info(self) -> dict[str, str] | None:
        """``meta-data/iam/info``: the instance profile."""
        if self.role_name is None:
            return None
        return {
            "Code": "Success",
            "LastUpdated": iso(utc_now()),
            "InstanceProfileArn": self.instance_profile_arn,
            "InstanceProfileId": self.instance_profile_id,
        }

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

        def _send(self, code: int, body: str = "", ctype: str = "text/plain") -> None:
            data = body.encode()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_PUT(self) -> None:
            if self.path != "/latest/api/token":
                return self._send(404, "not found")
            ttl = self.headers.get(TTL_HEADER)
            if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
                return self._send(400, "missing or invalid " + TTL_HEADER)
            token = secrets.token_urlsafe(24)
            imds.tokens.add(token)
            return self._send(200, token)

        def do_GET(self) -> None:
            if self.headers.get(TOKEN_HEADER) not in imds.tokens:
                imds.requests_without_token += 1
                return self._send(401, "Unauthorized")
            prefix = "/latest/meta-data/"
            if not self.path.startswith(prefix):
                return self._send(404, "not found")
            item = self.path[len(prefix) :]
            with imds._lock:
                if item == "spot/instance-action":
                    return self._json(imds.spot_action)
                if item == "events/recommendations/rebalance":
                    return self._json(imds.rebalance)
                value = imds.values.get(item)
            if item == "iam" or item.startswith("iam/"):
                return self._iam(item)
            return self._send(200, value) if value is not None else self._send(404, "not found")

        def _iam(self, item: str) -> None:
            if imds.role_name is None:
                return self._send(404, "not found")
            if item in ("iam/", "iam"):
                return self._send(200, "info\nsecurity-credentials/")
            if item == "iam/info":
                return self._json(imds.iam_info())
            if item in (CREDENTIALS_PATH, CREDENTIALS_PATH.rstrip("/")):
                return self._send(200, imds.role_name)
            if item == CREDENTIALS_PATH + imds.role_name:
                try:
                    creds = imds.credentials()
                except Exception as exc:  # what EC2 answers when it cannot get the role's keys
                    body = {
                        "Code": "AssumeRoleUnauthorizedAccess",
                        "Message": str(exc),
                        "LastUpdated": iso(utc_now()),
                    }
                    return self._send(200, json.dumps(body), "application/json")
                return self._json(creds)
            return self._send(404, "not found")

        def _json(self, value: Mapping[str, Any] | None) -> None:
            if value is None:
                return self._send(404, "not found")
            return self._send(200, json.dumps(value), "application/json")

        def do_POST(self) -> None:
            if self.path == "/_fake/spot-notice":
                imds.set_spot_notice()
            elif self.path == "/_fake/rebalance":
                imds.set_rebalance()
            else:
                return self._send(404, "not found")
            return self._send(200, "ok")

        def do_DELETE(self) -> None:
            if self.path not in ("/_fake/spot-notice", "/_fake/rebalance"):
                return self._send(404, "not found")
            imds.clear()
            return self._send(200, "ok")

    return Handler
