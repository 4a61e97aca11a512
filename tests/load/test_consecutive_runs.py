"""Consecutive whole local runs in one local world leave nothing behind, each counted after each run.

One local AWS with ``dev`` provisioned; the run spec of tests/load/conftest.py launched through
the real control path (:func:`control.launch.launch`, the local backend, the real user data)
again and again, each launch waiting for the previous run to end. After every run the census
(:class:`reliability.load_world.Census`) counts the processes of the local world, this
process's threads, open files and children, the env's instances, every volume, the lock and
what ``verify`` finds; any of them beyond what the world itself holds is a leak.
"""

from __future__ import annotations

import pytest

from reliability import record
from reliability.load import ProcessCensus, settled_native_pools
from reliability.load_world import RUN_TIMEOUT_S, LoadWorld, by_profile

pytestmark = pytest.mark.slow

ENV = "dev"
ROW = "load-consecutive-runs"
RUNS = by_profile(short=2, long=30)


@pytest.mark.row(ROW)
@pytest.mark.timeout(int(RUNS * RUN_TIMEOUT_S + 120))
def test_consecutive_local_runs_each_succeed_and_leave_nothing(tmp_path, load_spec):
    seen_leaks = 0
    with LoadWorld.up(tmp_path, (ENV,)) as world, settled_native_pools(tmp_path / "warm"):
        baseline = ProcessCensus.take()  # the world up, no run yet
        for n in range(1, RUNS + 1):
            result = world.launch(ENV, load_spec)
            record.count(record.Total.RUNS)
            record.count(record.Total.LOAD_RUNS)
            world.wait_ended(ENV, result.run_id, result.instance_id, timeout_s=RUN_TIMEOUT_S)
            training, sentinel = world.outcome(ENV, result.run_id)
            assert training is not None and training["completion_status"] == "normal", (n, training)
            assert sentinel is not None and sentinel["completion_status"] == "normal", (n, sentinel)
            census = world.census(baseline)
            record.count(record.Total.ORPHANS_FOUND, len(census.leaks))
            seen_leaks += len(census.leaks)
            assert census.leaks == (), f"after run {n} of {RUNS} ({result.run_id}): {census.summary()}"
            [cloud] = census.clouds
            assert cloud.instances_ever == n  # one instance per run, each terminated
    left = [p.describe() for p in world.processes()]
    record.count(record.Total.ORPHANS_FOUND, len(left))
    assert left == [], f"after local.down: {left}"
    record.note(
        ROW,
        f"{RUNS} consecutive runs ({record.profile()} profile): {seen_leaks} leaks counted after them; "
        f"test process at the start: {len(baseline.threads)} Python threads, {baseline.os_threads} OS "
        f"threads (pyarrow's pools at one thread each), {sum(baseline.fds.values())} open fds",
    )
