"""A whole local run for the bench: the local world, a launch, waiting, and what the run left.

:func:`local_world` is ``invoke local.up`` into a scratch folder (moto as a background server
on 127.0.0.1, ``dev`` provisioned with IAM enforced, the synthetic dataset staged) and
``invoke local.down`` on the way out; :func:`launch` is ``invoke launch --local`` (the
recovery pump starts with the first instance). :mod:`bench.orchestration` and
:mod:`bench.interruption` drive their runs through these.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from common import layout

ENV = "dev"
RUN_TIMEOUT_S = 900.0
RUN_SPEC = """\
# bench: the tiny pretrained Chronos-2 on the synthetic dataset, batch 32
[instance]
max_runtime = "40m"
max_recoveries = {recoveries}

[model]
base = "auto"
batch_size = 32
num_steps = {steps}
checkpoint_interval = {checkpoint_interval}
eval_interval = {eval_interval}
"""


def run_spec(
    steps: int, *, recoveries: int = 0, checkpoint_interval: int = 100, backtest_windows: int | None = None
) -> str:
    """The bench's run spec (TOML): the demo's model at batch 32, defaults elsewhere
    (``backtest_windows``: the spec's default, 3, unless given)."""
    every = max(1, min(checkpoint_interval, steps))
    text = RUN_SPEC.format(
        steps=steps, recoveries=recoveries, checkpoint_interval=every, eval_interval=max(1, min(100, steps))
    )
    return text if backtest_windows is None else text + f"backtest_windows = {backtest_windows}\n"


# -- the local world ---------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class World:
    """Local AWS with ``dev`` provisioned and the dataset staged; the backend signs as its operator."""

    local_dir: Any  # control.localdir.LocalDir
    backend: Any  # control.local_backend.LocalBackend
    bucket: str

    @property
    def s3(self) -> Any:
        return self.backend.clients().s3

    @property
    def ec2(self) -> Any:
        return self.backend.clients().ec2

    def work_dir(self, instance_id: str) -> Path:
        """The instance's ``/opt/chronos/work`` (the trainer's work folder) on its local machine."""
        return self.local_dir.instance_dir(instance_id) / "root" / "opt" / "chronos" / "work"


@contextmanager
def local_world(root: Path) -> Iterator[World]:
    """Start moto on 127.0.0.1 under ``root``, provision ``dev``, stage the data; stop it all after.

    Everything started here (the server, each instance's processes, the recovery pump) is
    stopped by :func:`control.localenv.down` on the way out, whatever happened.
    """
    from control import localenv
    from control.local_backend import LocalBackend
    from control.localdir import LocalDir

    local_dir = LocalDir(root / ".local")
    try:
        up = localenv.up(env=ENV, local_dir=local_dir)
        yield World(local_dir=local_dir, backend=LocalBackend.open(local_dir, env=ENV), bucket=up.bucket)
    finally:
        localenv.down(local_dir=local_dir)


@dataclass(frozen=True, kw_only=True)
class Launched:
    """A run started by :func:`launch`: ids, when (epoch and monotonic) and how long the call took."""

    run_id: str
    instance_id: str
    started_at: float  # time.time() just before the launch call
    started_mono: float
    launch_s: float


def launch(world: World, spec_text: str, *, name: str = "bench-run") -> Launched:
    """``invoke launch --local`` with ``spec_text`` (the recovery pump starts with it)."""
    from control.launch import launch as launch_run

    path = world.local_dir.root / f"{name}.toml"
    path.write_text(spec_text, "utf-8")
    started_at, started_mono = time.time(), time.monotonic()
    outcome = launch_run(world.backend, env=ENV, spec_path=path)
    result = outcome.result
    if result is None:
        raise RuntimeError("launch returned no run")
    return Launched(
        run_id=result.run_id,
        instance_id=result.instance_id,
        started_at=started_at,
        started_mono=started_mono,
        launch_s=time.monotonic() - started_mono,
    )


def instance_state(world: World, instance_id: str) -> str:
    resp = world.ec2.describe_instances(InstanceIds=[instance_id])
    return str(resp["Reservations"][0]["Instances"][0]["State"]["Name"])


def run_instances(world: World, run_id: str) -> list[tuple[str, str]]:
    """(instance id, state) of every instance launched for ``run_id``."""
    resp = world.ec2.describe_instances(Filters=[{"Name": "tag:RunId", "Values": [run_id]}])
    return [(i["InstanceId"], i["State"]["Name"]) for r in resp["Reservations"] for i in r["Instances"]]


def state_doc(world: World) -> dict[str, Any] | None:
    """The env's state document (``None``: no run holds the lock)."""
    from common.state_store import StateStore

    snap = StateStore(world.s3, world.bucket, ENV).read()
    return snap.doc if snap is not None else None


def training_json(world: World, run_id: str) -> dict[str, Any]:
    key = layout.RunPaths(env=ENV, run_id=run_id).training_log
    return json.loads(world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read())


def first_step_at(progress: Path) -> float | None:
    """Epoch seconds of the first ``step`` event of a progress file (``None``: none yet)."""
    try:
        lines = progress.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if event.get("event") == "step" and event.get("ts") is not None:
            return float(event["ts"])
    return None


def training_data(files: list[Path], spec_text: str, scratch: Path) -> tuple[Any, Any]:
    """The run's resolved spec and its data (train inputs, validation window) from ``files``."""
    from common.runspec import load as load_spec
    from trainer.sync import load_training_data

    scratch.mkdir(parents=True, exist_ok=True)
    path = scratch / "spec.toml"
    path.write_text(spec_text, "utf-8")
    spec = load_spec(path).resolved(local=True)
    return spec, load_training_data(files, spec)


def read_json(path: Path) -> dict[str, Any]:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}
