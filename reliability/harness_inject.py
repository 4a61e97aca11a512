"""One fault at one phase of a run's current attempt: hold it there, check, inject, let go.

:func:`inject_at` is what every process row does: arm the gate on the phase's request
(:func:`reliability.harness.hold_at`), wait until the run's current attempt is held in that
phase on a new instance (the state file says so), snapshot what is in S3, inject the fault
(``sigkill``, ``terminate`` or ``kill``), release the held request, and wait until the
instance the fault hit has powered off (so the next hold cannot match its last requests).
A run with recoveries left then goes on under a relaunched instance, where the next
:func:`inject_at` may land a fault at a later phase.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from common import layout
from common.status import RunStatus
from reliability import harness_faults as faults
from reliability.harness import Run, World, hold_at, landed, snapshot, wait_until

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


def inject_at(
    world: World, run: Run, phase: str, fault: str, *, previous: set[str], timeout: float = 300.0
) -> Injected:
    """Land ``fault`` in ``phase`` of ``run``'s current attempt (an instance not in ``previous``).

    Raises:
        AssertionError: the hold matched on an instance the fault already hit, or outside ``phase``.
        TimeoutError: the run never reached ``phase``.
    """
    if fault not in FAULTS:
        raise ValueError(f"fault {fault!r}: one of {FAULTS}")
    hold = hold_at(world, phase, run.run_id)
    try:
        try:
            doc = landed(world, phase, hold, timeout=timeout)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}\nstate: {world.state()}\n{world.logs()}") from None
        iid = doc.get("instance_id")
        if not iid or iid in previous:
            raise AssertionError(f"{phase}: held on instance {iid}, which is not a new attempt's")
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
    finally:
        hold.release()
    powered_off(world, iid, timeout=timeout)
    return Injected(phase=phase, fault=fault, instance_id=iid, state=doc, before=before, kill=result)


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
