"""When a run holding the lock counts as stale: one policy for ``monitor`` and ``verify``.

Three judgements, each with one threshold:

- **no heartbeat** for more than :attr:`StalenessPolicy.heartbeat_s` = 300 s. The
  trainer's watcher thread beats every 20 s from the moment it has read its run spec
  until finalize is done, through data sync, training and the results upload alike
  (``trainer.watcher.Watcher``), and a failed beat is retried on the next poll. 300 s is
  15 missed beats: long enough that S3 throttling or a network hiccup never makes a
  healthy run look dead (``verify --fix`` terminates what it calls stale), short enough
  that ``monitor`` says so within five minutes. (``monitor`` used 120 s, ``verify``
  600 s.) A test keeps it at ten beats or more of the trainer's interval.
- **no instance recorded** more than :attr:`StalenessPolicy.no_instance_s` = 300 s
  after the lock was taken: ``launch`` records the instance right after RunInstances
  answers, which takes seconds, and retries within a minute or two; both sides
  already agreed on 300 s.
- **instance gone** (``common.ec2.is_gone``) for at least
  :attr:`StalenessPolicy.gone_grace_s` = 20 s while the lock is held: the trainer
  removes the lock just before it powers off, so a watcher that sees the instance go
  waits a moment for the lock to disappear too (one poll interval of a trainer's
  state writes plus EC2's describe lag). ``verify`` reads the instances first and
  the lock after, so a lock it reads with the instance already gone is past that
  moment.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Stale(StrEnum):
    """Why a lock is stale."""

    INSTANCE_GONE = "instance_gone"
    NO_INSTANCE = "no_instance"
    NO_HEARTBEAT = "no_heartbeat"


@dataclass(frozen=True, kw_only=True)
class StalenessPolicy:
    """The thresholds (seconds) after which a held lock is stale (see the module docstring)."""

    heartbeat_s: float = 300.0
    no_instance_s: float = 300.0
    gone_grace_s: float = 20.0

    def heartbeat_stale(self, heartbeat_age_s: float) -> bool:
        """True when the last heartbeat is older than :attr:`heartbeat_s`."""
        return heartbeat_age_s > self.heartbeat_s

    def launch_stale(self, since_launch_s: float) -> bool:
        """True when a lock without an instance is older than :attr:`no_instance_s`."""
        return since_launch_s > self.no_instance_s

    def gone_stale(self, gone_for_s: float) -> bool:
        """True when the instance has been gone, lock still held, for :attr:`gone_grace_s` or more."""
        return gone_for_s >= self.gone_grace_s

    def judge(
        self,
        *,
        instance_id: str | None,
        gone_for_s: float | None,
        since_launch_s: float,
        heartbeat_age_s: float,
    ) -> Stale | None:
        """Why the lock is stale, or ``None``; the first that applies, in :class:`Stale` order.

        Args:
            instance_id: the instance the lock records, ``None`` before launch recorded one.
            gone_for_s: how long that instance has been seen gone; ``None`` while it is not.
                A gone instance within the grace is not judged further (it may be
                powering off after removing the lock).
            since_launch_s: age of the lock (``started_at``).
            heartbeat_age_s: age of ``heartbeat_at``.
        """
        if instance_id is not None and gone_for_s is not None:
            return Stale.INSTANCE_GONE if self.gone_stale(gone_for_s) else None
        if instance_id is None and self.launch_stale(since_launch_s):
            return Stale.NO_INSTANCE
        if self.heartbeat_stale(heartbeat_age_s):
            return Stale.NO_HEARTBEAT
        return None


STALENESS = StalenessPolicy()
