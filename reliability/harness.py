"""The fault matrix's core: a local world, a launch, a fault at a phase, and the settled outcome.

- :func:`open_world`: moto on 127.0.0.1 (the suite's server), behind a :class:`~reliability.
  harness_gate.Gate`, ``dev`` provisioned with IAM enforced, a small synthetic dataset staged;
  every caller (control plane, instances, recovery pump) reaches moto through the gate.
- :meth:`World.launch`: ``control.launch.launch`` on the local backend (the real user data,
  bootstrap and trainer in a local instance), counted as a run.
- :func:`hold_at`: arm the gate on the request that only phase P makes (its first, or the one
  that starts it) so the instance is blocked *in* P; :func:`landed` checks from the run's own
  records (the state file) that it is.
- faults (:mod:`reliability.harness_faults`): SIGKILL of the trainer, TerminateInstances from
  outside, ``invoke kill``; each counted.
- :func:`snapshot` before the fault (every immutable artifact's sha256), :func:`settle` after:
  waits for the run to end and returns the :class:`Outcome` (final status, the user's message,
  ``verify``'s orphans, the artifacts checked and lost, the checkpoint a resume used), each
  total counted.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import layout
from common.status import Phase, RunStatus
from common.timeutil import wait_until
from reliability import record
from reliability.harness_gate import Gate, Hold, Request, excluding_sessions

ENV = "dev"
INVOKE = str(Path(sys.executable).with_name("invoke"))
PUMP_TICK_S = "1"  # the local recovery pump's schedule tick (seconds)

MATRIX_SPEC = """\
# the fault matrix's run: the tiny random-init model, a few steps, a checkpoint every few
[instance]
max_runtime = "20m"
max_recoveries = {recoveries}

