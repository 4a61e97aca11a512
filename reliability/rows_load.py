"""RELIABILITY.md rows of the load group (see :mod:`reliability.matrix`)."""

from __future__ import annotations

from reliability.matrix import Row

LEAKS = (
    "no process beyond the local AWS and one recovery pump per env, the test process's threads, "
    "open files and children as before, no instance not terminated, no volume, no lock, "
    "`verify` clean (each counted)"
)

ROWS: tuple[Row, ...] = (
    Row(
        id="load-consecutive-runs",
        section="Load",
        fault="consecutive whole local runs in one local world (long profile: 30, short: 2)",
        expected=f"every run succeeds (`_SUCCESS`, completion normal); after each run: {LEAKS}",
    ),
    Row(
        id="load-concurrent-launches",
        section="Load",
        fault=(
            "8 concurrent launch attempts per env across 3 envs, all past the lock check and racing "
            "at its conditional write (long profile: 5 rounds, short: 1)"
        ),
        expected=(
            "exactly one launch wins per env; the other 7 are refused with 'a run is already active' "
            "naming the winner and created nothing (no instance, no object, no AWS write accepted); "
            f"the winners' runs succeed; afterwards: {LEAKS}"
        ),
    ),
    Row(
        id="load-lock-contention",
        section="Load",
        fault="8 threads take and give back one env's lock 5 times each, as fast as they can",
        expected="40 acquisitions, never two holders at once, every release says released, no lock left",
    ),
    Row(
        id="load-lock-lost-answer",
        section="Load",
        fault=(
            "a conditional write of the lock applied by S3 whose answer is lost (a read timeout; the "
            "SDK retries it into 412 or 404): the create, a transition, the release, a recovery claim"
        ),
        expected=(
            "the create holds the lock (not 'another run is active'), the transition is applied once "
            "(not 'illegal'), the release says released (not 'already gone'); a claim is never taken "
            "for a win (a duplicate delivery writes the same claim) and stays in place"
        ),
    ),
)
