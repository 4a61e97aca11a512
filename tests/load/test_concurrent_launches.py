"""Concurrent launches: 8 at once per env across 3 envs; one wins each env, the rest create nothing.

One local AWS with three envs provisioned. Each round starts 8 launches per env at once, each
through the real control path with its own backend (as 8 ``invoke launch`` commands would),
and makes them race where it matters: every launch's first read of the state file waits until
all 8 got there (so all of them pass the "a run is active" check), and every launch's
conditional create of the lock waits until all 8 are about to send it
(:class:`reliability.load.LockRace`). Every AWS call each launch makes is recorded
(:class:`reliability.load.CallLog`): a refused launch must have had no write accepted (its one
lock write answered 412), whatever run id it computed. Then the winners' runs end and the
census counts what was left.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import pytest

from common import layout
from common.errors import LockHeldError
from reliability import record
from reliability.load import CallLog, LockRace, ProcessCensus, bucket_keys, settled_native_pools
from reliability.load_world import RUN_TIMEOUT_S, LoadWorld, by_profile

pytestmark = pytest.mark.slow

ENVS = ("load-a", "load-b", "load-c")
ATTEMPTS = 8
ROUNDS = by_profile(short=1, long=5)
ROW = "load-concurrent-launches"
RACE_TIMEOUT_S = 300.0  # how long a launch waits at a gate for the others (a loaded 2-core machine)


@dataclass
class Attempt:
    env: str
    calls: CallLog
    result: Any = None
    error: BaseException | None = None

    def lock_writes(self) -> list[int]:
        """The HTTP status of each create of the env's lock (``IfNoneMatch``) this launch sent."""
        key = layout.state_key(self.env)
        return [
            c.status
            for c in self.calls.calls
            if c.operation == "PutObject" and c.key == key and c.condition == "IfNoneMatch"
        ]


def _attempt(world: LoadWorld, env: str, spec, race: LockRace) -> Attempt:
    attempt = Attempt(env=env, calls=CallLog())
    try:
        attempt.result = world.launch(env, spec, hooks=(attempt.calls.attach, race.attach))
    except Exception as exc:  # noqa: BLE001 - every outcome is judged below
        attempt.error = exc
    finally:
        race.done()
    return attempt


def _round(world: LoadWorld, spec) -> tuple[dict[str, list[Attempt]], dict[str, LockRace]]:
    races = {env: LockRace(env, ATTEMPTS, timeout_s=RACE_TIMEOUT_S) for env in ENVS}
    jobs = [(env, races[env]) for _ in range(ATTEMPTS) for env in ENVS]
    with ThreadPoolExecutor(max_workers=len(jobs), thread_name_prefix="load-launch") as pool:
        done = list(pool.map(lambda job: _attempt(world, job[0], spec, job[1]), jobs))
    return {env: [a for a in done if a.env == env] for env in ENVS}, races


def _judge(env: str, attempts: list[Attempt], race: LockRace) -> Attempt:
    """The one winner of ``env``; every other launch refused cleanly, having written nothing."""
    errors = [a.error for a in attempts if a.error is not None and not isinstance(a.error, LockHeldError)]
    assert errors == [], f"{env}: launches failed otherwise: {errors!r}"
    winners = [a for a in attempts if a.result is not None]
    assert len(winners) == 1, f"{env}: {len(winners)} launches won: {[w.result.run_id for w in winners]}"
    [winner] = winners
    assert race.read_gate.complete and race.write_gate.complete, f"{env}: not every launch reached the lock"
    assert winner.lock_writes() == [200], winner.lock_writes()
    runs = [c for c in winner.calls.writes() if c.operation == "RunInstances"]
    assert len(runs) == 1, f"{env}: the winner ran {len(runs)} instances"
    for loser in (a for a in attempts if a is not winner):
        message = str(loser.error)
        assert f"a run is already active in env {env!r}: {winner.result.run_id}" in message, message
        assert "invoke monitor" in message and "\n" not in message, message
        assert loser.lock_writes() == [412], loser.lock_writes()  # it raced, and lost at the lock
        assert loser.calls.writes() == [], f"{env}: a refused launch wrote {loser.calls.writes()}"
    return winner


def _owned_by(run: Any, key: str) -> bool:
    paths = layout.RunPaths(env=run.env, run_id=run.run_id)
    return key.startswith((paths.prefix, paths.logs)) or key in (paths.state, *run.uploaded)


@pytest.mark.row(ROW)
@pytest.mark.timeout(int(ROUNDS * (RACE_TIMEOUT_S + RUN_TIMEOUT_S) + 300))
def test_one_launch_wins_each_env_and_the_refused_ones_create_nothing(tmp_path, load_spec):
    leaks = 0
    with LoadWorld.up(tmp_path, ENVS) as world, settled_native_pools(tmp_path / "warm"):
        baseline = ProcessCensus.take()
        before = world.census(baseline)
        assert before.leaks == (), before.summary()
        for n in range(1, ROUNDS + 1):
            keys = {
                env: world.with_clients(env, lambda c, e=env: bucket_keys(c.s3, world.buckets[e]))
                for env in ENVS
            }
            ever = {c.env: c.instances_ever for c in world.census(baseline).clouds}
            attempts, races = _round(world, load_spec)
            record.count(record.Total.LOAD_RUNS, ATTEMPTS * len(ENVS))
            winners = {env: _judge(env, attempts[env], races[env]) for env in ENVS}
            record.count(record.Total.RUNS, len(winners))
            for env, winner in winners.items():
                run = winner.result
                world.wait_ended(env, run.run_id, run.instance_id, timeout_s=RUN_TIMEOUT_S)
                training, sentinel = world.outcome(env, run.run_id)
                assert training is not None and training["completion_status"] == "normal", (env, training)
                assert sentinel is not None and sentinel["completion_status"] == "normal", (env, sentinel)
                new = (
                    world.with_clients(env, lambda c, e=env: bucket_keys(c.s3, world.buckets[e])) - keys[env]
                )
                assert [k for k in new if not _owned_by(run, k)] == [], f"{env}: objects of no run"
            census = world.census(baseline)
            record.count(record.Total.ORPHANS_FOUND, len(census.leaks))
            leaks += len(census.leaks)
            assert census.leaks == (), f"after round {n} of {ROUNDS}: {census.summary()}"
            assert {c.env: c.instances_ever - ever[c.env] for c in census.clouds} == dict.fromkeys(ENVS, 1)
    left = [p.describe() for p in world.processes()]
    record.count(record.Total.ORPHANS_FOUND, len(left))
    assert left == [], f"after local.down: {left}"
    record.note(
        ROW,
        f"{ROUNDS} round(s) x {len(ENVS)} envs x {ATTEMPTS} launches ({record.profile()} profile), every "
        f"launch past the lock check and at its conditional write together: one winner per env each "
        f"round, {ROUNDS * len(ENVS) * (ATTEMPTS - 1)} refused with no write accepted; {leaks} leaks counted",
    )
