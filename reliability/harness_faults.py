"""The process faults the harness injects into a local run, each counted where it happens.

- :func:`sigkill_trainer`: SIGKILL of the instance's trainer (``python -m trainer run``) and
  everything it started (the training child): no finalize, no cleanup, as the OOM killer or a
  kernel panic leaves it; the user data then exits non-zero and powers the instance off.
- :func:`terminate_instance`: ``TerminateInstances`` from outside (the console, another tool):
  the local host gives the processes an OS shutdown (SIGTERM, then SIGKILL after a grace).
- :func:`start_kill`: ``invoke kill`` (:func:`control.kill.kill_run`, the command's body) in a
  thread; :class:`Kill` waits for it and holds its result.
- :func:`disk_full`: instances booted meanwhile get ``ENOSPC`` writing matching paths
  (:mod:`control.local_faults`); :func:`truncate_object` tears an object in S3.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import psutil

from reliability import record


def trainer_process(world: Any, instance_id: str) -> psutil.Process:
    """The instance's ``python -m trainer run`` process.

    Raises:
        LookupError: the instance runs no trainer (not booted yet, or gone).
    """
    from control.localdir import read_json

    rec = read_json(world.local_dir.instance_file(instance_id)) or {}
    leader = rec.get("trainer_pid")
    if not leader:
        raise LookupError(f"instance {instance_id} has not booted its user data")
    try:
        tree = psutil.Process(int(leader)).children(recursive=True)
    except psutil.NoSuchProcess:
        raise LookupError(f"instance {instance_id}'s user data is gone") from None
    for proc in tree:
        with _gone_ok():
            argv = proc.cmdline()
            if "-m" in argv and argv[argv.index("-m") + 1 : argv.index("-m") + 3] == ["trainer", "run"]:
                return proc
    raise LookupError(f"instance {instance_id} runs no `python -m trainer run`")


class _gone_ok:
    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, *_: Any) -> bool:
        return kind is not None and issubclass(kind, (psutil.NoSuchProcess, psutil.ZombieProcess))


def sigkill_trainer(world: Any, instance_id: str) -> list[int]:
    """SIGKILL the trainer and its descendants at once; the pids killed."""
    proc = trainer_process(world, instance_id)
    victims = [proc, *proc.children(recursive=True)]
    for p in victims:
        with _gone_ok():
            p.send_signal(signal.SIGKILL)
    record.count(record.Total.FAULTS_INJECTED)
    return [p.pid for p in victims]


def terminate_instance(world: Any, instance_id: str) -> None:
    """``TerminateInstances`` from outside, as the env's operator."""
    world.ec2.terminate_instances(InstanceIds=[instance_id])
    record.count(record.Total.FAULTS_INJECTED)


@dataclass
class Kill:
    """An ``invoke kill`` under way in a thread."""

    thread: threading.Thread
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    def wait(self, timeout: float) -> Any:
        """The :class:`control.kill.KillResult`.

        Raises:
            TimeoutError: still running after ``timeout``. The kill's own error, re-raised.
        """
        if not self.done.wait(timeout):
            raise TimeoutError(f"invoke kill did not return within {timeout:.0f} s")
        if self.error is not None:
            raise self.error
        return self.result


def start_kill(world: Any, *, grace_s: float = 90.0) -> Kill:
    """Start ``invoke kill --env=<env> --grace=<grace_s>`` (the command's body) in a thread."""
    from control.kill import kill_run
    from control.local_backend import LocalBackend

    backend = LocalBackend.open(world.local_dir, env=world.env)  # its own clients: a thread of its own
    box: dict[str, Kill] = {}

    def body() -> None:
        kill = box["kill"]
        try:
            kill.result = kill_run(backend, env=world.env, grace_s=grace_s)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting test
            kill.error = exc
        finally:
            kill.done.set()

    kill = Kill(thread=threading.Thread(target=body, name="harness-kill", daemon=True))
    box["kill"] = kill
    record.count(record.Total.FAULTS_INJECTED)
    kill.thread.start()
    return kill


@contextlib.contextmanager
def disk_full(glob: str) -> Iterator[None]:
    """Instances booted inside this block find their disk full for paths matching ``glob``.

    Each write of a matching file raises ``ENOSPC`` (:mod:`control.local_faults`; the
    supervisor hands the fault to the instance's Python). Counted per refusal by
    :func:`disk_full_hits`.
    """
    from control import local_faults

    local_faults.parse(f"enospc:{glob}")
    saved = os.environ.get(local_faults.ENV_VAR)
    os.environ[local_faults.ENV_VAR] = f"enospc:{glob}"
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(local_faults.ENV_VAR, None)
        else:
            os.environ[local_faults.ENV_VAR] = saved


def disk_full_hits(world: Any, instance_id: str, *, count: bool = True) -> list[str]:
    """The paths whose write the full disk refused on ``instance_id`` (each counted once)."""
    log = world.local_dir.instance_dir(instance_id) / "faults.log"
    try:
        lines = log.read_text("utf-8").splitlines()
    except FileNotFoundError:
        return []
    if count:
        seen = _COUNTED.setdefault(instance_id, 0)
        if len(lines) > seen:
            record.count(record.Total.FAULTS_INJECTED, len(lines) - seen)
            _COUNTED[instance_id] = len(lines)
    return [line.split(" ", 1)[1] for line in lines if " " in line]


_COUNTED: dict[str, int] = {}


def truncate_object(world: Any, key: str, *, keep: float = 0.5) -> int:
    """Rewrite ``key`` in S3 with only its first ``keep`` share of bytes (a torn upload); its new size."""
    body = world.s3.get_object(Bucket=world.bucket, Key=key)["Body"].read()
    cut = body[: int(len(body) * keep)]
    world.s3.put_object(Bucket=world.bucket, Key=key, Body=cut)
    record.count(record.Total.FAULTS_INJECTED)
    return len(cut)
