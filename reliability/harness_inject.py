"""One fault at one phase of a run's current attempt: hold it there, check, inject, let go.

:func:`inject_at` is what every process row does: arm the gate on the phase's request
(:func:`reliability.harness.hold_at`), wait until the run's current attempt is held in that
phase on a new instance (the state file says so), snapshot what is in S3, inject the fault
(``sigkill``, ``terminate`` or ``kill``), release the held request, and wait until the
instance the fault hit has powered off. A run with recoveries left then goes on under a
relaunched instance, where the next :func:`inject_at` may land a fault at a later phase.

In a chain, ``then`` arms the next phase's hold before the fault lands: the handler may relaunch
while the hit instance is still in its shutdown grace, and a resumed attempt can reach a late
phase (results_sync after a resume at the last step) in seconds, before a hold armed only after
the power-off. That hold skips every request signed by the sessions of the instances already
hit (:func:`reliability.harness_gate.excluding_sessions`), so the hit instance's last requests
cannot take it; pass it on as ``hold=``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common import layout
from common.status import RunStatus
from reliability import harness_faults as faults
from reliability.harness import Run, World, hold_at, landed, snapshot, wait_until
from reliability.harness_gate import Hold

FAULTS = ("sigkill", "terminate", "kill")


@dataclass(frozen=True)
class Injected:
    """Where a fault landed and what was in S3 at that moment."""

    phase: str
    fault: str
    instance_id: str
    state: dict[str, Any]  # the state document while the instance was held
    before: dict[str, str]  # the snapshot (key -> sha256)
    kill: Any = None  # control.kill.KillResult for a kill
    next_hold: Hold | None = None  # armed on ``then`` (pass it to the next inject_at as ``hold``)


def inject_at(
    world: World,
    run: Run,
    phase: str,
    fault: str,
    *,
    previous: set[str],
    timeout: float = 300.0,
    hold: Hold | None = None,
    then: str | None = None,
) -> Injected:
    """Land ``fault`` in ``phase`` of ``run``'s current attempt (an instance not in ``previous``).

    Args:
        hold: the hold on ``phase`` armed by the previous call's ``then`` (default: armed now).
        then: the phase the next fault of the chain lands in: its hold is armed before this
            fault, excluding this instance and ``previous`` (returned as ``next_hold``).

    Raises:
        AssertionError: the hold matched on an instance the fault already hit, or outside ``phase``.
        TimeoutError: the run never reached ``phase``.
    """
    if fault not in FAULTS:
        raise ValueError(f"fault {fault!r}: one of {FAULTS}")
    hold = hold if hold is not None else hold_at(world, phase, run.run_id, exclude=set(previous))
    nxt: Hold | None = None
    try:
        try:
            doc = landed(world, phase, hold, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nstate: {world.state()}\n{world.logs()}") from None
        iid = doc.get("instance_id")
        if not iid or iid in previous:
            raise AssertionError(f"{phase}: held on instance {iid}, which is not a new attempt's")
        signer = world.gate.session_of(hold.request.access_key if hold.request else None)
        if signer != iid:  # the exclusion of hit instances relies on it
            raise AssertionError(f"{phase}: the held request was signed by session {signer!r}, not {iid}")
        if then is not None:
            nxt = hold_at(world, then, run.run_id, exclude={*previous, iid})
        before = snapshot(world, run.run_id)
        result = None
        if fault == "sigkill":
            faults.sigkill_trainer(world, iid)
            hold.drop()  # a dead process's call never happens (nor does it hear an answer)
        elif fault == "terminate":
            faults.terminate_instance(world, iid)
        else:
            since, final = time.monotonic(), RunStatus(doc["status"]).is_final()
            kill = faults.start_kill(world)
            if final:  # a kill leaves a final run as it is (StateStore.request_kill): it read it held
                wait_until(lambda: _kill_read(world, since), 60, "the kill to read the state", every=0.2)
            else:
                wait_until(lambda: _kill_written(world, run), 60, "the kill to be written", every=0.2)
            hold.release()
            result = kill.wait(timeout)
    except BaseException:
        if nxt is not None:
            world.gate.disarm(nxt)
        raise
    finally:
        hold.release()
    powered_off(world, iid, timeout=timeout)
    return Injected(
        phase=phase, fault=fault, instance_id=iid, state=doc, before=before, kill=result, next_hold=nxt
    )


def _kill_written(world: World, run: Run) -> bool:
    doc = world.state()
    return doc is None or doc.get("run_id") != run.run_id or doc.get("status") == "killed"


def _kill_read(world: World, since: float) -> bool:
    """The kill's GET of the state file arrived (nothing else reads it as the operator meanwhile:
    this waits without reading it)."""
    operator = world.backend.credentials_env().get("AWS_ACCESS_KEY_ID")
    key = layout.state_key(world.env)
    return any(
        r.at >= since and r.method == "GET" and r.key == key and r.access_key == operator
        for r in world.gate.log()
    )


def powered_off(world: World, instance_id: str, *, timeout: float = 300.0) -> None:
    """Wait until the local instance's host has stopped its processes (its record says ended)."""
    from control.localdir import read_json

    wait_until(
        lambda: (read_json(world.local_dir.instance_file(instance_id)) or {}).get("ended_at"),
        timeout,
        f"instance {instance_id} to power off",
        every=0.3,
    )
