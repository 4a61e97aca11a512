"""Error records and retry policies of the instance side.

Every failure becomes an error record (schema ``error-record``) kept in an
:class:`ErrorLog`, which training.json carries and whose newest record becomes
``last_error`` in the state file.

Who retries: the trainer's boto3 clients are built with botocore's own retries
switched off (:data:`CLIENT_CONFIG`, ``total_max_attempts=1``) and every S3/EC2
call goes through :meth:`Retrier.call`. So the retry policy is ours alone, the
backoff is the documented 1, 2, 4 ... 32 s, and the ``retry_count`` recorded is
every attempt that was made. Tests inject faults with a botocore
``before-call.s3.*`` handler and pass a fake ``sleep``.

Policies live in :data:`RETRY_POLICIES`, keyed by the name a config uses.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from botocore.config import Config

from common.aws import error_code, http_status, is_access_denied, is_retriable
from common.errors import ConfigError
from common.status import ErrorClass, Severity
from common.timeutil import Clock, iso, utc_now
from schemas import validate

log = logging.getLogger(__name__)

T = TypeVar("T")
Record = dict[str, Any]

CLIENT_CONFIG = Config(retries={"mode": "standard", "total_max_attempts": 1}, max_pool_connections=32)
"""botocore settings for the trainer's clients: no hidden retries (see module docstring)."""


