"""The state store: ``{env}/system-state.json`` as lock and live view, shared by both sides.

- acquire: ``PutObject(IfNoneMatch="*")``; a 412 means another run holds the lock.
- update: read (validated) -> mutate -> ``PutObject(IfMatch=etag)``. A 412
  (someone else wrote, e.g. ``kill``) or 409 ``ConditionalRequestConflict``
  re-reads and re-applies the mutation, so a decision is always taken on the
  newest document and nothing is overwritten blindly.
- transitions are checked against :class:`common.status.RunStatus`.
- release: ``DeleteObject(IfMatch=etag)``, only if it still belongs to the run;
  a 412 re-reads, so a newer document (or another run's lock) is never deleted.
- a write whose answer was lost (S3 applied it, the SDK's retry meets 412/404) is known
  as ours: the create by its ``lock_id``, an update by its document, a retried release.
- claim_recovery: ONE ``PutObject(IfMatch=etag)`` of the snapshot the recovery
  handler decided on, never retried: of two handlers deciding on one document,
  exactly one wins; the other re-reads and decides again (``common.attempts``).

Every document is validated against the ``system-state`` schema before it is
written and after it is read; a bad one raises :class:`CorruptStateError`.
"""

from __future__ import annotations

import copy
import json
import logging
import uuid
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

from common import attempts as att
from common import layout
from common.aws import absent_behind_403, error_code, http_status, is_access_denied, is_not_found, sdk_retried
from common.errors import AccessDeniedError, CorruptStateError, LockHeldError
from common.state_doc import Doc, IllegalTransitionError, Snapshot, apply_transition
from common.state_errors import (  # the store's errors live there; importable from here as before
    ClaimLostError,
    ConflictError,
    NotHeldError,
    TakenOverError,
    check_holder,
)
from common.status import RunStatus
from common.timeutil import Clock, iso, utc_now
from schemas import SchemaValidationError, validate

log = logging.getLogger(__name__)

__all__ = ["ClaimLostError", "ConflictError", "NotHeldError", "StateStore", "TakenOverError"]

Mutation = Callable[[Doc], Doc | None]


