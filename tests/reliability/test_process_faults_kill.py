"""The kill column of the fault matrix: `invoke kill` in every phase.

A kill that lands while the run still works (preflight to evaluation) stops it: the run ends
killed and the user resumes it (``invoke launch --resume``, the same run id on a new instance),
so one run takes those four kills in turn, each on a new attempt held by the gate in its phase
(checked on the state file), each ending settled on its own (killed, the lock gone, nothing
billing, verify clean, every artifact uploaded before unchanged), each resume starting from the
newest complete checkpoint the kill left. A kill that lands once the work is done (the final
upload under way in results_sync, the _SUCCESS write in finalize, cleanup) lets the instance
finish within the kill's grace: the run ends succeeded with its results whole and `invoke kill`
says the instance finalized it. The resumed run takes results_sync; finalize and cleanup,
each ending a run, get a short run each.
"""

from __future__ import annotations

import pytest

from common.errors import ConfigError
from reliability import harness as H
from reliability import matrix  # noqa: F401 - first: it imports every rows_*.py
from reliability.harness_inject import inject_at
from reliability.rows_process import PHASES

pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800), *(pytest.mark.row(f"kill@{p}") for p in PHASES)]
STOPPING = ("preflight", "data_sync", "training", "evaluation")  # the run still works: the kill stops it


def _killed_as_seen(world, run, phase: str, previous: set[str]) -> tuple[H.Outcome, object]:
    injected = inject_at(world, run, phase, "kill", previous=previous)
    previous.add(injected.instance_id)
    out = H.settle(world, run, before=injected.before, row=f"kill@{phase}")
    kill = injected.kill
    assert kill.run_id == run.run_id and kill.status_before == injected.state["status"], kill
    assert out.orphans == [] and out.lost == [] and out.state is None, (phase, out)
    return out, kill


def test_a_kill_in_every_phase_ends_the_run_truly_and_a_resume_continues_a_killed_one(world):
    run = world.launch(H.matrix_spec(steps=30, recoveries=0, checkpoint_interval=10))
    hit: set[str] = set()
    resume_at = None  # the newest complete checkpoint in S3 when the last resume was launched
    for phase in STOPPING:
        out, _ = _killed_as_seen(world, run, phase, hit)
        if resume_at is not None:
            assert out.resumed_from_step == resume_at, (phase, out.resumed_from_step, resume_at)
        assert out.status == "killed" and "killed" in out.message, (phase, out.status, out.message)
        assert out.training is not None and out.training["completion_status"] == "killed", phase
        resume_at = H.newest_checkpoint(H.snapshot(world, run.run_id), run.paths)
        run = world.resume(run.run_id)
    assert resume_at == 30  # killed in evaluation: training was done

    out, kill = _killed_as_seen(world, run, "results_sync", hit)
    assert out.resumed_from_step == 30, out
    _finished_within_the_grace(world, run, out, kill)
    assert len(world.instances(run.run_id)) == len(STOPPING) + 1 == len(hit)

    for phase in ("finalize", "cleanup"):
        short = world.launch(H.matrix_spec(steps=10, checkpoint_interval=10), name=phase)
        out, kill = _killed_as_seen(world, short, phase, set())
        _finished_within_the_grace(world, short, out, kill)


def _finished_within_the_grace(world, run, out: H.Outcome, kill) -> None:
    """The kill came after the work was done: the instance finished, the results are whole."""
    assert out.status == "succeeded", (out.status, out.message)
    assert out.sentinel is not None and out.sentinel["completion_status"] == "normal", out.sentinel
    assert kill.finalized_by_instance, kill  # the instance removed the lock and wrote its cleanup
    with pytest.raises(ConfigError, match="already finished normally"):
        world.resume(run.run_id)
