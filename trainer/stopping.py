"""Stop requests: why training must stop now, and the one switch every source flips.

A spot notice, the max-runtime deadline, a ``killed`` in the state file (the
:class:`~trainer.watcher.Watcher`) and SIGTERM/SIGINT (``python -m trainer``) each
make a :class:`StopRequest`. The run's :class:`StopSwitch` keeps the first one, hands
it to whoever listens (the training child's supervisor: SIGTERM, checkpoint, exit), and
the driver raises :class:`Stopped` at its next check, so the run finalizes
``interrupted`` or ``killed`` with the request's reason.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from common.status import RunStatus

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class StopRequest:
    """Why the run must stop: ``status`` is ``interrupted`` or ``killed``; ``source`` who asked."""

    status: RunStatus
    reason: str
    source: str


class Stopped(Exception):
    """Training must stop: a spot notice, max runtime, or a kill."""

    def __init__(self, request: StopRequest) -> None:
        super().__init__(request.reason)
        self.request, self.stop_status = request, request.status


class StopSwitch:
    """The run's stop request: the first one wins, none once the run is finishing (thread-safe)."""

    def __init__(self) -> None:
        self.request: StopRequest | None = None
        self.finishing = False
        self._listeners: list[Callable[[], None]] = []
        self._lock = threading.Lock()

    def flip(self, request: StopRequest) -> None:
        """Keep ``request`` unless one is kept already or the run is finishing; tell the listeners."""
        with self._lock:
            if self.request is not None or self.finishing:
                return
            self.request = request
            listeners = list(self._listeners)
        log.warning("stopping: %s", request.reason)
        for listener in listeners:
            listener()

    def listen(self, listener: Callable[[], None]) -> None:
        """Call ``listener`` on a stop request; at once when one was made already."""
        with self._lock:
            self._listeners.append(listener)
            already = self.request is not None
        if already:
            listener()

    def finish(self) -> None:
        """The run is finishing: later requests are ignored."""
        with self._lock:
            self.finishing = True

    def check(self) -> None:
        """Raise :class:`Stopped` when a stop was requested."""
        if self.request is not None:
            raise Stopped(self.request)
