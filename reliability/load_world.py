"""A local world for the load tests: several envs, launches through the real control path, a census.

:meth:`LoadWorld.up` is ``invoke local.up --env=<each>`` into a scratch folder (the local AWS
as a background server on 127.0.0.1, each env provisioned with IAM enforced, the synthetic
dataset staged in each env's bucket) and ``invoke local.down`` on the way out. A launch is
``invoke launch --local`` in this process (:func:`control.launch.launch`, the local backend
signing as the env's operator, the real user data and bootstrap); each one gets its own
backend, closed afterwards, as each ``invoke`` command has its own. :meth:`LoadWorld.census`
counts what is left (:mod:`reliability.load`), :meth:`LoadWorld.wait_ended` waits for a run
to end the way a user would see it: the lock released, the instance terminated, its
processes gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from control.local_backend import LocalBackend
from control.localdir import LocalDir, read_json
from reliability.load import CloudCensus, LocalProcess, ProcessCensus, cloud_census, local_processes
from reliability.load import volumes as all_volumes

POLL_S = 0.5
# The cheapest honest whole run: the shipped tiny Chronos-2 on the synthetic dataset, a few steps,
# a checkpoint, one validation and one test window (about 30 s on 2 idle cores, torch's import first).
LOAD_RUN = """\
# load: the tiny Chronos-2 on the synthetic dataset, a few steps, one checkpoint
[instance]
max_runtime = "20m"
max_recoveries = 0
[model]
base = "tiny"
num_steps = 4
batch_size = 8
checkpoint_interval = 2
eval_interval = 4
backtest_windows = 1
"""
RUN_TIMEOUT_S = 420.0  # one run on 2 loaded cores; only a hung run reaches it, never a slow one


def by_profile(*, short: int, long: int) -> int:
    """``short`` in make test and CI, ``long`` in make soak (:func:`reliability.record.profile`)."""
    from reliability import record

    return long if record.profile() == "long" else short


Hook = Callable[[Any], None]  # called with every client a backend makes (CallLog.attach ...)


class RecordedBackend(LocalBackend):
    """The local backend, every client it makes handed to each of :attr:`hooks` first."""

    hooks: tuple[Hook, ...] = ()

    def client(self, service: str) -> Any:
        made = super().client(service)
        for hook in self.hooks:
            hook(made)
        return made

    def close(self) -> None:
        """Close the connections of the clients it made (an ``invoke`` command's exit does it)."""
        if self._clients is not None:
            for made in (self._clients.s3, self._clients.ec2, self._clients.sts):
                made.close()
            self._clients = None


@dataclass(frozen=True, kw_only=True)
class Census:
    """Everything a local world left at one moment, and which of it is a leak."""

    processes: tuple[LocalProcess, ...]
    here: ProcessCensus
    clouds: tuple[CloudCensus, ...]
    volumes: tuple[str, ...]
    orphans: tuple[str, ...]  # what `invoke verify` calls orphaned, per env
    leaks: tuple[str, ...] = field(default=())

    def summary(self) -> str:
        return "; ".join(self.leaks) or "nothing leaked"


@dataclass(kw_only=True)
class LoadWorld:
    """Local AWS with ``envs`` provisioned, their data staged, and the local folder they live in."""

    local_dir: LocalDir
    envs: tuple[str, ...]
    buckets: dict[str, str]
    server_pid: int | None

    @classmethod
    @contextmanager
    def up(cls, root: Path, envs: tuple[str, ...]) -> Iterator[LoadWorld]:
        """Start the local AWS under ``root`` with ``envs``; stop everything it started on the way out."""
        from control import localenv

        local_dir = LocalDir(Path(root) / ".local")
        try:
            buckets = {env: localenv.up(env=env, local_dir=local_dir).bucket for env in envs}
            pid = (read_json(local_dir.aws_file) or {}).get("pid")
            yield cls(local_dir=local_dir, envs=envs, buckets=buckets, server_pid=pid)
        finally:
            localenv.down(local_dir=local_dir)

    def backend(self, env: str, *, hooks: tuple[Hook, ...] = ()) -> RecordedBackend:
        """A fresh backend signing as ``env``'s operator (each client it makes goes to ``hooks``)."""
        backend = RecordedBackend.open(self.local_dir, env=env)
        backend.hooks = hooks
        return backend

    def launch(self, env: str, spec_path: Path, *, hooks: tuple[Hook, ...] = ()) -> Any:
        """``invoke launch --env=<env> --local --spec=<spec_path>``; the :class:`LaunchResult`.

        Raises:
            whatever the launch raises (``LockHeldError`` when a run holds the lock).
        """
        from control.launch import launch

        backend = self.backend(env, hooks=hooks)
        try:
            outcome = launch(backend, env=env, spec_path=spec_path)
        finally:
            backend.close()
        if outcome.result is None:
            raise RuntimeError("the launch returned no run")
        return outcome.result

    def with_clients(self, env: str, use: Callable[[Any], Any]) -> Any:
        """``use(clients)`` with a fresh backend of ``env``'s operator, closed afterwards."""
        backend = self.backend(env)
        try:
            return use(backend.clients())
        finally:
            backend.close()

    def outcome(self, env: str, run_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        """The run's training.json and its ``_SUCCESS`` document, validated (``None``: not there)."""
        from common import layout
        from control.s3io import get_json

        paths = layout.RunPaths(env=env, run_id=run_id)
        bucket = self.buckets[env]
        return self.with_clients(
            env,
            lambda c: (
                get_json(c.s3, bucket, paths.training_log, "training"),
                get_json(c.s3, bucket, paths.success, "sentinel"),
            ),
        )

    # -- waiting ------------------------------------------------------------------------------
    def wait_ended(self, env: str, run_id: str, instance_id: str, *, timeout_s: float) -> None:
        """Wait until ``run_id`` released the lock, its instance is terminated and its processes exited.

        Raises:
            TimeoutError: naming what was still there (and the instance's console tail).
        """
        deadline = time.monotonic() + timeout_s
        left: list[str] = []
        while time.monotonic() < deadline:
            left = self._still_there(env, run_id, instance_id)
            if not left:
                return
            time.sleep(POLL_S)
        console = self.local_dir.instance_dir(instance_id) / "console.log"
        tail = "\n".join(console.read_text(errors="replace").splitlines()[-30:]) if console.is_file() else ""
        raise TimeoutError(f"run {run_id} in {env}: after {timeout_s:.0f} s still {left}\n{tail}")

    def _still_there(self, env: str, run_id: str, instance_id: str) -> list[str]:
        cloud = self.with_clients(env, lambda c: cloud_census(c.ec2, c.s3, env=env, bucket=self.buckets[env]))
        left = [f"lock of {cloud.lock}"] if cloud.lock == run_id else []
        left += [i for i in cloud.instances if i.startswith(instance_id)]
        record = read_json(self.local_dir.instance_file(instance_id)) or {}
        pids = {record.get("supervisor_pid"), record.get("trainer_pid")} - {None}
        left += [p.describe() for p in self.processes() if p.pid in pids and p.status != "zombie"]
        return left

    # -- counting -----------------------------------------------------------------------------
    def processes(self) -> list[LocalProcess]:
        return local_processes(self.local_dir.root, server_pid=self.server_pid)

    def census(self, baseline: ProcessCensus) -> Census:
        """What is left now, each leak named: processes beyond the local AWS and one recovery pump
        per env, this process's threads, descriptors and children beyond ``baseline`` (taken
        after :func:`reliability.load.settled_native_pools`), instances not terminated, volumes,
        locks, and what ``invoke verify`` calls orphaned."""
        from control.verify import verify

        procs = self.processes()
        allowed = {self.server_pid} | self._one_pump_per_env(procs)
        leaks = [f"process {p.describe()}" for p in procs if p.pid not in allowed]
        here = ProcessCensus.take()
        leaks += [
            f"test process: {item}" for item in here.leaks_since(baseline, allowed_pids=frozenset(allowed))
        ]
        clouds, orphans = [], []
        for env in self.envs:
            cloud = self.with_clients(
                env, lambda c, env=env: cloud_census(c.ec2, c.s3, env=env, bucket=self.buckets[env])
            )
            clouds.append(cloud)
            leaks += cloud.leaks()
            backend = self.backend(env)
            try:
                found = verify(backend, env=env).final.orphans
            finally:
                backend.close()
            orphans += [f"{env}: verify: {f.kind} {f.resource} ({f.detail})" for f in found]
        vols = tuple(self.with_clients(self.envs[0], lambda c: all_volumes(c.ec2)))
        leaks += [f"volume {v}" for v in vols] + orphans
        return Census(
            processes=tuple(procs),
            here=here,
            clouds=tuple(clouds),
            volumes=vols,
            orphans=tuple(orphans),
            leaks=tuple(leaks),
        )

    def _one_pump_per_env(self, procs: list[LocalProcess]) -> set[int]:
        """The pid of each env's recorded recovery pump (it lives until ``local.down``, as the
        EventBridge rules it stands for do); a second pump of one env is a leak."""
        from control.local_recovery import pump_file

        recorded = {(read_json(pump_file(self.local_dir, env)) or {}).get("pid") for env in self.envs}
        return {p.pid for p in procs if p.role == "recovery-pump" and p.pid in recorded}
