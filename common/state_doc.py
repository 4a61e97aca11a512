"""The state document's shapes and pure edits: a validated read (:class:`Snapshot`), a run's
first document (:func:`new_state`) and a status change (:func:`apply_transition`).

Kept apart from :mod:`common.state_store` (which re-exports them) so the store holds only
the conditional reads and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from common.status import Market, RunStatus

Doc = dict[str, Any]


class IllegalTransitionError(RuntimeError):
    """A status change the state machine does not allow (e.g. killed -> training)."""

    def __init__(self, current: RunStatus, requested: RunStatus) -> None:
        self.current, self.requested = current, requested
        super().__init__(f"illegal transition {current} -> {requested}")


def apply_transition(
    doc: Doc, new: RunStatus, *, reason: str | None = None, error: Doc | None = None, now: str
) -> Doc:
    """``doc`` moved to ``new`` at ``now`` (history, heartbeat, ``last_error``).

    Leaving ``recovering`` drops the handler's claim (``recovery``): it lives only while recovering.

    Raises:
        IllegalTransitionError: the state machine does not allow it from ``doc``'s status.
    """
    current = RunStatus(doc["status"])
    if not current.can_become(new):
        raise IllegalTransitionError(current, new)
    entry: Doc = {"status": new.value, "at": now}
    if reason:
        entry["reason"] = reason
    doc["status"] = new.value
    doc["history"].append(entry)
    doc["heartbeat_at"] = now
    if error is not None:
        doc["last_error"] = error
    if current is RunStatus.RECOVERING:
        doc.pop("recovery", None)
    return doc


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
