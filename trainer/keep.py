"""Keep a FAILED instance up for debugging, then power off.

:class:`KeepOnFailure` wraps any :class:`~trainer.instance.Poweroff`: it waits up to
``keep_on_failure`` minutes (run spec), logging where and how to connect, then calls
the wrapped strategy. :func:`for_run` applies it only to a failed run with a keep
time; normal, killed and interrupted runs power off at once.

The wait ends early, and the poweroff follows at once, when:

- the run's max-runtime stop (the watcher's deadline) comes: the wait never outlasts
  it, so the dead-man switch (``shutdown -P +<max_runtime>`` at boot, never cancelled
  here) is never what ends a kept instance;
- the state file says this run is ``killed``;
- the instance is no longer running (terminated from the console or the API, spot
  interruption, or ``sudo shutdown -h now`` typed in the session).

Cleanup releases the state file before it powers off, so during the wait ``invoke
kill`` finds no active run: end a kept instance by terminating it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from common.ec2 import NOT_FOUND, STARTING_STATES, instance_state
from common.runspec import RunSpec
from common.status import CompletionStatus, RunStatus
from trainer.instance import Poweroff, PoweroffResult

log = logging.getLogger(__name__)

POLL_S = 15.0

Monotonic = Callable[[], float]
Sleep = Callable[[float], None]


@dataclass(kw_only=True)
class WaitEnds:
    """Why a keep should end now (``None``: keep waiting); read-only AWS calls.

    Args:
        store: the env's state store (``read()`` -> snapshot or ``None``).
        ec2: EC2 client (``ec2:DescribeInstances`` is in the instance role).
        run_id: this run.
    """

    store: Any
    ec2: Any
    run_id: str

    def __call__(self, instance_id: str | None) -> str | None:
        return self._killed() or self._not_running(instance_id)

    def _killed(self) -> str | None:
        try:
            snap = self.store.read()
        except Exception as exc:  # noqa: BLE001 - a failed check must not end the wait, nor crash the poweroff
            log.warning("keep: could not read the state file: %s", exc)
            return None
        if (
            snap is not None
            and snap.doc.get("run_id") == self.run_id
            and snap.doc.get("status") == RunStatus.KILLED.value
        ):
            return "the run was killed"
        return None

    def _not_running(self, instance_id: str | None) -> str | None:
        if not instance_id:
            return None
        try:
            state = instance_state(self.ec2, instance_id)
        except Exception as exc:  # noqa: BLE001 - a failed check must not end the wait, nor crash the poweroff
            log.warning("keep: could not describe %s: %s", instance_id, exc)
            return None
        if state != NOT_FOUND and state not in STARTING_STATES:  # unknown to EC2: keep waiting, as before
            return f"instance {instance_id} is {state}"
        return None


@dataclass(kw_only=True)
class KeepOnFailure:
    """A :class:`~trainer.instance.Poweroff` that first keeps the instance up.

    Args:
        inner: the strategy that ends the instance afterwards.
        minutes: how long to keep it (``keep_on_failure``).
        until: monotonic time the wait must end by (``None``: only ``minutes``).
        ends: why to stop waiting early (:class:`WaitEnds`), called every ``poll_s``.
        connect_hint: where and how to connect, logged when the wait starts.
        monotonic, sleep: the clock (tests drive it).
    """

    inner: Poweroff
    minutes: float
    until: float | None
    ends: Callable[[str | None], str | None]
    connect_hint: Callable[[str | None], str] = lambda _id: ""
    monotonic: Monotonic = time.monotonic
    sleep: Sleep = time.sleep
    poll_s: float = POLL_S
    waited_s: float = field(default=0.0, init=False)
    ended_by: str | None = field(default=None, init=False)

    @property
    def name(self) -> str:
        return f"{self.inner.name} after keep_on_failure {self.minutes:g} min"

    def window_s(self) -> float:
        """Seconds the instance may stay up from now."""
        window = self.minutes * 60.0
        if self.until is not None:
            window = min(window, self.until - self.monotonic())
        return max(0.0, window)

    def __call__(self, instance_id: str | None) -> PoweroffResult:
        start = self.monotonic()
        end = start + self.window_s()
        hint = self.connect_hint(instance_id)
        log.warning(
            "KEEPING failed instance %s up for %.0f min before poweroff%s",
            instance_id or "?",
            (end - start) / 60,
            f"; {hint}" if hint else "",
        )
        while (now := self.monotonic()) < end:
            reason = self.ends(instance_id)
            if reason:
                self.ended_by = reason
                log.info("keep ended early: %s", reason)
                break
            self.sleep(min(self.poll_s, end - now))
        else:
            self.ended_by = "keep_on_failure elapsed" if end - start >= self.minutes * 60 else "max runtime"
        self.waited_s = self.monotonic() - start
        log.info("keep over after %.0f s (%s); powering off", self.waited_s, self.ended_by)
        return self.inner(instance_id)


def connect_hint(
    *, run_id: str, env: str, region: str, debug: bool, local: bool = False
) -> Callable[[str | None], str]:
    """The log line that says where and how to connect to the kept instance."""

    def hint(instance_id: str | None) -> str:
        target = instance_id or "<instance id>"
        if local:
            return (
                f"local mode: no Session Manager; the instance's console is `invoke logs {run_id} "
                f"--env={env} --console --local`"
            )
        if not debug:
            return (
                f"no Session Manager profile (debug = false): read the console with "
                f"`invoke logs {run_id} --env={env} --console`"
            )
        return (
            f"connect with `invoke debug {run_id} --env={env} --start` or `aws ssm start-session "
            f"--target {target} --region {region}`; the run's files are under this trainer's workdir; "
            f"end it early with `sudo shutdown -h now` in the session or by terminating {target}"
        )

    return hint


@dataclass(frozen=True, kw_only=True)
class KeptRun:
    """Which run a kept instance belongs to: what :class:`WaitEnds` checks and the connect line names.

    Attributes:
        store, ec2: the env's state store and an EC2 client (read-only calls).
        run_id, env, region: the run, for the checks and the connect line.
        local: local mode (no Session Manager).
    """

    store: Any
    ec2: Any
    run_id: str
    env: str
    region: str
    local: bool = False


def for_run(
    inner: Poweroff,
    *,
    spec: RunSpec | None,
    completion: CompletionStatus,
    run: KeptRun,
    until: float | None,
    monotonic: Monotonic = time.monotonic,
    sleep: Sleep = time.sleep,
) -> Poweroff:
    """``inner``, wrapped in :class:`KeepOnFailure` only for a failed run whose spec keeps it.

    Args:
        inner: the poweroff strategy (``select_poweroff`` or a test's).
        spec: the run spec (``None`` when it never loaded: nothing is kept).
        completion: how the run ended; only ``failed`` keeps.
        run: the run the instance belongs to.
        until: the watcher's max-runtime deadline (monotonic).
        monotonic, sleep: the clock (tests drive it).
    """
    if completion is not CompletionStatus.FAILED or spec is None:
        return inner
    if spec.instance.keep_on_failure_minutes <= 0:
        return inner
    minutes = spec.instance.keep_on_failure_minutes
    log.warning(
        "run %s failed: after cleanup this instance stays up %d min (keep_on_failure) for debugging",
        run.run_id,
        minutes,
    )
    return KeepOnFailure(
        inner=inner,
        minutes=minutes,
        until=until,
        ends=WaitEnds(store=run.store, ec2=run.ec2, run_id=run.run_id),
        connect_hint=connect_hint(
            run_id=run.run_id, env=run.env, region=run.region, debug=spec.instance.debug, local=run.local
        ),
        monotonic=monotonic,
        sleep=sleep,
    )
