"""IMDSv2 is required: by the launch template and every RunInstances, and by the local instance's fake IMDS.

AWS's rules (EC2 User Guide, "How Instance Metadata Service Version 2 works"): a session
token comes from ``PUT /latest/api/token`` with a TTL of 1 s to 6 h and must accompany every
request; after the TTL "you must create a new session token"; with ``HttpTokens=required``
a request without a valid token gets 401. A token PUT that carries ``X-Forwarded-For`` (it
went through a proxy) gets no token (AWS Security Blog, "Add defense in depth against open
firewalls, reverse proxies, and SSRF vulnerabilities with enhancements to the EC2 Instance
Metadata Service", 2019). The PUT response's hop limit stays at 1: only the instance's own
processes, no container behind another hop, can fetch a token.
"""

from __future__ import annotations

import json

import pytest
import requests

from common.placement import LaunchRequest
from infra.spec import launch_template as spec_template
from infra.spec.pulumi_inputs import to_pulumi_launch_template_args
from localaws.imds import FakeIMDS, RoleMetadata
from schemas import SchemaValidationError

REQUIRED = {"HttpEndpoint": "enabled", "HttpTokens": "required", "HttpPutResponseHopLimit": 1}
TOKEN = "X-aws-ec2-metadata-token"
TTL = "X-aws-ec2-metadata-token-ttl-seconds"


def _template() -> dict:
    return spec_template.launch_template_data(
        image_id="ami-0c0ffee0c0ffee0c0",
        instance_type="g5.xlarge",
        instance_profile_arn="arn:aws:iam::123456789012:instance-profile/chronos-dev-instance",
        security_group_id="sg-0abc",
        resource_tags={"Project": "Chronos-Training", "Environment": "dev"},
    )


# -- the launch template and RunInstances ------------------------------------------------------------
@pytest.mark.row("imdsv2-required-at-launch")
def test_the_launch_template_requires_tokens_with_hop_limit_one() -> None:
    assert _template()["MetadataOptions"] == REQUIRED
    assert spec_template.IMDS_HOP_LIMIT == 1


@pytest.mark.row("imdsv2-required-at-launch")
def test_pulumi_gets_the_same_metadata_options() -> None:
    options = to_pulumi_launch_template_args(_template())["metadata_options"]
    assert options["http_tokens"] == "required"
    assert options["http_put_response_hop_limit"] == 1
    assert options["http_endpoint"] == "enabled"


def _launch_request(**base_extra) -> dict:
    base = {
        "MinCount": 1,
        "MaxCount": 1,
        "LaunchTemplate": {"LaunchTemplateId": "lt-0abc", "Version": "$Default"},
        "UserData": "IyEvYmluL2Jhc2gK",
        "NetworkInterfaces": [{"DeviceIndex": 0, "Groups": ["sg-0abc"]}],
        "BlockDeviceMappings": [],
        "TagSpecifications": [],
        **base_extra,
    }
    return {
        "schema_version": 1,
        "run_id": "20261125-140502",
        "env": "dev",
        "region": "us-east-1",
        "bucket": "chronos-training-dev-123456789012-us-east-1",
        "local": True,
        "market": "on-demand",
        "base": base,
        "placements": [
            {
                "market": "on-demand",
                "instance_type": "g5.xlarge",
                "availability_zone": "us-east-1a",
                "subnet_id": "subnet-0a",
                "price_per_hour": 1.006,
                "price_source": "on-demand table",
            }
        ],
    }


@pytest.mark.row("imdsv2-required-at-launch")
def test_a_relaunch_cannot_override_the_templates_metadata_options() -> None:
    """The recovery function relaunches from launch-request.json, which the instance role may write:
    a stored request that turns tokens off is refused before any RunInstances."""
    doc = _launch_request()
    try:
        stored = LaunchRequest.from_dict(doc)
    except SchemaValidationError as exc:  # the fixture itself must be valid, or the test proves nothing
        pytest.fail(f"the valid launch request was refused: {exc}")
    for _, request in stored.attempts():  # what the relaunch sends: the template's options govern
        assert "MetadataOptions" not in request and request["LaunchTemplate"]["LaunchTemplateId"] == "lt-0abc"
    for options in ({"HttpTokens": "optional"}, {"HttpPutResponseHopLimit": 64}, {"HttpEndpoint": "enabled"}):
        with pytest.raises(SchemaValidationError):
            LaunchRequest.from_dict(_launch_request(MetadataOptions=options))