class TrainerError(Exception):
    """A failure that ends the run, with what its error record needs.

    Attributes:
        component: the phase or module that failed (``data_sync``, ``preflight`` ...).
        error_class: terminal unless said otherwise.
        retry_count: attempts retried before giving up.
        max_retries: the policy's cap.
        details: extra facts for the record (key, action, exit code ...).
    """

    def __init__(
        self,
        message: str,
        *,
        component: str,
        error_class: ErrorClass = ErrorClass.TERMINAL,
        retry_count: int = 0,
        max_retries: int = 0,
        details: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(message)
        self.message, self.component, self.error_class = message, component, error_class
        self.retry_count, self.max_retries = retry_count, max_retries
        self.details = details or {}


class TerminalError(TrainerError):
    """Not worth retrying: access denied, invalid config or data, no GPU."""


class RetriesExhaustedError(TrainerError):
    """A retriable failure that outlived every attempt of its policy."""


def error_record(
    *,
    component: str,
    message: str,
    error_class: ErrorClass,
    severity: Severity | None = None,
    retry_count: int = 0,
    max_retries: int = 0,
    details: dict[str, Any] | None = None,
    clock: Clock = utc_now,
) -> Record:
    """A schema-valid error record.

    ``severity`` defaults by class: terminal -> critical, retriable/cleanup -> warning.
    """
    if severity is None:
        severity = Severity.CRITICAL if error_class is ErrorClass.TERMINAL else Severity.WARNING
    record: Record = {
        "timestamp": iso(clock()),
        "error_class": error_class.value,
        "severity": severity.value,
        "component": component,
        "message": message[:2000] or "unknown error",
        "retry_count": retry_count,
        "max_retries": max_retries,
    }
    if details:
        record["details"] = details
    return validate("error-record", record)


def record_for(exc: BaseException, *, component: str, clock: Clock = utc_now) -> Record:
    """The terminal record of an exception that ended a phase."""
    if isinstance(exc, TrainerError):
        return error_record(
            component=exc.component,
            message=exc.message,
            error_class=exc.error_class,
            severity=Severity.CRITICAL,
            retry_count=exc.retry_count,
            max_retries=exc.max_retries,
            details=exc.details,
            clock=clock,
        )
    return error_record(
        component=component,
        message=f"{type(exc).__name__}: {exc}",
        error_class=ErrorClass.TERMINAL,
        clock=clock,
    )


class ErrorLog:
    """Thread-safe list of the run's error records.

    Args:
        on_record: called with each new record (e.g. to log it).
    """

    def __init__(self, on_record: Callable[[Record], None] | None = None) -> None:
        self._records: list[Record] = []
        self._lock = threading.Lock()
        self.on_record = on_record

    def add(self, record: Record) -> Record:
        with self._lock:
            self._records.append(record)
        log.log(
            logging.ERROR if record["severity"] == "critical" else logging.WARNING,
            "error record [%s/%s] %s: %s (retry %d/%d)",
            record["error_class"],
            record["severity"],
            record["component"],
            record["message"],
            record["retry_count"],
            record["max_retries"],
        )
        if self.on_record is not None:
            self.on_record(record)
        return record

    def records(self) -> list[Record]:
        with self._lock:
            return list(self._records)

    def last(self) -> Record | None:
        with self._lock:
            return self._records[-1] if self._records else None


# -- retry policies -------------------------------------------------------------------------------


class RetryPolicy(Protocol):
    """How often and how long to wait before retrying."""

    name: str
    max_retries: int

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number ``retry`` (1-based)."""
        ...


@dataclass(frozen=True, kw_only=True)
class ExponentialBackoff:
    """1, 2, 4 ... ``cap`` seconds, at most ``max_retries`` retries (the default: 1..32 s)."""

    name: str = "exponential"
    base: float = 1.0
    cap: float = 32.0
    max_retries: int = 6

    def delay(self, retry: int) -> float:
        return float(min(self.cap, self.base * 2 ** (retry - 1)))


@dataclass(frozen=True, kw_only=True)
class NoRetry:
    """Fail on the first error (e.g. for best-effort uploads while terminating)."""

    name: str = "none"
    max_retries: int = 0

    def delay(self, retry: int) -> float:
        return 0.0


WHILE_FAILING = ExponentialBackoff(name="while-failing", max_retries=3, cap=4.0)
"""For the records a run writes while it is already failing (``_FAILED_UPLOAD``, training.json):
1, 2, 4 s. One transient error must not lose them, and a run that gave up on S3 waits at most
7 s more per record, not another 63 s."""

RETRY_POLICIES: dict[str, Callable[..., RetryPolicy]] = {
    "exponential": ExponentialBackoff,
    "none": NoRetry,
}


def retry_policy(name: str, **overrides: Any) -> RetryPolicy:
    """The policy registered under ``name``.

    Raises:
        ConfigError: for an unknown name, listing the valid ones.
    """
    try:
        factory = RETRY_POLICIES[name]
    except KeyError:
        raise ConfigError(
            f"unknown retry policy {name!r}; valid: {', '.join(sorted(RETRY_POLICIES))}"
        ) from None
    return factory(**overrides)


class Retrier:
    """Runs a call under a retry policy, recording each retried failure.

    Args:
        policy: when to give up and how long to wait.
        errors: where records go.
        sleep: injected so tests do not wait.
        clock: timestamps of the records.
    """

    def __init__(
        self,
        policy: RetryPolicy,
        *,
        errors: ErrorLog,
        sleep: Callable[[float], None] = time.sleep,
        clock: Clock = utc_now,
    ) -> None:
        self.policy, self.errors, self.sleep, self.clock = policy, errors, sleep, clock

    def with_policy(self, policy: RetryPolicy) -> Retrier:
        return Retrier(policy, errors=self.errors, sleep=self.sleep, clock=self.clock)

    def call(self, fn: Callable[[], T], *, component: str, action: str, resource: str) -> T:
        """``fn()``, retried while it fails with throttling, 5xx or timeouts.

        Args:
            component: phase recorded in error records.
            action: the IAM action ``fn`` needs (``s3:GetObject``), named when access is denied.
            resource: what ``fn`` touches (``s3://bucket/key``).

        Raises:
            TerminalError: access denied, or another non-retriable AWS error.
            RetriesExhaustedError: still failing after ``policy.max_retries`` retries.
        """
        cap = self.policy.max_retries
        for retry in range(cap + 1):
            try:
                return fn()
            except Exception as exc:
                if is_access_denied(exc):
                    raise TerminalError(
                        f"access denied: {action} on {resource} ({_describe(exc)}); the instance role "
                        f"needs {_grant(action, resource)}",
                        component=component,
                        retry_count=retry,
                        max_retries=cap,
                        details={"action": action, "resource": resource},
                    ) from exc
                if not is_retriable(exc):
                    raise
                message = f"{_describe(exc)} on {action} {resource}"
                if retry == cap:
                    raise RetriesExhaustedError(
                        f"{message}: gave up after {cap} retries",
                        component=component,
                        error_class=ErrorClass.RETRIABLE,
                        retry_count=retry,
                        max_retries=cap,
                        details={"action": action, "resource": resource},
                    ) from exc
                delay = self.policy.delay(retry + 1)
                self.errors.add(
                    error_record(
                        component=component,
                        message=f"{message}; retrying in {delay:g} s",
                        error_class=ErrorClass.RETRIABLE,
                        retry_count=retry + 1,
                        max_retries=cap,
                        details={"action": action, "resource": resource},
                        clock=self.clock,
                    )
                )
                self.sleep(delay)
        raise RuntimeError("unreachable: the last attempt returns or raises")


def _grant(action: str, resource: str) -> str:
    """What to grant for ``action`` on ``resource`` (``s3://bucket/key``), as an IAM statement says it.

    s3:ListBucket's resource type is the bucket, a prefix is granted with the ``s3:prefix``
    condition key; object actions take the object's ARN (Service Authorization Reference,
    "Actions, resources, and condition keys for Amazon S3").
    """
    if not resource.startswith("s3://"):
        return f"{action} on {resource}"
    bucket, _, key = resource[len("s3://") :].partition("/")
    if action == "s3:ListBucket":
        return f"{action} on arn:aws:s3:::{bucket} with s3:prefix {key or '(any)'}"
    return f"{action} on arn:aws:s3:::{bucket}/{key}"


def _describe(exc: BaseException) -> str:
    code, status = error_code(exc), http_status(exc)
    if code or status:
        return f"{code or 'HTTP'} (HTTP {status})" if status else code
    return f"{type(exc).__name__}: {exc}"
