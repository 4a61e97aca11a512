"""Error records and the retry policies: what gets retried, how long it waits, what is recorded."""

from __future__ import annotations

import pytest
from botocore.exceptions import ClientError, ReadTimeoutError

from common.errors import ConfigError
from common.status import ErrorClass
from schemas import validate
from trainer.errors import (
    CLIENT_CONFIG,
    RETRY_POLICIES,
    ErrorLog,
    ExponentialBackoff,
    Retrier,
    RetriesExhaustedError,
    TerminalError,
    error_record,
    record_for,
    retry_policy,
)


def client_error(code: str, status: int, op: str = "GetObject") -> ClientError:
    return ClientError(
        {"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}}, op
    )


class Flaky:
    """Fails with the given errors, then returns ``"ok"``."""

    def __init__(self, *errors: Exception) -> None:
        self.errors, self.calls = list(errors), 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def retrier(max_retries: int = 6) -> tuple[Retrier, ErrorLog, list[float]]:
    sleeps: list[float] = []
    errors = ErrorLog()
    return (
        Retrier(ExponentialBackoff(max_retries=max_retries), errors=errors, sleep=sleeps.append),
        errors,
        sleeps,
    )


def test_backoff_doubles_from_one_second_up_to_32():
    policy = ExponentialBackoff()
    assert [policy.delay(n) for n in range(1, 9)] == [1, 2, 4, 8, 16, 32, 32, 32]
    assert policy.max_retries == 6


def test_policies_are_looked_up_by_name_and_unknown_names_list_the_valid_ones():
    assert retry_policy("exponential", max_retries=2).max_retries == 2
    assert retry_policy("none").max_retries == 0
    with pytest.raises(ConfigError, match="valid: exponential, none"):
        retry_policy("forever")
    assert set(RETRY_POLICIES) == {"exponential", "none"}


def test_botocore_retries_are_off_so_every_attempt_is_ours():
    assert CLIENT_CONFIG.retries["total_max_attempts"] == 1


def test_throttling_and_5xx_are_retried_with_backoff_and_each_retry_recorded():
    r, errors, sleeps = retrier()
    fn = Flaky(
        client_error("SlowDown", 503),
        client_error("InternalError", 500),
        ReadTimeoutError(endpoint_url="http://127.0.0.1"),
    )
    assert r.call(fn, component="data_sync", action="s3:GetObject", resource="s3://b/k") == "ok"
    assert fn.calls == 4 and sleeps == [1, 2, 4]
    records = errors.records()
    assert [rec["retry_count"] for rec in records] == [1, 2, 3]
    assert all(rec["error_class"] == "retriable" and rec["max_retries"] == 6 for rec in records)
    assert "SlowDown" in records[0]["message"] and "s3://b/k" in records[0]["message"]
    for rec in records:
        validate("error-record", rec)


def test_a_retriable_error_that_never_clears_gives_up_after_the_cap():
    r, errors, sleeps = retrier(max_retries=3)
    fn = Flaky(*[client_error("SlowDown", 503)] * 10)
    with pytest.raises(RetriesExhaustedError) as info:
        r.call(fn, component="results_sync", action="s3:PutObject", resource="s3://b/k")
    assert fn.calls == 4 and sleeps == [1, 2, 4]
    assert info.value.retry_count == 3 and info.value.max_retries == 3
    assert "gave up after 3 retries" in str(info.value)


def test_access_denied_is_terminal_at_once_and_names_key_and_permission():
    r, errors, sleeps = retrier()
    fn = Flaky(client_error("AccessDenied", 403))
    with pytest.raises(TerminalError) as info:
        r.call(
            fn,
            component="data_sync",
            action="s3:GetObject",
            resource="s3://bucket/cached-datasets/training-data/2024/01/part-000.parquet",
        )
    message = str(info.value)
    assert "s3:GetObject" in message and "cached-datasets/training-data/2024/01/part-000.parquet" in message
    assert fn.calls == 1 and sleeps == [] and errors.records() == []
    record = record_for(info.value, component="data_sync")
    assert record["error_class"] == "terminal" and record["severity"] == "critical"
    assert record["details"]["action"] == "s3:GetObject"
    assert (
        "needs s3:GetObject on arn:aws:s3:::bucket/cached-datasets/training-data/2024/01/part-000.parquet"
        in (message)
    )


def test_a_denied_listing_names_the_bucket_and_the_prefix_condition_not_a_key():
    # s3:ListBucket's resource is the bucket; a prefix is granted with the s3:prefix condition key
    # (Service Authorization Reference, "Actions, resources, and condition keys for Amazon S3")
    r, _errors, _sleeps = retrier()
    with pytest.raises(TerminalError) as info:
        r.call(
            Flaky(client_error("AccessDenied", 403, "ListObjectsV2")),
            component="data_sync",
            action="s3:ListBucket",
            resource="s3://bucket/cached-datasets/training-data/",
        )
    message = str(info.value)
    assert "on this key" not in message  # before: "the instance role needs s3:ListBucket on this key"
    assert (
        "needs s3:ListBucket on arn:aws:s3:::bucket with s3:prefix cached-datasets/training-data/" in message
    )
    assert message.startswith("access denied: s3:ListBucket on s3://bucket/cached-datasets/training-data/")
    assert "\n" not in message


def test_other_client_errors_are_not_retried():
    r, _, sleeps = retrier()
    fn = Flaky(client_error("InvalidArgument", 400))
    with pytest.raises(ClientError):
        r.call(fn, component="x", action="s3:PutObject", resource="s3://b/k")
    assert fn.calls == 1 and sleeps == []


def test_error_records_validate_and_default_their_severity():
    terminal = error_record(component="preflight", message="no GPU", error_class=ErrorClass.TERMINAL)
    cleanup = error_record(component="cleanup", message="x", error_class=ErrorClass.CLEANUP)
    assert terminal["severity"] == "critical" and cleanup["severity"] == "warning"
    generic = record_for(RuntimeError("boom"), component="training")
    assert generic["message"] == "RuntimeError: boom" and generic["component"] == "training"
    for rec in (terminal, cleanup, generic):
        validate("error-record", rec)


def test_error_log_calls_its_hook_for_every_record():
    seen: list[dict] = []
    errors = ErrorLog(on_record=seen.append)
    errors.add(error_record(component="a", message="m", error_class=ErrorClass.RETRIABLE))
    assert seen == errors.records() and errors.last() is seen[0]