# -- the fake IMDS -------------------------------------------------------------------------------------
class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def imds(clock: Clock):
    creds = {
        "Code": "Success",
        "AccessKeyId": "ASIAEXAMPLE000000001",
        "SecretAccessKey": "s" * 40,
        "Token": "t" * 80,
        "Expiration": "2099-01-01T00:00:00Z",
    }
    role = RoleMetadata(name="chronos-dev-instance", credentials=lambda: creds)
    with FakeIMDS(instance_id="i-0aaaaaaaaaaaaaaaa", role=role, clock=clock) as server:
        yield server


PATHS = (
    "/latest/meta-data/instance-id",
    "/latest/meta-data/iam/security-credentials/",
    "/latest/meta-data/iam/security-credentials/chronos-dev-instance",
    "/latest/meta-data/spot/instance-action",
)


def _token(imds: FakeIMDS, ttl: str = "60", **headers: str) -> requests.Response:
    return requests.put(imds.url + "/latest/api/token", headers={TTL: ttl, **headers}, timeout=10)


@pytest.mark.row("imds-refuses-tokenless-requests")
@pytest.mark.parametrize("path", PATHS)
def test_a_request_without_a_token_is_refused_401(imds: FakeIMDS, path: str) -> None:
    assert requests.get(imds.url + path, timeout=10).status_code == 401
    assert requests.get(imds.url + path, headers={TOKEN: "made-up"}, timeout=10).status_code == 401
    token = _token(imds).text
    assert requests.get(imds.url + path, headers={TOKEN: token}, timeout=10).status_code in (200, 404)
    assert imds.requests_without_token == 2


@pytest.mark.row("imds-refuses-tokenless-requests")
def test_an_expired_token_is_refused_401(imds: FakeIMDS, clock: Clock) -> None:
    token = _token(imds, ttl="5").text
    url = imds.url + "/latest/meta-data/iam/security-credentials/chronos-dev-instance"
    clock.now += 4.0
    assert requests.get(url, headers={TOKEN: token}, timeout=10).status_code == 200
    clock.now += 1.5
    assert requests.get(url, headers={TOKEN: token}, timeout=10).status_code == 401
    fresh = _token(imds, ttl="5").text
    assert json.loads(requests.get(url, headers={TOKEN: fresh}, timeout=10).text)["AccessKeyId"]


@pytest.mark.row("imds-refuses-tokenless-requests")
def test_a_token_put_through_a_proxy_gets_no_token(imds: FakeIMDS) -> None:
    refused = _token(imds, **{"X-Forwarded-For": "203.0.113.7"})
    assert refused.status_code == 403 and refused.text != ""
    assert len(imds.tokens) == 0
    assert _token(imds).status_code == 200  # the same PUT from the instance itself


@pytest.mark.row("imds-refuses-tokenless-requests")
@pytest.mark.parametrize("ttl", ["", "0", "21601", "-1", "abc"])
def test_a_bad_ttl_gets_400(imds: FakeIMDS, ttl: str) -> None:
    headers = {TTL: ttl} if ttl else {}
    assert requests.put(imds.url + "/latest/api/token", headers=headers, timeout=10).status_code == 400


@pytest.mark.row("imds-refuses-tokenless-requests")
def test_a_token_is_not_fetched_with_get(imds: FakeIMDS) -> None:
    """IMDSv2's token needs a PUT (a GET-only SSRF cannot get one)."""
    assert requests.get(imds.url + "/latest/api/token", headers={TTL: "60"}, timeout=10).status_code == 401