class StateStore:
    """Reads and conditionally writes one env's state file (or a sweep member's own).

    Args:
        s3, bucket, env: a boto3 S3 client, the training bucket, the environment name.
        run_id: a sweep member's run id: its own state key (``RunPaths.state``); else the env's.
        clock: returns aware UTC datetimes (tests pass a fake).
        max_conflicts: how many times a conflicting write is re-read and retried.

    Attributes:
        holder: the instance id of the attempt writing through this store (set by the trainer,
            :func:`trainer.startup.identify`): see :class:`~common.state_errors.TakenOverError`.
            ``None`` (the control plane, the handler): the run id alone decides.
    """

    def __init__(
        self, s3: Any, bucket: str, env: str, *, run_id: str | None = None, clock: Clock = utc_now,
        max_conflicts: int = 8,
    ) -> None:  # fmt: skip
        self.s3, self.bucket, self.env = s3, bucket, env
        self.key = layout.RunPaths(env=env, run_id=run_id).state if run_id else layout.state_key(env)
        self.clock, self.max_conflicts = clock, max_conflicts
        self.holder: str | None = None

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.key}"

    # -- reading -------------------------------------------------------------
    def read(self) -> Snapshot | None:
        """The current state, validated, or ``None`` when no run holds the lock.

        Raises:
            CorruptStateError: the file is not JSON or not a valid state document.
            AccessDeniedError: the credentials may not read it.
        """
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=self.key)
        except ClientError as exc:
            if is_not_found(exc) or self._absent_behind_403(exc):
                return None
            self._raise_denied(exc, "s3:GetObject")
            raise
        return Snapshot(self.parse(resp["Body"].read()), resp["ETag"])

    def read_if_changed(self, etag: str | None) -> Snapshot | None | bool:
        """Conditional GET: ``False`` when unchanged since ``etag`` (no body transferred)."""
        if etag is None:
            return self.read()
        try:
            resp = self.s3.get_object(Bucket=self.bucket, Key=self.key, IfNoneMatch=etag)
        except ClientError as exc:
            if http_status(exc) == 304 or error_code(exc) in {"304", "NotModified"}:
                return False
            if is_not_found(exc) or self._absent_behind_403(exc):
                return None
            self._raise_denied(exc, "s3:GetObject")
            raise
        return Snapshot(self.parse(resp["Body"].read()), resp["ETag"])

    def parse(self, body: bytes) -> Doc:
        """Decode and validate a state document.

        Raises:
            CorruptStateError: naming the key and the recovery command.
        """
        try:
            doc = json.loads(body)
        except (ValueError, RecursionError) as exc:  # bad JSON or UTF-8, nesting, a 5000-digit integer
            raise CorruptStateError(location=self.location, env=self.env, reason=f"not JSON: {exc}") from None
        try:
            return validate("system-state", doc)
        except SchemaValidationError as exc:
            raise CorruptStateError(
                location=self.location, env=self.env, reason=f"at {exc.path}: {exc.reason}"
            ) from None

    # -- writing -------------------------------------------------------------
    def acquire(self, doc: Doc, *, _tries: int = 0) -> Snapshot:
        """Take the lock by creating the state file; it must not exist.

        Raises:
            LockHeldError: another run holds it (which one, since when).
            ConflictError: the lock was taken and released between each of ``max_conflicts`` tries.
        """
        # A random token of this acquire (the plan stays pure): tells this launch's lock from any
        # other's, even of the same run id in the same second.
        doc = {**doc, "lock_id": doc.get("lock_id") or uuid.uuid4().hex}
        validate("system-state", doc)
        try:
            etag = self._put(doc, IfNoneMatch="*")
        except ClientError as exc:
            if http_status(exc) in (409, 412):
                held = self.read()
                if held is None and _tries < self.max_conflicts:  # released between our put and read
                    return self.acquire(doc, _tries=_tries + 1)
                if held is None:
                    raise ConflictError(f"{self.location}: taken and released {_tries + 1} times") from None
                if doc.get("lock_id") and held.doc.get("lock_id") == doc["lock_id"]:
                    # Our own PUT landed and its answer was lost (a 500 or a reset after S3 stored
                    # it); the SDK's retry then met our own lock. S3: "if a PUT request returns
                    # InternalError, a subsequent GET might retrieve the old value or the updated
                    # value" (https://docs.aws.amazon.com/AmazonS3/latest/API/ErrorResponses.html)
                    log.info("acquired %s for run %s (first answer lost)", self.location, doc["run_id"])
                    return held
                raise LockHeldError(
                    env=self.env, run_id=held.run_id, status=held.doc["status"], since=held.doc["started_at"]
                ) from None
            raise
        log.info("acquired %s for run %s", self.location, doc["run_id"])
        return Snapshot(copy.deepcopy(doc), etag)

    def update(self, run_id: str, mutate: Mutation, *, snapshot: Snapshot | None = None) -> Snapshot:
        """Apply ``mutate`` to the newest document of ``run_id`` and write it with ``IfMatch``.

        ``mutate`` gets a copy and returns the new document (or mutates it in
        place and returns ``None``). It is called again on a fresh read after
        every conflict, so it must decide from the document it is given. A retried write
        met by a conflict whose fresh read is exactly its document landed: it is returned.

        Raises:
            NotHeldError: the file is gone or belongs to another run.
            IllegalTransitionError: raised by ``mutate`` via :meth:`transition`.
            ConflictError: conflicts persisted past ``max_conflicts``.
        """
        snap = snapshot
        for attempt in range(self.max_conflicts + 1):
            if snap is None:
                snap = self.read()
            if snap is None or snap.run_id != run_id:
                owner = "nobody" if snap is None else f"run {snap.run_id}"
                raise NotHeldError(f"{self.location} is held by {owner}, not run {run_id}")
            check_holder(snap, self.holder)
            doc = copy.deepcopy(snap.doc)
            new = mutate(doc)
            target = doc if new is None else new
            try:
                return self._write(snap, target)
            except ClientError as exc:
                if http_status(exc) in (409, 412):
                    log.info(
                        "state write conflict (%s), re-reading (attempt %d)",
                        error_code(exc) or http_status(exc),
                        attempt + 1,
                    )
                    snap = self.read()
                    if sdk_retried(exc) and snap is not None and snap.doc == target:  # ours landed
                        log.info("state write of run %s landed (first answer lost)", run_id)
                        return snap
                    continue
                if is_not_found(exc):
                    raise NotHeldError(f"{self.location} disappeared while run {run_id} wrote it") from None
                raise
        raise ConflictError(f"{self.location}: {self.max_conflicts} conflicting writes in a row")

    def transition(
        self,
        run_id: str,
        new: RunStatus,
        *,
        reason: str | None = None,
        error: Doc | None = None,
        snapshot: Snapshot | None = None,
    ) -> Snapshot:
        """Move the run to ``new`` if the state machine allows it from the newest status.

        Raises:
            IllegalTransitionError: e.g. the run was killed meanwhile.
        """

        def mutate(doc: Doc) -> Doc:
            return apply_transition(doc, new, reason=reason, error=error, now=iso(self.clock()))

        return self.update(run_id, mutate, snapshot=snapshot)

    def heartbeat(
        self, run_id: str, *, progress: Doc | None = None, snapshot: Snapshot | None = None
    ) -> Snapshot:
        """Refresh ``heartbeat_at`` (and progress) without touching the status."""

        def mutate(doc: Doc) -> None:
            doc["heartbeat_at"] = iso(self.clock())
            if progress:
                doc["progress"].update(progress)

        return self.update(run_id, mutate, snapshot=snapshot)

    def record_error(self, run_id: str, error: Doc) -> Snapshot:
        """Keep ``error`` as ``last_error``."""
        return self.update(run_id, lambda doc: {**doc, "last_error": error})

    def set_instance(self, run_id: str, **fields: Any) -> Snapshot:
        """Record instance_id / instance_type / availability_zone / market / price_per_hour."""
        allowed = {"instance_id", "instance_type", "availability_zone", "market", "price_per_hour"}
        unknown = set(fields) - allowed
        if unknown:
            raise TypeError(f"not instance fields: {sorted(unknown)}")
        return self.update(run_id, lambda doc: {**doc, **fields})

    def request_kill(self, run_id: str, *, reason: str = "killed by operator") -> Snapshot:
        """Set ``killed`` (idempotent: an already final run is left as it is)."""

        def mutate(doc: Doc) -> Doc:
            status = RunStatus(doc["status"])
            if status.is_final():
                return doc
            now = iso(self.clock())
            doc["status"] = RunStatus.KILLED.value
            doc["history"].append({"status": RunStatus.KILLED.value, "at": now, "reason": reason})
            doc["kill_requested_at"], doc["kill_reason"] = now, reason
            return doc

        return self.update(run_id, mutate)

    # -- recovery (common.attempts holds the document edits) -------------------
    def claim_recovery(self, snapshot: Snapshot, *, trigger: str, event_id: str, now: str) -> Snapshot:
        """Claim the run in ``snapshot`` for recovery: one write, conditional on its ETag.

        Raises:
            IllegalTransitionError: the snapshot's status may not become ``recovering``.
            ConflictError: another writer changed the file since ``snapshot`` (re-read, decide again).
            NotHeldError: the file is gone.
        """
        current = snapshot.status
        if not (current.can_become(RunStatus.RECOVERING) or current is RunStatus.RECOVERING):
            raise IllegalTransitionError(current, RunStatus.RECOVERING)
        return self.update_once(
            snapshot, lambda doc: att.claim(doc, trigger=trigger, event_id=event_id, now=now)
        )

    def update_once(self, snapshot: Snapshot, mutate: Mutation) -> Snapshot:
        """Apply ``mutate`` to ``snapshot``'s document and write it ONCE, conditional on its ETag.

        For a decision taken on that very document (the recovery handler's): a conflict is
        not re-applied on a newer document, the caller re-reads and decides again. A lost
        answer is never taken for a win (two deliveries of one event write the same claim):
        the handler then finds the claim in grace, and it is re-claimed once stale.

        Raises:
            ConflictError: another writer changed the file since ``snapshot``.
            NotHeldError: the file is gone.
        """
        check_holder(snapshot, self.holder)
        doc = copy.deepcopy(snapshot.doc)
        new = mutate(doc)
        try:
            return self._write(snapshot, doc if new is None else new)
        except ClientError as exc:
            if http_status(exc) in (409, 412):
                raise ConflictError(f"{self.location} changed since it was read; not written") from None
            if is_not_found(exc):
                raise NotHeldError(f"{self.location} is gone; run {snapshot.run_id} not written") from None
            raise

    def add_attempt(
        self, run_id: str, attempt: Doc, *, snapshot: Snapshot | None = None, claim: Doc | None = None
    ) -> Snapshot:
        """Record ``attempt`` (``common.attempts.new_attempt``) and make its instance the run's.

        Args:
            claim: the ``recovery`` object of the handler's claim; when given, the write
                happens only while the state is still ``recovering`` under that claim.

        Raises:
            ClaimLostError: ``claim`` was given and the state moved on (killed, re-claimed).
        """

        def mutate(doc: Doc) -> Doc:
            if claim is not None and (doc["status"] != RunStatus.RECOVERING or doc.get("recovery") != claim):
                raise ClaimLostError(RunStatus(doc["status"]), f"the state is {doc['status']} now")
            return att.add_attempt(doc, attempt)

        return self.update(run_id, mutate, snapshot=snapshot)

    def end_attempt(self, run_id: str, end: str, at: str) -> Snapshot:
        """The current attempt ended ``end`` (``common.attempts.AttemptEnd``) at ``at``."""
        att.AttemptEnd(end)  # ValueError before any write
        return self.update(run_id, lambda doc: att.end_current(doc, end, at))

    def note_notice(self, run_id: str, at: str) -> Snapshot:
        """The current attempt got its spot interruption notice at ``at``."""
        return self.update(run_id, lambda doc: att.note_notice(doc, at))

    def add_refused(self, run_id: str, refused: list[Doc]) -> Snapshot:
        """Append refused placements (``{attempt, market, instance_type, availability_zone, code, at}``)."""
        return self.update(run_id, lambda doc: att.add_refused(doc, refused))

    def release(self, run_id: str) -> bool:
        """Delete the state file if it still belongs to ``run_id``; ``False`` if it was not there.

        The delete carries ``IfMatch`` with the ETag the ownership check read, so a
        document written meanwhile (a heartbeat, ``kill``, or another run's lock) is
        never deleted blindly: S3 answers 412 (409 on a concurrent write), the file is
        read again and the decision taken on the newest document. S3 conditional
        deletes: https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-deletes.html
        (If-Match with an ETag also needs ``s3:GetObject`` on the key).

        Raises:
            NotHeldError: the file belongs to another run.
            ConflictError: conflicts persisted past ``max_conflicts``.
            AccessDeniedError: the credentials may not delete it.
        """
        sent = False  # a delete of ours was sent more than once: the first may have landed
        for attempt in range(self.max_conflicts + 1):
            snap = self.read()
            if snap is None:
                return sent
            if snap.run_id != run_id:
                raise NotHeldError(f"{self.location} belongs to run {snap.run_id}, not {run_id}")
            check_holder(snap, self.holder)
            try:
                self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=snap.etag)
            except ClientError as exc:
                sent = sent or sdk_retried(exc)
                if http_status(exc) in (409, 412):
                    log.info(
                        "state delete conflict (%s), re-reading (attempt %d)",
                        error_code(exc) or http_status(exc),
                        attempt + 1,
                    )
                    continue
                if is_not_found(exc):  # If-Match on a missing key: 404 (conditional-deletes.html)
                    return sent  # retried by the SDK: our first delete landed, its answer lost
                self._raise_denied(exc, "s3:DeleteObject")
                raise
            log.info("released %s (run %s)", self.location, run_id)
            return True
        raise ConflictError(f"{self.location}: {self.max_conflicts} conflicting deletes in a row")

    def force_clear(self, *, etag: str | None = None) -> bool:
        """Delete the state file whatever it holds now (`verify --fix`), or with ``etag`` only the
        document judged stale (a lock taken since by a new launch stays); ``False``: not deleted."""
        try:
            etag = etag or self.s3.head_object(Bucket=self.bucket, Key=self.key)["ETag"]
            self.s3.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=etag)
        except ClientError as exc:
            if is_not_found(exc) or http_status(exc) in (409, 412):
                return False
            raise
        return True

    # -- internals -----------------------------------------------------------
    def _write(self, snap: Snapshot, doc: Doc) -> Snapshot:
        """Validate ``doc`` and put it conditional on ``snap``'s ETag (``ClientError`` on a 412)."""
        doc["updated_at"] = iso(self.clock())
        validate("system-state", doc, source=self.location)
        return Snapshot(doc, self._put(doc, IfMatch=snap.etag))

    def _put(self, doc: Doc, **condition: str) -> str:
        body = json.dumps(doc, indent=2, sort_keys=True).encode()
        try:
            resp = self.s3.put_object(
                Bucket=self.bucket, Key=self.key, Body=body, ContentType="application/json", **condition
            )
        except ClientError as exc:
            self._raise_denied(exc, "s3:PutObject")
            raise
        return str(resp["ETag"])

    def _absent_behind_403(self, exc: BaseException) -> bool:
        """True when a 403 on GetObject only hides a missing state file (:func:`absent_behind_403`)."""
        return absent_behind_403(self.s3, self.bucket, self.key, exc)

    def _raise_denied(self, exc: BaseException, action: str) -> None:
        if is_access_denied(exc):
            raise AccessDeniedError(action=action, resource=self.location) from None
