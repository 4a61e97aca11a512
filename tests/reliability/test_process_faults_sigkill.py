"""The SIGKILL column of the fault matrix: one run, one SIGKILL per phase, each on a new attempt.

One run with ``max_recoveries`` = 7 takes a SIGKILL in every phase in turn: attempt 1 in
preflight, the relaunched attempt 2 in data_sync, ... attempt 7 in cleanup (after its own
finalize wrote ``_SUCCESS``), and the handler relaunches or releases after each. Sharing the
run is still honest for every row: each fault is held by the gate in its phase (checked on
the state file, on an instance no earlier fault hit), each recovery is the product's own
(the handler sees the instance end), and every artifact in S3 at each fault is checked at
the end. A separate run per phase would repeat the same boot for 6 more minutes of CI.
"""

from __future__ import annotations

import pytest

from reliability import harness as H
from reliability import (
    matrix,  # noqa: F401 - first: it imports every rows_*.py
    record,
)
from reliability.harness_inject import inject_at
from reliability.rows_process import SIGKILL_PHASES

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(1500),
    *(pytest.mark.row(f"sigkill@{p}") for p in SIGKILL_PHASES),
]


def test_a_sigkill_in_every_phase_is_recovered_and_the_run_succeeds(world):
    run = world.launch(H.matrix_spec(steps=30, recoveries=len(SIGKILL_PHASES), checkpoint_interval=10))
    hit: set[str] = set()
    before: dict[str, str] = {}
    armed = None  # each next phase's hold is armed before the fault (the relaunch can outrun it)
    for i, phase in enumerate(SIGKILL_PHASES):
        then = SIGKILL_PHASES[i + 1] if i + 1 < len(SIGKILL_PHASES) else None
        injected = inject_at(world, run, phase, "sigkill", previous=hit, hold=armed, then=then)
        armed = injected.next_hold
        hit.add(injected.instance_id)
        before.update(injected.before)
        if phase == "evaluation":  # training was done: the next attempt resumes at its last checkpoint
            newest = H.newest_checkpoint(injected.before, run.paths)
    out = H.settle(world, run, before=before)
    for phase in SIGKILL_PHASES:
        record.note(
            f"sigkill@{phase}", f"one of {len(SIGKILL_PHASES)} attempts of one run; ended {out.status}"
        )
    assert out.state is None, out.state  # the lock is gone: the handler released the cleanup lock
    assert out.status == "succeeded", out.message
    assert out.training is not None and out.training["completion_status"] == "normal"
    assert out.sentinel is not None and out.sentinel["completion_status"] == "normal"
    assert out.orphans == [] and out.lost == [], (out.orphans, out.lost)
    assert out.checked > 0
    assert out.resumed_from_step == newest == 30, (out.resumed_from_step, newest)
    assert len(out.instances) == len(SIGKILL_PHASES) and hit <= set(out.instances)
    assert out.cleanup is not None and out.cleanup["state_file_removed"] is True
    assert out.cleanup["written_by"] == "recovery"  # attempt 7 died in cleanup: the handler finished it
