"""UTC time helpers. Clocks are passed in so tests can drive time."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def iso(t: datetime) -> str:
    """``2026-11-25T14:05:02Z`` (seconds precision, UTC)."""
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_iso(s: str) -> datetime:
    """The aware datetime of an ISO/RFC 3339 timestamp written by :func:`iso`."""
    return datetime.fromisoformat(s.replace("Z", "+00:00")).astimezone(UTC)


def parse_duration_minutes(value: str | int) -> int:
    """Minutes in ``'90m'``, ``'12h'``, ``'1h30m'`` or an int of minutes.

    Raises:
        ValueError: for an empty or malformed duration.
    """
    if isinstance(value, int):
        return value
    import re

    m = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?", value.strip())
    if not value.strip() or not m:
        raise ValueError(f"duration {value!r} is not like '90m', '12h' or '1h30m'")
    hours, minutes = (int(g) if g else 0 for g in m.groups())
    return hours * 60 + minutes


def wait_until(condition: Callable[[], Any], timeout: float, what: str, every: float = 0.25) -> Any:
    """``condition()``'s first truthy value, polled every ``every`` seconds (the bench, the harness).

    Raises:
        TimeoutError: not within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(every)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
