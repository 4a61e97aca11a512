"""RELIABILITY.md rows of the process group (see :mod:`reliability.matrix`).

Every fault lands in its phase through the harness's gate (:func:`reliability.harness.hold_at`:
the instance is held on the request only that phase makes, checked on the state file).
"""

from __future__ import annotations

from reliability.matrix import Row

FM = "Fault matrix"
PHASES = ("preflight", "data_sync", "training", "evaluation", "results_sync", "finalize", "cleanup")
SIGKILL_PHASES = PHASES  # the name the SIGKILL chain imports
WORKING = ("preflight", "data_sync", "training", "evaluation")  # the run's work is not done yet
HELD = "while the gate holds the instance on the request only this phase makes"
VERIFIED = "verify finds no orphan; every artifact uploaded before the fault is unchanged"
RECOVERED = (
    "the instance powers off, the recovery handler relaunches (or releases a final lock); the run "
    f"ends succeeded, resumed from the newest complete checkpoint; {VERIFIED}"
)
FINISHED = (
    "the work is done, so the instance finishes within the {grace}: the run ends succeeded with its "
    f"results whole (nothing to recover or resume); {VERIFIED}"
)


def _row(fault: str, phase: str, what: str, expected: str) -> Row:
    return Row(id=f"{fault}@{phase}", section=FM, phase=phase, fault=f"{what}, {HELD}", expected=expected)


def _kill_expected(phase: str) -> str:
    if phase in WORKING:
        return (
            "the run ends killed (the lock released, its instance terminated, `invoke runs` says "
            f"killed); {VERIFIED}; `invoke launch --resume` continues it from its newest complete "
            "checkpoint"
        )
    return FINISHED.format(grace="kill's grace (`invoke kill` says the instance finalized it)")


def _terminate_expected(phase: str) -> str:
    if phase in WORKING:
        return RECOVERED
    return (
        "the work is done (its results uploading, or whole), so the instance finishes within the OS "
        "shutdown's grace or is "
        "killed at its end and the handler relaunches it: either way the run ends succeeded with its "
        f"results whole; {VERIFIED}"
    )


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
    *(
        _row(
            "terminate",
            p,
            "TerminateInstances of the run's instance from outside (no notice; an OS shutdown; the "
            "recovery pump hears only its schedule, no instance-ended event)",
            _terminate_expected(p),
        )
        for p in PHASES
    ),
    *(_row("kill", p, "`invoke kill` of the run", _kill_expected(p)) for p in PHASES),
    Row(
        id="control-death@launch",
        section=FM,
        phase="launch",
        fault="SIGKILL of `invoke launch` after RunInstances answered, before the instance was recorded",
        expected=(
            "the next `invoke launch` is refused in one line naming the run, the unrecorded instance, "
            "`invoke kill` and `invoke verify --fix`; verify calls the instance an orphan of that run; "
            "kill releases the lock, `verify --fix` terminates the instance; then verify is clean "
            "and the next launch is not refused"
        ),
    ),
)
