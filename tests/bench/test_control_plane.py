"""The control-plane section's arithmetic: counting an audit log, S3 request prices, the tables."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from bench import control_plane as cp
from localaws.audit import read_log

OPERATOR_KEY, INSTANCE_KEY = "AKIAOPERATOR", "ASIAINSTANCE"
RECOVERY_KEY, ADMIN_KEY = "ASIARECOVERY", "AKIAADMIN"
ACCOUNT = "arn:aws:iam::123456789012"
IDENTITIES = {
    "account": "123456789012",
    "admin": {"arn": f"{ACCOUNT}:user/chronos-local-admin", "access_key_id": ADMIN_KEY},
    "envs": {
        "dev": {
            "operator": {"arn": f"{ACCOUNT}:user/chronos-dev-operator", "access_key_id": OPERATOR_KEY},
            "instance_role_arn": f"{ACCOUNT}:role/chronos-dev-instance",
            "recovery_role_arn": f"{ACCOUNT}:role/chronos-dev-recovery",
        }
    },
}  # fmt: skip


def _call(service: str, operation: str, key: str, **params: object) -> dict:
    return {"kind": "call", "ts": "2026-12-01T14:58:46.747Z", "pid": 1, "service": service,
            "operation": operation, "region": "us-east-1", "access_key_id": key, "params": params,
            "error": None}  # fmt: skip


def _credentials(key: str, role: str) -> dict:
    return {"kind": "credentials", "ts": "2026-12-01T14:58:46.747Z", "access_key_id": key,
            "role_arn": f"{ACCOUNT}:role/chronos-dev-{role}", "role_id": "AROA1",
            "session_name": "i-0123"}  # fmt: skip


@pytest.fixture
def audit_log(tmp_path: Path) -> Path:
    """A hand-made audit log, as local mode writes it: both sides' calls and two assumed roles."""
    lines = [
        _credentials(RECOVERY_KEY, "recovery"),
        _credentials(INSTANCE_KEY, "instance"),
        _call("sts", "GetCallerIdentity", OPERATOR_KEY),
        _call("ec2", "RunInstances", OPERATOR_KEY),
        *[_call("s3", "GetObject", OPERATOR_KEY, Key="dev/system-state.json")] * 3,
        *[_call("ec2", "DescribeInstances", OPERATOR_KEY)] * 3,
        *[_call("s3", "PutObject", INSTANCE_KEY)] * 4,
        _call("s3", "ListObjectsV2", INSTANCE_KEY),
        _call("s3", "DeleteObject", INSTANCE_KEY),
        *[_call("ec2", "DescribeInstances", RECOVERY_KEY)] * 5,
        _call("s3", "GetObject", RECOVERY_KEY),
        _call("iam", "ListUsers", ADMIN_KEY),  # the audit itself
        _call("sts", "AssumeRole", "AKIAHOST"),  # the instance host user
    ]
    path = tmp_path / "audit" / "run.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(line) + "\n" for line in lines) + '{"kind": "call", "tor')
    return path


def test_a_local_runs_audit_log_is_counted_by_kind_and_principal(audit_log):
    records = read_log(audit_log)  # the torn last line is skipped, as after a crash
    calls = cp.count_calls(records, cp.principals_of(records, IDENTITIES, "dev"))
    assert calls[cp.OPERATOR] == Counter(
        {"s3:GetObject": 3, "ec2:DescribeInstances": 3, "sts:GetCallerIdentity": 1, "ec2:RunInstances": 1}
    )
    assert calls[cp.INSTANCE] == Counter({"s3:PutObject": 4, "s3:ListObjectsV2": 1, "s3:DeleteObject": 1})
    assert calls[cp.RECOVERY] == Counter({"ec2:DescribeInstances": 5, "s3:GetObject": 1})
    assert sum(calls[cp.STAND_IN].values()) == 2  # the admin's and the host user's: not on AWS


def test_keys_of_another_env_or_an_unknown_role_are_stand_ins(audit_log):
    records = read_log(audit_log)
    assert cp.principals_of(records, IDENTITIES, "prod") == {}
    other = [_credentials("ASIAOTHER", "debug")]
    assert cp.principals_of(other, IDENTITIES, "dev") == {OPERATOR_KEY: cp.OPERATOR}


def test_s3_operations_fall_in_their_published_price_classes():
    for kind in ("s3:PutObject", "s3:CopyObject", "s3:ListObjectsV2", "s3:CreateMultipartUpload",
                 "s3:UploadPart", "s3:CompleteMultipartUpload"):  # fmt: skip
        assert cp.price_class(kind) == cp.PUT_CLASS, kind
    for kind in ("s3:GetObject", "s3:HeadObject", "s3:GetBucketEncryption"):
        assert cp.price_class(kind) == cp.GET_CLASS, kind
    assert cp.price_class("s3:DeleteObject") == cp.price_class("s3:AbortMultipartUpload") == cp.FREE
    assert cp.price_class("ec2:DescribeInstances") == cp.price_class("sts:AssumeRole") == cp.UNBILLED


def test_request_cost_at_s3_standard_prices():
    counts = {"s3:PutObject": 1000, "s3:GetObject": 10_000, "s3:DeleteObject": 500, "ec2:RunInstances": 9}
    assert cp.request_cost(counts) == pytest.approx(0.005 + 0.004)  # PUTs + GETs; DELETE and EC2 free
    assert cp.request_cost({}) == 0


