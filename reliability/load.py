"""What the load tests count after every run: leaks on the laptop, in the local AWS and in the lock.

Nothing here assumes a leak away; each count is taken from the system itself:

- :func:`local_processes`: every live process of a local world (psutil): whatever has the
  local folder in its command line, working directory or environment, and their descendants;
  each with its role (the local AWS server, a recovery pump, an instance's supervisor, the
  instance's own tree). Zombies count too: a process nobody waited for is a leak.
- :class:`ProcessCensus`: this process's threads (Python's and the OS's), its open file
  descriptors by kind (files, pipes, sockets) and its child processes.
- :func:`cloud_census`: an env's instances that are not ``terminated`` and its lock (the state
  file); :func:`volumes`: every EBS volume; both read back from the local AWS.
- :class:`CallLog`: the AWS calls one client made (botocore's ``after-call`` events), so a
  refused launch can be shown to have written nothing; :class:`Gate` holds racing launches at
  one call until all of them reached it, so they race at the lock's conditional write.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
from botocore.exceptions import ClientError

from common import layout
from common.tags import ENVIRONMENT_KEY, tag_value

# Read-only AWS operations start with these; every other call changes something.
READ_PREFIXES = ("Describe", "Get", "List", "Head", "Select")
ROLES = {"control.local_recovery": "recovery-pump", "control.local_supervisor": "supervisor"}


# -- processes ------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class LocalProcess:
    """One live process of a local world."""

    pid: int
    role: str  # local-aws | recovery-pump | supervisor | instance | other
    status: str  # psutil's: running, sleeping, zombie ...
    cmdline: str

    def describe(self) -> str:
        return f"pid {self.pid} ({self.role}, {self.status}): {self.cmdline[:160]}"


def _belongs(proc: psutil.Process, root: str) -> bool:
    """Whether ``proc`` names the local folder ``root`` in its command line, cwd or environment."""
    try:
        if any(root in part for part in proc.cmdline()):
            return True
        if proc.cwd().startswith(root):
            return True
        return any(root in value for value in proc.environ().values())
    except (psutil.Error, OSError):  # gone, a zombie's empty record, or not ours to read
        return False


def _role(proc: psutil.Process, server_pid: int | None) -> str:
    if proc.pid == server_pid:
        return "local-aws"
    try:
        cmd = " ".join(proc.cmdline())
    except psutil.Error:
        return "other"
    for module, role in ROLES.items():
        if module in cmd:
            return role
    return "instance"


def local_processes(root: Path, *, server_pid: int | None = None) -> list[LocalProcess]:
    """Every process of the local world under ``root`` (and each one's descendants), this one excepted."""
    me, text = os.getpid(), str(Path(root).resolve())
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter():
        if proc.pid != me and proc.pid not in found and _belongs(proc, text):
            found[proc.pid] = proc
            try:
                found.update({child.pid: child for child in proc.children(recursive=True)})
            except psutil.Error:
                continue
    out = []
    for pid, proc in sorted(found.items()):
        try:
            status, cmd = proc.status(), " ".join(proc.cmdline())
        except psutil.ZombieProcess:  # a NoSuchProcess, but still in the process table
            status, cmd = psutil.STATUS_ZOMBIE, ""
        except psutil.NoSuchProcess:
            continue
        except psutil.Error:
            status, cmd = "unreadable", ""
        out.append(LocalProcess(pid=pid, role=_role(proc, server_pid), status=status, cmdline=cmd))
    return out


# -- this process ---
@contextmanager
def settled_native_pools(scratch: Path) -> Iterator[None]:
    """pyarrow's thread pools at a fixed size, their threads started now; the sizes restored after.

    pyarrow starts its CPU and I/O pools' OS threads lazily, up to their capacity (the cores,
    and 8), whenever a parquet read needs them: a count of this process's OS threads taken
    before the first data check would call those pools a leak, and one taken after would miss
    a leak their growth hides. With one thread each, started here before the baseline, every
    OS thread counted later is new.
    """
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    sizes = pa.cpu_count(), pa.io_thread_count()
    pa.set_cpu_count(1)
    pa.set_io_thread_count(1)
    try:
        scratch.mkdir(parents=True, exist_ok=True)
        for i in range(2):
            pq.write_table(pa.table({"a": list(range(20_000))}), scratch / f"warm-{i}.parquet")
        ds.dataset(scratch).to_table()
        pq.read_table(scratch / "warm-0.parquet")
        yield
    finally:
        pa.set_cpu_count(sizes[0])
        pa.set_io_thread_count(sizes[1])


def _fd_kind(target: str) -> str:
    for prefix in ("socket:", "pipe:", "anon_inode:"):
        if target.startswith(prefix):
            return prefix[:-1]
    return "file"


@dataclass(frozen=True, kw_only=True)
class ProcessCensus:
    """This process's threads, open descriptors and children at one moment."""

    threads: tuple[str, ...]  # Python threads alive, by name
    os_threads: int
    fds: dict[str, int]  # kind -> count (file, pipe, socket, anon_inode)
    fd_targets: tuple[str, ...]  # every descriptor's target, for a failure's message
    children: tuple[str, ...]  # "pid status cmdline" of every child process, zombies too

    @classmethod
    def take(cls) -> ProcessCensus:
        me = psutil.Process()
        targets = []
        for fd in sorted(os.listdir("/proc/self/fd"), key=int) if os.path.isdir("/proc/self/fd") else ():
            try:
                targets.append(os.readlink(f"/proc/self/fd/{fd}"))
            except OSError:  # the descriptor listdir itself used, closed since
                continue
        kids = []
        for child in me.children(recursive=True):
            try:
                kids.append(f"{child.pid} {child.status()} {' '.join(child.cmdline())[:120]}")
            except psutil.ZombieProcess:  # a NoSuchProcess, but still in the process table
                kids.append(f"{child.pid} {psutil.STATUS_ZOMBIE}")
            except psutil.NoSuchProcess:
                continue
            except psutil.Error:
                kids.append(f"{child.pid} unreadable")
        return cls(
            threads=tuple(sorted(t.name for t in threading.enumerate())),
            os_threads=me.num_threads(),
            fds=dict(Counter(_fd_kind(t) for t in targets)),
            fd_targets=tuple(sorted(targets)),
            children=tuple(kids),
        )

    def leaks_since(
        self,
        before: ProcessCensus,
        *,
        allowed_pids: frozenset[int | None] = frozenset(),
    ) -> list[str]:
        """What this census holds beyond ``before``: each extra thread, descriptor and child.

        Args:
            allowed_pids: children that are no leak (the local AWS server, the recovery pump),
                nor is the thread that waits for each of them.
        """
        # the thread that waits for an allowed child (control.local_instance names it reap-<pid>)
        waiters = [t for t in self.threads if t.startswith("reap-") and _pid(t[5:]) in allowed_pids]
        threads = [t for t in self.threads if t not in waiters]
        out = [f"thread {name!r}" for name in _extra(threads, before.threads)]
        native = before.os_threads + len(waiters)  # native pools settled first: settled_native_pools
        if self.os_threads > native:
            out.append(f"{self.os_threads - native} more OS thread(s) ({self.os_threads})")
        out += [f"open {target}" for target in _extra(self.fd_targets, before.fd_targets, kinds=True)]
        known = {int(kid.split()[0]) for kid in before.children} | set(allowed_pids) - {None}
        out += [f"child process {kid}" for kid in self.children if int(kid.split()[0]) not in known]
        return out


def _pid(text: str) -> int | None:
    return int(text) if text.isdigit() else None


def _extra(now: Iterable[str], before: Iterable[str], *, kinds: bool = False) -> list[str]:
    """Items of ``now`` beyond ``before`` (multiset); with ``kinds``, sockets and pipes match by kind."""

    def key(item: str) -> str:
        return _fd_kind(item) if kinds and _fd_kind(item) != "file" else item

    left = Counter(key(i) for i in before)
    out = []
    for item in now:
        if left[key(item)] > 0:
            left[key(item)] -= 1
        else:
            out.append(item)
    return out


# -- the local AWS --------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class CloudCensus:
    """What an env holds in the local AWS that bills or blocks: live instances and the lock."""

    env: str
    instances: tuple[str, ...]  # "i-... state" of each of the env's instances not terminated
    lock: str | None  # the state file's run id (None: no lock)
    instances_ever: int  # every instance of the env moto lists, terminated ones too

    def leaks(self) -> list[str]:
        out = [f"{self.env}: instance {i}" for i in self.instances]
        if self.lock is not None:
            out.append(f"{self.env}: lock held by run {self.lock}")
        return out


def cloud_census(ec2: Any, s3: Any, *, env: str, bucket: str) -> CloudCensus:
    """``env``'s instances (tag ``Environment``) and the env's lock, read back now."""
    pages = ec2.get_paginator("describe_instances").paginate()
    instances = [i for page in pages for r in page["Reservations"] for i in r["Instances"]]
    mine = [i for i in instances if tag_value(i, ENVIRONMENT_KEY) == env]
    return CloudCensus(
        env=env,
        instances=tuple(
            f"{i['InstanceId']} {i['State']['Name']}" for i in mine if i["State"]["Name"] != "terminated"
        ),
        lock=_lock(s3, bucket, env),
        instances_ever=len(mine),
    )


def volumes(ec2: Any) -> list[str]:
    """Every EBS volume the local AWS holds ("vol-... state"), whatever its tags: once no instance
    runs, a root volume (``DeleteOnTermination``) must be gone, so any left is a leak."""
    pages = ec2.get_paginator("describe_volumes").paginate()
    return [f"{v['VolumeId']} {v['State']}" for page in pages for v in page["Volumes"]]


def _lock(s3: Any, bucket: str, env: str) -> str | None:
    """The run id in ``env``'s state file, ``"?"`` when it is there but unreadable, ``None`` if absent."""
    import json

    try:
        body = s3.get_object(Bucket=bucket, Key=layout.state_key(env))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
            return None
        raise
    try:
        return str(json.loads(body).get("run_id"))
    except (ValueError, AttributeError):
        return "?"


def bucket_keys(s3: Any, bucket: str) -> set[str]:
    """Every key of ``bucket`` now."""
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket)
    return {o["Key"] for page in pages for o in page.get("Contents", [])}


