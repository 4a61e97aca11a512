"""The state document's shapes: a validated read (:class:`Snapshot`) and a run's first document.

Kept apart from :mod:`common.state_store` (which re-exports both) so the store holds only
the conditional reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.status import Market, RunStatus

Doc = dict[str, Any]


@dataclass(frozen=True)
class Snapshot:
    """One validated read or write of the state file."""

    doc: Doc
    etag: str

    @property
    def status(self) -> RunStatus:
        return RunStatus(self.doc["status"])

    @property
    def run_id(self) -> str:
        return str(self.doc["run_id"])


def new_state(
    *,
    env: str,
    run_id: str,
    market: Market | str,
    total_steps: int,
    now: str,
    local: bool = False,
    price_per_hour: float | None = None,
) -> Doc:
    """The first document of a run: status ``initialization``, no instance yet.

    Merge :func:`common.attempts.policy` into it for a run the recovery handler may relaunch.
    """
    return {
        "schema_version": 1,
        "run_id": run_id,
        "env": env,
        "status": RunStatus.INITIALIZATION.value,
        "history": [{"status": RunStatus.INITIALIZATION.value, "at": now, "reason": "launch"}],
        "instance_id": None,
        "instance_type": None,
        "market": str(Market(market)),
        "availability_zone": None,
        "heartbeat_at": now,
        "progress": {"step": 0, "total_steps": total_steps, "loss": None, "eta_s": None},
        "started_at": now,
        "updated_at": now,
        "last_error": None,
        "local": local,
        "price_per_hour": price_per_hour,
    }
