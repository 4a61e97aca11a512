"""AWS error helpers: a 403 that only hides a missing key is told apart from a real denial."""

from __future__ import annotations

from typing import Any

import pytest
from botocore.exceptions import ClientError

from common.aws import absent_behind_403

DENIED = ClientError(
    {"Error": {"Code": "AccessDenied", "Message": "no"}, "ResponseMetadata": {"HTTPStatusCode": 403}},
    "GetObject",
)


class _S3:
    def __init__(self, keys: list[str] | None) -> None:
        self.keys, self.asked = keys, []

    def list_objects_v2(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        if self.keys is None:
            raise DENIED
        return {"Contents": [{"Key": k} for k in self.keys if k.startswith(kwargs["Prefix"])]}


@pytest.mark.parametrize(
    ("keys", "absent"),
    [([], True), (["dev/logs/r/cleanup_status.json.bak"], True), (["dev/logs/r/cleanup_status.json"], False),
     (None, False)],
)  # fmt: skip
def test_a_403_is_a_missing_key_only_when_a_listing_of_that_key_says_so(keys, absent):
    s3 = _S3(keys)
    assert absent_behind_403(s3, "b", "dev/logs/r/cleanup_status.json", DENIED) is absent
    assert s3.asked == [{"Bucket": "b", "Prefix": "dev/logs/r/cleanup_status.json", "MaxKeys": 1}]


def test_other_errors_are_never_a_missing_key():
    throttled = ClientError(
        {"Error": {"Code": "SlowDown"}, "ResponseMetadata": {"HTTPStatusCode": 503}}, "Get"
    )
    s3 = _S3([])
    assert absent_behind_403(s3, "b", "k", throttled) is False and s3.asked == []