[model]
base = "tiny"
num_steps = {steps}
batch_size = 8
checkpoint_interval = {checkpoint_interval}
eval_interval = {steps}
backtest_windows = 1
"""


def matrix_spec(*, steps: int = 30, recoveries: int = 0, checkpoint_interval: int = 10) -> str:
    """The cheapest honest run spec (TOML): tiny model, ``steps`` steps, 1 backtest window."""
    return MATRIX_SPEC.format(steps=steps, recoveries=recoveries, checkpoint_interval=checkpoint_interval)


# -- the world ---------------------------------------------------------------------------------------
@dataclass
class World:
    """``dev`` in a local AWS reached through :attr:`gate`; the backend signs as ``dev``'s operator."""

    root: Path
    local_dir: Any  # control.localdir.LocalDir
    backend: Any  # control.local_backend.LocalBackend
    bucket: str
    gate: Gate
    moto_url: str
    env: str = ENV

    @property
    def s3(self) -> Any:
        return self.backend.clients().s3

    @property
    def ec2(self) -> Any:
        return self.backend.clients().ec2

    def process_env(self) -> dict[str, str]:
        """The environment of an ``invoke`` subprocess on this world."""
        return {**os.environ, "CHRONOS_LOCAL_DIR": str(self.local_dir.root), "COLUMNS": "200"}

    def write_spec(self, text: str, name: str = "run") -> Path:
        path = self.root / f"{name}.toml"
        path.write_text(text, "utf-8")
        return path

    def launch(self, spec_text: str, *, name: str = "run") -> Run:
        """``invoke launch --local`` in this process (the control path; the pump starts with it)."""
        from control.launch import launch as launch_run

        outcome = launch_run(self.backend, env=self.env, spec_path=self.write_spec(spec_text, name))
        result = outcome.result
        if result is None:
            raise RuntimeError("launch returned no run")
        record.count(record.Total.RUNS)
        return Run(world=self, run_id=result.run_id, instance_id=result.instance_id)

    def resume(self, run_id: str) -> Run:
        """``invoke launch --resume <run_id> --local`` in this process: the same run, a new instance."""
        from control.launch import launch as launch_run

        result = launch_run(self.backend, env=self.env, resume=run_id).result
        if result is None:
            raise RuntimeError("resume returned no run")
        record.count(record.Total.RUNS)
        return Run(world=self, run_id=result.run_id, instance_id=result.instance_id)

    def launch_process(self, spec_text: str, *, name: str = "run") -> subprocess.Popen[str]:
        """``invoke launch --env=dev --local --spec=...`` as a child process (to kill it mid-way)."""
        spec = self.write_spec(spec_text, name)
        return subprocess.Popen(
            [INVOKE, "launch", f"--env={self.env}", "--local", f"--spec={spec}"],
            cwd=Path(__file__).resolve().parents[1],
            env=self.process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )

    def invoke(self, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        """``invoke <args>`` on this world; stdout and stderr together in ``.stdout``."""
        return subprocess.run(
            [INVOKE, *args],
            cwd=Path(__file__).resolve().parents[1],
            env=self.process_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=timeout,
        )

    def state(self) -> dict[str, Any] | None:
        """The env's state document (``None``: no lock)."""
        from common.state_store import StateStore

        snap = StateStore(self.s3, self.bucket, self.env).read()
        return snap.doc if snap is not None else None

    def billing(self, run_id: str) -> list[str]:
        """Instances of ``run_id`` still pending, running, stopping or stopped."""
        resp = self.ec2.describe_instances(Filters=[{"Name": "tag:RunId", "Values": [run_id]}])
        up = ("pending", "running", "stopping", "stopped")
        return [
            i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"] if i["State"]["Name"] in up
        ]

    def instances(self, run_id: str) -> list[str]:
        """Every instance ever launched for ``run_id`` (moto keeps terminated ones listed)."""
        resp = self.ec2.describe_instances(Filters=[{"Name": "tag:RunId", "Values": [run_id]}])
        return [i["InstanceId"] for r in resp["Reservations"] for i in r["Instances"]]

    def get_json(self, key: str) -> dict[str, Any] | None:
        try:
            body = self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.s3.exceptions.NoSuchKey:
            return None
        return json.loads(body)

    def logs(self, lines: int = 30) -> str:
        """The tails of the pump's and every instance's console, for a failure message."""
        root = self.local_dir.root
        files = sorted((root / "recovery").glob("*.log")) + sorted(root.glob("instances/*/console.log"))
        return "\n".join(
            f"--- {f.parent.name}/{f.name}\n"
            + "\n".join(f.read_text("utf-8", "replace").splitlines()[-lines:])
            for f in files
        )


@contextlib.contextmanager
def open_world(
    root: Path, moto: Any, *, upstream: str | None = None, items: int = 6, days: int = 14
) -> Iterator[World]:
    """``dev`` provisioned on ``moto`` (a :class:`localaws.moto.LocalAWS`, reset by the caller).

    Args:
        root: a scratch folder (``.local`` and the dataset go here).
        moto: the local AWS (the suite's ``local_aws`` fixture).
        upstream: what the gate forwards to (default moto; another proxy chains here).
        items, days: the synthetic dataset's size (hourly series).
    """
    from control.local_backend import LocalBackend
    from control.local_instance import terminate_processes
    from control.local_recovery import TICK_VAR, stop_all
    from control.localdir import LocalDir, write_json
    from control.localenv import provision, stage_dataset
    from trainer.synthetic import generate_dataset

    gate = Gate(upstream or moto.endpoint_url).start()
    local_dir = LocalDir(root / ".local")
    saved = {k: os.environ.get(k) for k in ("CHRONOS_LOCAL_DIR", TICK_VAR)}
    os.environ.update({"CHRONOS_LOCAL_DIR": str(local_dir.root), TICK_VAR: PUMP_TICK_S})
    try:
        write_json(local_dir.aws_file, {"endpoint_url": gate.url, "pid": None})
        backend = LocalBackend.open(local_dir)
        outputs = provision(backend, ENV)
        data = root / "data"
        generate_dataset(data, n_items=items, length=24 * days, items_per_file=max(1, items // 2))
        stage_dataset(backend.clients().s3, outputs["bucket"], data)
        yield World(
            root=root,
            local_dir=local_dir,
            backend=backend,
            bucket=outputs["bucket"],
            gate=gate,
            moto_url=moto.endpoint_url,
        )
    finally:
        stop_all(local_dir)
        for rec in local_dir.instance_records():
            terminate_processes(rec, grace_s=5.0)
        gate.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class Run:
    """A launched run."""

    world: World
    run_id: str
    instance_id: str

    @property
    def paths(self) -> layout.RunPaths:
        return layout.RunPaths(env=self.world.env, run_id=self.run_id)


# -- a phase, deterministically ----------------------------------------------------------------------
def _state_put(status: RunStatus) -> Callable[[Request], bool]:
    """A PUT of the state file whose document's own ``status`` is ``status``.

    Only the top-level field counts: the recovery handler's claim (``recovering``) carries the
    history, whose entries name earlier statuses. It matched once in CI: an attempt terminated
    in training wrote ``results_sync`` in its shutdown's grace, and the handler's claim after it
    took the evaluation hold meant for the relaunch.
    """
    key = layout.state_key(ENV)

    def match(r: Request) -> bool:
        return r.method == "PUT" and r.key == key and _top_status(r.body) == status.value

    return match


def _top_status(body: bytes) -> str | None:
    """The ``status`` of the JSON document in ``body`` (a chunk framing around it is skipped)."""
    start, end = body.find(b"{"), body.rfind(b"}")
    try:
        doc = json.loads(body[start : end + 1]) if 0 <= start < end else None
    except ValueError:
        return None
    return doc.get("status") if isinstance(doc, dict) else None


def phase_request(phase: str, paths: layout.RunPaths) -> tuple[Callable[[Request], bool], bool]:
    """The request only ``phase`` makes, and whether to hold it after moto answered.

    - preflight: its S3 reachability check (ListObjectsV2 of the run's logs, MaxKeys=1);
    - data_sync: the listing of the training data (the manifest);
    - training: the first checkpoint's ``trainer_state.json`` (held once it is in S3, so
      that checkpoint is durable and the uploader is blocked while training goes on);
    - evaluation: the state write that moves the run to ``results_sync`` (evaluation runs
      first under it; it makes no S3 call of its own), held once written;
    - results_sync: the first upload under ``models/``;
    - finalize: the ``_SUCCESS`` sentinel's PUT (held before it exists);
    - cleanup: the state write that moves the run to ``cleanup`` (its first step), held once
      written (the lock is released next, then cleanup_status.json).
    """
    matchers: dict[str, tuple[Callable[[Request], bool], bool]] = {
        Phase.PREFLIGHT.value: (
            lambda r: r.method == "GET" and r.prefix == paths.logs and r.query.get("max-keys") == ["1"],
            False,
        ),
        Phase.DATA_SYNC.value: (
            lambda r: (
                r.method == "GET" and r.key == "" and r.prefix.startswith(layout.TRAINING_DATA.rstrip("/"))
            ),
            False,
        ),
        Phase.TRAINING.value: (
            lambda r: (
                r.method == "PUT"
                and r.key.startswith(paths.checkpoints)
                and r.key.endswith("/" + layout.TRAINER_STATE_NAME)
            ),
            True,
        ),
        Phase.EVALUATION.value: (_state_put(RunStatus.RESULTS_SYNC), True),
        Phase.RESULTS_SYNC.value: (lambda r: r.method == "PUT" and r.key.startswith(paths.models), False),
        Phase.FINALIZE.value: (lambda r: r.method == "PUT" and r.key == paths.success, False),
        Phase.CLEANUP.value: (_state_put(RunStatus.CLEANUP), True),
    }
    if phase not in matchers:
        raise ValueError(f"no trigger for phase {phase!r}; one of {sorted(matchers)}")
    return matchers[phase]


def hold_at(world: World, phase: str, run_id: str, *, exclude: set[str] | None = None) -> Hold:
    """Arm the gate: the instance blocks in ``phase`` of ``run_id`` (arm before the launch).

    ``exclude``: instance ids whose requests never match (the attempts a fault already hit, which
    may still be finishing a shutdown grace when the next attempt starts).
    """
    match, after = phase_request(phase, layout.RunPaths(env=world.env, run_id=run_id))
    if exclude:
        match = excluding_sessions(world.gate, match, exclude)
    return world.gate.hold(f"{phase} of {run_id}", match, after=after)


def hold_at_next(world: World, phase: str) -> Callable[[str], Hold]:
    """For a run not launched yet: the gate is armed on the phase for whatever run id comes."""
    return lambda run_id: hold_at(world, phase, run_id)


# The state-file status each phase runs under (training.json's finer phases share one).
def landed(world: World, phase: str, hold: Hold, *, timeout: float = 240.0) -> dict[str, Any]:
    """Wait until the instance is held in ``phase``; the state document then.

    Raises:
        AssertionError: the run's state file says another phase (the trigger missed it).
    """
    hold.wait(timeout)
    doc = world.state() or {}
    want = Phase(phase).run_status.value
    if doc.get("status") != want:
        hold.release()
        raise AssertionError(
            f"the fault for {phase} would land in {doc.get('status')!r}, not {want!r}: "
            f"the trigger {hold.name!r} matched {hold.request.method if hold.request else '?'} "
            f"{hold.request.path if hold.request else '?'}"
        )
    return doc


from reliability.harness_outcome import (  # noqa: E402 - the second half of the API
    Outcome,
    newest_checkpoint,
    settle,
    snapshot,
)

__all__ = [
    "ENV",
    "Outcome",
    "Run",
    "World",
    "hold_at",
    "landed",
    "matrix_spec",
    "newest_checkpoint",
    "open_world",
    "phase_request",
    "settle",
    "snapshot",
    "wait_until",
]