# -- the calls of one launch ------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class Call:
    """One AWS call: its operation, HTTP status and (S3) key."""

    operation: str
    status: int
    key: str | None = None
    dry_run: bool = False
    condition: str | None = None  # IfNoneMatch | IfMatch: a conditional write

    @property
    def changed_something(self) -> bool:
        """A write AWS accepted (a refused conditional write or a dry run changed nothing)."""
        return self.status < 300 and not self.dry_run and not self.operation.startswith(READ_PREFIXES)


@dataclass(kw_only=True)
class CallLog:
    """Every call of the clients it is attached to, from botocore's ``after-call`` events."""

    calls: list[Call] = field(default_factory=list)

    def attach(self, client: Any) -> None:
        client.meta.events.register("provide-client-params.*.*", self._params)
        client.meta.events.register("after-call.*.*", self._after)

    def _params(self, params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
        context["load_key"], context["load_dry_run"] = params.get("Key"), bool(params.get("DryRun"))
        context["load_condition"] = next((c for c in ("IfNoneMatch", "IfMatch") if c in params), None)

    def _after(self, http_response: Any, model: Any, context: dict[str, Any], **_: Any) -> None:
        self.calls.append(
            Call(
                operation=model.name,
                status=int(getattr(http_response, "status_code", 0) or 0),
                key=context.get("load_key"),
                dry_run=bool(context.get("load_dry_run")),
                condition=context.get("load_condition"),
            )
        )

    def writes(self) -> list[Call]:
        """The calls that changed something."""
        return [c for c in self.calls if c.changed_something]


class LockRace:
    """Makes the launches of one env race at the lock: each one's first read of the state file
    waits until all of them got there (so every one reads "no run active" and passes the lock
    check), and each one's conditional create of it (``IfNoneMatch``) waits until all of them
    are about to send it. Attach it to every client of every launch; :meth:`done` withdraws a
    launch that ended before its write (refused or failed early), so the others do not wait.
    """

    def __init__(self, env: str, launches: int, *, timeout_s: float) -> None:
        self.key = layout.state_key(env)
        self.read_gate = Gate(launches, timeout_s=timeout_s)
        self.write_gate = Gate(launches, timeout_s=timeout_s)
        self._local = threading.local()

    def attach(self, client: Any) -> None:
        if client.meta.service_model.service_name == "s3":
            client.meta.events.register("provide-client-params.s3.GetObject", self._get)
            client.meta.events.register("provide-client-params.s3.PutObject", self._put)

    def _get(self, params: dict[str, Any], **_: Any) -> None:
        if params.get("Key") == self.key and not getattr(self._local, "read", False):
            self._local.read = True
            self.read_gate.wait()

    def _put(self, params: dict[str, Any], **_: Any) -> None:
        if (
            params.get("Key") == self.key
            and "IfNoneMatch" in params
            and not getattr(self._local, "wrote", False)
        ):
            self._local.wrote = True
            self.write_gate.wait()

    def done(self) -> None:
        """The calling thread's launch ended: it no longer counts for a gate it did not reach."""
        if not getattr(self._local, "read", False):
            self.read_gate.withdraw()
        if not getattr(self._local, "wrote", False):
            self.write_gate.withdraw()


class Gate:
    """Holds callers at one point until ``parties`` of them arrived (or ``timeout_s`` passed).

    Unlike :class:`threading.Barrier` it never raises: a caller that never comes only delays
    the others by ``timeout_s``; :attr:`complete` says whether all of them met.
    """

    def __init__(self, parties: int, *, timeout_s: float) -> None:
        self.parties, self.timeout_s = parties, timeout_s
        self._cond = threading.Condition()
        self.arrived = self.withdrawn = 0

    def wait(self) -> None:
        with self._cond:
            self.arrived += 1
            self._cond.notify_all()
            self._cond.wait_for(lambda: self.arrived >= self.parties, timeout=self.timeout_s)

    def withdraw(self) -> None:
        """One party will never come."""
        with self._cond:
            self.parties -= 1
            self.withdrawn += 1
            self._cond.notify_all()

    @property
    def complete(self) -> bool:
        """Every party arrived, none withdrawn."""
        return self.withdrawn == 0 and self.arrived >= self.parties
