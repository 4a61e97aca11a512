"""Local mode's recovery: the events AWS would send, fed to the recovery handler.

On AWS, EventBridge invokes the recovery Lambda (``recovery.lambda_entry``) for the EC2
Spot Instance Interruption Warning, the EC2 Instance State-change Notification
(``terminated``) and a ``rate(5 minutes)`` schedule. Locally one event pump per env,
``python -m control.local_recovery`` (started on demand at launch by
:func:`ensure_running`, stopped by ``invoke local.down`` through :func:`stop_all`), makes the
same events and hands each to :func:`recovery.handler.handle`:

- ``instance_ended``: a tagged instance of the env is ``terminated`` in moto
  (DescribeInstances through the handler's :class:`~recovery.cloud.Cloud`);
- ``spot_warning``: a local instance's fake IMDS answers ``spot/instance-action``
  (``POST /_fake/spot-notice``);
- ``schedule``: every ``CHRONOS_RECOVERY_TICK_S`` seconds (default 5).

``CHRONOS_RECOVERY_EVENTS`` (comma-separated kinds, default all three) narrows what is
sent, e.g. ``schedule`` alone stands for lost EventBridge deliveries. The handler's cloud
(:mod:`control.local_recovery_cloud`) signs as the env's local recovery identity, and
with the IAM call audit on its calls are recorded like every other principal's. Each
delivery's id is stable per instance and kind, so a repeat is a duplicate, as
EventBridge's at-least-once delivery allows. The pump ends when the local AWS stops
answering or a newer pump took over its record.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import logfmt
from common.ec2 import GONE_STATES
from common.timeutil import iso, utc_now
from control.local_instance import spawn_detached
from control.localdir import LocalDir, pid_alive, read_json, write_json

log = logging.getLogger("control.local_recovery")

MODULE = "control.local_recovery"
TICK_VAR, EVENTS_VAR = "CHRONOS_RECOVERY_TICK_S", "CHRONOS_RECOVERY_EVENTS"
DEFAULT_TICK_S = 5.0
POLL_S = 1.0
UNREACHABLE_LIMIT_S = 20.0
KINDS = ("spot_warning", "instance_ended", "schedule")


@dataclass
class EventSource:
    """Turns what moto and the fake IMDSs show into handler events, each once (pure but the clock).

    Args:
        env: the env served.
        kinds: the event kinds to send.
        tick_s: seconds between schedule events.
        monotonic: the clock ticks are measured with.
    """

    env: str
    kinds: frozenset[str] = frozenset(KINDS)
    tick_s: float = DEFAULT_TICK_S
    monotonic: Callable[[], float] = time.monotonic
    sent: set[str] = field(default_factory=set)
    ticks: int = 0
    _next_tick: float | None = None

    def ended(self, instances: Iterable[Any]) -> list[Any]:
        """``instance_ended`` for each instance of the env newly seen terminated."""
        if "instance_ended" not in self.kinds:
            return []
        gone = [i.instance_id for i in instances if i.env == self.env and i.state in GONE_STATES]
        return [self._once("instance_ended", iid) for iid in gone if f"instance_ended/{iid}" not in self.sent]

    def noticed(self, instance_ids: Iterable[str]) -> list[Any]:
        """``spot_warning`` for each instance whose IMDS newly shows a notice."""
        if "spot_warning" not in self.kinds:
            return []
        return [
            self._once("spot_warning", iid) for iid in instance_ids if f"spot_warning/{iid}" not in self.sent
        ]

    def tick(self) -> list[Any]:
        """A ``schedule`` event when one is due (the first right away)."""
        now = self.monotonic()
        if "schedule" not in self.kinds or (self._next_tick is not None and now < self._next_tick):
            return []
        self._next_tick = now + self.tick_s
        self.ticks += 1
        from recovery.events import schedule_tick

        return [
            schedule_tick(event_id=f"local-schedule-{self.env}-{self.ticks}", at=iso(utc_now()), env=self.env)
        ]

    def _once(self, kind: str, instance_id: str) -> Any:
        from recovery.events import Event, EventKind

        self.sent.add(f"{kind}/{instance_id}")
        return Event(
            kind=EventKind(kind),
            instance_id=instance_id,
            env=self.env,
            event_id=f"local-{kind}-{instance_id}",
            at=iso(utc_now()),
        )


def spot_noticed(local_dir: LocalDir, env: str, *, timeout_s: float = 2.0) -> list[str]:
    """Local instances of ``env`` still running whose fake IMDS shows a spot interruption notice."""
    import requests

    from localaws.imds import TOKEN_HEADER, TTL_HEADER

    out = []
    for record in local_dir.instance_records():
        url = record.get("imds_url")
        if record.get("env") != env or not url or record.get("ended_at"):
            continue
        try:
            token = requests.put(
                f"{url}/latest/api/token",
                headers={TTL_HEADER: "60"},
                timeout=timeout_s,
            ).text
            resp = requests.get(
                f"{url}/latest/meta-data/spot/instance-action",
                headers={TOKEN_HEADER: token},
                timeout=timeout_s,
            )
        except requests.RequestException:
            continue  # its supervisor is gone or busy: the instance event will tell
        if resp.status_code == 200:
            out.append(str(record["instance_id"]))
    return out


class Pump:
    """One env's event loop: poll, make events, hand each to ``handle``.

    Args:
        source: the events to make.
        cloud: the handler's cloud (its ``project_instances`` shows what ended).
        handle: the recovery handler, bound to ``cloud``.
        local_dir: the local-mode folder (instance records, this pump's record).
    """

    def __init__(
        self, *, source: EventSource, cloud: Any, handle: Callable[[Any], Any], local_dir: LocalDir
    ) -> None:
        self.source, self.cloud, self.handle, self.local_dir = source, cloud, handle, local_dir
        self.stop = threading.Event()
        self.unreachable_since: float | None = None

    def step(self) -> list[Any]:
        """One round: every event that is due, each handled; the events sent."""
        events = list(self.source.noticed(spot_noticed(self.local_dir, self.source.env)))
        try:
            events += self.source.ended(self.cloud.project_instances())
            self.unreachable_since = None
        except Exception as exc:  # noqa: BLE001 - the local AWS may be down or slow: the next round retries
            self.unreachable_since = self.unreachable_since or time.monotonic()
            log.warning("cannot list instances: %s", exc)
        events += self.source.tick()
        for event in events:
            self._deliver(event)
        return events

    def _deliver(self, event: Any) -> None:
        try:
            outcomes = self.handle(event)
        except Exception:  # noqa: BLE001 - like Lambda: one failed invocation, the next event retries
            log.exception("recovery handler failed on %s %s", event.kind, event.event_id)
            return
        for outcome in outcomes or []:
            log.info("%s %s: %s", event.kind, event.instance_id or "", outcome)

    def run(self) -> int:
        """Loop until stopped, the local AWS is gone, or a newer pump took over."""
        while not self.stop.is_set():
            self.step()
            if self.unreachable_since and time.monotonic() - self.unreachable_since > UNREACHABLE_LIMIT_S:
                log.info("local AWS unreachable for %.0f s: the pump stops", UNREACHABLE_LIMIT_S)
                return 0
            record = read_json(pump_file(self.local_dir, self.source.env)) or {}
            if record.get("pid") not in (None, os.getpid()):
                log.info("another pump (pid %s) serves env %s now", record.get("pid"), self.source.env)
                return 0
            self.stop.wait(POLL_S)
        return 0


# -- the process ------------------------------------------------------------------------------------
def pump_file(local_dir: LocalDir, env: str) -> Path:
    """``.local/recovery/{env}.json``: the pump's pid and endpoint."""
    return local_dir.root / "recovery" / f"{env}.json"


def ensure_running(local_dir: LocalDir, *, env: str, endpoint_url: str, env_vars: dict[str, str]) -> int:
    """The env's pump, started detached unless one already runs against ``endpoint_url``; its pid."""
    path = pump_file(local_dir, env)
    record = read_json(path) or {}
    if pid_alive(record.get("pid")) and record.get("endpoint_url") == endpoint_url:
        return int(record["pid"])
    path.parent.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", MODULE, "--env", env, "--endpoint-url", endpoint_url]
    cmd += ["--local-dir", str(local_dir.root)]
    proc = spawn_detached(cmd, env_vars=env_vars, log_path=path.with_suffix(".log"))
    write_json(
        path, {"pid": proc.pid, "env": env, "endpoint_url": endpoint_url, "started_at": iso(utc_now())}
    )
    log.info("local recovery pump for env %s: pid %d", env, proc.pid)
    return proc.pid


def stop_all(local_dir: LocalDir, *, grace_s: float = 5.0) -> list[str]:
    """Stop every env's pump (``invoke local.down``, test teardown); the envs whose pump ran."""
    folder = local_dir.root / "recovery"
    stopped = []
    for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
        pid = (read_json(path) or {}).get("pid")
        if pid_alive(pid):
            os.kill(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + grace_s
            while pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
            if pid_alive(pid):
                os.kill(int(pid), signal.SIGKILL)
            stopped.append(path.stem)
        path.unlink(missing_ok=True)
    return stopped


def source_from_environment(env: str) -> EventSource:
    """The event source ``CHRONOS_RECOVERY_TICK_S`` and ``CHRONOS_RECOVERY_EVENTS`` ask for."""
    kinds = frozenset(k.strip() for k in os.environ.get(EVENTS_VAR, ",".join(KINDS)).split(",") if k.strip())
    unknown = kinds - set(KINDS)
    if unknown:
        raise SystemExit(f"{EVENTS_VAR}: unknown event kinds {sorted(unknown)}; use {', '.join(KINDS)}")
    return EventSource(env=env, kinds=kinds, tick_s=float(os.environ.get(TICK_VAR) or DEFAULT_TICK_S))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m {MODULE}")
    for name in ("env", "endpoint-url", "local-dir"):
        parser.add_argument(f"--{name}", required=True)
    args = parser.parse_args(argv)
    logfmt.configure(logging.INFO, sys.stdout)
    for noisy in ("botocore", "boto3", "urllib3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    from control.local_recovery_cloud import handler_for
    from localaws import audit

    audit.install_from_env()  # CHRONOS_IAM_AUDIT_LOG: the handler's calls are audited too
    local_dir = LocalDir(Path(args.local_dir))
    cloud, handle = handler_for(local_dir, env=args.env, endpoint_url=args.endpoint_url)
    pump = Pump(source=source_from_environment(args.env), cloud=cloud, handle=handle, local_dir=local_dir)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: pump.stop.set())
    log.info(
        "recovery pump for env %s at %s (events: %s)", args.env, args.endpoint_url, sorted(pump.source.kinds)
    )
    return pump.run()


if __name__ == "__main__":
    sys.exit(main())