def test_the_requests_table_splits_the_monitor_out_of_the_operators_calls(audit_log):
    records = read_log(audit_log)
    calls = cp.count_calls(records, cp.principals_of(records, IDENTITIES, "dev"))
    monitor = Counter({"s3:GetObject": 3, "ec2:DescribeInstances": 3})
    rows = {row[0]: row[1:] for row in cp.requests_table("one run", calls, monitor).rows}
    assert rows["`ec2:DescribeInstances`"] == [cp.UNBILLED, 3, 3, 0, 5, 8]
    assert rows["`s3:PutObject`"] == [cp.PUT_CLASS, 0, 0, 4, 0, 4]
    assert "`iam:ListUsers`" not in rows and "`sts:AssumeRole`" not in rows  # stand-ins are left out


def test_the_cost_table_prices_each_principal_and_the_whole_run(audit_log):
    records = read_log(audit_log)
    calls = cp.count_calls(records, cp.principals_of(records, IDENTITIES, "dev"))
    monitor = Counter({"s3:GetObject": 3, "ec2:DescribeInstances": 3})
    table = cp.cost_table("one run", calls, monitor)
    rows = {row[0]: row[1:] for row in table.rows}
    assert table.columns[1:4] == [cp.PUT_CLASS, cp.GET_CLASS, "EC2 requests"]
    assert rows["operator (laptop) without monitor"][:3] == [0, 0, 1]
    assert rows["`invoke monitor --follow`"][:3] == [0, 3, 3]
    assert rows["instance role"][:4] == [5, 0, 0, pytest.approx(5 * 0.005 / 1000)]
    total = rows["one run, all principals"]
    assert total[:3] == [5, 4, 9]
    assert total[3] == pytest.approx(5 * 0.005 / 1000 + 4 * 0.0004 / 1000)
    assert total[4] == pytest.approx(total[3] * 1000)


def _response(kind: str, status: int, body: int, received: int, at: float = 0.0) -> cp.Response:
    return cp.Response(kind=kind, status=status, body_bytes=body, received=received, at=at)


def test_monitor_traffic_per_minute_counts_each_poll_and_its_interval():
    polls = [_response("s3:GetObject", 200, 4000, 4500)] + [_response("s3:GetObject", 304, 0, 300)] * 9
    polls += [_response("ec2:DescribeInstances", 200, 1000, 1224)] * 10
    # 10 polls over 18 s of watching: with the interval after the last one, 20 s of steady polling
    watched = cp.Watched(label="live", polls=10, seconds=20.0 - cp.MONITOR_INTERVAL_S, responses=polls)
    row = cp.monitor_row(watched)
    assert row[:2] == ["live", 10]
    assert row[2:6] == pytest.approx([30.0, 3.0, 27.0, 30.0])  # polls, 200s, 304s, EC2 calls per minute
    assert row[6] == pytest.approx((4500 + 9 * 300) * 3 / 1024)
    assert row[7] == pytest.approx(10 * 1224 * 3 / 1024)
    assert row[8] == pytest.approx(10 * 3 * 60 * 0.0004 / 1000)  # S3 USD per hour: 1,800 GETs
    assert cp.monitor_row(cp.Watched(label="none", polls=0, seconds=0.0))[2:] == [0] * 7


def test_header_bytes_are_the_status_line_and_each_header_line():
    assert cp.header_bytes(304, {}) == len("HTTP/1.1 304 X\r\n\r\n")
    assert cp.header_bytes(200, {"ETag": '"abc"'}) == len('HTTP/1.1 200 X\r\nETag: "abc"\r\n\r\n')


class _Http:
    def __init__(self, status: int, headers: dict, content: bytes = b"") -> None:
        self.status_code, self.headers, self.content = status, headers, content


class _Model:
    def __init__(self, name: str, method: str = "GET", streaming: bool = False) -> None:
        self.name, self.http, self.has_streaming_output = name, {"method": method}, streaming


class _Events:
    def __init__(self) -> None:
        self.handlers: dict[str, object] = {}

    def register(self, event: str, handler: object, unique_id: str) -> None:
        self.handlers[event] = handler


class _Client:
    def __init__(self, service: str) -> None:
        self.events = _Events()
        model = type("ServiceModel", (), {"service_name": service})()
        self.meta = type("Meta", (), {"events": self.events, "service_model": model})()


def test_traffic_records_each_response_size_as_received():
    client, traffic = _Client("s3"), cp.Traffic(clock=lambda: 7.0)
    traffic.attach(client)
    after = client.events.handlers["after-call"]
    after(http_response=_Http(200, {"Content-Length": "4734"}), model=_Model("GetObject", streaming=True))
    after(http_response=_Http(304, {"Content-Length": "4734"}), model=_Model("GetObject", streaming=True))
    after(http_response=_Http(200, {"Content-Length": "9"}), model=_Model("HeadObject", method="HEAD"))
    after(http_response=_Http(200, {}, b"<xml/>"), model=_Model("ListObjectsV2"))
    got = [(r.kind, r.status, r.body_bytes) for r in traffic.responses]
    assert got == [("s3:GetObject", 200, 4734), ("s3:GetObject", 304, 0), ("s3:HeadObject", 200, 0),
                   ("s3:ListObjectsV2", 200, 6)]  # fmt: skip
    assert traffic.responses[0].received == 4734 + cp.header_bytes(200, {"Content-Length": "4734"})
    assert traffic.between(7.0, 7.0) == traffic.responses and traffic.between(8.0, 9.0) == []
