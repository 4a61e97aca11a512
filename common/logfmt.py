"""The one log-line format of every process: ``<UTC ISO time> <LEVEL> <logger>: <message>``.

The trainer, its training child, the local instance supervisor and the local AWS servers
all log with :func:`configure`, so one ``grep`` or parser reads every log the product writes.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import TextIO

LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
DATE_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def utc_formatter() -> logging.Formatter:
    """A formatter for :data:`LOG_FORMAT` with UTC timestamps."""
    formatter = logging.Formatter(LOG_FORMAT, datefmt=DATE_FORMAT)
    formatter.converter = time.gmtime
    return formatter


def configure(level: int = logging.INFO, stream: TextIO | None = None) -> logging.Handler:
    """Send the root logger's records at ``level`` and above to ``stream`` (stderr) in the one format."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(utc_formatter())
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(level)
    return handler
