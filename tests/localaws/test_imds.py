import json

import pytest
import requests

from localaws.imds import TOKEN_HEADER, TTL_HEADER, FakeIMDS


@pytest.fixture
def imds():
    with FakeIMDS(instance_id="i-0123456789abcdef0", instance_type="g4dn.xlarge",
                  availability_zone="us-east-1b") as server:
        yield server


def _token(imds) -> str:
    r = requests.put(f"{imds.url}/latest/api/token", headers={TTL_HEADER: "60"}, timeout=5)
    assert r.status_code == 200
    return r.text


def _get(imds, item, token):
    return requests.get(f"{imds.url}/latest/meta-data/{item}", headers={TOKEN_HEADER: token}, timeout=5)


def test_serves_on_loopback_only(imds):
    assert imds.url.startswith("http://127.0.0.1:")


def test_v1_requests_without_token_get_401(imds):
    r = requests.get(f"{imds.url}/latest/meta-data/instance-id", timeout=5)
    assert r.status_code == 401
    assert _get(imds, "instance-id", "forged").status_code == 401
    assert imds.requests_without_token == 2


def test_token_needs_a_ttl(imds):
    assert requests.put(f"{imds.url}/latest/api/token", timeout=5).status_code == 400


def test_identity_with_token(imds):
    t = _token(imds)
    assert _get(imds, "instance-id", t).text == "i-0123456789abcdef0"
    assert _get(imds, "instance-type", t).text == "g4dn.xlarge"
    assert _get(imds, "placement/availability-zone", t).text == "us-east-1b"


def test_spot_notice_is_404_until_set_then_json(imds):
    t = _token(imds)
    assert _get(imds, "spot/instance-action", t).status_code == 404
    requests.post(f"{imds.url}/_fake/spot-notice", timeout=5)
    r = _get(imds, "spot/instance-action", t)
    assert r.status_code == 200 and json.loads(r.text)["action"] == "terminate"
    imds.clear()
    assert _get(imds, "spot/instance-action", t).status_code == 404


def test_rebalance_recommendation(imds):
    t = _token(imds)
    assert _get(imds, "events/recommendations/rebalance", t).status_code == 404
    imds.set_rebalance()
    assert "noticeTime" in _get(imds, "events/recommendations/rebalance", t).json()
