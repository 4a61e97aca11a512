"""cleanup_status.json: the one builder of what was cleaned at the end of a run.

Every writer builds the document here: the instance's cleanup (``written_by:
instance``), the control plane's ``kill`` and ``verify --fix`` (``written_by:
control``) and the recovery handler (``written_by: recovery``). :class:`CleanupLog`
collects the actions as they happen and :meth:`CleanupLog.document` returns the whole
document, validated against schema ``cleanup-status``. Writing it (S3, retries) stays with the caller.

An action is ``succeeded`` only once a describe confirmed its effect (the instance
``terminated``, the volume gone, the state file gone); until then it is ``requested``,
and ``observed`` says what the last describe saw. (``requested`` and ``observed`` are
newer than the first documents: a document without them still reads.)

The ``verification`` part says what still bills. A count that could not be made
(access denied, AWS unreachable) is ``None`` with its reason under ``unknown``,
never a number: "could not check" must not read as "checked, zero".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from common.aws import error_code
from common.ec2 import NOT_FOUND, instance_state
from common.timeutil import iso
from schemas import validate

SCHEMA_VERSION = 1
COUNTS = ("instances_running", "volumes_available")
REASON_MAX = 500
ERROR_MAX = 500

Writer = Literal["instance", "control", "recovery"]
WRITERS: tuple[str, ...] = ("instance", "control", "recovery")
TERMINATE_WAIT_S = 60.0  # how long a writer waits for a describe to confirm a terminate
VOLUME_WAIT_S = 10.0  # ... a volume delete (a volume may stay `deleting` for minutes)
GONE = "gone"


class ActionStatus(StrEnum):
    """How one cleanup action ended (the schema's ``actions[].status``)."""

    SUCCEEDED = "succeeded"  # done, and a describe confirmed it
    REQUESTED = "requested"  # the API accepted it; no describe has confirmed it (yet)
    FAILED = "failed"
    SKIPPED = "skipped"


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


class CleanupLog:
    """The actions of one cleanup, in order, and the cleanup_status.json they make.

    Args:
        run_id: the run cleaned up.
        instance_id: its instance (``None`` when none was recorded).
        written_by: ``instance`` (the trainer's cleanup), ``control`` (kill, verify --fix) or
            ``recovery`` (the recovery handler ending a run it cannot or may not relaunch).
        clock: stamps each action's ``at`` and the document's ``completed_at``.
    """

    def __init__(
        self, *, run_id: str, instance_id: str | None, written_by: Writer, clock: Callable[[], datetime]
    ) -> None:
        if written_by not in WRITERS:
            raise ValueError(f"written_by must be one of {WRITERS}, not {written_by!r}")
        self.run_id, self.instance_id, self.written_by, self.clock = run_id, instance_id, written_by, clock
        self._actions: list[dict[str, Any]] = []

    @property
    def actions(self) -> tuple[dict[str, Any], ...]:
        """The actions recorded so far (copies: change them through :meth:`record`)."""
        return tuple(dict(a) for a in self._actions)

    def record(
        self,
        resource: str,
        action: str,
        status: str,
        error: str | None = None,
        *,
        observed: str | None = None,
    ) -> None:
        """Append one action, stamped now.

        Args:
            observed: what the describe that judged the action saw (``"DescribeInstances:
                terminated"``, ``"DescribeInstances: shutting-down after 60 s"``).

        Raises:
            ValueError: ``status`` is not an :class:`ActionStatus`.
        """
        self._actions.append(self._action(resource, action, status, error, observed))

    def replace_last(
        self,
        resource: str,
        action: str,
        status: str,
        error: str | None = None,
        *,
        observed: str | None = None,
    ) -> None:
        """Replace the last action (e.g. a poweroff recorded as done that then failed).

        Raises:
            IndexError: nothing was recorded yet.
            ValueError: ``status`` is not an :class:`ActionStatus`.
        """
        if not self._actions:
            raise IndexError("no action recorded to replace")
        self._actions[-1] = self._action(resource, action, status, error, observed)

    def document(
        self, *, verification: dict[str, Any], state_file_removed: bool, reason: str | None = None
    ) -> dict[str, Any]:
        """The cleanup_status.json document, validated against schema ``cleanup-status``.

        Args:
            verification: from :func:`verification`.
            state_file_removed: whether the state file is gone.
            reason: why the writer ended the run, when it did (the recovery handler's verdict).

        Raises:
            SchemaValidationError: the document does not match the schema.
        """
        doc = {
            "schema_version": SCHEMA_VERSION,
            "run_id": self.run_id,
            "instance_id": self.instance_id,
            "written_by": self.written_by,
            "actions": [dict(a) for a in self._actions],
            "verification": dict(verification),
            "state_file_removed": bool(state_file_removed),
            "completed_at": iso(self.clock()),
        }
        if reason:
            doc["reason"] = reason[:ERROR_MAX]
        return validate("cleanup-status", doc, source=f"cleanup_status.json of run {self.run_id}")

    def _action(
        self, resource: str, action: str, status: str, error: str | None, observed: str | None
    ) -> dict[str, Any]:
        doc = {
            "resource": resource,
            "action": action,
            "status": ActionStatus(status).value,
            "at": iso(self.clock()),
            "error": None if error is None else error[:ERROR_MAX],
        }
        if observed is not None:
            doc["observed"] = observed[:ERROR_MAX]
        return doc


# -- the describes that confirm an action (kill, verify --fix, the recovery handler) ---------------
def confirmed_terminated(state: str | None) -> bool:
    """True when a describe shows the instance ``terminated`` or EC2 no longer knows it.

    ``shutting-down`` is not enough: the instance has not ended yet (EC2 keeps a terminated
    instance visible for about an hour, then answers NotFound: TerminateInstances,
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_TerminateInstances.html).
    """
    return state in ("terminated", NOT_FOUND)


def await_terminated(
    ec2: Any, ids: list[str], *, sleep: Callable[[float], None], limit_s: float = TERMINATE_WAIT_S
) -> dict[str, str]:
    """Describe ``ids`` once a second until each is terminated (or unknown to EC2) or ``limit_s``
    of sleeps passed; the state last seen of each (``instance_state``'s errors raise)."""
    waited = 0.0
    while True:
        seen = {i: instance_state(ec2, i) for i in ids}
        if all(confirmed_terminated(s) for s in seen.values()) or waited >= limit_s:
            return seen
        sleep(1.0)
        waited += 1.0


def await_volume_deleted(
    ec2: Any, volume_id: str, *, sleep: Callable[[float], None], limit_s: float = VOLUME_WAIT_S
) -> str:
    """:data:`GONE` once DescribeVolumes no longer finds the volume (or shows it ``deleted``), else
    the state it shows after ``limit_s`` (a volume may stay ``deleting`` for several minutes:
    https://docs.aws.amazon.com/AWSEC2/latest/APIReference/API_DeleteVolume.html), or
    ``unknown (<error>)`` when the describe fails."""
    waited = 0.0
    while True:
        try:
            vols = ec2.describe_volumes(VolumeIds=[volume_id]).get("Volumes", [])
        except Exception as exc:  # noqa: BLE001 - NotFound is the answer; any other error: unknown
            if error_code(exc) != "InvalidVolume.NotFound":
                return f"unknown ({describe(exc)})"
            vols = []
        state = str(vols[0].get("State")) if vols else "deleted"
        if state == "deleted":
            return GONE
        if waited >= limit_s:
            return state
        sleep(1.0)
        waited += 1.0
