"""A small fake IMDSv2 server for the local "instance" and the trainer's tests.

What it serves (like EC2's instance metadata service, v2 only):

- ``PUT /latest/api/token`` with ``X-aws-ec2-metadata-token-ttl-seconds`` -> a token
- every ``GET /latest/...`` needs ``X-aws-ec2-metadata-token``; 401 without a valid one
- ``meta-data/instance-id``, ``instance-type``, ``placement/availability-zone``,
  ``instance-life-cycle`` (spot | on-demand)
- ``meta-data/spot/instance-action``: 404 until a notice is set, then
  ``{"action": "terminate", "time": "..."}``
- ``meta-data/events/recommendations/rebalance``: 404 until set

Notices are set in-process (:meth:`FakeIMDS.set_spot_notice`) or, for a
server in another process, with ``POST /_fake/spot-notice`` and
``POST /_fake/rebalance`` (``DELETE`` clears). It binds 127.0.0.1 only.
"""

from __future__ import annotations

import json
import secrets
import threading
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from common.timeutil import iso, utc_now

TOKEN_HEADER = "X-aws-ec2-metadata-token"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


class FakeIMDS:
    """The server and its switchable notices.

    Args:
        instance_id, instance_type, availability_zone, lifecycle: what it reports.
        port: 0 picks a free one.
    """

    def __init__(self, *, instance_id: str, instance_type: str = "g5.xlarge",
                 availability_zone: str = "us-east-1a", lifecycle: str = "spot", port: int = 0) -> None:
        self.values = {
            "instance-id": instance_id,
            "instance-type": instance_type,
            "placement/availability-zone": availability_zone,
            "instance-life-cycle": lifecycle,
        }
        self.spot_action: dict[str, str] | None = None
        self.rebalance: dict[str, str] | None = None
        self.tokens: set[str] = set()
        self.requests_without_token = 0
        self._lock = threading.Lock()
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

    def __enter__(self) -> FakeIMDS:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


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
            item = self.path[len(prefix):]
            with imds._lock:
                if item == "spot/instance-action":
                    return self._json(imds.spot_action)
                if item == "events/recommendations/rebalance":
                    return self._json(imds.rebalance)
                value = imds.values.get(item)
            return self._send(200, value) if value is not None else self._send(404, "not found")

        def _json(self, value: dict[str, str] | None) -> None:
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
