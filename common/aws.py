"""boto3 sessions and clients with one retry policy, and AWS error helpers.

Nothing here creates a client at import time. Throttling and 5xx are retried
by botocore's ``standard`` retry mode (exponential backoff with jitter); the
endpoint comes from ``AWS_ENDPOINT_URL`` (local mode) or the SDK defaults.
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

RETRY_CONFIG = Config(
    retries={"mode": "standard", "max_attempts": 8},
    connect_timeout=10,
    read_timeout=60,
)

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "SlowDown", "RequestLimitExceeded", "TooManyRequestsException"}
)
# transient, not throttling: S3's 400 RequestTimeout ("Your socket connection to the server was not
# read from or written to within the timeout period") and the codes botocore's standard retry mode
# retries as transient (botocore.retries.standard.TransientRetryableChecker)
TRANSIENT_CODES = frozenset({"RequestTimeout", "RequestTimeoutException", "PriorRequestNotComplete"})
DENIED_CODES = frozenset(
    {"AccessDenied", "AccessDeniedException", "UnauthorizedOperation", "AllAccessDisabled"}
)


def client(
    session: boto3.Session, service: str, *, endpoint_url: str | None = None, config: Config | None = None
) -> Any:
    """A client for ``service`` with the project's retry policy."""
    cfg = RETRY_CONFIG.merge(config) if config else RETRY_CONFIG
    kwargs: dict[str, Any] = {"config": cfg}
    if endpoint_url:
        kwargs["endpoint_url"] = endpoint_url
    return session.client(service, **kwargs)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ``ClientError`` (``''`` for anything else)."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code", ""))
    return ""


def http_status(exc: BaseException) -> int:
    """The HTTP status of a ``ClientError`` (0 for anything else)."""
    if isinstance(exc, ClientError):
        return int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0))
    return 0


def is_access_denied(exc: BaseException) -> bool:
    return error_code(exc) in DENIED_CODES or http_status(exc) == 403


def is_not_found(exc: BaseException) -> bool:
    return error_code(exc) in {"NoSuchKey", "404", "NotFound", "NoSuchBucket"} or http_status(exc) == 404


def absent_behind_403(s3: Any, bucket: str, key: str, exc: BaseException) -> bool:
    """True when a 403 on GetObject only hides a missing key.

    S3 answers 403 instead of 404 for a missing key when the caller may not list the
    bucket (``s3:ListBucket``) at that key: "If you don't have the s3:ListBucket
    permission, Amazon S3 returns an HTTP status code 403" (GetObject, API reference).
    The instance and recovery roles list only their own prefixes, so a listing of
    exactly this key decides; when even that is refused the key counts as present.
    """
    if not is_access_denied(exc):
        return False
    from botocore.exceptions import BotoCoreError

    try:
        resp = s3.list_objects_v2(Bucket=bucket, Prefix=key, MaxKeys=1)
    except (ClientError, BotoCoreError):  # could not tell: treat the key as present
        return False
    return not any(o["Key"] == key for o in resp.get("Contents", []))


def is_retriable(exc: BaseException) -> bool:
    """Throttling, 5xx, timeouts and dropped connections: worth another try.

    The connection errors are what botocore's standard retry mode retries: its ``ConnectionError``
    (refused, connect timeout) and ``HTTPClientError`` (a connection reset or closed mid-answer,
    ``ConnectionClosedError``; a read timeout; a body cut short), plus ``IncompleteReadError``.
    """
    from botocore.exceptions import ConnectionError as BotoConnectionError
    from botocore.exceptions import HTTPClientError, IncompleteReadError

    if isinstance(exc, BotoConnectionError | HTTPClientError | IncompleteReadError):
        return True
    code = error_code(exc)
    return code in THROTTLING_CODES or code in TRANSIENT_CODES or http_status(exc) >= 500


def sdk_retried(exc: ClientError) -> bool:
    """True when the SDK sent the request more than once: an earlier attempt may have landed, its
    answer lost (``ResponseMetadata.RetryAttempts``)."""
    return int(exc.response.get("ResponseMetadata", {}).get("RetryAttempts", 0) or 0) > 0
