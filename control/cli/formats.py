"""Number formats of the CLI: money, durations and metrics, ``-`` for unknown."""

from __future__ import annotations

from typing import Any


def money(value: float | None) -> str:
    """US dollars to four decimals (``$0.5260``); ``-`` when unknown."""
    return "-" if value is None else f"${value:.4f}"


def duration(seconds: float | None) -> str:
    """``4m05s`` under an hour, ``1h02m03s`` from an hour on; ``-`` when unknown."""
    if seconds is None:
        return "-"
    s = int(seconds)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def metric(value: Any) -> str | None:
    """A loss or score to four decimals; ``None`` when it is not a number."""
    return f"{value:.4f}" if isinstance(value, int | float) else None
