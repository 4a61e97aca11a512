"""RELIABILITY.md rows of the process group (see :mod:`reliability.matrix`).

Every fault lands in its phase through the harness's gate (:func:`reliability.harness.hold_at`:
the instance is held on the request only that phase makes, checked on the state file).
"""

from __future__ import annotations

from reliability.matrix import Row

FM = "Fault matrix"
PHASES = ("preflight", "data_sync", "training", "evaluation", "results_sync", "finalize", "cleanup")
SIGKILL_PHASES = PHASES  # the name the SIGKILL chain imports
HELD = "while the gate holds the instance on the request only this phase makes"
RECOVERED = (
    "the instance powers off, the recovery handler relaunches (or releases a final lock); the run "
    "ends succeeded, resumed from the newest complete checkpoint; verify finds no orphan; every "
    "artifact uploaded before the fault is unchanged"
)


def _row(fault: str, phase: str, what: str, expected: str) -> Row:
    return Row(id=f"{fault}@{phase}", section=FM, phase=phase, fault=f"{what}, {HELD}", expected=expected)


ROWS: tuple[Row, ...] = (
    *(
        _row(
            "sigkill",
            p,
            "SIGKILL of the instance's trainer and its children (no finalize, no cleanup)",
            RECOVERED,
        )
        for p in PHASES
    ),
    Row(
        id="control-death@launch",
        section=FM,
        phase="launch",
        fault="SIGKILL of `invoke launch` after RunInstances answered, before the instance was recorded",
        expected=(
            "the next `invoke launch` is refused naming the unrecorded instance and `invoke verify "
            "--fix`; verify finds the instance and the lock; `verify --fix` terminates it and "
            "clears the lock; nothing bills, verify is clean, the next launch succeeds"
        ),
    ),
)
