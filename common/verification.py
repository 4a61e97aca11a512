"""The ``verification`` of cleanup_status.json: what still bills, or why a count is unknown.

Both writers (the instance's cleanup and the control plane's kill / verify --fix)
build it here. A count that could not be made (access denied, AWS unreachable) is
``None`` with its reason under ``unknown``, never a number: "could not check" must
not read as "checked, zero" (schema ``cleanup-status``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

COUNTS = ("instances_running", "volumes_available")
REASON_MAX = 500


@dataclass(frozen=True)
class Count:
    """One count, or why it is unknown (exactly one of the two is set)."""

    value: int | None
    reason: str | None = None

    @classmethod
    def unknown(cls, api_action: str, error: BaseException | str) -> Count:
        """The count ``api_action`` (e.g. ``ec2:DescribeVolumes``) could not make, with the error."""
        detail = error if isinstance(error, str) else describe(error)
        return cls(None, f"{api_action} failed: {detail}"[:REASON_MAX])


def describe(exc: BaseException) -> str:
    """A short description of an AWS error: its code when it has one, then the message."""
    response = getattr(exc, "response", None)
    error = response.get("Error", {}) if isinstance(response, dict) else {}
    if error.get("Code"):
        return f"{error['Code']}: {error.get('Message') or 'no message'}"
    return str(exc) or type(exc).__name__


def count_or_unknown(
    api_action: str, fn: Callable[[], int], errors: tuple[type[BaseException], ...] = (Exception,)
) -> Count:
    """``Count(fn())``, or :meth:`Count.unknown` when ``fn`` raises one of ``errors``."""
    try:
        return Count(int(fn()))
    except errors as exc:
        return Count.unknown(api_action, exc)


def verification(*, checked_at: str, **counts: Count) -> dict[str, Any]:
    """The ``verification`` object from one :class:`Count` per name in :data:`COUNTS`.

    Raises:
        TypeError: a count is missing or not one of :data:`COUNTS`.
    """
    if set(counts) != set(COUNTS):
        raise TypeError(f"verification needs exactly {COUNTS}, got {sorted(counts)}")
    doc: dict[str, Any] = {name: counts[name].value for name in COUNTS}
    unknown = {name: counts[name].reason or "not checked" for name in COUNTS if counts[name].value is None}
    if unknown:
        doc["unknown"] = unknown
    doc["checked_at"] = checked_at
    return doc
