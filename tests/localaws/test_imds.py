import json

import pytest
import requests

from localaws.imds import TOKEN_HEADER, TTL_HEADER, FakeIMDS, RoleMetadata


@pytest.fixture
def imds():
    with FakeIMDS(
        instance_id="i-0123456789abcdef0", instance_type="g4dn.xlarge", availability_zone="us-east-1b"
    ) as server:
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


# -- the instance role's credentials ------------------------------------------------------------

ROLE = "chronos-dev-instance"


def _creds(key: str, minutes: float) -> dict:
    from datetime import timedelta

    from common.timeutil import iso, utc_now

    return {
        "Code": "Success",
        "LastUpdated": iso(utc_now()),
        "Type": "AWS-HMAC",
        "AccessKeyId": key,
        "SecretAccessKey": "secret",
        "Token": "token",
        "Expiration": iso(utc_now() + timedelta(minutes=minutes)),
    }


def test_role_credentials_need_a_token_and_are_renewed_before_expiry():
    minted: list[str] = []

    def provider() -> dict:
        minted.append(f"ASIA{len(minted):016d}")
        return _creds(minted[-1], minutes=60 if len(minted) > 1 else 5)  # the first expires soon

    with FakeIMDS(
        instance_id="i-0123456789abcdef0",
        role=RoleMetadata(
            name=ROLE,
            credentials=provider,
            instance_profile_arn=f"arn:aws:iam::123456789012:instance-profile/{ROLE}",
        ),
    ) as server:
        assert _get(server, "iam/security-credentials/", "forged").status_code == 401
        t = _token(server)
        assert _get(server, "iam/security-credentials/", t).text == ROLE
        assert _get(server, "iam/security-credentials/other-role", t).status_code == 404
        info = _get(server, "iam/info", t).json()
        assert info["Code"] == "Success" and info["InstanceProfileArn"].endswith(f"instance-profile/{ROLE}")
        first = _get(server, f"iam/security-credentials/{ROLE}", t).json()
        assert first["AccessKeyId"] == "ASIA0000000000000000"
        assert {"AccessKeyId", "SecretAccessKey", "Token", "Expiration", "Code", "Type"} <= set(first)
        renewed = _get(server, f"iam/security-credentials/{ROLE}", t).json()
        assert renewed["AccessKeyId"] == "ASIA0000000000000001"  # 5 minutes left: renewed
        again = _get(server, f"iam/security-credentials/{ROLE}", t).json()
        assert again == renewed and len(minted) == 2  # 60 minutes left: kept


def test_no_role_no_iam_metadata(imds):
    t = _token(imds)
    assert _get(imds, "iam/security-credentials/", t).status_code == 404
    assert _get(imds, "iam/info", t).status_code == 404


def test_botocore_takes_the_role_credentials_from_it(local_aws, tmp_path):
    """With only AWS_EC2_METADATA_SERVICE_ENDPOINT set, boto3 signs as the assumed instance role."""
    import os
    import subprocess
    import sys

    iam, sts = local_aws.client("iam"), local_aws.client("sts")
    trust = {
        "Version": "2012-10-17",
        "Statement": [
            {"Effect": "Allow", "Action": "sts:AssumeRole", "Principal": {"Service": "ec2.amazonaws.com"}}
        ],
    }
    role_arn = iam.create_role(RoleName=ROLE, AssumeRolePolicyDocument=json.dumps(trust))["Role"]["Arn"]

    def provider() -> dict:
        c = sts.assume_role(RoleArn=role_arn, RoleSessionName="i-0123456789abcdef0")["Credentials"]
        return {
            **_creds(c["AccessKeyId"], 60),
            "SecretAccessKey": c["SecretAccessKey"],
            "Token": c["SessionToken"],
        }

    code = (
        "import boto3; s = boto3.Session(region_name='us-east-1'); c = s.get_credentials(); "
        "print(c.method); print(s.client('sts').get_caller_identity()['Arn'])"
    )
    with FakeIMDS(
        instance_id="i-0123456789abcdef0", role=RoleMetadata(name=ROLE, credentials=provider)
    ) as server:
        env = {
            "PATH": os.environ["PATH"],
            "HOME": str(tmp_path),
            "AWS_ENDPOINT_URL": local_aws.endpoint_url,
            "AWS_EC2_METADATA_SERVICE_ENDPOINT": server.url,
        }
        done = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
        )
    assert done.returncode == 0, done.stderr
    method, arn = done.stdout.split()
    assert method == "iam-role"
    assert arn == f"arn:aws:sts::123456789012:assumed-role/{ROLE}/i-0123456789abcdef0"
    assert server.credentials_served >= 1
